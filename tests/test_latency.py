"""The latency model (widthc/latency): its fit recovers a known per-layer cost exactly, its
vectorised and per-width costs agree, NNLS meets its optimality conditions, the channel block
rule reads known step patterns, and measuring caches every width (a second run measures
nothing). No test times anything for real: a fake runtime whose latency is a known function
of the slimmed model stands in for the clock."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
import zoo

import widthc
from widthc.errors import WidthcError
from widthc.latency import cache, measure, runtime, timing
from widthc.latency.align import COUNTS, block_of
from widthc.latency.model import DENSE, PER_CHANNEL, LatencyModel, Measurement, fit, fit_block, nnls


def _program(name: str = "depthwise", align: int = 1):
    model, inputs = zoo.small_model(name)
    return widthc.compile(model, inputs, align=align)


def _true_model(program, dense: float, per_channel: float, memory: float, overhead: float):
    """A latency model with one cost per kind: the fit can recover it exactly."""
    coefficients = {
        (owner, DENSE if n >= 2 else PER_CHANNEL): dense if n >= 2 else per_channel
        for owner, n in program.flops_table.owners()
    }
    return LatencyModel(program, coefficients, memory, overhead)


def test_the_fit_recovers_a_known_per_layer_cost_exactly():
    program = _program()
    truth = _true_model(program, dense=2e-7, per_channel=5e-6, memory=3e-8, overhead=0.05)
    rng = np.random.default_rng(0)
    widths = [rng.integers(1, program.space.n_bins + 1) for _ in range(40)]
    counts = program.space.counts(np.array(widths))
    ms = truth.latency_many(np.array(widths))
    fitted = fit(program, [Measurement(tuple(c), m) for c, m in zip(counts, ms)])
    test = rng.integers(1, program.space.n_bins + 1, (200, program.space.size))
    assert np.allclose(fitted.latency_many(test), truth.latency_many(test), rtol=1e-6)
    assert fitted.overhead == pytest.approx(0.05, rel=1e-4)


def test_vectorised_per_width_and_per_layer_latencies_agree():
    program = _program("residual")
    model = _true_model(program, dense=1e-7, per_channel=2e-6, memory=1e-8, overhead=0.1)
    rng = np.random.default_rng(1)
    widths = rng.integers(1, program.space.n_bins + 1, (20, program.space.size))
    many = model.latency_many(widths)
    for w, m in zip(widths, many):
        choice = program.space.choice(w)
        assert model.latency(choice) == pytest.approx(m, rel=1e-9)
        assert sum(model.per_layer(choice).values()) + model.overhead == pytest.approx(m)
    # a smaller width costs less with positive costs, and the model round-trips through JSON
    assert model.latency(program.smallest()) < model.latency(program.full())
    again = LatencyModel.from_json(program, json.loads(json.dumps(model.to_json())))
    assert np.allclose(again.latency_many(widths), many)


def test_channels_counted_in_blocks_pay_for_the_whole_block():
    program = _program("chain")
    plain = _true_model(program, 1e-7, 1e-6, 0.0, 0.0)
    blocked = LatencyModel(program, plain.coefficients, 0.0, 0.0, block=16)
    full = program.space.full()[None]
    assert blocked.latency_many(full)[0] >= plain.latency_many(full)[0]
    one = program.space.smallest()[None]  # a few channels cost a block of 16
    assert blocked.latency_many(one)[0] > plain.latency_many(one)[0]


@pytest.mark.parametrize("true_block", [1, 16])
def test_the_fit_counts_in_the_block_the_measurements_show(true_block):
    """Widths timed on layers that pay per channel (1-D convs: no NCHWc blocks) are fitted
    per channel although the runtime's block is 16; widths that pay whole blocks keep 16."""
    program = _program("chain")
    plain = _true_model(program, 1e-7, 1e-6, 1e-8, 0.01)
    truth = LatencyModel(program, plain.coefficients, 1e-8, 0.01, block=true_block)
    rng = np.random.default_rng(2)
    widths = np.array([rng.integers(1, program.space.n_bins + 1) for _ in range(40)])
    counts = program.space.counts(widths)
    measured = [Measurement(tuple(c), m) for c, m in zip(counts, truth.latency_many(widths))]
    fitted = fit_block(program, measured, 16)
    assert fitted.block == true_block
    test = rng.integers(1, program.space.n_bins + 1, (100, program.space.size))
    assert np.allclose(fitted.latency_many(test), truth.latency_many(test), rtol=1e-3)


def test_nnls_meets_its_optimality_conditions():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.normal(size=(30, 8)), rng.normal(size=30)
        x = nnls(a, b)
        w = a.T @ (b - a @ x)  # minus the gradient
        assert (x >= 0).all()
        assert np.all(w[x == 0] <= 1e-9) and np.allclose(w[x > 0], 0, atol=1e-9)


def test_the_block_rule_reads_step_patterns():
    counts = np.array(COUNTS, dtype=float)
    smooth = list(0.01 * counts)
    padded16 = list(0.02 * np.ceil(counts / 16) * 16 + 0.03 * (counts % 16 != 0))
    fast4 = [0.005 * c * (1 if c % 4 == 0 else 2) for c in counts]
    assert block_of({"a": smooth}) == 1
    assert block_of({"a": padded16}) == 16
    assert block_of({"a": fast4}) == 4
    assert block_of({"pointwise": padded16, "depthwise": fast4, "b": smooth}) == 16


# --- measuring, with a fake clock -----------------------------------------------------------


def test_measuring_caches_every_width_and_the_fit_predicts_them(fake_clock, tmp_path):
    program = _program()
    rt = runtime("torch-cpu")
    first = measure.Measurer(program, rt, tmp_path, echo=lambda *_: None, progress=False)
    model = first.model(12)
    assert fake_clock and first.file.is_file() and str(first.file).startswith(str(tmp_path))
    assert first.file.parent == cache.folder(tmp_path, rt)
    measured = {m.counts: m.ms for m in first.measured()}
    for w in measure.plan(program, 12):
        key = tuple(float(c) for c in program.space.counts(w)[0])
        assert model.latency_many(w[None])[0] == pytest.approx(measured[key], rel=1e-3)
    calls = len(fake_clock)
    second = measure.Measurer(program, rt, tmp_path, echo=lambda *_: None, progress=False)
    again = second.model(12)
    assert len(fake_clock) == calls  # nothing measured again
    assert again.to_json() == model.to_json()
    assert second.anchors()[1] == pytest.approx(0.02 + 1e-6 * program.flops())


def test_a_measurement_says_how_many_of_its_widths_were_cached(fake_clock, tmp_path):
    program = _program()
    widths = measure.plan(program, 6)
    said = []
    m = measure.Measurer(program, runtime("torch-cpu"), tmp_path, echo=said.append, progress=False)
    m.measure(widths[:2], "the first 2")
    m.measure(widths[:5], "the 5 finalists")
    m.measure(widths[:5], "the same 5")  # all cached: nothing measured, nothing said
    assert len(said) == 2
    assert said[0].startswith("latency: measuring the first 2 of ") and "cached" not in said[0]
    assert " (2 of them cached) on torch" in said[1] and "the 5 finalists" in said[1]


def test_a_damaged_cache_file_is_measured_again(fake_clock, tmp_path):
    program = _program("chain")
    rt = runtime("torch-cpu")
    m = measure.Measurer(program, rt, tmp_path, echo=lambda *_: None, progress=False)
    m.anchors()
    m.file.write_text("{not json")
    again = measure.Measurer(program, rt, tmp_path, echo=lambda *_: None, progress=False)
    assert again.records == []
    again.anchors()
    assert json.loads(again.file.read_text())["measurements"]


# --- runtimes -------------------------------------------------------------------------------


def test_runtimes_refuse_what_this_machine_cannot_run(monkeypatch):
    with pytest.raises(WidthcError, match="is not a runtime: choose one of onnxruntime-cpu"):
        runtime("tensorrt")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("torch-cuda", "onnxruntime-cuda"):
        with pytest.raises(WidthcError, match="needs a CUDA GPU"):
            runtime(name).check()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(WidthcError, match="needs onnxruntime .* which is not installed"):
        runtime("onnxruntime-cpu").check()
    assert runtime("torch-cpu").check().clock == "thread"
    assert runtime("torch-cpu", threads=2).clock == "wall"


def test_a_runtime_runs_the_model_at_its_batch_size(tmp_path):
    model, inputs = zoo.small_model("chain")
    seen = []
    model.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    runtime("torch-cpu", batch=4).runner(model, inputs, tmp_path)()
    assert seen == [4]
    run = runtime("onnxruntime-cpu", batch=3).runner(model, inputs, tmp_path)
    run()  # the exported file takes the batch through its dynamic axis
    assert list(tmp_path.glob("*.onnx"))


def test_timing_rotates_the_order_and_keeps_every_run():
    order = []
    runners = [lambda i=i: order.append(i) for i in range(3)]
    times = timing.times(runners, rounds=3, clock="thread")
    assert [len(t) for t in times] == [3, 3, 3]
    timed = order[3 * timing.WARMUP :]
    rounds = [sorted(timed[i : i + 3]) for i in range(0, 9, 3)]
    assert rounds == [[0, 1, 2]] * 3 and timed != [0, 1, 2] * 3  # each once, not always in order


class _Measured:
    """A measurer whose widths measure a known ms (by their first bin), at twice the model's
    scale (a machine slower now than when the model was fitted)."""

    def __init__(self, ms_by_first_bin: dict[int, float]):
        self.ms_by_first_bin, self.asked = ms_by_first_bin, []

    def measure(self, widths, what, again=False):
        self.asked += [tuple(w) for w in widths]

    def full_ms(self):
        return 2.0

    def ms(self, width):
        return 2 * self.ms_by_first_bin[int(width[0])]


def test_the_best_width_measured_within_a_latency_limit_wins():
    from types import SimpleNamespace

    from widthc.search import SearchResult
    from widthc.search.objective import Evaluation
    from widthc.space import Budget, Limit
    from widthc.stages.search import FINALISTS, measured_winner

    predicted = {1: 0.95, 2: 0.99, 3: 0.97, 4: 0.5, 5: 0.98}  # ms by the first bin = the load

    def predict(widths):
        return np.array([predicted[int(k)] for k in widths[:, 0]])

    budget = Budget([Limit("latency", "1ms", 1.0)], {"latency": predict})
    history = [Evaluation((k, 1), 0.0, score, 0, predicted[k])
               for k, score in [(1, 0.5), (2, 0.9), (3, 0.8), (4, 0.95), (5, 0.7)]]  # fmt: skip
    result = SearchResult(budget, "evolutionary", 0, history[1], history[0], history)
    echo = []
    measurer = _Measured({1: 0.9, 2: 1.2, 3: 0.99, 4: 0.5, 5: 0.9})  # the best measures over
    ctx = SimpleNamespace(measurer=measurer, echo=echo.append)
    model = SimpleNamespace(  # the full model: 1 ms on the budget's scale
        latency=lambda: 1.0, latency_many=predict
    )
    won, ratio = measured_winner(ctx, result, "1ms", (0.9, 1.0), model)
    assert won.best == history[2] and ratio is None  # the next best, measured within (0.99)
    assert measurer.asked == [(2, 1), (3, 1), (5, 1), (1, 1)]  # the band's, best first
    assert "3 of the 4 best widths measure within 1 ms" in echo[0]
    over = _Measured({1: 1.14, 2: 1.1, 3: 1.3, 4: 0.5, 5: 1.2})
    ctx = SimpleNamespace(measurer=over, echo=echo.append)
    same, ratio = measured_winner(ctx, result, "1ms", (0.9, 1.0), model)
    assert same.best == history[1] and FINALISTS >= 4
    assert ratio == pytest.approx(np.median([1.1 / 0.99, 1.3 / 0.97, 1.2 / 0.98, 1.14 / 0.95]))


def test_widths_measured_over_a_latency_limit_are_searched_again_under_a_corrected_one(
    monkeypatch,
):
    """On a machine where every width measures 1.25x the model's prediction, none of the first
    search's best widths meets the limit; the search runs again under limit / 1.25 predicted,
    and its best width measures within the limit."""
    from types import SimpleNamespace

    from widthc.config import SearchConfig
    from widthc.space import Budget, Limit
    from widthc.stages import search as stage

    monkeypatch.setattr(stage, "write", lambda *args, **kwargs: None)  # no run folder here
    program = _program("residual")
    model = _true_model(program, dense=1e-6, per_channel=1e-5, memory=1e-7, overhead=0.01)
    full = model.latency()

    class Slower:  # what the runtime measures: 1.25x the prediction
        def measure(self, widths, what, again=False):
            pass

        def full_ms(self):
            return full

        def ms(self, width):
            return 1.25 * float(model.latency_many(np.asarray(width)[None])[0])

    echo = []
    ctx = SimpleNamespace(
        program=program, measurer=Slower(), echo=echo.append, progress=False,
        config=SimpleNamespace(seed=0),
    )  # fmt: skip
    limit = 0.6 * full
    budget = Budget([Limit("latency", "60%", limit)], {"latency": model.latency_many})
    cfg = SearchConfig(search="random", samples=30)
    scorer = SimpleNamespace(cache={})

    def score(choice):  # wider is better
        s = SimpleNamespace(value=float(program.flops(choice)), candidate=0, candidates=[0.0])
        scorer.cache[choice.ks()] = s
        return s

    result, _ = stage.search_one(ctx, program, score, cfg, "60%", budget, [], model)
    assert "measured 1.25x their prediction; searching again" in " ".join(echo)
    assert 1.25 * model.latency_many(result.width[None])[0] <= limit
    assert result.budget is budget and result.best.load <= 1 / 1.25 + 1e-9


def test_widths_measured_after_the_fit_do_not_move_the_model(fake_clock, monkeypatch, tmp_path):
    """A search's finalists join the cache; the model (and so a run's budgets) stays the one
    fitted to its planned widths, on a machine whose speed differs between chunks."""
    speeds = iter([1.0, 3.0, 0.5, 2.0, 1.5] * 20)
    monkeypatch.setattr(
        timing,
        "medians",
        lambda runners, rounds, clock="wall": [r.ms * next(speeds) for r in runners],
    )
    program = _program()
    measurer = measure.Measurer(program, runtime("torch-cpu"), tmp_path, lambda *_: None, False)
    before = measurer.model(12).to_json()
    rng = np.random.default_rng(5)
    measurer.measure([rng.integers(1, program.space.n_bins + 1) for _ in range(20)], "finalists")
    assert measurer.model(12).to_json() == before
