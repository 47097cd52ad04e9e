"""Latency budgets through the command line (a fake runtime: see conftest's `fake_clock`):
`--search uniform` meets and reports a latency budget, budgets of several kinds pair up into
one folder each, a second run measures nothing, `analyze --runtime` shows latency sensitivity,
and a whole run writes its limits, predicted and measured latencies where the report reads
them."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_tasks import CHEAP_TUNING  # the default's tuning, made cheap

from widthc.cli import main
from widthc.context import Context
from widthc.latency import timing
from widthc.report.rundir import load

ROOT = Path(__file__).resolve().parents[1]
MODEL = str(ROOT / "examples" / "model.py")
DIGITS = str(ROOT / "examples" / "mobilenet_digits.py")
FAST = ["--search", "uniform", "--runtime", "torch-cpu", "--latency-samples", "8"]


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_a_uniform_slim_meets_its_latency_budget_and_says_so(fake_clock, tmp_path):
    res = _run("slim", MODEL, "--latency", "60%", *FAST, "--out", tmp_path / "o")
    assert res.exit_code == 0, res.output
    widths = json.loads((tmp_path / "o" / "widths.json").read_text())
    assert widths["limits"][0]["kind"] == "latency" and widths["limits"][0]["text"] == "60%"
    latency = widths["latency"]
    assert latency["slim_ms"] <= latency["budget_ms"] == widths["limits"][0]["value"]
    assert latency["budget_ms"] == pytest.approx(0.6 * latency["original_ms"])
    assert abs(latency["predicted_ms"] / latency["slim_ms"] - 1) < 0.01  # the fake is linear
    assert "latency budget met" in res.output and "torch-cpu, 1 thread, batch 1" in res.output
    calls = len(fake_clock)
    again = _run("slim", MODEL, "--latency", "60%", *FAST, "--out", tmp_path / "o2")
    assert again.exit_code == 0, again.output
    assert len(fake_clock) == calls + 2  # nothing measured again but the slimmed model
    assert "measuring" not in again.output


def test_budgets_of_several_kinds_pair_into_one_folder_each(fake_clock, tmp_path):
    res = _run("slim", MODEL, "--flops", "50%,30%", "--latency", "70%", "--params", "80%", *FAST,
               "--out", tmp_path / "o")  # fmt: skip
    assert res.exit_code == 0, res.output
    folders = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert folders == ["flops-30pct+params-80pct+latency-70pct",
                       "flops-50pct+params-80pct+latency-70pct"]  # fmt: skip
    for folder in folders:
        widths = json.loads((tmp_path / "o" / folder / "widths.json").read_text())
        kinds = {lim["kind"]: lim["value"] for lim in widths["limits"]}
        assert widths["flops"]["after"] <= kinds["flops"]
        assert widths["params"]["after"] <= kinds["params"]
        assert widths["latency"]["predicted_ms"] <= kinds["latency"]


def test_analyze_shows_latency_sensitivity_next_to_flops(fake_clock):
    res = _run("analyze", MODEL, "--runtime", "torch-cpu", "--latency-samples", "8")
    assert res.exit_code == 0, res.output
    assert "µs/channel" in res.output and "predicted on torch-cpu, 1 thread, batch 1" in res.output
    plain = _run("analyze", MODEL)
    assert "µs/channel" not in plain.output and "measuring" not in plain.output


def test_a_run_under_a_latency_budget_records_its_limits_and_latencies(fake_clock, tmp_path):
    run = tmp_path / "run"
    res = _run(
        "slim", DIGITS, "--data", "digits", "--latency", "70%", "--runtime", "torch-cpu",
        "--latency-samples", "8", "--epochs", "1", "--population", "4", "--generations", "1",
        "--calib-batches", "2", "--retrain-epochs", "0", "--batch-size", "128", "--out", run,
        *CHEAP_TUNING,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    search = json.loads((run / "search.json").read_text())
    (result,) = search["results"]
    assert result["text"] == "latency 70%" and result["limits"][0]["kind"] == "latency"
    limit = result["limits"][0]["value"]
    assert result["latency"] <= limit and result["load"] <= 1
    assert all(h["load"] == pytest.approx(h["latency"] / limit) for h in result["history"])
    assert set(search["latency_model"]["full_by_layer"]) >= set(result["latency_by_layer"])
    data = load(run)
    (budget,) = data.budgets
    assert budget.folder.name == "latency-70pct"
    assert budget.latency_budget() == limit and budget.predicted() == result["latency"]
    assert budget.latency()["widthc"] <= limit  # measured after export, on the fake runtime
    config = json.loads((run / "config.json").read_text())
    analysis = json.loads((run / "analysis.json").read_text())
    assert config["align"] is None and analysis["align"] == 1  # auto: the fake has no block
    report = (run / "report.md").read_text()
    assert "latency_layers.png" in report and "latency.png" in report and "over its" not in report


def test_a_run_keeps_the_bins_it_was_analysed_with(tmp_path):
    """`widthc search RUN --latency 2ms` on a run trained without a latency budget: its config
    now asks for `--align auto`, but its supernet has the bins of its analysis."""
    (tmp_path / "config.json").write_text(json.dumps({"model": MODEL, "latency": ["2ms"]}))
    (tmp_path / "analysis.json").write_text(json.dumps({"align": 1}))
    ctx = Context.open(tmp_path)
    assert ctx.config.align_text == "auto" and ctx.align == 1
    (tmp_path / "analysis.json").unlink()
    fresh = Context.open(tmp_path)
    fresh.__dict__["block"] = 16  # measured once per machine; here, as if cached
    assert fresh.align == 16


def test_a_share_of_the_latency_is_of_the_fitted_model_on_a_machine_whose_load_drifts(
    fake_clock, monkeypatch, tmp_path
):
    """Every timing call runs at another speed (a shared machine whose load moves between
    chunks): `--latency 60%` is still 60% of the full model as the fitted model predicts it,
    and the slimmed model is compared with it as its share of the original's."""
    _drifting(monkeypatch)
    (tmp_path / "config.json").write_text(
        json.dumps(
            {"model": MODEL, "latency": ["60%"], "runtime": "torch-cpu", "latency_samples": 8}
        )
    )
    ctx = Context.open(tmp_path)
    (budget,) = ctx.budgets.values()
    full = ctx.program.space.full()
    assert budget.value("latency") == pytest.approx(0.6 * ctx.latency.latency_many(full[None])[0])
    assert budget.load(full[None])[0] == pytest.approx(1 / 0.6)
    res = _run("slim", MODEL, "--latency", "60%", *FAST, "--out", tmp_path / "o")
    assert res.exit_code == 0, res.output
    latency = json.loads((tmp_path / "o" / "widths.json").read_text())["latency"]
    share = latency["slim_ms"] / latency["original_ms"]
    assert latency["measured_ms"] == pytest.approx(share * latency["budget_ms"] / 0.6)
    assert ("latency budget met" in res.output) == (share <= 0.6)


def test_a_multi_stage_latency_budget_decays_from_the_full_models_predicted_latency(
    fake_clock, monkeypatch, tmp_path
):
    """Eq. 10 with a latency limit: stage t's limit is full - (full - target) t / T, where the
    full model's latency is the fitted model's (the scale the target is on), on a machine whose
    load drifts between timings."""
    _drifting(monkeypatch)
    run = tmp_path / "run"
    res = _run(
        "slim", DIGITS, "--data", "digits", "--latency", "70%", "--runtime", "torch-cpu",
        "--latency-samples", "8", "--stages", "2", "--alpha", "2", "--epochs", "1",
        "--population", "4", "--generations", "1", "--calib-batches", "2",
        "--retrain-epochs", "0", "--batch-size", "128", "--out", run, *CHEAP_TUNING,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    (result,) = json.loads((run / "search.json").read_text())["results"]
    target = result["limits"][0]["value"]
    full = target / 0.7
    for t, stage in enumerate(result["stages"], 1):
        (limit,) = stage["limits"]
        assert limit["kind"] == "latency"
        assert limit["value"] == pytest.approx(full - (full - target) * t / 2)


def _drifting(monkeypatch) -> None:
    """Every timing call (a chunk of widths beside the full model) at another speed."""
    speeds = itertools.cycle([1.0, 3.0, 0.5, 2.0, 1.5])
    monkeypatch.setattr(
        timing,
        "medians",
        lambda runners, rounds, clock="wall": [r.ms * next(speeds) for r in runners],
    )
