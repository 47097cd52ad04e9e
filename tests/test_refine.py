"""`--refine-epochs` (widthc/stages/refine.py): after the search, more min-min steps that train
only each budget's finalists and its uniform width, then the finalists scored again and the best
chosen. The steps train exactly that set; the finalists are the first pass's best widths in the
band; the budget's width is the best re-scored finalist, scored on the refined supernet, which
the later stages (slim) use. These runs score on shared weights (`--score-epochs 0`, the
paper's scoring); the default's tuned finalists after a refinement are tests/test_score_top_paths.py's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_tasks import REGRESSION, TINY, slim_run  # the tiny regression model file

import widthc
from widthc.cli import main
from widthc.context import Context
from widthc.errors import WidthcError
from widthc.evaluate import MaxMax, measure
from widthc.run import INHERITED, SEARCH
from widthc.sampling import WidthSet
from widthc.stages import refine
from widthc.train import TrainConfig, train_supernet

SHARED = ["--score-epochs", "0"]  # scored on the shared weights: refinement's own choice


@pytest.fixture(scope="module")
def refined(tmp_path_factory):
    """A tiny regression run with 2 refinement epochs over 3 finalists per budget."""
    root = tmp_path_factory.mktemp("refine")
    out, output = slim_run(root, REGRESSION, *SHARED, "--refine-epochs", "2", "--refine-top", "3")
    assert "finalist" in output and "uniform" in output
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
    assert "'all' is not one of 'finalists', 'corners', 'band'" in res.stderr


def _four_layers():
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                          nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2))  # fmt: skip
    return widthc.compile(model, torch.randn(2, 4))


def test_corners_starve_one_group_and_scale_the_others_alike_to_fill_the_band():
    from widthc.space import uniform

    program = _four_layers()
    space, flops = program.space, program.flops_many
    budget = 0.3 * float(flops(space.full()[None])[0])
    load = lambda w: flops(np.atleast_2d(w)) / budget  # noqa: E731
    searched = uniform(space, flops, budget)  # a width in the band, as a search's result is
    found = refine.corners(space, load, searched, 0.9)
    rows, kept = np.arange(space.size), space.channels[np.arange(space.size), searched]
    # the middle layer starved, the outer two at full width stay below the band: left out
    middle = np.where(rows == 1, 1, space.full())
    assert load(middle)[0] < 0.9 and {g for g, _ in found} == {0, 2} and len(found) == 6
    for g, width in found:
        i = int(np.flatnonzero(space.ids == g)[0])
        w = np.array(width)
        assert 0.9 <= load(w)[0] <= 1.0, (width, load(w))
        # the starved group at a narrow bin: nearest 1, 2 or 4 x its narrowest bin's channels
        cum = space.channels[i, 1 : space.n_bins[i] + 1]
        narrow = {int(np.abs(cum - m * cum[0]).argmin()) + 1 for m in (1, 2, 4)}
        assert w[i] in narrow and w[i] < searched[i]
        # the others: one common scale s >= 1 of the searched channels, the largest that fits
        others = rows != i
        assert np.all(w[others] >= searched[others])
        scales = np.linspace(1.0, 8.0, 3501)
        fits = [s for s in scales if load(_scaled(space, w, kept, i, s))[0] <= 1.0]
        assert np.array_equal(_scaled(space, w, kept, i, max(fits)), w)
    # the cap: one group, of those with corners the one whose narrowest bin frees the most FLOPs
    (g, _), *rest = refine.corners(space, load, searched, 0.9, groups=1)
    freed = {int(space.ids[i]): load(searched)[0] - load(np.where(rows == i, 1, searched))[0]
             for i in rows}  # fmt: skip
    assert freed[1] > max(freed[0], freed[2])  # the middle layer's frees most, but has none
    assert g == max((0, 2), key=freed.get) and all(h == g for h, _ in rest) and len(rest) == 2


def _scaled(space, width, kept, starved, s):
    """Brute force of the corner's rule: every group but `starved` at the bin nearest s x kept."""
    out = np.array(width)
    for j in range(space.size):
        if j != starved:
            cum = space.channels[j, 1 : space.n_bins[j] + 1]
            out[j] = int(np.abs(cum - s * kept[j]).argmin()) + 1
    return out


def test_corner_refinement_trains_the_corners_and_takes_the_best_rescored_width(tmp_path):
    deeper = "nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 3))"
    (tmp_path / "model.py").write_text(REGRESSION.replace("nn.Linear(16, 3))", deeper))
    run = tmp_path / "run"  # three hidden layers: two can be starved and the others fill 30%
    argv = ["slim", str(tmp_path / "model.py"), "--flops", "30%", "--out", str(run), *TINY, *SHARED,
            "--refine-epochs", "1", "--refine-top", "2", "--refine-widths", "corners"]  # fmt: skip
    res = CliRunner().invoke(main, argv)
    assert res.exit_code == 0, res.output
    ctx = Context.open(run, progress=False)
    data = ctx.run.read_search()
    (result,) = data["results"]
    info = result["refined"]
    searched = np.array(info["finalists"][0]["width"])  # the first pass's searched width
    budget = ctx.budgets[result["text"]]
    expected = [(g, w) for g, w in refine.corners(ctx.program.space, budget.load,
                                                  searched, 0.9)
                if list(w) not in [f["width"] for f in info["finalists"]]]  # fmt: skip
    assert expected and [(c["group"], tuple(c["width"])) for c in info["corners"]] == expected
    corners = [c["width"] for c in info["corners"]]
    assert all(0.9 <= budget.load(np.array(w))[0] <= 1.0 for w in corners)
    trained = set(map(tuple, info["trained"]))
    assert set(map(tuple, corners)) <= trained
    log = [json.loads(line) for line in (run / "refine" / "train.jsonl").read_text().split("\n")
           if line]  # fmt: skip
    assert {tuple(r["width"]) for r in log} <= trained and len(log) == 6
    # every candidate re-scored on the refined supernet; the budget's width is the best of all
    net = ctx.supernet(trained=True)
    scorer = MaxMax(net, ctx.calibration(), ctx.validation(), ctx.score_metric, seed=0)
    candidates = info["finalists"] + info["corners"]
    for c in candidates:
        assert scorer(ctx.program.space.choice(np.array(c["width"]))).value == pytest.approx(
            c["score"], abs=1e-6
        )
    best = max(candidates, key=lambda c: c["score"])
    assert [result["width"][str(g)]["bins"] for g in data["groups"]] == best["width"]
    assert result["score"] == best["score"]
