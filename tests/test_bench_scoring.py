"""The benchmarks pin the paper's scoring (bench/plain.py PAPER_SCORING, widthc's default until
session 15), so every figure published before the default moved reruns as published, and a
lever's or demo's own scoring options still win over it (click keeps an option's last value)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from widthc.cli import main
from widthc.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import demo_seeds  # noqa: E402
import known_answer  # noqa: E402
import quality  # noqa: E402


def _search(cmd: list[str]):
    """The search options a `widthc slim` command line resolves to, as the CLI parses it."""
    assert cmd[1] == "slim"
    ctx = main.commands["slim"].make_context("slim", cmd[2:])
    return RunConfig.from_json(ctx.params).check().search


def _paper(s) -> bool:
    return not s.tuned and s.tune_top == 0 and s.score == "metric"


def _default(s) -> bool:
    return (s.tune_passes, s.tune_steps, s.tune_top, s.score) == (4, 0, 16, "loss")


@pytest.mark.parametrize("lever, expected", [("default", _paper), ("sandwich", _paper),
                                             ("score-top-16-epochs-4-loss", _default)])  # fmt: skip
def test_known_answer_levers_are_measured_against_the_papers_scoring(lever, expected, tmp_path):
    assert expected(_search(known_answer.command("bottleneck", lever, 0, tmp_path)))


def test_a_lever_with_its_own_tuning_keeps_it():
    s = _search(known_answer.command("bottleneck", "score-steps-64-loss", 0, Path("o")))
    assert (s.tune_steps, s.tune_passes, s.tune_top, s.score) == (64, 0, 0, "loss")


@pytest.mark.parametrize("variant, expected", [(None, _paper),
                                               ("score-top-16-epochs-4-loss", _default)])  # fmt: skip
def test_mnist1d_methods_and_variants(variant, expected, tmp_path):
    bench = quality.DATASETS["mnist1d"]
    (task,) = quality.tasks(["widthc"], [0])
    assert expected(_search(quality.command(task, "mnist1d", bench, tmp_path, variant)))


@pytest.mark.parametrize("demo, expected", [("latency", _paper),
                                            ("latency-score-top-16-epochs-4-loss", _default)])  # fmt: skip
def test_demo_runs(demo, expected, tmp_path):
    assert expected(_search(demo_seeds.command(demo, 0, tmp_path)))


def test_the_gpu_checks_demo_pins_the_papers_scoring():
    """bench/gpu_check.sh times `make demo`'s FLOPs command on CUDA against issue 15's 122 s,
    measured with the paper's scoring."""
    script = (ROOT / "bench" / "gpu_check.sh").read_text()
    demo = re.search(r'^DEMO="([^"]*)"', script, re.M).group(1).split()
    s = _search(["widthc", "slim", *demo, "--out", "o"])
    assert _paper(s)
