"""`widthc analyze`: the table, `--json`, and one clear sentence with exit code 2 per bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

import widthc
from widthc.cli import main
from widthc.frontends.models import load_model
from widthc.space import human

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "model.py"

UNTRACEABLE = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Gate(nn.Module):
        def forward(self, x):
            if x.sum() > 0:
                return x
            return -x


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.gate = Gate()
            self.b = nn.Conv2d(8, 16, 3, padding=1)
            self.fc = nn.Linear(16, 4)

        def forward(self, x):
            return self.fc(self.b(self.gate(self.a(x))).mean((2, 3)))


    def model():
        return Net()


    input_shape = (1, 3, 8, 8)
    """
)


def _run(*args: str):
    # a wide console, so that table rows are not wrapped
    runner = CliRunner(env={"COLUMNS": "200"})
    return runner.invoke(main, ["analyze", *args], catch_exceptions=False)


def _assert_bad_input(result, *fragments: str) -> str:
    """Exit code 2, nothing on stdout, and one line on stderr that names the problem."""
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("widthc: error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.fixture
def untraceable(tmp_path) -> Path:
    path = tmp_path / "untraceable.py"
    path.write_text(UNTRACEABLE)
    return path


def test_analyze_prints_groups_and_totals():
    result = _run(str(EXAMPLE))
    assert result.exit_code == 0, result.output
    src = load_model(str(EXAMPLE))
    program = widthc.compile(src.model, src.example_inputs)
    out = result.stdout
    assert "channel groups of model" in out
    assert f"FLOPs: {human(program.flops())}" in out and f"params: {human(program.params())}" in out
    assert f"searchable groups: {len(program.searchable)}/{len(program.groups)}" in out
    # one row per group; the residual stream's group names its producers and readers
    assert "stem.0, block1.1, block2.1 →" in out
    assert "frozen: output of the network" in out
    # by hand: stem 3·32·9·32², four residual convs 4·32·64·9·32², down 32·64·9·16², head 64·10
    assert program.flops() == 884_736 + 75_497_472 + 4_718_592 + 640


def test_analyze_json_writes_the_analysis(tmp_path):
    target = tmp_path / "analysis.json"
    result = _run(str(EXAMPLE), "--json", str(target), "--beta", "2", "--align", "4")
    assert result.exit_code == 0, result.output
    assert f"wrote {target}" in result.stdout
    data = json.loads(target.read_text())
    src = load_model(str(EXAMPLE))
    program = widthc.compile(src.model, src.example_inputs, beta=2.0, align=4)
    assert data == json.loads(json.dumps(program.to_json()))
    assert data["beta"] == 2.0 and data["align"] == 4 and data["flops_unit"] == "MACs"
    assert [g["id"] for g in data["groups"]] == list(range(len(program.groups)))
    assert {g["name"] for g in data["groups"] if g["searchable"]} >= {"stem.0", "block1.0.0"}
    assert [p.name for p in tmp_path.iterdir()] == ["analysis.json"]  # no temp file left


def test_analyze_torchvision_model_with_input_shape():
    result = _run("torchvision:resnet18", "--input-shape", "1,3,64,64")
    assert result.exit_code == 0, result.output
    assert "channel groups of torchvision:resnet18" in result.stdout
    assert "FLOPs: 148.6M" in result.stdout  # 1.814G at 224x224, scaled by (64/224)^2 ≈ 0.082


def test_missing_model_path():
    _assert_bad_input(_run("no/such/model.py"), "'no/such/model.py' does not exist")


def test_file_without_model_function(tmp_path):
    path = tmp_path / "empty.py"
    path.write_text("import torch\nx = 1\n")
    _assert_bad_input(_run(str(path)), "defines no model() function")


def test_file_without_input_shape(tmp_path):
    path = tmp_path / "noshape.py"
    path.write_text("from torch import nn\n\ndef model():\n    return nn.Linear(4, 2)\n")
    _assert_bad_input(_run(str(path)), "input_shape", "--input-shape")
    result = _run(str(path), "--input-shape", "3,4")
    assert result.exit_code == 0 and "FLOPs: 8 " in result.stdout


def test_unknown_torchvision_model():
    _assert_bad_input(_run("torchvision:nosuchnet"), "'nosuchnet'", "list_models")


def test_close_torchvision_name_gets_a_suggestion():
    _assert_bad_input(_run("torchvision:resnet"), "did you mean", "resnet18")


def test_untraceable_model_names_file_line_and_suggests_leaf(untraceable):
    err = _assert_bad_input(_run(str(untraceable), "--no-auto-leaf"))
    assert f"{untraceable}:8" in err  # the `if` line of Gate.forward
    assert "if x.sum() > 0:" in err and "Gate.forward" in err
    assert "--leaf Gate" in err


def test_leaf_makes_the_untraceable_model_compile(untraceable, tmp_path):
    target = tmp_path / "a.json"
    result = _run(str(untraceable), "--leaf", "Gate", "--json", str(target))
    assert result.exit_code == 0, result.output
    groups = {g["name"]: g for g in json.loads(target.read_text())["groups"]}
    # the leaf is a barrier: the channels entering and leaving it keep their width
    assert not groups["a"]["searchable"]
    assert any("`Gate`" in r and "`gate`" in r for r in groups["a"]["frozen"])
    assert groups["b"]["searchable"]  # behind the barrier the search goes on


@pytest.mark.parametrize("shape", ["1,3,a", "0,3", "", "1,-3,8,8", "1x3xx"])
def test_malformed_input_shape(untraceable, shape):
    _assert_bad_input(
        _run(str(untraceable), "--input-shape", shape), "--input-shape", "1,3,224,224"
    )


def test_input_shape_with_wrong_channels(untraceable):
    _assert_bad_input(
        _run(str(untraceable), "--leaf", "Gate", "--input-shape", "1,4,8,8"),
        "does not run on the example input",
        "--input-shape",
    )


def test_bad_beta_and_json_folder(untraceable):
    _assert_bad_input(_run(str(untraceable), "--leaf", "Gate", "--beta", "0"), "--beta")
    _assert_bad_input(
        _run(str(untraceable), "--leaf", "Gate", "--json", "/no/such/folder/a.json"),
        "/no/such/folder",
    )


def test_exit_codes_and_stderr_of_the_installed_command(untraceable):
    """The real process: exit code 2, one line on stderr, no traceback; 0 on success."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    bad = subprocess.run(
        [sys.executable, "-m", "widthc", "analyze", str(untraceable), "--no-auto-leaf"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 2
    assert bad.stdout == "" and len(bad.stderr.strip().splitlines()) == 1
    assert "Traceback" not in bad.stderr and "--leaf Gate" in bad.stderr
    good = subprocess.run(
        [sys.executable, "-m", "widthc", "analyze", str(untraceable), "--leaf", "Gate"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert good.returncode == 0 and good.stderr == "" and "FLOPs:" in good.stdout


def test_automatic_leaf_says_which_module_and_why(untraceable):
    result = _run(str(untraceable))
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0]
    assert first.startswith("traced gate as a leaf") and "x.sum() > 0" in first
