"""bench/known_answer.py's tasks (issue 16): each task's model file loads as `widthc slim`
loads it, its searchable groups are the student's hidden widths in graph order, the oracle
keeps the teacher's channels rounded up to one bin, the budget is the oracle's FLOPs and below
the student's, and the data is the task's alone (the run's seed does not change it)."""

from __future__ import annotations

import dataclasses
import hashlib
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


def test_bottleneck_cls_16k_is_bottleneck_cls_with_4x_the_data():
    """Session 12's task: the same teacher, student, labels' seed and scale, splits of 16000,
    4000 and 8000 (bottleneck-cls: 4000, 1000, 2000), cut in that order from one data set."""
    big, small = TASKS["bottleneck-cls-16k"], TASKS["bottleneck-cls"]
    assert dataclasses.replace(big, name=small.name, sizes=small.sizes) == small
    sizes = {s: len(big.split(s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 16000, "val": 4000, "test": 8000}
    assert {s: len(small.split(s)) for s in sizes} == {"train": 4000, "val": 1000, "test": 2000}
    x = torch.cat([big.split(s).tensors[0] for s in sizes])
    assert len(x) == 28000 and len(torch.unique(x, dim=0)) == 28000  # disjoint splits
    assert set(big.split("val").tensors[1].tolist()) == set(range(8))  # 8 classes
    assert known_answer.OFF_BOARD["bottleneck-cls-16k"] == "bench/known/bottleneck_cls_16k.py"
    assert list(known_answer.TASKS) == [  # the boards' tasks: it failed its premise
        "bottleneck", "bottleneck-6", "bottleneck-cls", "double-bottleneck", "residual"
    ]  # fmt: skip


def test_a_task_off_the_boards_is_tabled_only_when_asked():
    """bottleneck-cls-16k failed the known answer's premise: its stored runs are tabled with
    `--table --tasks bottleneck-cls-16k`, never among the five tasks of the boards."""
    five = known_answer.table(["default"])
    assert "| bottleneck-cls |" in five and "bottleneck-cls-16k" not in five
    asked = known_answer.table(["default"], ("bottleneck-cls-16k",))
    (row,) = [line for line in asked.splitlines() if line.startswith("| bottleneck-cls-16k |")]
    assert row.startswith("| bottleneck-cls-16k | default | 3 | 0.0161 ± 0.0109 |")


def test_session_13s_classification_tasks_are_the_bottleneck_teachers_labels():
    """bottleneck-signs labels each of bottleneck's standardised targets by its sign (8 binary
    labels per sample, the same inputs); bottleneck-cls-64 is bottleneck-cls with 64 outputs
    (labels the argmax of 64), bottleneck-cls-64-16k the same with 4x the data. The first two
    failed the premise; none is on the five tasks' boards."""
    signs, regression = TASKS["bottleneck-signs"], TASKS["bottleneck"]
    assert dataclasses.replace(signs, name="bottleneck", classify=False, multilabel=False) == (
        regression
    )
    for split in ("train", "val", "test"):
        (x, y), (x0, y0) = signs.split(split).tensors, regression.split(split).tensors
        assert torch.equal(x, x0) and torch.equal(y, (y0 > 0).float())
    assert 0.3 < float(y.mean()) < 0.7  # both signs common
    wide = TASKS["bottleneck-cls-64"]
    assert dataclasses.replace(wide, name="bottleneck-cls", outputs=8) == TASKS["bottleneck-cls"]
    labels = torch.cat([wide.split(s).tensors[1] for s in ("train", "val", "test")])
    assert labels.max() == 63 and len(labels.unique()) == 51  # 13 classes never win the argmax
    assert known_answer.budget_of("bottleneck-cls-64") == 16 * 96 + 96 * 4 + 4 * 96 + 96 * 64
    big = TASKS["bottleneck-cls-64-16k"]  # with 4x the data: it passed the premise
    assert dataclasses.replace(big, name=wide.name, sizes=wide.sizes) == wide
    assert {s: len(big.split(s)) for s in ("train", "val", "test")} == {
        "train": 16000, "val": 4000, "test": 8000
    }  # fmt: skip
    for task in ("bottleneck-signs", "bottleneck-cls-64", "bottleneck-cls-64-16k"):
        assert task in known_answer.OFF_BOARD and task not in known_answer.TASKS


def test_a_tasks_runs_are_its_own_not_those_of_a_task_whose_name_starts_with_its(
    tmp_path, monkeypatch
):
    """`bottleneck-s*` also matches `bottleneck-signs-s0.json`: the board's `bottleneck` column
    counted session 13's signs runs as 3 more seeds until runs were matched by whole name."""
    monkeypatch.setattr(known_answer, "RESULTS", tmp_path)
    for task, seed in [("bottleneck", 0), ("bottleneck", 1), ("bottleneck-signs", 0)]:
        known_answer._write(
            tmp_path / "default" / f"{task}-s{seed}.json", {"task": task, "seed": seed}
        )
    (tmp_path / "default" / "bottleneck-signs-s1.failed").write_text('{"failed": "x"}')
    assert [r["task"] for r in known_answer.summaries("default", "bottleneck")] == [
        "bottleneck"
    ] * 2
    assert known_answer._failed("default", "bottleneck") == ""
    assert [r["seed"] for r in known_answer.summaries("default", "bottleneck-signs")] == [0]
    monkeypatch.setattr(known_answer, "RESULTS", ROOT / "bench" / "results" / "known")
    for task in (*known_answer.TASKS, *known_answer.OFF_BOARD):  # the stored runs
        assert {r["task"] for r in known_answer.summaries("default", task)} == {task}


def test_the_share_of_labels_right():
    from tasks import binary_cross_entropy, label_accuracy

    logits = torch.tensor([[2.0, -1.0, 0.5, -3.0], [-0.1, 0.2, 4.0, 1.0]])
    target = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    assert label_accuracy(logits, target) == 6 / 8  # 3 of 4 and 3 of 4
    assert float(binary_cross_entropy(logits, target)) == pytest.approx(
        float(torch.nn.BCEWithLogitsLoss()(logits, target))
    )


@pytest.mark.parametrize(
    "task, gap", [("bottleneck-signs", "0.0013 ± 0.0010"), ("bottleneck-cls-64", "0.0293 ± 0.0272")]
)
def test_session_13s_tasks_are_tabled_with_their_premise_figures(task, gap):
    (row,) = [
        line
        for line in known_answer.table(["default"], (task,)).splitlines()
        if line.startswith(f"| {task} |")
    ]
    assert row.startswith(f"| {task} | default | 3 | {gap} |")


def test_a_summary_names_the_cpu_and_threads_its_run_computed_with(tmp_path):
    """Runs pair only with runs of the same CPU and thread count (BENCHMARKS.md
    "reproducibility"): each summary says which, from the run's config.json."""
    import json

    versions = {"widthc": "0.1.0", "cpu": "Intel(R) Xeon(R) Processor (AVX512)", "threads": 1}
    (tmp_path / "config.json").write_text(json.dumps({"seed": 0, "versions": versions}))
    assert known_answer.made_on(tmp_path) == {"cpu": versions["cpu"], "threads": 1}
    (tmp_path / "config.json").write_text(json.dumps({"versions": {"widthc": "0.1.0"}}))
    assert known_answer.made_on(tmp_path) == {}  # a run of an older widthc


def test_an_unknown_task_is_refused_in_one_sentence(monkeypatch, capsys):
    for flags in ([], ["--table"]):
        argv = ["known_answer.py", "--tasks", "bottleneck,bottlenek", *flags]
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as exit_:
            known_answer.main()
        assert exit_.value.code == 2
        assert "unknown task bottlenek: choose from bottleneck, " in capsys.readouterr().err


# sha256 (first 16 hex digits) of each task's inputs over its three splits, of bottleneck-cls's
# labels, and the last targets of the regression tasks: as they were before session 12 added
# bottleneck-cls-16k (every stored run and truth retraining was made with these data)
INPUTS = {"bottleneck": "9b90729323c6e674", "bottleneck-6": "8a0b8aab6f50ceab",
          "bottleneck-cls": "9b90729323c6e674", "double-bottleneck": "b9508dae1bd119a2",
          "residual": "52e6de926f85f144"}  # fmt: skip
LABELS = "fe5aed7f6161b695"
LAST = {"bottleneck": [-0.77629, -1.24544, 0.30226], "bottleneck-6": [1.86833, -0.44819, -0.40549],
        "double-bottleneck": [-0.64217, 0.05264, -0.25472], "residual": [-0.64141, -0.56091, 0.54297]}  # fmt: skip


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()[:16]


@pytest.mark.parametrize("task", sorted(INPUTS))
def test_the_first_five_tasks_data_are_as_before_session_12(task):
    t = TASKS[task]
    x, y = (torch.cat([t.split(s).tensors[i] for s in ("train", "val", "test")]) for i in (0, 1))
    assert len(x) == 7000 and _digest(x) == INPUTS[task]
    if t.classify:
        assert _digest(y) == LABELS
    else:
        assert y[-1, :3].tolist() == pytest.approx(LAST[task], abs=1e-4)


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


def test_bottleneck_6s_narrow_width_falls_between_32_equal_bins():
    """`bottleneck-6` asks whether `--uniform-bins 32` gains only where the teacher's narrow
    width is one of its bins: its 6 channels are kept exactly by the default bins (the budget
    is 2 channels × (96 in + 96 out) above `bottleneck`'s) and by no width of 32 equal bins,
    whose nearest width above keeps 8."""
    t = TASKS["bottleneck-6"]
    assert t.teacher == (96, 6, 96) and t.student == TASKS["bottleneck"].student
    program = known_answer.default_program("bottleneck-6")
    assert known_answer.channels_of(program, known_answer.oracle(program, t.teacher)) == [96, 6, 96]
    budget = known_answer.budget_of("bottleneck-6")
    assert budget == known_answer.budget_of("bottleneck") + 2 * (96 + 96)
    rebinned = program.rebin(program.beta, uniform=32)
    assert known_answer.oracle_of("bottleneck-6", rebinned) is None
    rounded = known_answer.channels_of(rebinned, known_answer.oracle(rebinned, t.teacher))
    assert rounded == [96, 8, 96]


def test_a_run_whose_bins_cannot_keep_the_oracle_is_tabled_without_its_score(tmp_path, monkeypatch):
    """Its oracle score is None (not a width of its bins): the ranking counts only the scored
    runs, the seed-0 scores show '-' for the oracle, the recovered gap still counts it."""
    monkeypatch.setattr(known_answer, "RESULTS", tmp_path)
    monkeypatch.setattr(known_answer, "truth_metrics", lambda task, seeds=None: None)

    def run(seed, oracle_score):
        side = {"val": -0.5, "test": -0.5, "score": -0.3, "channels": [1]}
        return {"seed": seed, "seconds": 1.0, "supernet": {}, "truth_scores": None,
                "oracle": {"val": -0.1, "test": -0.1, "score": oracle_score, "channels": None},
                "uniform": side, "widthc": {**side, "val": -0.3, "test": -0.3}}  # fmt: skip

    for lever, scores in (("default", (-0.2, -0.4)), ("lever", (None, None))):
        for seed, score in enumerate(scores):
            known_answer._write(tmp_path / lever / f"bottleneck-6-s{seed}.json", run(seed, score))
    default = known_answer.row("default", "bottleneck-6").split(" | ")
    lever = known_answer.row("lever", "bottleneck-6").split(" | ")
    assert default[3 + 2] == lever[3 + 2] == "50%"  # recovered, val: 0.2 of 0.4
    assert default[11] == "1/2" and lever[11] == "-"
    assert default[13].startswith("-0.2000 / ") and lever[13].startswith("- / ")


def test_the_tuning_curve_counts_rankings_margins_and_the_truths_own_agreement(
    tmp_path, monkeypatch
):
    """bench/known_curve.py: a lever's row counts the supernets whose score ranks the oracle
    above uniform, the recovered gap, mean / std of widthc − uniform, tau against the truth's
    seed mean, and the search stage's seconds; the ceiling's "seed / mean of the others"
    compares each retraining seed with the mean of the other two."""
    import known_curve

    truth = [[1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0], [4.0, 3.0, 2.0, 1.0]]
    monkeypatch.setattr(known_answer, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(known_answer, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(known_answer, "truth_metrics", lambda t, seeds=None: truth)
    monkeypatch.setattr(known_curve, "ORDER", ("bottleneck",))
    right, wrong = [0, 2, 1, 3], [3, 2, 1, 0]  # the truth's seed mean orders 0 < 2 < 1 < 3
    for seed, oracle_score, won, scores in ((0, 0.1, 0.1, right), (1, -0.1, 0.3, wrong),
                                            (2, 0.2, 0.2, right)):  # fmt: skip
        known_answer._write(
            tmp_path / "results" / "score-steps-64" / f"bottleneck-s{seed}.json",
            {"seed": seed, "truth_scores": scores, "widthc": {"val": won},
             "oracle": {"val": 0.4, "score": oracle_score}, "uniform": {"val": 0.0, "score": 0.0}},
        )  # fmt: skip
    stages = {"train": {"seconds": 10.0}, "search": {"seconds": 40.0}}
    known_answer._write(
        tmp_path / "runs" / "score-steps-64" / "bottleneck-s1" / "stages.json", stages
    )
    lines = known_curve.curve(["score-steps-64", "default"], {0, 1, 2}, []).splitlines()
    assert len(lines) == 3  # the header, its rule, one row: "default" has no runs here
    cells = lines[2].split(" | ")
    assert cells[0] == "| 64" and cells[2] == "3"
    assert cells[3] == "2 (2 of 3)"  # seeds 0 and 2 rank the oracle above uniform
    mean = [2.0, 8 / 3, 7 / 3, 3.0]
    tau = (2 * known_answer.kendall_tau(right, mean) + known_answer.kendall_tau(wrong, mean)) / 3
    assert cells[4] == f"{tau:.2f}" and tau > 0  # the mean over runs
    assert cells[5] == "50%"  # won 0.2 of the gap 0.4
    assert cells[6] == "2.0"  # 0.2 / std(0.1, 0.3, 0.2) = 0.2 / 0.1
    assert cells[7] == "40 (4.0×) |"  # seed 1's stages.json only
    rest = [known_answer.kendall_tau(truth[0], [2.5, 3.0, 2.0, 2.5]),
            known_answer.kendall_tau(truth[2], [1.0, 2.5, 2.5, 4.0])]  # fmt: skip
    assert f"seed/mean of the others {rest[0]:.2f} " in known_curve.ceiling()
    assert f" {rest[1]:.2f} (mean" in known_curve.ceiling()


def test_the_paired_tau_of_two_levers_and_their_scores_alike(monkeypatch):
    import known_levers

    truth = [[0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4]]  # two truth seeds, four widths
    monkeypatch.setattr(known_answer, "truth_metrics", lambda task, seeds=None: truth)
    same = {"truth_scores": [1.0, 2.0, 3.0, 4.0]}  # tau 1
    swapped = {"truth_scores": [1.0, 2.0, 4.0, 3.0]}  # one pair of six discordant: tau 2/3
    line = known_levers.paired_tau("t", [(swapped, same), (same, same)])
    assert "Kendall τ paired -0.167 ± 0.236" in line  # -1/3 and 0
    assert line.endswith("truth widths scored alike 6 of 8")
    assert known_levers.paired_tau("t", [({"truth_scores": None}, same)]) == ""


def test_the_uniform_baseline_is_scored_as_the_oracle_is(tmp_path):
    """The board's "oracle above uniform" compares the oracle's score by the run's scorer with
    uniform's by the same scorer: not the longer tuning's (--score-again) or the tournament's
    (--score-retrain), which overwrite the result's; stored summaries re-derived alike."""
    import json

    import known_baselines

    plain = {"uniform": {"score": -0.3}}
    tournament = {
        "uniform": {"score": -0.1},
        "tournament": {"scores": [{"score_before": -0.2}, {"score_before": -0.4}]},
    }
    again = {"uniform": {"score": -0.1}, "rescored": {"again": {"scores": [
        {"tuned": {"score": -0.6}}, {"tuned": {"score": -0.5}}]}}, "tournament": tournament}  # fmt: skip
    assert known_answer.baseline_score(plain) == -0.3
    assert known_answer.baseline_score(tournament) == -0.4
    assert known_answer.baseline_score(again) == -0.5  # the N-step tuned score, as the oracle's
    summaries, runs = tmp_path / "lever", tmp_path / "runs"
    for name, result in (("a-s0", tournament), ("b-s0", plain), ("c-s0", plain)):
        known_answer._write(summaries / f"{name}.json", {"uniform": {"score": -0.1}})
        if name != "c-s0":  # no run folder: left as it is
            (runs / name).mkdir(parents=True)
            (runs / name / "search.json").write_text(json.dumps({"results": [result]}))
    changed = known_baselines.rederive(summaries, runs)
    assert changed == [("a-s0", -0.1, -0.4), ("b-s0", -0.1, -0.3)]
    stored = {p.stem: json.loads(p.read_text())["uniform"]["score"] for p in summaries.iterdir()}
    assert stored == {"a-s0": -0.4, "b-s0": -0.3, "c-s0": -0.1}


def test_the_tournament_table_counts_changed_picks_and_pairs_by_seed(monkeypatch):
    """bench/known_tournament.py's row: picks changed (and uniform's wins) over every budget,
    the recovered shares, the oracle above uniform by one scorer, Δ paired on common seeds."""
    import known_tournament as kt

    def summary(seed, widthc, oracle_score=-0.1):
        return {"seed": seed, "oracle": {"val": 0.3, "test": 0.3, "score": oracle_score},
                "uniform": {"val": 0.1, "test": 0.1, "score": -0.2},
                "widthc": {"val": widthc, "test": widthc + 0.05}}  # fmt: skip

    lever = [summary(0, 0.2), summary(1, 0.3, oracle_score=-0.3), summary(2, 0.25, -0.15)]
    base = [summary(1, 0.25), summary(3, 0.0)]
    monkeypatch.setattr(kt.ka, "summaries", lambda name, task: lever if name == "L" else base)
    chosen = {0: 1, 1: 2, 2: 1}  # contender 2 won twice; seed 1: uniform (the last) won
    monkeypatch.setattr(kt, "tournaments", lambda name, task, seed: [
        {"chosen": chosen[seed], "scores": [{}, {}, {}]}])  # fmt: skip
    monkeypatch.setattr(kt, "curses", lambda name, task, seed: [0.01 * (seed + 1)])
    cells = [c.strip() for c in kt.row("L", "B", "t").strip("|").split("|")]
    assert cells[:6] == ["t", "0,1,2", "3/3 (1 uniform)", "75%", "100%", "3"]
    assert cells[6].startswith("0.0200")  # the winner's curse, mean over the budgets
    assert cells[7:9] == ["2/3", "1"]  # seed 1's oracle scores below uniform; seed 1 paired
    assert cells[9].startswith("0.0500")  # 0.30 − 0.25


def _truth_cache(tmp_path, monkeypatch, seeds: dict[int, list[float]]) -> None:
    """A synthetic truth of `bottleneck`: per retraining seed, the test metric of 22 widths."""
    monkeypatch.setattr(known_answer, "RESULTS", tmp_path)
    done = {f"{i}-s{s}": m for s, metrics in seeds.items() for i, m in enumerate(metrics)}
    known_answer._write(tmp_path / "truth" / "bottleneck.json", done)


def test_tau_is_against_the_mean_of_the_truths_seeds(tmp_path, monkeypatch):
    """Seeds 0-2 rank the 22 widths in order, seeds 3-4 (twice as far apart) in reverse: the
    3-seed truth and the 5-seed truth are each the mean over their own seeds, the tables and
    the board read every seed complete (or `--truth-seeds`), a seed with a width missing is
    not complete."""
    import known_targets
    import known_truth

    n = known_answer.N_WIDTHS + 2
    up, down = [float(i) for i in range(n)], [2.0 * (n - i) for i in range(n)]
    _truth_cache(tmp_path, monkeypatch, {0: up, 1: up, 2: up, 3: down, 4: down})
    run = {"seed": 0, "truth_scores": up}
    assert known_answer.truth_seeds("bottleneck") == (0, 1, 2, 3, 4)
    assert known_answer.truth_metrics("bottleneck", (0, 1, 2)) == [up, up, up]
    assert known_answer.truth_metrics("bottleneck") == [up, up, up, down, down]
    assert known_answer.truth_metrics("bottleneck", (0, 5)) is None  # no seed 5
    mean5 = [(3 * u + 2 * d) / 5 for u, d in zip(up, down)]  # (4 n - i) / 5: falls
    assert known_answer.truth_taus([run], "bottleneck", (0, 1, 2)) == [1.0]
    assert (
        known_answer.truth_taus([run], "bottleneck")
        == [known_answer.kendall_tau(up, mean5)]
        == [-1.0]
    )
    assert known_targets.measures([{**run, **_side()}], "bottleneck")["tau"] == -1.0
    assert known_truth.cell([run], "bottleneck") == "1.00 ± 0.00 → -1.00 ± 0.00 (1)"
    monkeypatch.setattr(known_answer, "TRUTH_SEEDS", (0, 1, 2))  # --truth-seeds 0,1,2
    assert known_targets.measures([{**run, **_side()}], "bottleneck")["tau"] == 1.0
    monkeypatch.setattr(known_answer, "TRUTH_SEEDS", None)
    done = known_answer._truth_done("bottleneck")
    del done[f"{n - 1}-s4"]
    known_answer._write(tmp_path / "truth" / "bottleneck.json", done)
    assert known_answer.truth_seeds("bottleneck") == (0, 1, 2, 3)


def _side() -> dict:
    side = {"val": 0.0, "test": 0.0, "score": 0.0}
    return {"widthc": side, "uniform": side, "oracle": {**side, "val": 1.0}}


def test_the_truths_agreement_with_itself_per_seed_pair_and_split_half(tmp_path, monkeypatch):
    """`agreement`: τ between every two retraining seeds, and between the means of k // 2 seeds
    and of the others over every split (5 seeds: 10 splits of 2 and 3; 4 seeds: 3 of 2 and 2)."""
    n = known_answer.N_WIDTHS + 2
    rng = np.random.default_rng(0)
    seeds = {s: [float(x) for x in rng.normal(size=n)] for s in range(5)}
    _truth_cache(tmp_path, monkeypatch, seeds)
    per_seed = [seeds[s] for s in range(5)]
    halves = known_answer.split_halves(per_seed)
    assert len(halves) == 10 and len(known_answer.split_halves(per_seed[:4])) == 3
    first = known_answer.kendall_tau(  # seeds 0, 1 against 2, 3, 4
        [(a + b) / 2 for a, b in zip(*per_seed[:2])],
        [(a + b + c) / 3 for a, b, c in zip(*per_seed[2:])],
    )
    assert halves[0] == first
    line = known_answer.agreement().splitlines()[0]
    assert line.startswith("truth bottleneck (5 seeds): ") and " s3/s4 " in line
    assert line.endswith(f"of the other 3 seeds: {known_answer._ms(halves, 2)} (10 splits)")
    three = known_answer.agreement((0, 1, 2)).splitlines()[0]
    assert " s3/s4 " not in three and three.endswith("(3 splits)")


def test_the_truth_retrains_only_its_seeds_in_their_default_runs(tmp_path, monkeypatch):
    """`truth(task, seeds)`: each seed's 22 widths retrained in the default lever's run of
    that seed, the cached ones not again, the mean over those seeds only."""
    from types import SimpleNamespace

    n = known_answer.N_WIDTHS + 2
    _truth_cache(tmp_path, monkeypatch, {s: [0.0] * n for s in (0, 1, 2)})
    program = SimpleNamespace(uniform=lambda flops: n - 1)
    monkeypatch.setattr(known_answer, "budget_of", lambda task: 1.0)
    monkeypatch.setattr(known_answer, "truth_widths", lambda p, b: list(range(n - 2)))
    monkeypatch.setattr(known_answer, "oracle", lambda p, teacher: n - 2)
    monkeypatch.setattr(known_answer, "_context", lambda run: SimpleNamespace(
        program=program, seed=int(run.name.rsplit("-s", 1)[1]), run=run))  # fmt: skip
    trained = []

    def retrain(ctx, width, folder):
        trained.append((ctx.run.parent.name, ctx.run.name, width))
        return {"val": 0.0, "test": 10.0 * width + ctx.seed}

    monkeypatch.setattr(known_answer, "retrain_width", retrain)
    means = known_answer.truth("bottleneck", (3, 4))
    assert means == [10.0 * w + 3.5 for w in range(n)]
    assert trained == [("default", f"bottleneck-s{s}", w) for s in (3, 4) for w in range(n)]
    trained.clear()
    assert known_answer.truth("bottleneck", (0, 1, 2, 3)) == [(10.0 * w + 3) / 4 for w in range(n)]
    assert trained == []  # all cached
    assert known_answer.truth_seeds("bottleneck") == (0, 1, 2, 3, 4)


def test_truth_seeds_option_retrains_those_seeds(tmp_path, monkeypatch):
    """`known_answer.py --levers default --truth --truth-seeds 3,4`: the default runs stored
    are not run again, the truth retrains seeds 3 and 4 (without the option: 0-2)."""
    monkeypatch.setattr(known_answer, "RESULTS", tmp_path)
    monkeypatch.setattr(known_answer, "TRUTH_SEEDS", None)  # main sets it; restored after
    for seed in known_answer.SEEDS:
        known_answer._write(tmp_path / "default" / f"bottleneck-s{seed}.json", {})
    asked = []
    monkeypatch.setattr(known_answer, "truth", lambda task, seeds: asked.append((task, seeds)))
    for extra, seeds in (([], (0, 1, 2)), (["--truth-seeds", "3,4"], (3, 4))):
        argv = ["known_answer.py", "--levers", "default", "--truth", "--tasks", "bottleneck"]
        monkeypatch.setattr(sys, "argv", argv + extra)
        known_answer.main()
        assert asked.pop() == ("bottleneck", seeds)


def test_the_rerun_comparison_pairs_stored_and_rerun_by_seed(tmp_path, monkeypatch):
    """`known_rerun.py --compare`: one row per seed rerun that is also stored."""
    import known_rerun

    monkeypatch.setattr(known_answer, "RESULTS", tmp_path)

    def run(seed, channels, val):
        return {"seed": seed, "widthc": {"channels": channels, "val": val},
                "uniform": {"val": -0.5}}  # fmt: skip

    for lever, seed, channels, val in (("default", 0, [4, 2], -0.1), ("default", 1, [4, 2], -0.2),
                                       ("rerun/default", 1, [4, 3], -0.3),
                                       ("rerun/default", 2, [4, 2], -0.4)):  # fmt: skip
        known_answer._write(tmp_path / lever / f"bottleneck-s{seed}.json", run(seed, channels, val))
    rows = known_rerun.compare("default", ["bottleneck"]).splitlines()[2:]
    assert rows == ["| bottleneck | 1 | 4,2 | 4,3 | no | -0.2000 | -0.3000 | -0.5000 | -0.5000 |"]


def test_the_targets_board_counts_the_sixth_supernet_and_reads_some_seeds_or_a_rerun(
    tmp_path, monkeypatch, capsys
):
    """bench/known_targets.py: "ranks the oracle above uniform in >= 5 of 6 supernets" is met by
    5 of 6 runs and missed by 4 of the first 5; `--seeds` gives the board before the sixth seed,
    `--levers` the rows named, a rerun (`rerun/<lever>`) too, which the board otherwise leaves out."""
    import known_targets

    monkeypatch.setattr(known_answer, "RESULTS", tmp_path)
    monkeypatch.setattr(known_answer, "truth_metrics", lambda task, seeds=None: None)

    def run(seed, oracle_score):
        return {"seed": seed, "truth_scores": None, "widthc": {"val": 0.2 + 0.01 * seed},
                "oracle": {"val": 0.3, "score": oracle_score},
                "uniform": {"val": 0.1, "score": 0.0}}  # fmt: skip

    for seed in range(6):  # seed 4's supernet scores the oracle below uniform
        known_answer._write(
            tmp_path / "default" / f"residual-s{seed}.json", run(seed, 1 - 2 * (seed == 4))
        )
        if seed < 5:
            known_answer._write(
                tmp_path / "rerun" / "default" / f"residual-s{seed}.json", run(seed, 1.0)
            )

    def ranks(*argv):
        known_targets.main(["--levers", "default,rerun/default", *argv])
        out = capsys.readouterr().out.split("score ranks oracle above uniform")[1].splitlines()
        column = [c.strip() for c in out[2].split("|")].index("residual")
        rows = [line.split("|") for line in out[4 : out.index("", 4)]]
        return {c[1].strip(): c[column].strip() for c in rows}  # lever: residual's cell

    assert ranks() == {"default": "83%* (6)", "rerun/default": "100%* (5)"}
    assert ranks("--seeds", "0,1,2,3,4") == {"default": "80% (5)", "rerun/default": "100%* (5)"}
    assert ranks("--seeds", "0,1,2,3,5") == {"default": "100%* (5)"}  # the rerun: 4 runs
    cells = known_targets.board(5, ["default", "rerun/default"], {0, 1, 2, 3, 4, 5})
    assert cells["default"]["residual"]["above"] == 5 and cells["default"]["residual"]["seeds"] == 6
    assert "rerun/default" not in known_targets.board(5)  # only the levers of levers.py


def test_the_truth_keeps_the_retrainings_another_process_wrote_meanwhile(tmp_path, monkeypatch):
    """Two processes retrain the truth's seeds side by side into one file: each write keeps the
    other's entries (session 13 ran seeds 3 and 4 so)."""
    import json
    import types

    monkeypatch.setattr(known_answer, "RESULTS", tmp_path)
    program = known_answer.default_program("bottleneck")
    monkeypatch.setattr(
        known_answer, "_context", lambda run: types.SimpleNamespace(program=program)
    )
    path = tmp_path / "truth" / "bottleneck.json"
    calls = []

    def retrain(ctx, width, folder):
        calls.append(folder.name)
        if len(calls) == 3:  # meanwhile another process finished seed 4's first width
            on_disk = json.loads(path.read_text())
            known_answer._write(path, {**on_disk, "0-s4": -0.5})
        return {"test": -0.1 * len(calls)}

    monkeypatch.setattr(known_answer, "retrain_width", retrain)
    means = known_answer.truth("bottleneck", seeds=(3,))
    stored = json.loads(path.read_text())
    assert stored["0-s4"] == -0.5 and len(stored) == known_answer.N_WIDTHS + 2 + 1
    assert means == pytest.approx([-0.1 * (i + 1) for i in range(known_answer.N_WIDTHS + 2)])
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no part left
