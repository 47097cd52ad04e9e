"""The run report: report.md, its figures and the terminal table, from fake run directories.

The run directories are written here as JSON (no training): a few channel groups, two budgets,
a search history of 50 widths per budget, a supernet training log.
"""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from rich.console import Console

from widthc import machine
from widthc.errors import WidthcError
from widthc.report import onnx_latency, summary_table, write_report
from widthc.report.figures import bins_figure, search_figure, widths_figure
from widthc.report.markdown import SAME_CPU, TIMED
from widthc.report.rundir import load

# id, name, channels, bins (None: frozen, with the reason)
GROUPS = [
    (0, "stem.0", 32, [1] * 32, None),
    (1, "block1.0.0", 64, [4] * 16, None),
    (2, "block2.0.0", 64, [4] * 16, None),
    (3, "roll", 16, [], "touches unknown op `roll` at node `roll`"),
    (4, "down.0", 64, [34, 30], None),
    (5, "head", 10, [], "output of the network at node `output`"),
]
SEARCHABLE = [g for g in GROUPS if g[4] is None]
BUDGETS = {"50%": 40.5e6, "25%": 20.3e6}  # FLOPs per sample of a 81.1M model
TEST_ACC = {"50%": (0.912, 0.887), "25%": (0.871, 0.802)}
LATENCY = {"50%": (0.512, 0.534), "25%": (0.301, 0.322)}


def _write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _config(**overrides) -> dict:
    return {
        "model": "examples/model.py",
        "data": "digits",
        "flops": list(BUDGETS),
        "search": "evolutionary",
        "seed": 0,
        "epochs": 3,
        "retrain_epochs": 2,
        "finetune": False,
        "input_shape": "1,3,32,32",
        "command": "widthc slim examples/model.py --data digits --flops 50%,25% --out run",
        "versions": {"widthc": "0.1.0", "torch": "2.14.1"},
        **overrides,
    }


def _analysis() -> dict:
    return {
        "model": "model",
        "flops": 81.1e6,
        "params": 94310,
        "groups": [
            {
                "id": i,
                "name": name,
                "channels": n,
                "searchable": why is None,
                "frozen": [] if why is None else [why],
                "bins": bins,
                "blocks": 1,
                "sensitivity": 1e5,
                "producers": [name],
                "consumers": [f"{name}_reader"],
            }
            for i, name, n, bins, why in GROUPS
        ],  # fmt: skip
        "fixed_by_bins": [],
        "searchable_channel_fraction": 0.96,
        "search_space_log10": 4.2,
    }


def _kept(rng, share: float) -> dict[int, int]:
    """Channels kept per searchable group, about `share` of each."""
    return {
        i: max(1, int(n * min(1.0, share * rng.uniform(0.6, 1.4)))) for i, _, n, *_ in SEARCHABLE
    }


def _search(rng) -> dict:
    results = []
    for text, budget in BUDGETS.items():
        history = []
        for j in range(50):
            flops = budget * rng.uniform(0.6, 1.0)
            history.append({"width": [int(k) for k in rng.integers(1, 16, len(SEARCHABLE))],
                            "flops": flops, "score": 0.5 + 0.4 * flops / 81.1e6 + rng.normal(0, 0.02),
                            "candidate": j % 3})  # fmt: skip
        best = max(history, key=lambda h: h["score"])
        kept, uniform = _kept(rng, budget / 81.1e6), _kept(rng, budget / 81.1e6)
        results.append({
            "budget": budget, "text": text, "searcher": "evolutionary", "seed": 0,
            "width": {str(g): {"channels": c, "bins": c} for g, c in kept.items()},
            "candidate": best["candidate"], "flops": best["flops"], "params": 50e3,
            "score": best["score"], "history": history,
            "uniform": {"width": {str(g): {"channels": c, "bins": c} for g, c in uniform.items()},
                        "flops": budget * 0.97, "score": best["score"] - 0.03},
        })  # fmt: skip
    return {"groups": [g[0] for g in SEARCHABLE], "results": results, "complete": True}


def _budget_files(run: Path, result: dict, with_latency: bool = True) -> None:
    text = result["text"]
    folder = run / ("flops-" + text.replace("%", "pct"))

    def groups(width: dict) -> list[dict]:
        return [
            {"id": i, "name": name, "searchable": why is None, "channels_before": n,
             "channels_after": width[str(i)]["channels"] if why is None else n}
            for i, name, n, _, why in GROUPS
        ]  # fmt: skip

    _write(folder / "widths.json", {
        "budget": {"text": text, "flops": result["budget"]},
        "groups": groups(result["width"]),
        "flops": {"before": 81.1e6, "after": result["flops"]},
        "params": {"before": 94310, "after": result["params"]},
        "checks": {"onnx": 3e-6},
        "uniform": {"groups": groups(result["uniform"]["width"]),
                    "flops": result["uniform"]["flops"], "params": 47e3},
    })  # fmt: skip
    widthc_acc, uniform_acc = TEST_ACC[text]
    metrics = {
        "test": {"widthc": widthc_acc, "uniform": uniform_acc, "original": 0.934},
        "retrain": {"epochs": 2, "finetune": False},
    }
    if with_latency:
        slim, uniform = LATENCY[text]
        metrics["latency_ms"] = {"original": 1.024, "widthc": slim, "uniform": uniform}
    _write(folder / "metrics.json", metrics)


def fake_run(path: Path, config: dict | None = None, full: bool = True) -> Path:
    """A run directory: config + analysis; with `full` every later file of a finished run."""
    rng = np.random.default_rng(0)
    path.mkdir(parents=True, exist_ok=True)
    _write(path / "config.json", config or _config())
    _write(path / "analysis.json", _analysis())
    if not full:
        _write(path / "stages.json", {"analyze": {"done": True, "seconds": 1.2}})
        return path
    search = _search(rng)
    _write(path / "search.json", search)
    for result in search["results"]:
        _budget_files(path, result)
    stages = ("analyze", "train", "search", "slim", "export", "retrain")
    _write(
        path / "stages.json",
        {s: {"done": True, "seconds": 2.5 * i + 1} for i, s in enumerate(stages)},
    )
    log = [{"step": s, "epoch": s // 20, "loss": 2.3 * np.exp(-s / 30) + rng.uniform(0, 0.2),
            "lr": 0.1} for s in range(60)]  # fmt: skip
    log += [
        {"epoch": e, "val_acc_largest": 0.6 + 0.1 * e, "val_acc_smallest": 0.4 + 0.1 * e}
        for e in range(3)
    ]
    (path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    return path


def _links(report: str) -> list[str]:
    return re.findall(r"\]\(([^)]+)\)", report)


def test_report_links_every_png_it_wrote_and_every_link_exists(tmp_path):
    run = fake_run(tmp_path / "run")
    path = write_report(run)
    assert path == run / "report.md"
    report = path.read_text()
    links = _links(report)
    assert all((run / link).is_file() for link in links)
    written = {p.name for p in run.glob("*.png")}
    assert written == {"widths.png", "bins.png", "search.png", "retrained.png", "training.png"}
    assert written == {link for link in links if link.endswith(".png")}
    assert "flops-50pct/slim.onnx" not in links  # no ONNX file in this run: no link to one
    assert not list(run.glob("*.tmp"))
    for png in sorted(run.glob("*.png")):
        image = imread(png)
        assert image.shape[0] > 200 and image.shape[1] > 200, png.name
        colours = np.unique(image.reshape(-1, image.shape[-1]), axis=0)
        assert len(colours) > 20, f"{png.name} is nearly blank"


def test_report_states_the_numbers_of_the_run(tmp_path):
    run = fake_run(tmp_path / "run")
    report = write_report(run).read_text()
    row = next(line for line in report.splitlines() if line.startswith("| 25% (20.3M) |"))
    assert "87.1%" in row and "80.2%" in row  # test accuracy widthc, uniform
    assert "0.301 ms / 0.322 ms / 1.02 ms" in row and "0.29×" in row
    assert "81.1M → " in row
    assert (
        "```\nwidthc slim examples/model.py --data digits --flops 50%,25% --out run\n```" in report
    )
    frozen = report.split("## Frozen channel groups")[1].split("##")[0]
    assert "output of the network at node `output`" in frozen
    assert "touches unknown op `roll` at node `roll`" in frozen
    assert "| 3 | 16 | roll → roll_reader |" in frozen
    assert "| retrain | yes | 13.5 s |" in report
    assert "Warning" not in report  # a finished run on real data with retraining


def test_warnings_come_first(tmp_path):
    run = fake_run(tmp_path / "run", _config(data="synthetic", retrain_epochs=0))
    lines = write_report(run).read_text().splitlines()
    assert "random data" in lines[0] and "mean nothing" in lines[0]
    assert any("no retraining" in line for line in lines[:5])


def test_partial_run_gets_a_report_that_names_what_is_missing(tmp_path):
    run = fake_run(tmp_path / "run", full=False)
    report = write_report(run).read_text()
    assert "partial run: stages not finished: train, search, slim, export, retrain" in report
    assert "no search.json results (the search has not run)" in report
    assert "no searched width yet" in report
    assert "no test accuracy yet" in report
    assert "no train.jsonl" in report
    assert [p.name for p in run.glob("*.png")] == ["bins.png"]  # the analysis alone gives fig. 5
    assert all((run / link).is_file() for link in _links(report))
    assert "| 50% | - | - |" in report  # the configured budgets, nothing measured yet


def test_an_empty_or_damaged_run_still_gets_a_report(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "search.json").write_text('{"results": [')  # torn
    (run / "train.jsonl").write_text('{"step": 0, "loss": 2.0}\n{"step": 1, "lo')
    report = write_report(run).read_text()
    assert "search.json could not be read" in report
    assert "train.jsonl: 1 line(s) could not be read" in report
    with pytest.raises(WidthcError, match="no run directory"):
        write_report(tmp_path / "missing")


def test_figure4_draws_the_retained_ratio_per_group_in_graph_order(tmp_path):
    run = load(fake_run(tmp_path / "run"))
    widths = json.loads((run.path / "flops-50pct" / "widths.json").read_text())
    expected = [
        g["channels_after"] / g["channels_before"] for g in widths["groups"] if g["searchable"]
    ]
    uniform = [
        g["channels_after"] / g["channels_before"]
        for g in widths["uniform"]["groups"]
        if g["searchable"]
    ]
    ax = widths_figure(run).axes[0]
    lines = {line.get_label(): line for line in ax.lines}
    assert np.allclose(lines["50%: widthc"].get_ydata(), expected)
    assert np.allclose(lines["50%: uniform"].get_ydata(), uniform)
    assert lines["50%: uniform"].get_linestyle() == "--"
    assert [t.get_text() for t in ax.get_xticklabels()] == [g[1] for g in SEARCHABLE]


def test_figure5_and_the_search_front(tmp_path):
    run = load(fake_run(tmp_path / "run"))
    size_ax, count_ax = bins_figure(run).axes
    assert [p.get_height() for p in size_ax.patches] == [g[3][0] for g in SEARCHABLE]
    assert [p.get_height() for p in count_ax.patches] == [len(g[3]) for g in SEARCHABLE]
    ax = search_figure(run).axes[0]
    (front,) = [line for line in ax.lines if line.get_label() == "Pareto front"]
    fx, fy = front.get_xdata(), front.get_ydata()
    points = [(h["flops"], h["score"]) for r in run.search["results"] for h in r["history"]]
    assert np.all(np.diff(fx) > 0) and np.all(np.diff(fy) > 0)
    assert set(zip(fx, fy)) <= set(points)
    for f, s in points:  # every scored width is on the front or beaten by a point of it
        assert s <= max(y for x, y in zip(fx, fy) if x <= f)
    budgets = sorted(line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == ":")
    assert budgets == sorted(BUDGETS.values())


def _rows(table) -> list[str]:
    console = Console(file=io.StringIO(), width=250, record=True)
    console.print(table)
    return [line for line in console.export_text().splitlines() if "%" in line and "│" in line]


def test_summary_table_has_one_row_per_budget_with_the_metrics(tmp_path):
    run = fake_run(tmp_path / "run")
    after = {
        r["text"]: r["flops"] for r in json.loads((run / "search.json").read_text())["results"]
    }
    table = summary_table(run)
    assert table.row_count == 2
    rows = _rows(table)
    for text, row in zip(BUDGETS, [r for r in rows if r.split("│")[1].strip() in BUDGETS]):
        assert row.split("│")[1].strip() == text
        widthc_acc, uniform_acc = TEST_ACC[text]
        assert f"{100 * widthc_acc:.1f}%" in row and f"{100 * uniform_acc:.1f}%" in row
        slim = LATENCY[text][0]
        assert f"{slim:.3g} ms {slim / 1.024:.2f}×" in row
        assert f"{after[text] / 1e6:.4g}M ({after[text] / 81.1e6:.0%})" in row  # FLOPs kept
    assert "original: 81.1M FLOPs, 94.31K params, 1.02 ms" in str(table.title)
    synthetic = summary_table(fake_run(tmp_path / "smoke", _config(data="synthetic")))
    assert "mean nothing" in str(synthetic.caption)


@pytest.fixture(scope="module")
def onnx_pair(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny model and one about 100× its FLOPs, as ONNX files on a 1×3×16×16 input."""
    folder = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    small = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.Flatten())
    large = torch.nn.Sequential(
        torch.nn.Conv2d(3, 64, 3, padding=1),
        torch.nn.Conv2d(64, 64, 3, padding=1),
        torch.nn.Flatten(),
    )
    paths = folder / "small.onnx", folder / "large.onnx"
    for model, path in zip((small, large), paths):
        torch.onnx.export(model.eval(), (torch.randn(1, 3, 16, 16),), str(path), dynamo=False)
    return paths


def test_onnx_latency_measures_each_file(onnx_pair):
    small, large = onnx_latency(list(onnx_pair), (1, 3, 16, 16), repeats=10)
    assert 0 < small < large  # side by side, the ~100× larger model is the slower one
    with pytest.raises(WidthcError, match="does not exist"):
        onnx_latency([onnx_pair[0].with_name("none.onnx")], (1, 3, 16, 16))
    with pytest.raises(WidthcError, match="cannot run"):
        onnx_latency([onnx_pair[0]], (1, 5, 16, 16))


def test_summary_measures_latency_the_run_did_not_record(tmp_path, onnx_pair):
    run = fake_run(tmp_path / "run")
    for result in json.loads((run / "search.json").read_text())["results"]:
        _budget_files(run, result, with_latency=False)
    small, large = onnx_pair
    shutil.copy(large, run / "original.onnx")
    shutil.copy(small, run / "flops-50pct" / "slim.onnx")
    _write(run / "config.json", _config(input_shape="1,3,16,16"))
    table = summary_table(run)
    (row50, row25) = _rows(table)
    (slim, times) = re.findall(r"([\d.]+) ms ([\d.]+)×", row50)[0]
    (original,) = re.findall(r"([\d.]+) ms\)", str(table.title))
    assert 0 < float(slim) < float(original)  # measured side by side: the small model is faster
    assert abs(float(times) - float(slim) / float(original)) < 0.02
    assert row25.split("│")[4].strip() == "-"  # no ONNX file for this budget
    report = write_report(run).read_text()
    assert "[flops-50pct/slim.onnx](flops-50pct/slim.onnx)" in report


def _with_latency(run: Path, limit: float) -> None:
    """The fake run as if searched under a latency budget of `limit` ms on its first budget:
    limits, predicted latencies per width and per layer, and the latency model."""
    search = json.loads((run / "search.json").read_text())
    first = search["results"][0]
    first["limits"] = [{"kind": "latency", "text": f"{limit}ms", "value": limit}]
    for r in search["results"]:
        for h in [r, r["uniform"], *r["history"]]:
            h["latency"] = 0.1 + 1e-8 * h["flops"]
        r["latency_by_layer"] = {"stem.0": 0.05, "block1.0.0": 0.1}
    search["latency_model"] = {"runtime": "onnxruntime-cpu, 1 thread, batch 1", "overhead_ms": 0.1,
                               "full_by_layer": {"stem.0": 0.1, "block1.0.0": 0.3}}  # fmt: skip
    _write(run / "search.json", search)


def test_a_latency_budget_missed_is_said_first_and_in_the_table(tmp_path):
    run = fake_run(tmp_path / "run")
    _with_latency(run, limit=0.4)  # the 50% budget's slim.onnx measured 0.512 ms
    report = write_report(run).read_text()
    first = report.split("# widthc report")[0]
    assert "budget 50%: the slimmed model measured 0.50x the original's, 0.512 ms on " \
        "onnxruntime-cpu, 28% over its 0.4 ms budget (predicted" in first  # fmt: skip
    assert "budget 25%" not in first  # no latency budget there: nothing to miss
    assert {"latency.png", "latency_layers.png"} <= set(_links(report))
    console = Console(file=io.StringIO(), width=200)
    console.print(summary_table(run))
    assert "28% over its 0.4 ms budget" in " ".join(console.file.getvalue().split())
    _with_latency(run, limit=0.6)  # met: no warning
    assert "over its" not in write_report(run).read_text()
    _with_latency(run, limit=0.4)  # its share of the original on the budget's scale: met
    metrics = run / "flops-50pct" / "metrics.json"
    _write(metrics, {**json.loads(metrics.read_text()), "latency": {"measured_ms": 0.39}})
    assert "over its" not in write_report(run).read_text()


def test_reproduce_names_the_cpu_and_where_the_run_reproduces(tmp_path):
    cpu = {"widthc": "0.1.0", "torch": "2.14.1", "cpu": "Intel(R) Xeon(R) Processor (AVX512)",
           "threads": 2}  # fmt: skip
    on_cpu = write_report(fake_run(tmp_path / "cpu", config=_config(versions=cpu, device="cpu")))
    section = on_cpu.read_text().split("## Reproduce")[1]
    assert "torch 2.14.1, cpu Intel(R) Xeon(R) Processor (AVX512), threads 2." in section
    assert SAME_CPU in section and TIMED not in section  # a FLOPs budget: no timing chooses
    timed = _config(versions=cpu, device="cpu", latency=["85%"])
    section = write_report(fake_run(tmp_path / "timed", config=timed)).read_text()
    assert f"{SAME_CPU} {TIMED}" in " ".join(section.split("## Reproduce")[1].split())
    on_gpu = fake_run(tmp_path / "gpu", config=_config(versions=cpu, device="cuda"))
    assert SAME_CPU not in write_report(on_gpu).read_text()  # measured on CPUs only
    moved = _config(versions=cpu, device="cpu", resumed_with={"threads": 1})
    section = write_report(fake_run(tmp_path / "moved", config=moved)).read_text()
    assert SAME_CPU not in section and "It was resumed with threads 1, so the command" in section
    older = write_report(fake_run(tmp_path / "old")).read_text()  # a run that names no CPU
    assert SAME_CPU not in older and "with widthc 0.1.0, torch 2.14.1." in older


def test_cpu_name_reads_the_model_name():
    info = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu avx2\n"
    assert machine.cpu_name(info) == "AMD EPYC 7B13"
    assert machine.cpu().startswith(machine.cpu_name() or "")
    assert machine.cpu().endswith(f"({torch.backends.cpu.get_cpu_capability()})")
