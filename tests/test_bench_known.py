"""bench/known_answer.py's tasks (issue 16): each task's model file loads as `widthc slim`
loads it, its searchable groups are the student's hidden widths in graph order, the oracle
keeps the teacher's channels rounded up to one bin, the budget is the oracle's FLOPs and below
the student's, and the data is the task's alone (the run's seed does not change it)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import widthc
from widthc.frontends.models import load_model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "bench" / "known"))

import known_answer  # noqa: E402
from tasks import TASKS  # noqa: E402


@pytest.mark.parametrize("task", sorted(known_answer.TASKS))
def test_the_oracle_is_the_teachers_width_rounded_up_to_the_students_bins(task):
    src = load_model(str(ROOT / known_answer.TASKS[task]))
    t = TASKS[task]
    program = widthc.compile(src.model, *src.example_inputs)
    space = program.space
    assert [int(space.channels[i, -1]) for i in range(len(space.ids))] == list(t.student)
    target = space.array(known_answer.oracle(program, t.teacher))
    kept = space.searchable_counts(target)[0]
    for i, (k, teacher) in enumerate(zip(kept, t.teacher)):
        fewer = space.channels[i, int(target[i]) - 1]  # one bin less
        assert fewer < teacher <= k, (i, fewer, teacher, k)
    budget = known_answer.budget_of(task)
    assert budget == program.flops(known_answer.oracle(program, t.teacher))
    assert budget < program.flops(program.uniform(ratio=1.0)) / 2


def test_the_data_is_the_tasks_and_the_run_seed_does_not_change_it():
    t = TASKS["residual"]
    torch.manual_seed(0)
    x0, y0 = t.split("val").tensors
    torch.manual_seed(1)
    x1, y1 = t.split("val").tensors
    assert torch.equal(x0, x1) and torch.equal(y0, y1)
    assert np.allclose(y0.std(0).numpy(), 1.0, atol=0.1)  # standardised targets
    assert not torch.equal(t.split("val").tensors[0], t.split("test").tensors[0])


@pytest.mark.parametrize("task", ["bottleneck", "double-bottleneck", "residual"])
def test_with_32_equal_bins_the_oracle_keeps_the_same_channels_and_flops(task):
    """The `uniform-bins-32*` levers compare with the others: in 32 equal bins per group the
    oracle is the default bins' oracle (the same channels at the budget's FLOPs, so the cached
    oracle retraining applies), not the teacher's width rounded up to the new bins (on
    `residual` 32, 4, 96, 4: other FLOPs); the truth's widths are not widths of these bins."""
    t = TASKS[task]
    program = known_answer.default_program(task)
    rebinned = program.rebin(program.beta, uniform=32)
    assert rebinned.binning != program.binning
    kept = known_answer.channels_of(program, known_answer.oracle(program, t.teacher))
    target = known_answer.oracle_of(task, rebinned)
    assert known_answer.channels_of(rebinned, target) == kept
    assert rebinned.flops(target) == known_answer.budget_of(task)
    assert known_answer.oracle_of(task, program) == known_answer.oracle(program, t.teacher)
    rounded = known_answer.channels_of(rebinned, known_answer.oracle(rebinned, t.teacher))
    assert (rounded != kept) == (task == "residual")


def test_the_table_of_some_seeds_reads_only_their_runs(tmp_path, monkeypatch):
    """`--table --seeds`: the rows of those seeds' runs only; the refine levers say whether the
    oracle was one of the widths refined (None in the band)."""
    import json

    for seed in (0, 1, 2):
        folder = tmp_path / "lever"
        folder.mkdir(exist_ok=True)
        (folder / f"bottleneck-s{seed}.json").write_text(json.dumps({"seed": seed}))
    monkeypatch.setattr(known_answer, "RESULTS", tmp_path)
    monkeypatch.setattr(known_answer, "TABLE_SEEDS", {0, 2})
    assert [r["seed"] for r in known_answer.summaries("lever", "bottleneck")] == [0, 2]
    monkeypatch.setattr(known_answer, "TABLE_SEEDS", None)
    assert len(known_answer.summaries("lever", "bottleneck")) == 3
    oracle = np.array([24, 1, 24])
    assert known_answer.oracle_refined({"refined": {"trained": [[24, 1, 24], [8, 8, 8]]}}, oracle)
    assert known_answer.oracle_refined({"refined": {"trained": [[8, 8, 8]]}}, oracle) is False
    assert known_answer.oracle_refined({"refined": {"trained": "band"}}, oracle) is None
    assert known_answer.oracle_refined({}, oracle) is None
