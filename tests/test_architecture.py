"""The project's layering (docs/architecture.md, DESIGN §2), checked on the source itself:
no import cycles, no unexplained lazy imports in the run layer, no private names imported
across modules, every run file named in widthc/run.py only, the CLI light to import, each
default written once, facts of a pass read through accessors that fail loudly."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from widthc import config, pipeline, run
from widthc.cli import main
from widthc.errors import InternalError

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"widthc": "widthc", "passes": "widthc.passes", "frontends": "widthc.frontends"}
LAZY_CHECKED = ("widthc/stages/", "widthc/pipeline.py", "widthc/commands.py")


def _modules() -> dict[str, Path]:
    mods = {}
    for folder, package in PACKAGES.items():
        for f in (ROOT / folder).rglob("*.py"):
            parts = [
                p for p in f.relative_to(ROOT / folder).with_suffix("").parts if p != "__init__"
            ]
            mods[".".join([package, *parts])] = f
    return mods


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The module names an import statement names (`from a import b`: a.b if it is a module,
    else a), relative imports resolved."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        parts = module.split(".")
        parts = parts if is_package else parts[:-1]
        parts = parts[: len(parts) - node.level + 1]
        base = ".".join([*parts, *([base] if base else [])])
    return [f"{base}.{a.name}" for a in node.names] + [base]


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    edges = {m: set() for m in mods}
    for m, f in mods.items():
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = _imported(node, m, f.name == "__init__.py")
                for name in names:
                    if name in mods and name != m:
                        edges[m].add(name)
                        if isinstance(node, ast.ImportFrom):
                            break  # `from a import b`: the module b, or else a
    return edges


def test_no_import_cycles():
    edges, state, stack, cycles = _graph(), {}, [], []

    def visit(u):
        state[u] = 1
        stack.append(u)
        for v in sorted(edges[u]):
            if state.get(v) == 1:
                cycles.append(" -> ".join(stack[stack.index(v) :] + [v]))
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert not cycles, cycles


def test_the_cycle_check_finds_a_cycle(monkeypatch):
    """The check above can fail: a graph with a cycle is reported."""
    fake = {"widthc.a": {"widthc.b"}, "widthc.b": {"widthc.a"}}
    monkeypatch.setattr(sys.modules[__name__], "_graph", lambda: fake)
    with pytest.raises(AssertionError, match="widthc.a -> widthc.b -> widthc.a"):
        test_no_import_cycles()


def _lazy_imports(source: str) -> list[tuple[int, str]]:
    """Function-local imports without a comment saying why (on its line or the line above)."""
    lines = source.splitlines()
    found = []
    for fn in ast.walk(ast.parse(source)):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(fn):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    here, above = lines[node.lineno - 1], lines[node.lineno - 2]
                    if "#" not in here and not above.strip().startswith("#"):
                        found.append((node.lineno, ast.unparse(node)))
    return found


def test_run_layer_imports_at_the_top():
    bad = []
    for path in sorted(ROOT.glob("widthc/**/*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(LAZY_CHECKED):
            bad += [f"{rel}:{n}: {what}" for n, what in _lazy_imports(path.read_text())]
    assert not bad, bad
    assert _lazy_imports("def f():\n    import json\n")  # the check can fail
    assert not _lazy_imports("def f():\n    # torch is heavy\n    import torch\n")


def test_no_private_names_imported_across_modules():
    bad = []
    for folder in (*PACKAGES, "bench", "tests", "examples"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("widthc"):
                    bad += [f"{path.name}: {a.name}" for a in node.names if _private(a.name)]
    assert not bad, bad


RUN_FILES = {
    v
    for k, v in vars(run).items()
    if k.isupper() and isinstance(v, str) and "." in v and not k.startswith("_")
}


def test_run_file_names_are_written_in_run_py_only():
    assert {"config.json", "supernet.pt", "search.json", "slim.onnx", "widths.png"} <= RUN_FILES
    bad = []
    for folder in (*PACKAGES, "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == ROOT / "widthc" / "run.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    text = node.value
                    if text in RUN_FILES or text.startswith((run.BUDGET_PREFIX, "stage-")):
                        bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {text!r}")
    assert not bad, bad


def test_importing_the_cli_loads_no_torch():
    """`widthc --help` answers fast: the CLI imports no torch, numpy or the core until a
    command runs."""
    code = (
        "import sys, widthc.cli; "
        "print(sorted(m for m in ('torch', 'numpy', 'widthc.program', 'widthc.commands') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_widthc_names_resolve_lazily_and_keep_the_supernet_function():
    import widthc
    import widthc.supernet as module_or_function

    assert widthc.supernet is module_or_function  # the function, as with eager imports
    assert callable(widthc.supernet) and widthc.compile.__module__ == "widthc.program"
    assert set(widthc.__all__) <= set(dir(widthc))
    with pytest.raises(AttributeError):
        widthc.no_such_name  # noqa: B018


def test_search_defaults_are_the_configs():
    from widthc import search
    from widthc.search import evolutionary, random_search

    defaults = config.SearchConfig()
    sig = inspect.signature(evolutionary.evolutionary).parameters
    assert sig["population"].default == defaults.population
    assert sig["generations"].default == defaults.generations
    assert (
        inspect.signature(random_search.random_search).parameters["samples"].default
        == defaults.samples
    )
    assert inspect.signature(search.search).parameters["searcher"].default == defaults.search
    assert search.DEFAULT_BAND == (defaults.budget_band, 1.0)


def test_every_config_option_is_a_cli_option_of_slim():
    params = {p.name for p in main.commands["slim"].params}
    fields = [f.name for f in config.option_fields(config.RunConfig)]
    for part in (config.TrainConfig, config.SearchConfig, config.RetrainConfig):
        fields += [f.name for f in config.option_fields(part)]
    assert set(fields) <= params, set(fields) - params


def test_run_config_round_trips_through_json():
    c = config.RunConfig(
        model="m.py", leaves=("Block",), flops=("50%", "25%"),
        train=config.TrainConfig(epochs=3, sandwich=True),
        search=config.SearchConfig(population=8), retrain=config.RetrainConfig(finetune=True),
    )  # fmt: skip
    data = c.to_json()
    assert data["epochs"] == 3 and data["population"] == 8 and data["flops"] == ["50%", "25%"]
    assert config.RunConfig.from_json(data) == c
    assert c.updated(lr=0.5).train.lr == 0.5 and c.train.lr == 0.1  # frozen: a new value
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.offset = 2


def test_the_stage_table_covers_the_run_stages_in_order():
    assert tuple(pipeline.STAGES) == run.STAGES == pipeline.ORDER


def test_pass_facts_fail_loudly_when_the_pass_never_ran():
    from torch import fx

    from widthc.passes.groups import layouts, rewrites

    gm = fx.symbolic_trace(torch.nn.Linear(2, 2))
    node = next(iter(gm.graph.nodes))
    with pytest.raises(InternalError, match="run the coupling pass"):
        layouts(node)
    with pytest.raises(InternalError, match="run the coupling pass"):
        rewrites(node)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))
