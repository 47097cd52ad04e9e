"""`widthc slim`: the three files and the printed FLOPs, several budgets, the budget parser, and
one clear sentence with exit code 2 for every bad input; files already there are never lost."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from click.testing import CliRunner

import widthc
from widthc.cli import main
from widthc.errors import InternalError, WidthcError
from widthc.frontends.models import load_model
from widthc.space import human, parse_budget

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = str(ROOT / "examples" / "model.py")


def _slim(*args: str):
    """`widthc slim` on the fast path (--search uniform: no data, no training) unless another
    searcher is named."""
    extra = [] if "--search" in args else ["--search", "uniform"]
    return CliRunner().invoke(main, ["slim", *args, *extra])


@pytest.fixture(scope="module")
def program():
    src = load_model(EXAMPLE)
    return widthc.compile(src.model, src.example_inputs)


def test_slim_writes_three_files_under_the_budget(tmp_path, program):
    out = tmp_path / "run"
    result = _slim(EXAMPLE, "--flops", "50%", "--search", "uniform", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["slim.onnx", "slim.pt", "widths.json"]
    widths = json.loads((out / "widths.json").read_text())
    full = program.flops()
    assert widths["flops"]["before"] == full
    assert widths["budget"]["flops"] == pytest.approx(full / 2)
    assert widths["flops"]["after"] <= full / 2
    choice = widthc.WidthChoice.from_json(widths["choice"])
    assert program.flops(choice) == widths["flops"]["after"]
    assert widths["checks"]["flops_counted"] == widths["flops"]["after"]
    assert widths["checks"]["equivalence_rel_error"] <= 1e-5
    assert widths["checks"]["onnx_rel_error"] <= 1e-4
    after = {g["id"]: g["channels_after"] for g in widths["groups"]}
    assert after == {g.id: int(c) for g, c in zip(program.groups, program.counts(choice))}
    # the printed table: FLOPs before, after (<= budget) and the checks
    flops_row = next(line for line in result.stdout.splitlines() if line.startswith("FLOPs"))
    assert flops_row.split()[1:3] == [human(full), human(widths["flops"]["after"])]
    assert "checks: output vs zeroed weights" in result.stdout
    # the model file is the slimmed model, loadable on its own
    small = widthc.load(out / "slim.pt")
    x = torch.randn(2, 3, 32, 32)
    assert small(x).shape == (2, 10)
    assert widthc.compile(small, program.example_inputs).flops() == widths["flops"]["after"]


def test_align_keeps_channel_counts_multiples_of_eight(tmp_path):
    out = tmp_path / "run"
    result = _slim(EXAMPLE, "--flops", "50%", "--align", "8", "--out", str(out), "--no-onnx")
    assert result.exit_code == 0, result.output
    widths = json.loads((out / "widths.json").read_text())
    shrunk = [g for g in widths["groups"] if g["channels_after"] < g["channels_before"]]
    assert shrunk, widths["groups"]  # the budget needed some group to shrink
    assert all(
        g["channels_after"] % 8 == 0 for g in widths["groups"] if g["channels_before"] % 8 == 0
    )


def test_several_budgets_get_a_folder_each(tmp_path, program):
    result = _slim(EXAMPLE, "--flops", "60%,20M", "--out", str(tmp_path), "--no-onnx")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flops-20M", "flops-60pct"]
    for folder, budget in (("flops-60pct", 0.6 * program.flops()), ("flops-20M", 20e6)):
        files = sorted(p.name for p in (tmp_path / folder).iterdir())
        assert files == ["slim.pt", "widths.json"]  # --no-onnx
        widths = json.loads((tmp_path / folder / "widths.json").read_text())
        assert widths["flops"]["after"] <= budget
        assert widths["checks"]["onnx_rel_error"] is None
    assert "ONNX vs PyTorch: not checked" in result.stdout


MULTI_IO = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.img = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.aux = nn.Linear(6, 16)
        self.mid = nn.Conv2d(16, 24, 3, padding=1)
        self.cls = nn.Linear(24, 10)

    def forward(self, x, meta):
        f = self.mid(self.img(x) + self.aux(meta)[:, :, None, None])
        return {"logits": self.cls(f.mean((2, 3))), "features": f}


def model():
    return Net()


def example_input():
    return torch.randn(2, 3, 16, 16), torch.randn(2, 6)
"""


def test_two_inputs_and_a_dict_output(tmp_path):
    source = tmp_path / "multi.py"
    source.write_text(MULTI_IO)
    result = _slim(str(source), "--flops", "50%", "--out", str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    onnx_model = onnx.load(str(tmp_path / "o" / "slim.onnx"))
    assert [i.name for i in onnx_model.graph.input] == ["x", "meta"]
    assert [o.name for o in onnx_model.graph.output] == ["logits", "features"]
    small = widthc.load(tmp_path / "o" / "slim.pt")
    out = small(torch.randn(3, 3, 16, 16), torch.randn(3, 6))
    assert out["logits"].shape == (3, 10) and out["features"].shape == (3, 24, 16, 16)


def test_default_folder_is_runs_model_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _slim(EXAMPLE, "--flops", "40M", "--no-onnx")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "model" / "widths.json").is_file()


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("300M", 300e6),
        ("300m", 300e6),
        ("1.2G", 1.2e9),
        ("4.1e9", 4.1e9),
        ("4.1E9", 4.1e9),
        ("250K", 250e3),
        ("2T", 2e12),
        ("1234567", 1234567.0),
        ("50%", 1e9),
        ("12.5%", 2.5e8),
        (" 300M ", 300e6),
    ],
)
def test_parse_budget(text, value):
    assert parse_budget(text, full=2e9) == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize(
    "text",
    ["", "M", "abc", "300MB", "3 00M", "-5M", "0", "0%", "nan", "inf", "1e999", "%50", "5%%"],
)
def test_parse_budget_rejects(text):
    with pytest.raises(WidthcError, match="is not a FLOPs budget: write e.g. 300M"):
        parse_budget(text, full=2e9)


@pytest.mark.parametrize("budget", ["1K", "200%", "10G"])
def test_unreachable_budget_states_the_range(tmp_path, program, budget):
    result = _slim(EXAMPLE, "--flops", budget, "--out", str(tmp_path / "o"))
    assert result.exit_code == 2
    lo, hi = program.flops(program.smallest()), program.flops()
    assert f"between {human(lo)} and {human(hi)} FLOPs" in result.stderr
    assert result.stderr.startswith("widthc: error: a FLOPs budget of")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()  # nothing created for a bad input


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--flops", "12X"], "'12X' is not a FLOPs budget"),
        (["--flops", ","], "--flops is empty"),
        (["--flops", "50%", "--search", "annealing"], "--search annealing is not a searcher"),
        (["--flops", "50%", "--beta", "0"], "--beta must be positive"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(tmp_path, args, message):
    result = _slim(EXAMPLE, *args, "--out", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert result.stderr.startswith("widthc: error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unwritable_out_is_exit_2(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    result = _slim(EXAMPLE, "--flops", "50%", "--out", str(blocker / "sub"))
    assert result.exit_code == 2
    assert "cannot write to --out" in result.stderr and "is a file" in result.stderr
    assert blocker.read_text() == "x"


def test_missing_flops_and_missing_model_are_exit_2(tmp_path):
    assert _slim(EXAMPLE).exit_code == 2
    result = _slim(str(tmp_path / "nope.py"), "--flops", "50%")
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_existing_files_survive_bad_input_and_failed_checks(tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert _slim(EXAMPLE, "--flops", "50%", "--out", str(out)).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert _slim(EXAMPLE, "--flops", "1K", "--out", str(out)).exit_code == 2

    def failing(*args, **kwargs):
        raise InternalError("the slimmed model's outputs differ from the reference")

    monkeypatch.setattr("widthc.stages.fast.verify", failing)
    result = _slim(EXAMPLE, "--flops", "30%", "--out", str(out))
    assert result.exit_code == 1
    assert "internal error" in result.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temp folder either


def test_rerun_replaces_the_files_whole(tmp_path):
    out = tmp_path / "run"
    assert _slim(EXAMPLE, "--flops", "50%", "--out", str(out), "--no-onnx").exit_code == 0
    first = json.loads((out / "widths.json").read_text())
    assert _slim(EXAMPLE, "--flops", "25%", "--out", str(out), "--no-onnx").exit_code == 0
    second = json.loads((out / "widths.json").read_text())
    assert second["flops"]["after"] < first["flops"]["after"]
    assert sorted(p.name for p in out.iterdir()) == ["slim.pt", "widths.json"]
