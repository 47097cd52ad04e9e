"""The search (widthc/search/, widthc/evaluate.py, width arithmetic in widthc/space.py):

- searchers reach a known optimum (a separable concave utility under a linear FLOPs cost, whose
  exact optimum a dynamic program finds) and never return a width above the budget;
- `flops_many` equals `flops` on every width, and widths of another binning are refused;
- max-max: a width's score is the best of its candidates', checked by brute force against the
  physically slimmed sub-networks, recalibrated on the same batches;
- scoring leaves the supernet bit-for-bit unchanged, and same seed gives the same history.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np
import pytest
import torch
import zoo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import widthc
from widthc import search
from widthc import space as sp
from widthc.errors import WidthcError
from widthc.evaluate import MaxMax, accuracy, recalibrate, score_choice
from widthc.ir import ChannelGroup
from widthc.space import WidthSpace

SETTINGS = settings(
    max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)


# --- a problem with a known optimum -----------------------------------------------------------


def _problem(seed: int, groups: int = 6, bins: int = 8):
    """Linear FLOPs, separable concave utility sum a_g * sqrt(k_g): the exact optimum under the
    budget by dynamic programming over the (integer) costs."""
    rng = np.random.default_rng(seed)
    space = WidthSpace([ChannelGroup(id=i, n=bins, bins=(1,) * bins) for i in range(groups)])
    cost = rng.integers(1, 6, groups).astype(float)
    a = rng.uniform(0.5, 2.0, groups)
    budget = float(np.floor(cost.sum() * bins * rng.uniform(0.3, 0.7)))
    best = {0.0: 0.0}  # cost so far -> best utility
    for g in range(groups):
        nxt: dict[float, float] = {}
        for c, u in best.items():
            for k in range(1, bins + 1):
                if c + cost[g] * k <= budget:
                    v = u + a[g] * np.sqrt(k)
                    nxt[c + cost[g] * k] = max(nxt.get(c + cost[g] * k, -np.inf), v)
        best = nxt
    flops_many = lambda w: np.atleast_2d(w) @ cost  # noqa: E731
    score = lambda w: (float((a * np.sqrt(w)).sum()), 0)  # noqa: E731
    return space, flops_many, score, budget, max(best.values())


@pytest.mark.parametrize(
    "searcher, options, tolerance",
    [
        ("evolutionary", {"population": 20, "generations": 15}, 0.01),
        ("greedy", {}, 0.01),
        ("random", {"samples": 300}, 0.05),
    ],
)
def test_searchers_reach_the_known_optimum(searcher, options, tolerance):
    for seed in range(8):
        space, flops_many, score, budget, optimum = _problem(seed)
        result = search.search(space, flops_many, score, budget, searcher, seed=seed, **options)
        assert result.best.flops <= budget
        assert result.best.score >= (1 - tolerance) * optimum, (seed, result.best, optimum)
        assert result.best.score <= optimum + 1e-9


def test_search_never_returns_worse_than_its_uniform_baseline():
    space, flops_many, score, budget, _ = _problem(3)
    for searcher in search.SEARCHERS:
        result = search.search(space, flops_many, score, budget, searcher, seed=0, samples=5)
        assert result.history[0] == result.uniform  # the baseline is scored first
        assert result.best.score >= result.uniform.score


def test_cap_on_evaluated_widths():
    space, flops_many, score, budget, _ = _problem(1)
    result = search.search(space, flops_many, score, budget, "random", max_evals=7, samples=100)
    assert len(result.history) == 7
    result = search.search(space, flops_many, score, budget, "greedy", max_evals=5)
    assert result.best.flops <= budget  # greedy falls back to scaling down, scored past the cap


def test_same_seed_same_history_other_seed_other_history():
    space, flops_many, score, budget, _ = _problem(2)
    runs = [
        search.search(space, flops_many, score, budget, "evolutionary", seed=s, generations=3)
        for s in (0, 0, 1)
    ]
    assert runs[0].history == runs[1].history
    assert runs[0].history != runs[2].history


def test_bad_search_options_are_clear_errors():
    space, flops_many, score, budget, _ = _problem(0)
    with pytest.raises(WidthcError, match="unknown searcher 'annealing'"):
        search.search(space, flops_many, score, budget, "annealing")
    with pytest.raises(WidthcError, match="out of reach"):
        search.search(space, flops_many, score, 0.5, "random")
    with pytest.raises(WidthcError, match="band"):
        search.search(space, flops_many, score, budget, "random", band=(1.1, 1.0))


def test_pareto_front():
    e = search.Evaluation
    history = [e((1,), 10, 0.5, 0), e((2,), 20, 0.4, 0), e((3,), 30, 0.7, 0), e((4,), 5, 0.1, 0)]
    assert [x.width for x in search.pareto_front(history)] == [(4,), (1,), (3,)]


# --- width arithmetic on real programs ------------------------------------------------------------

MODELS = ["chain", "residual", "depthwise", "grouped", "concat", "multi_io"]


@functools.cache
def _program(name: str) -> widthc.Program:
    model, inputs = zoo.small_model(name)
    return widthc.compile(model, inputs, beta=2.0)


@pytest.mark.parametrize("name", MODELS)
@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), fraction=st.floats(0.0, 1.0))
def test_flops_many_equals_flops_and_searches_meet_the_budget(name, seed, fraction):
    program = _program(name)
    space = program.space
    rng = np.random.default_rng(seed)
    widths = rng.integers(1, space.n_bins + 1, size=(16, space.size))
    many = program.flops_many(widths)
    for w, f in zip(widths, many):
        assert f == program.flops(space.choice(w))
        assert program.params_many(w[None])[0] == program.params(space.choice(w))
    lo, hi = program.flops(program.smallest()), program.flops()
    budget = lo + fraction * (hi - lo)
    score = lambda w: (float(rng.random()), 0)  # noqa: E731 - any score: the budget must hold
    for searcher in search.SEARCHERS:
        result = search.search(
            space, program.flops_many, score, budget, searcher, seed=seed, samples=10,
            population=4, generations=2, max_evals=60,
        )  # fmt: skip
        assert result.best.flops <= budget
        assert program.flops(space.choice(result.width)) <= budget


def test_widths_of_another_binning_are_refused():
    program = _program("residual")
    coarse = program.rebin(4.0)
    assert coarse.binning != program.binning
    assert program.bins != coarse.bins and program.rebin(2.0).binning == program.binning
    width = coarse.random(0)
    assert width.binning == coarse.binning
    with pytest.raises(WidthcError, match="another binning"):
        program.flops(width)
    with pytest.raises(WidthcError, match="another binning"):
        widthc.supernet(program).set_choice(width)
    assert coarse.flops(width) <= coarse.flops()  # its own program takes it
    assert program.flops(width.__class__.of(dict(width.widths))) > 0  # unstamped: checked only


def test_rebin_leaves_the_program_unchanged():
    program = _program("depthwise")
    before = [(g.id, g.bins) for g in program.groups]
    other = program.rebin(8.0)
    assert [(g.id, g.bins) for g in program.groups] == before
    assert other.groups is not program.groups


def test_flops_are_per_sample():
    model, _ = zoo.small_model("residual")
    one = widthc.compile(model, torch.randn(1, 3, 16, 16))
    four = widthc.compile(model, torch.randn(4, 3, 16, 16))
    assert one.flops() == four.flops()
    assert one.bins == four.bins
    assert [g.sensitivity for g in one.groups] == [g.sensitivity for g in four.groups]


def test_one_bin_groups_are_reported_as_fixed():
    model, inputs = zoo.small_model("residual")
    program = widthc.compile(model, inputs, beta=1000.0)  # every bin wider than its group
    fixed = program.to_json()["fixed_by_bins"]
    assert fixed == [g.id for g in program.searchable]
    assert program.to_json()["search_space_log10"] == 0.0


# --- max-max scoring ------------------------------------------------------------------------


def _trained_like(name: str = "residual"):
    """A zoo model with random batch-norm statistics, its program, supernet and data."""
    model, inputs = zoo.small_model(name)
    program = widthc.compile(model, inputs, beta=2.0)
    net = widthc.supernet(program, offset=1)
    g = torch.Generator().manual_seed(0)
    calib = [torch.randn(8, 3, 16, 16, generator=g) for _ in range(3)]
    val = [(torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g))]
    return program, net, calib, val


def _state_hash(net) -> str:
    h = hashlib.sha256()
    for k, v in net.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _mean_logit(out, y) -> float:
    return float(out.mean())  # a metric that tells any two sub-networks apart


def test_max_max_is_the_best_candidate_by_brute_force():
    program, net, calib, val = _trained_like()
    scorer = MaxMax(net, calib, val, metric=_mean_logit)
    for seed in range(3):
        width = program.random(seed, flops=0.6 * program.flops())
        score = scorer(width)
        brute = []
        for cand in program.candidates(width):
            small = widthc.slim(program, cand)  # its own copy of the weights and statistics
            recalibrate(small, calib)
            small.eval()
            with torch.no_grad():
                brute.append(np.mean([_mean_logit(small(x), y) for x, y in val]))
        assert len(score.candidates) == len(brute) == 3
        np.testing.assert_allclose(score.candidates, brute, rtol=1e-5, atol=1e-6)
        assert score.value == max(score.candidates)
        assert score.candidate == int(np.argmax(score.candidates))
    assert scorer(width) is scorer(width)  # cached


def test_scoring_leaves_the_supernet_bit_for_bit_unchanged():
    program, net, calib, val = _trained_like("depthwise")
    net.train()
    before = _state_hash(net)
    rng_before = torch.get_rng_state()
    scorer = MaxMax(net, calib, val)
    result = search.search(
        program.space, program.flops_many, scorer.on(program.space), 0.5 * program.flops(),
        "evolutionary",
        population=4, generations=2,
    )  # fmt: skip
    assert len(result.history) >= 3  # every candidate of every width scored exactly once
    assert scorer.scored == sum(
        len(program.candidates(program.space.choice(e.width))) for e in result.history
    )
    assert _state_hash(net) == before
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert net.training and net.choice == program.full()


def test_recalibration_sees_only_the_active_channels():
    program, net, calib, _ = _trained_like()
    choice = program.uniform(ratio=0.5)
    with net.isolated(choice) as gm:
        recalibrate(gm, calib)
        stats = {
            n: m.running_mean.clone()
            for n, m in gm.named_modules()
            if isinstance(m, torch.nn.BatchNorm2d)
        }
    small = widthc.slim(program, choice)
    recalibrate(small, calib)
    for n, m in small.named_modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert stats[n].shape == m.running_mean.shape  # sliced: only the kept channels
            torch.testing.assert_close(stats[n], m.running_mean, rtol=1e-5, atol=1e-6)


def test_score_does_not_depend_on_order():
    program, net, calib, val = _trained_like()
    a, b = program.uniform(ratio=0.5), program.uniform(ratio=0.75)
    first = [score_choice(net, c, calib, val, accuracy) for c in (a, b)]
    second = [score_choice(net, c, calib, val, accuracy) for c in (b, a)][::-1]
    assert first == second


def test_uniform_bins_are_equal_channel_counts():
    program = _program("residual")
    even = program.rebin(program.beta, uniform=4)
    assert even.uniform_bins == 4 and even.binning != program.binning
    for g in even.searchable:
        assert len(g.bins) <= 4 and sum(g.bins) == g.block_size
        assert len(set(g.bins[:-1])) <= 1 and g.bins[-1] <= g.bins[0]


def test_analyze_says_which_groups_are_fixed_by_their_bins():
    from pathlib import Path

    from click.testing import CliRunner

    from widthc.cli import main

    example = str(Path(__file__).resolve().parents[1] / "examples" / "model.py")
    out = CliRunner().invoke(main, ["analyze", example, "--beta", "40"], terminal_width=200)
    assert out.exit_code == 0, out.output
    assert out.output.count("fixed by its bins") == 4 and "(4 fixed by their bins)" in out.output
    assert "10^0.0 widths" in out.output
    out = CliRunner().invoke(main, ["analyze", example], terminal_width=200)
    assert "fixed by" not in out.output


@pytest.mark.parametrize("searcher", sorted(search.SEARCHERS))
def test_searches_meet_every_limit_of_a_budget(searcher):
    program = _program("residual")
    space = program.space
    flops, params = 0.7 * program.flops(), 0.5 * program.params()
    costs = {"flops": program.flops_many, "params": program.params_many}
    budget = sp.Budget([sp.Limit("flops", "70%", flops), sp.Limit("params", "50%", params)], costs)
    rng = np.random.default_rng(0)
    score = lambda w: (float(np.sum(w) + rng.random()), 0)  # noqa: E731 - wider scores higher
    result = search.search(
        space, program.flops_many, score, budget, searcher, seed=0, samples=20, population=6,
        generations=3, max_evals=80,
    )  # fmt: skip
    w = result.width[None]
    assert program.flops_many(w)[0] <= flops and program.params_many(w)[0] <= params
    assert result.best.load == pytest.approx(budget.load(w)[0]) and result.best.load <= 1
    assert all(e.load == pytest.approx(budget.load(np.array(e.width)[None])[0])
               for e in result.history)  # fmt: skip


def test_a_flops_number_and_a_flops_budget_search_alike():
    program = _program("depthwise")
    target = 0.5 * program.flops()
    runs = []
    for budget in (target, sp.Budget.of_flops(program.flops_many, target)):
        rng = np.random.default_rng(1)
        score = lambda w, rng=rng: (float(rng.random()), 0)  # noqa: E731
        r = search.search(program.space, program.flops_many, score, budget, "evolutionary",
                          seed=3, population=6, generations=3)  # fmt: skip
        runs.append([(e.width, e.flops, e.score) for e in r.history])
    assert runs[0] == runs[1]
