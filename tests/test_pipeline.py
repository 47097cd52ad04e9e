"""`widthc slim MODEL --flops B` end to end (widthc/pipeline.py, widthc/run.py, widthc/stages/):
every file of the run directory, the checks after retraining, the budget met, the report; the
stage commands; resuming after SIGKILL with the same search.json; `--from` trains nothing;
multi-stage search; bad inputs (exit 2, one sentence, nothing written)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_tasks import CHEAP_TUNING  # the default's tuning, made cheap

import widthc
from widthc.cli import main

ROOT = Path(__file__).resolve().parents[1]
DIGITS = str(ROOT / "examples" / "mobilenet_digits.py")
TINY = ["--epochs", "1", "--batch-size", "64", "--population", "4", "--generations", "1",
        "--calib-batches", "2", "--retrain-epochs", "1", *CHEAP_TUNING]  # fmt: skip


def _widthc(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def _strip_times(data):
    """search.json without its wall times (they differ between two runs)."""
    if isinstance(data, dict):
        return {k: _strip_times(v) for k, v in data.items() if k != "seconds"}
    if isinstance(data, list):
        return [_strip_times(v) for v in data]
    return data


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "digits"
    res = _widthc("slim", DIGITS, "--data", "digits", "--flops", "50%", "--out", out, *TINY)
    assert res.exit_code == 0, res.output
    return out, res.output


def test_slim_writes_every_file_of_the_run(digits_run):
    out, output = digits_run
    for name in ("config.json", "stages.json", "analysis.json", "supernet.pt", "train.jsonl",
                 "search.json", "original.onnx", "report.md"):  # fmt: skip
        assert (out / name).is_file(), name
    folder = out / "flops-50pct"
    for sub in (folder, folder / "uniform"):
        for name in ("slim.pt", "slim.onnx", "widths.json", "retrain.pt", "retrain.jsonl"):
            assert (sub / name).is_file(), sub / name
    stages = json.loads((out / "stages.json").read_text())
    assert list(stages) == ["analyze", "train", "search", "slim", "export", "retrain", "report"]
    assert all(s["done"] and s["seconds"] >= 0 for s in stages.values())
    config = json.loads((out / "config.json").read_text())
    assert config["seed"] == 0 and config["flops"] == ["50%"] and config["data"] == "digits"
    assert config["versions"]["torch"] == torch.__version__ and "widthc slim" in config["command"]
    assert "report:" in output


def test_retrained_models_meet_the_budget_and_are_proved(digits_run):
    out, _ = digits_run
    search = json.loads((out / "search.json").read_text())
    (result,) = search["results"]
    assert search["complete"] and result["searcher"] == "evolutionary"
    assert result["flops"] <= result["budget"] and result["uniform"]["flops"] <= result["budget"]
    assert result["score"] >= result["uniform"]["score"]  # never worse than its own baseline
    assert result["history"][0]["width"] == [
        result["uniform"]["width"][str(g)]["bins"] for g in search["groups"]
    ]
    folder = out / "flops-50pct"
    for sub in (folder, folder / "uniform"):
        widths = json.loads((sub / "widths.json").read_text())
        checks = widths["retrained_checks"]
        assert checks["flops_counted"] == checks["flops_expected"] == widths["flops"]["after"]
        assert checks["onnx_rel_error"] <= 1e-4
        assert widths["checks"]["equivalence_rel_error"] <= 1e-5
        small = widthc.load(sub / "slim.pt")
        example = torch.randn(2, 1, 8, 8)
        assert widthc.compile(small, example).flops() <= result["budget"]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert 0 <= metrics["test"]["widthc"] <= 1 and 0 <= metrics["test"]["uniform"] <= 1
    assert metrics["retrain"] == {"epochs": 1, "finetune": False}
    assert set(metrics["latency_ms"]) == {"original", "widthc", "uniform"}


def test_report_links_valid_figures(digits_run):
    import matplotlib.image as mpimg

    out, _ = digits_run
    text = (out / "report.md").read_text()
    linked = [line.split("](")[1].split(")")[0] for line in text.splitlines() if "![" in line]
    assert {"widths.png", "bins.png", "search.png", "retrained.png"} <= set(linked)
    for name in linked:
        image = mpimg.imread(out / name)
        assert image.shape[0] > 200 and image.shape[1] > 200
        assert image.reshape(-1, image.shape[-1]).std(axis=0).max() > 0.01  # not one colour


def test_stage_commands_over_the_run_directory(digits_run, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(digits_run[0], out)
    before = (out / "supernet.pt").read_bytes()
    res = _widthc("search", out, "--flops", "30%,60%", "--search", "random", "--samples", "3")
    assert res.exit_code == 0, res.output
    search = json.loads((out / "search.json").read_text())
    assert [r["text"] for r in search["results"]] == ["30%", "60%"]
    assert all(r["searcher"] == "random" and r["evaluations"] == 4 for r in search["results"])
    assert search["front"] and (out / "supernet.pt").read_bytes() == before
    assert json.loads((out / "config.json").read_text())["flops"] == ["30%", "60%"]
    assert not json.loads((out / "stages.json").read_text()).get("slim")  # later stages redone
    res = _widthc("export", out)
    assert res.exit_code == 0, res.output
    assert (out / "flops-30pct" / "slim.onnx").is_file()
    assert (out / "flops-60pct" / "uniform" / "slim.pt").is_file()
    res = _widthc("retrain", out, "--retrain-epochs", 0)
    assert res.exit_code == 0 and "not retrained" in res.output, res.output
    res = _widthc("report", out)
    assert res.exit_code == 0 and "no retraining" in (out / "report.md").read_text().lower()


def test_from_run_searches_new_budgets_without_training(digits_run, tmp_path):
    source, _ = digits_run
    out = tmp_path / "again"
    res = _widthc("slim", DIGITS, "--from", source, "--flops", "30%", "--out", out,
                  "--population", "4", "--generations", "1", "--retrain-epochs", "0",
                  *CHEAP_TUNING)  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "supernet epoch" not in res.output and "trained" not in res.output.split("budget")[0]
    assert (out / "supernet.pt").read_bytes() == (source / "supernet.pt").read_bytes()
    assert json.loads((out / "config.json").read_text())["from_run"] == str(source)
    assert (out / "flops-30pct" / "slim.pt").is_file()


def test_library_model_on_synthetic_data(tmp_path):
    out = tmp_path / "r18"
    res = _widthc("slim", "torchvision:resnet18", "--data", "synthetic", "--input-shape",
                  "2,3,32,32", "--flops", "50%", "--out", out, "--beta", "4", "--samples", "2",
                  "--search", "random", *TINY[:4], "--calib-batches", "1",
                  "--retrain-epochs", "1", *CHEAP_TUNING)  # fmt: skip
    assert res.exit_code == 0, res.output
    config = json.loads((out / "config.json").read_text())
    assert config["num_classes"] == 10 and config["input_shape"] == "2,3,32,32"
    assert "synthetic" in (out / "report.md").read_text().splitlines()[0].lower()
    widths = json.loads((out / "flops-50pct" / "widths.json").read_text())
    assert (
        widths["retrained_checks"]["flops_counted"]
        <= json.loads((out / "search.json").read_text())["results"][0]["budget"]
    )


def test_multi_stage_search(tmp_path):
    out = tmp_path / "stages"
    res = _widthc("slim", DIGITS, "--data", "digits", "--flops", "40%", "--out", out,
                  "--stages", "3", "--alpha", "2", *TINY)  # fmt: skip
    assert res.exit_code == 0, res.output
    (result,) = json.loads((out / "search.json").read_text())["results"]
    stages = result["stages"]
    program = widthc.compile(widthc.load(out / "flops-40pct" / "slim.pt"), torch.randn(1, 1, 8, 8))
    full = json.loads((out / "analysis.json").read_text())["flops"]
    target = result["budget"]
    # eq. 10: the budget decays linearly to the target, beta halves every stage
    for t, s in enumerate(stages, 1):
        assert s["budget"] == pytest.approx(full - (full - target) * t / 3)
        assert s["beta"] == 1.0 / 2 ** (t - 1)
        assert s["flops"] <= s["budget"]
    assert program.flops() <= target and result["flops"] <= target
    # appendix A.15: the stages' spaces together are far smaller than one stage at the finest bins
    from widthc.frontends.models import load_model

    fine = widthc.compile(
        load_model(DIGITS).model, torch.randn(1, 1, 8, 8), beta=stages[-1]["beta"]
    )
    total = sum(10 ** s["space_log10"] for s in stages)
    assert total < 10 ** fine.space.log10_size()
    assert (out / "stage-2" / "supernet.pt").is_file() and (
        out / "stage-3" / "supernet.pt"
    ).is_file()


def test_search_is_deterministic_for_a_seed(digits_run, tmp_path):
    import shutil

    runs = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        out = tmp_path / name
        shutil.copytree(digits_run[0], out)
        res = _widthc("search", out, "--flops", "50%", "--seed", seed)
        assert res.exit_code == 0, res.output
        runs.append(_strip_times(json.loads((out / "search.json").read_text())))
    assert runs[0] == runs[1]
    assert runs[0]["results"][0]["history"] != runs[2]["results"][0]["history"]


# --- killed and resumed -----------------------------------------------------------------------


def _start(args: list, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "widthc", *map(str, args)], cwd=cwd, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    t0 = time.time()
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(
                f"finished before it could be killed: {proc.stderr.read()[-2000:]}"
            )
        if time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError("never reached the point to kill it at")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _partial_search(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return any(r.get("partial") for r in data.get("results", []))


@pytest.mark.slow
def test_killed_during_training_and_search_resumes_to_the_same_search(tmp_path):
    args = ["slim", DIGITS, "--data", "digits", "--flops", "50%", "--epochs", "2",
            "--batch-size", "32", "--checkpoint-every", "5", "--population", "6",
            "--generations", "3", "--calib-batches", "2", "--retrain-epochs", "0",
            *CHEAP_TUNING]  # fmt: skip
    straight = tmp_path / "straight"
    assert CliRunner().invoke(main, [*args, "--out", str(straight)]).exit_code == 0
    out = tmp_path / "killed"
    proc = _start([*args, "--out", out], tmp_path)
    _kill_when(proc, lambda: _lines(out / "train.jsonl") >= 20)  # in the first epoch
    assert not (out / "search.json").exists()
    proc = _start([*args, "--out", out, "--resume"], tmp_path)
    _kill_when(proc, lambda: _partial_search(out / "search.json"))
    res = CliRunner().invoke(main, [*args, "--out", str(out), "--resume"])
    assert res.exit_code == 0, res.output
    a = _strip_times(json.loads((straight / "search.json").read_text()))
    b = _strip_times(json.loads((out / "search.json").read_text()))
    assert a == b
    ta = torch.load(straight / "supernet.pt", weights_only=True)["model"]
    tb = torch.load(out / "supernet.pt", weights_only=True)["model"]
    assert all(torch.equal(ta[k], tb[k]) for k in ta)


# --- bad inputs ----------------------------------------------------------------------------------


DICT_MODEL = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return {"logits": self.fc(self.conv(x).mean((2, 3)))}

def model():
    return Net()

input_shape = (1, 1, 8, 8)
"""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--flops", "50%"], "--data is missing"),
        (["--flops", "50%", "--data", "imagefolder:/no/such/folder"], "imagefolder"),
        (["--flops", "50%", "--data", "cifar10:/tmp"], "cifar10"),
        (["--flops", "1K", "--data", "digits"], "out of reach"),
        (["--flops", "50%", "--data", "digits", "--search", "annealing"], "not a searcher"),
        (["--flops", "50%", "--data", "digits", "--population", "1"], "--population must be"),
        (["--flops", "50%", "--data", "digits", "--offset", "-1"], "--offset must be 0 or more"),
        (["--flops", "50%", "--data", "digits", "--epochs", "0"], "--epochs must be at least 1"),
        (["--flops", "50%", "--data", "digits", "--retrain-epochs", "-1"], "--retrain-epochs"),
    ],
)
def test_bad_input_is_one_sentence_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["slim", DIGITS, *args, "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("widthc: error: ") and message in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_dict_output_needs_loss_and_metric(tmp_path):
    path = tmp_path / "dict_model.py"
    path.write_text(DICT_MODEL)
    res = _widthc(
        "slim", path, "--data", "digits", "--flops", "50%", "--out", tmp_path / "r", *TINY
    )
    assert res.exit_code == 2 and "loss(output, target)" in res.stderr, res.output


def test_existing_run_is_refused_and_kept(digits_run, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(digits_run[0], out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    res = _widthc("slim", DIGITS, "--data", "digits", "--flops", "50%", "--out", out, *TINY)
    assert res.exit_code == 2 and "holds a finished run" in res.stderr and "--resume" in res.stderr
    res = _widthc("slim", DIGITS, "--data", "digits", "--flops", "50%", "--out", out, "--resume",
                  "--lr", "0.5")  # fmt: skip
    assert res.exit_code == 2 and "cannot resume with --lr 0.5" in res.stderr
    res = _widthc("slim", "torchvision:resnet18", "--data", "digits", "--flops", "50%",
                  "--out", out, "--resume")  # fmt: skip
    assert res.exit_code == 2 and "cannot resume" in res.stderr and "MODEL" in res.stderr
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    res = _widthc("search", tmp_path / "nothing", "--flops", "50%")
    assert res.exit_code == 2 and "holds no widthc run" in res.stderr
