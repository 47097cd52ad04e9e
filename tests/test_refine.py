"""`--refine-epochs` (widthc/stages/refine.py): after the search, more min-min steps that train
only each budget's finalists and its uniform width, then the finalists scored again and the best
chosen. The steps train exactly that set; the finalists are the first pass's best widths in the
band; the budget's width is the best re-scored finalist, scored on the refined supernet, which
the later stages (slim) use."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_tasks import REGRESSION, TINY  # the tiny regression model file

import widthc
from widthc.cli import main
from widthc.context import Context
from widthc.errors import WidthcError
from widthc.evaluate import MaxMax, measure
from widthc.run import INHERITED, SEARCH
from widthc.sampling import WidthSet
from widthc.stages import refine
from widthc.train import TrainConfig, train_supernet


@pytest.fixture(scope="module")
def refined(tmp_path_factory):
    """A tiny regression run with 2 refinement epochs over 3 finalists per budget."""
    root = tmp_path_factory.mktemp("refine")
    (root / "model.py").write_text(REGRESSION)
    out = root / "run"
    argv = ["slim", str(root / "model.py"), "--flops", "50%", "--out", str(out), *TINY,
            "--refine-epochs", "2", "--refine-top", "3"]  # fmt: skip
    res = CliRunner().invoke(main, argv)
    assert res.exit_code == 0, res.output
    assert "finalist" in res.output and "uniform" in res.output
    return out


def _program():
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2)
    )
    return widthc.compile(model, torch.randn(2, 4))


def test_a_width_set_draws_each_of_its_widths_and_nothing_else():
    program = _program()
    widths = [program.space.choice(np.array(w)) for w in ([1, 1], [3, 2], [2, 3], [3, 2])]
    sampler, gen = WidthSet(widths), torch.Generator().manual_seed(0)
    assert sampler.widths == widths[:3]  # distinct, in order
    drawn = [sampler(gen) for _ in range(900)]
    counts = [sum(d == w for d in drawn) for w in widths[:3]]
    assert sum(counts) == 900 and all(250 < c < 350 for c in counts), counts
    with pytest.raises(WidthcError, match="at least one width"):
        WidthSet([])


def test_training_with_a_width_set_trains_exactly_those_widths(tmp_path):
    program = _program()
    widths = [program.space.choice(np.array(w)) for w in ([1, 3], [3, 1])]
    data = torch.utils.data.TensorDataset(torch.randn(128, 4), torch.randint(0, 2, (128,)))
    cfg = TrainConfig(epochs=1, batch_size=8, seed=3)
    net = widthc.supernet(program, offset=1)
    train_supernet(net, data, config=cfg, run_dir=tmp_path, widths=WidthSet(widths))
    log = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    gen = torch.Generator().manual_seed(3)
    replay = [[k for _, k in WidthSet(widths)(gen).ks()] for _ in log]
    assert [r["width"] for r in log] == replay and len(log) == 16
    assert {tuple(r["width"]) for r in log} == {(1, 3), (3, 1)}


def test_the_refinement_trains_the_finalists_and_the_uniform_width_only(refined):
    data = json.loads((refined / SEARCH).read_text())
    (result,) = data["results"]
    info = result["refined"]
    finalists = [tuple(f["width"]) for f in info["finalists"]]
    band = [h for h in result["history"] if 0.9 <= h["load"] <= 1.0]
    best_first = sorted(band, key=lambda h: -h["score"])
    assert finalists == list(dict.fromkeys(tuple(h["width"]) for h in best_first))[:3]
    assert [f["score_before"] for f in info["finalists"]] == [h["score"] for h in best_first[:3]]
    uniform = tuple(result["uniform"]["width"][str(g)]["bins"] for g in data["groups"])
    assert [tuple(w) for w in info["trained"]] == list(dict.fromkeys([*finalists, uniform]))
    log = [json.loads(line) for line in (refined / "refine" / "train.jsonl").read_text().split("\n")
           if line]  # fmt: skip
    assert len(log) == 2 * (192 // 32)  # --refine-epochs 2 of 6 steps
    assert {tuple(r["width"]) for r in log} <= set(map(tuple, info["trained"]))
    assert log[0]["lr"] == pytest.approx(refine.REFINE_LR_SCALE * 0.1)


def test_the_budget_takes_the_best_rescored_finalist_scored_on_the_refined_supernet(refined):
    ctx = Context.open(refined, progress=False)
    data = ctx.run.read_search()
    (result,) = data["results"]
    finalists = result["refined"]["finalists"]
    best = max(finalists, key=lambda f: f["score"])
    assert [result["width"][str(g)]["bins"] for g in data["groups"]] == best["width"]
    assert result["score"] == best["score"]
    program = ctx.program

    def score(net, width) -> float:
        scorer = MaxMax(net, ctx.calibration(), ctx.validation(), ctx.score_metric, seed=0)
        return scorer(program.space.choice(np.array(width))).value

    # re-scored on refine/supernet.pt, the first pass on supernet.pt (one at a time: supernets
    # of one program share its parameters)
    after = [score(ctx.supernet(trained=True), f["width"]) for f in finalists]
    before = [score(ctx.supernet(trained=True, refined=False), f["width"]) for f in finalists]
    assert after == pytest.approx([f["score"] for f in finalists], abs=1e-6)
    assert before == pytest.approx([f["score_before"] for f in finalists], abs=1e-6)
    assert any(abs(f["score"] - f["score_before"]) > 1e-4 for f in finalists)
    # the slimmed model holds the refined supernet's weights: it measures its score
    (folder,) = ctx.run.budget_dirs()
    small = widthc.load(folder / INHERITED)  # before retraining
    assert measure(small, ctx.splits.val, ctx.metric, ctx.device) == pytest.approx(
        best["score"], abs=1e-4
    )


def test_chosen_keeps_the_first_pass_order_on_ties():
    assert refine.chosen([0.5, 0.7, 0.7, 0.1]) == 1
    assert refine.chosen([0.9, 0.9]) == 0


def _searched_again(refined, tmp_path, *options: str):
    """A copy of the refined run, its search stage run again with `options`; its argv."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(refined, run)
    argv = ["search", str(run), "--flops", "50%", *options]
    res = CliRunner().invoke(main, argv)
    assert res.exit_code == 0, res.output
    return run, argv


def test_a_search_run_again_refines_its_own_finalists_afresh_and_a_rerun_resumes(refined, tmp_path):
    run, argv = _searched_again(refined, tmp_path, "--refine-epochs", "2", "--refine-top", "2")
    (result,) = json.loads((run / SEARCH).read_text())["results"]
    assert len(result["refined"]["finalists"]) == 2
    log = (run / "refine" / "train.jsonl").read_text().splitlines()
    assert len(log) == 12 and json.loads(log[0])["step"] == 1  # started afresh, not resumed
    res = CliRunner().invoke(main, argv)  # the same finalists and options: nothing to train
    assert res.exit_code == 0, res.output
    assert (run / "refine" / "train.jsonl").read_text().splitlines() == log
    (again,) = json.loads((run / SEARCH).read_text())["results"]
    assert {**again, "seconds": 0} == {**result, "seconds": 0}  # the search's time aside


def test_band_refinement_trains_inside_the_budgets_band_and_searches_again(refined, tmp_path):
    run, _ = _searched_again(refined, tmp_path, "--refine-epochs", "1", "--refine-widths", "band")
    ctx = Context.open(run, progress=False)
    (result,) = ctx.run.read_search()["results"]
    assert result["refined"]["trained"] == "band"
    low, high = ctx.bands()[0]
    log = [json.loads(line) for line in (run / "refine" / "train.jsonl").read_text().split("\n")
           if line]  # fmt: skip
    flops = ctx.program.flops_many(np.array([r["width"] for r in log]))
    assert len(log) == 6 and all(low <= f <= high for f in flops), (low, high, flops)
    # searched again on the refined supernet: every width of the history scored there
    net = ctx.supernet(trained=True)
    scorer = MaxMax(net, ctx.calibration(), ctx.validation(), ctx.score_metric, seed=0)
    for h in result["history"][:3]:
        assert scorer(ctx.program.space.choice(np.array(h["width"]))).value == pytest.approx(
            h["score"], abs=1e-6
        )
    assert result["score"] == max(h["score"] for h in result["history"] if h["load"] >= 0.9)


def test_an_unknown_set_of_widths_to_refine_is_refused_in_one_sentence(tmp_path):
    out = tmp_path / "run"
    argv = ["slim", str(tmp_path / "model.py"), "--flops", "50%", "--out", str(out),
            "--refine-epochs", "2", "--refine-widths", "all"]  # fmt: skip
    (tmp_path / "model.py").write_text(REGRESSION)
    res = CliRunner().invoke(main, argv)
    assert res.exit_code == 2 and not out.exists()
    assert "'all' is not one of 'finalists', 'band'" in res.stderr
