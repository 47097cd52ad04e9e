"""The wheel installs one namespace: `widthc`, `widthc.passes` and `widthc.frontends` (DESIGN §2).

The sources are copied to a temporary folder first, so building never writes into the shared
tree, and the wheel is built offline (no build isolation: setuptools comes from the venv).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("widthc", "passes", "frontends", "pyproject.toml", "README.md")

_PROBE = """
import json, sys
import widthc, widthc.passes, widthc.frontends
import widthc.passes.coupling, widthc.frontends.models, widthc.cli
print(json.dumps({m: sys.modules[m].__file__ for m in
    ("widthc", "widthc.passes", "widthc.frontends", "widthc.passes.coupling",
     "widthc.frontends.models", "widthc.cli")}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, src / name)
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(dist), str(src)],
        check=True,
        capture_output=True,
    )
    (whl,) = dist.glob("widthc-*.whl")
    return whl


def test_wheel_holds_the_three_packages_and_the_console_script(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = z.read(f"{info}/entry_points.txt").decode()
        metadata = z.read(f"{info}/METADATA").decode()
    for module in (
        "widthc/__init__.py",
        "widthc/passes/__init__.py",
        "widthc/frontends/__init__.py",
    ):
        assert module in names
    assert "widthc/passes/coupling.py" in names and "widthc/frontends/models.py" in names
    assert not any(n.startswith(("passes/", "frontends/", "tests/")) for n in names)
    assert "widthc = widthc.cli:main" in entry_points
    # exactly one onnxruntime flavour per platform (they install the same folder)
    ort = [line for line in metadata.splitlines() if line.startswith("Requires-Dist: onnxruntime")]
    assert len(ort) == 2 and "platform_machine == " in ort[0] and "platform_machine != " in ort[1]
    for extra in ("zoo", "data", "dev", "bench"):
        assert f"Provides-Extra: {extra}" in metadata


def test_installed_wheel_imports_all_namespaces(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target)]
        + [str(wheel)],
        check=True,
        capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=tmp_path,  # outside the repository, so the source folders cannot be picked up
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    files = json.loads(out.stdout.strip().splitlines()[-1])
    for module, path in files.items():
        assert Path(path).resolve().is_relative_to(target.resolve()), (module, path)

    cli = subprocess.run(
        [sys.executable, "-m", "widthc", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0 and "analyze" in cli.stdout
