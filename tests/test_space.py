"""The width space (widthc/space.py through Program): exact JSON round trips, uniform widths by
ratio and by budget (met and maximal), random widths under a budget (met, and no group can grow
by one bin), determinism per seed, and budget errors that state the reachable range."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import zoo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import widthc
from widthc import space
from widthc.errors import WidthcError
from widthc.ir import GroupWidth, WidthChoice
from widthc.space import human

MODELS = ["chain", "residual", "depthwise", "grouped", "concat", "multi_io", "resnet18"]
SETTINGS = settings(
    max_examples=15, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)


@functools.cache
def _program(name: str) -> widthc.Program:
    model, inputs = zoo.small_model(name) if name in zoo.SMALL else zoo.torchvision_model(name)
    return widthc.compile(model, inputs)


def _grown(choice: WidthChoice, gids, program) -> WidthChoice:
    """`choice` with one more bin in each group of `gids` that is not full yet."""
    widths = {g: w.k for g, w in choice.widths}
    for g in gids:
        widths[g] = min(widths[g] + 1, len(program.groups[g].bins))
    return WidthChoice.of(widths)


# --- JSON ---------------------------------------------------------------------------------------


@st.composite
def _choices(draw):
    widths = {}
    for gid in draw(st.sets(st.integers(0, 500), max_size=8)):
        n_bins = draw(st.integers(1, 40))
        k = draw(st.integers(1, n_bins))
        free = draw(st.sets(st.integers(0, n_bins - 1), max_size=min(k, 4)))
        base = k - len(free)
        free = sorted(b for b in free if b >= base)
        widths[gid] = GroupWidth(k, tuple(free))
    return WidthChoice.of(widths)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(choice=_choices())
def test_choice_json_round_trip_is_exact(choice):
    text = json.dumps(choice.to_json())
    assert WidthChoice.from_json(json.loads(text)) == choice
    assert WidthChoice.from_json(text) == choice
    assert hash(WidthChoice.from_json(text)) == hash(choice)


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), j=st.integers(0, 100))
def test_round_trip_keeps_indices_of_every_candidate(seed, j):
    program = _program("residual")
    width = program.random(seed)
    cands = program.candidates(width)
    cand = cands[j % len(cands)]
    back = WidthChoice.from_json(json.dumps(cand.to_json()))
    assert back == cand
    for g in program.searchable:
        assert back.indices(g).tolist() == cand.indices(g).tolist()


# --- uniform ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("ratio", [0.01, 0.25, 0.5, 0.73, 1.0])
def test_uniform_ratio_keeps_the_closest_number_of_bins(name, ratio):
    program = _program(name)
    choice = program.uniform(ratio=ratio)
    assert {g for g, _ in choice.widths} == {g.id for g in program.searchable}
    for g in program.searchable:
        counts = [sum(g.bins[:k]) for k in range(1, len(g.bins) + 1)]
        kept = choice.channels(g) // g.blocks
        best = min(abs(c - ratio * g.block_size) for c in counts)
        assert abs(kept - ratio * g.block_size) == best, g.name
    if ratio == 1.0:
        assert choice == program.full()


@pytest.mark.parametrize("ratio", [0.0, -0.5, 1.01])
def test_uniform_ratio_out_of_range(ratio):
    with pytest.raises(WidthcError, match="ratio must be in"):
        _program("chain").uniform(ratio=ratio)


def test_uniform_needs_exactly_one_of_flops_and_ratio():
    program = _program("chain")
    with pytest.raises(WidthcError, match="exactly one"):
        program.uniform()
    with pytest.raises(WidthcError, match="exactly one"):
        program.uniform(flops=program.flops(), ratio=0.5)


@pytest.mark.parametrize("name", MODELS)
@SETTINGS
@given(fraction=st.floats(0.0, 1.0))
def test_uniform_budget_is_met_and_maximal(name, fraction):
    program = _program(name)
    lo, hi = program.flops(program.smallest()), program.flops()
    budget = lo + fraction * (hi - lo)
    choice = program.uniform(flops=budget)
    assert program.flops(choice) <= budget
    if choice != program.full():
        grown = _grown(choice, [g.id for g in program.searchable], program)
        assert program.flops(grown) > budget


def test_uniform_budget_at_full_is_full():
    program = _program("resnet18")
    assert program.uniform(flops=program.flops()) == program.full()


# --- random -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), fraction=st.floats(0.0, 1.0))
def test_random_budget_is_met_within_one_bin(name, seed, fraction):
    program = _program(name)
    lo, hi = program.flops(program.smallest()), program.flops()
    budget = lo + fraction * (hi - lo)
    choice = program.random(seed, flops=budget)
    program.validate(choice)
    assert program.flops(choice) <= budget
    for g in program.searchable:
        if choice.width(g.id).k < len(g.bins):
            assert program.flops(_grown(choice, [g.id], program)) > budget, g.name
    assert program.random(seed, flops=budget) == choice  # deterministic for a seed


def test_random_differs_between_seeds_and_is_deterministic():
    program = _program("resnet18")
    draws = [program.random(seed) for seed in range(6)]
    assert len(set(draws)) > 1
    assert draws == [program.random(seed) for seed in range(6)]
    budget = 0.5 * program.flops()
    under = {program.random(seed, flops=budget) for seed in range(6)}
    assert len(under) > 1


# --- budget errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["below", "above"])
def test_unreachable_budget_states_the_range(which):
    program = _program("residual")
    lo, hi = program.flops(program.smallest()), program.flops()
    budget = lo * 0.5 if which == "below" else hi * 1.5
    expected = f"between {human(lo)} and {human(hi)} FLOPs"
    with pytest.raises(WidthcError, match=expected):
        program.uniform(flops=budget)
    with pytest.raises(WidthcError, match=expected):
        program.random(0, flops=budget)


def test_smallest_reachable_budget_is_met_exactly():
    program = _program("concat")
    lo = program.flops(program.smallest())
    assert program.uniform(flops=lo) == program.smallest()
    assert program.random(3, flops=lo) == program.smallest()


# --- budgets of several kinds ---------------------------------------------------------------------


def _budget(program, **limits) -> space.Budget:
    costs = {"flops": program.flops_many, "params": program.params_many}
    return space.Budget([space.Limit(k, str(v), v) for k, v in limits.items()], costs)


def test_a_width_meets_a_budget_of_several_limits_when_it_meets_each():
    program = _program("resnet18")
    flops, params = 0.6 * program.flops(), 0.4 * program.params()
    budget = _budget(program, flops=flops, params=params)
    rng = np.random.default_rng(0)
    widths = rng.integers(1, program.space.n_bins + 1, (200, program.space.size))
    load = budget.load(widths)
    meets = (program.flops_many(widths) <= flops) & (program.params_many(widths) <= params)
    assert ((load <= 1) == meets).all() and meets.any() and not meets.all()
    for seed in range(4):  # random widths, repaired to the budget, meet both limits
        w = space.random(program.space, budget.load, np.random.default_rng(seed), 1.0)
        assert program.flops_many(w[None])[0] <= flops and program.params_many(w[None])[0] <= params
    u = space.uniform(program.space, budget.load, 1.0)
    assert budget.load(u[None])[0] <= 1
    assert budget.label == f"flops {flops} + params {params}"


def test_a_budget_out_of_reach_names_its_kind_and_range():
    program = _program("residual")
    lo, hi = program.params(program.smallest()), program.params()
    budget = _budget(program, params=0.5 * lo)
    with pytest.raises(WidthcError, match=f"a params budget of .* between {human(lo)} and"):
        budget.check({"params": (lo, hi, "")})
    latency = space.Budget([space.Limit("latency", "1us", 0.001)], {"latency": lambda w: w})
    with pytest.raises(
        WidthcError,
        match=r"latency budget of 0.001 ms is out of reach: the "
        r"smallest width runs 0.2 ms and the full model 1.5 ms on cpu \(measured\)",
    ):
        latency.check({"latency": (0.2, 1.5, " on cpu (measured)")})


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [("2ms", "latency", 2.0), ("2 ms", "latency", 2.0), ("500us", "latency", 0.5),
     ("500µs", "latency", 0.5), ("0.1s", "latency", 100.0), ("50%", "latency", 5.0),
     ("1M", "params", 1e6), ("25%", "params", 2.5)],
)  # fmt: skip
def test_parse_budgets_of_every_kind(text, kind, value):
    assert space.parse_budget(text, 10.0, kind) == pytest.approx(value)


@pytest.mark.parametrize("text", ["2", "2m", "ms", "-1ms", "2 m s", "2mss"])
def test_parse_latency_budget_rejects(text):
    with pytest.raises(WidthcError, match="is not a latency budget: write e.g. 2ms, 500us"):
        space.parse_budget(text, 10.0, "latency")


def test_budgets_of_several_kinds_pair_up():
    assert space.budget_specs(flops=["50%", "25%"], latency=["2ms"]) == [
        {"flops": "50%", "latency": "2ms"}, {"flops": "25%", "latency": "2ms"}]  # fmt: skip
    assert space.budget_specs(latency=["2ms", "1ms"], params=["1M", "2M"]) == [
        {"params": "1M", "latency": "2ms"}, {"params": "2M", "latency": "1ms"}]  # fmt: skip
    with pytest.raises(WidthcError, match="--flops gives 2 budgets and --latency 3"):
        space.budget_specs(flops=["50%", "25%"], latency=["3ms", "2ms", "1ms"])
    with pytest.raises(WidthcError, match="no budget: give --flops"):
        space.budget_specs()
    labels = [space.budget_label(s) for s in space.budget_specs(flops=["50%"], latency=["2ms"])]
    assert labels == ["flops 50% + latency 2ms"]
    assert space.budget_label({"flops": "50%"}) == "50%"  # a FLOPs budget alone: as before


def test_a_budget_moves_toward_its_limits_stage_by_stage():
    program = _program("residual")
    budget = _budget(program, flops=0.5 * program.flops(), params=0.6 * program.params())
    starts = {"flops": program.flops(), "params": program.params()}
    first, last = budget.toward(starts, 0.0), budget.toward(starts, 1.0)
    assert [lim.value for lim in first.limits] == [program.flops(), program.params()]
    assert [lim.value for lim in last.limits] == [lim.value for lim in budget.limits]
    half = budget.toward(
        starts, 0.5, {"flops": lambda w: 0 * w.sum(1), "params": lambda w: w.sum(1)}
    )
    assert half.value("flops") == pytest.approx(0.75 * program.flops())
    assert half.load(np.ones((1, 3)))[0] == pytest.approx(3 / half.value("params"))
