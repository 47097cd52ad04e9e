"""report.md: what a run did and whether to trust it, from the run directory's files alone.

Warnings that change how every number reads (random data, no retraining, an unfinished run)
come first, before the title. Every section the run's files do not support yet is replaced
by one line saying what is missing; a partial run still gets a report.
"""

from __future__ import annotations

from pathlib import Path

from widthc import run as run_files
from widthc.config import RunConfig, Schedule
from widthc.files import write_text
from widthc.report import text as t
from widthc.report.figures import write_figures
from widthc.report.latency import run_latency
from widthc.report.rundir import Budget, RunData, load
from widthc.run import REPORT, STAGES

_MAX_LAYERS = 4


def write_report(run_dir: Path) -> Path:
    """Write `run_dir/report.md` and the PNGs it links (each atomically); returns its path."""
    run = load(run_dir)
    figures = write_figures(run)
    latency, latency_note = run_latency(run)
    sections = [
        _warnings(run),
        _header(run),
        _results(run, latency, latency_note),
        _figure(run, figures, run_files.WIDTHS_PNG, "Width per layer", _WIDTHS_TEXT),
        _latency_section(run, figures, run_files.LAYERS_LATENCY_PNG, "Latency per layer"),
        _figure(run, figures, run_files.BINS_PNG, "Bins per layer", _BINS_TEXT),
        _figure(run, figures, run_files.SEARCH_PNG, "Search: score vs FLOPs", _SEARCH_TEXT),
        _latency_section(run, figures, run_files.LATENCY_PNG, "Latency vs FLOPs"),
        _figure(
            run,
            figures,
            run_files.RETRAINED_PNG,
            f"Test {run.metric or 'accuracy'}: widthc vs uniform",
            "",
        ),  # fmt: skip
        _figure(run, figures, run_files.TRAINING_PNG, "Supernet training", ""),
        _frozen(run),
        _timings(run),
        _reproduce(run),
    ]
    return write_text(Path(run_dir) / REPORT, "\n\n".join(s for s in sections if s) + "\n")


_WIDTHS_TEXT = (
    "Channels kept per searchable group (after / before), in graph order, like the paper's "
    "figure 4; dashed: the uniform width of the same budget. Groups of attention heads "
    "(squares, `(heads)`) count whole heads, labelled kept / all."
)
_BINS_TEXT = (
    "How the search counts each group's width (paper eq. 9, figure 5): bins are large where "
    "a channel is cheap, small where it costs many FLOPs."
)
_LATENCY_TEXT = {
    "Latency per layer": (
        "The latency model's ms of every layer (its MACs and the elements it writes, each at its "
        "fitted cost): the full model, and the chosen width of every budget."
    ),
    "Latency vs FLOPs": (
        "Every scored width's latency as the model predicts it; the chosen (star) and uniform "
        "(cross) widths predicted (filled) and measured after export (hollow), the original "
        "model measured (square), the latency budgets dotted."
    ),
}
_SEARCH_TEXT = (
    "Every width the search scored on the validation split (best candidate pattern, after "
    "batch-norm recalibration), the Pareto front, the chosen width (star) and the uniform "
    "width (cross) per budget."
)


def _latency_section(run: RunData, figures: dict, name: str, title: str) -> str:
    """A latency figure, or nothing for a run that models no latency."""
    if not isinstance(figures.get(name), Path):
        return ""
    return _figure(run, figures, name, title, _LATENCY_TEXT[title])


def _warnings(run: RunData) -> str:
    """The lines no reader may miss, as a list: the synthetic-data warning is the first."""
    lines = []
    if str(run.config.get("data", "")).startswith("synthetic"):
        lines.append("smoke run on random data (`--data synthetic`): the accuracies mean nothing.")
    if run.config.get("retrain_epochs") == 0:
        measured = any(b.test("widthc") is not None for b in run.budgets)
        lines.append(
            "no retraining (`--retrain-epochs 0`): "
            + (
                "the test accuracies are those of the inherited supernet weights."
                if measured
                else "test accuracies not measured."
            )
        )
    unfinished = _unfinished(run)
    if unfinished:
        lines.append(f"partial run: stages not finished: {', '.join(unfinished)}.")
    if run.search and run.search.get("complete") is False:
        lines.append(
            "the search did not finish: its results are those of the widths scored so far."
        )
    lines += [f"{m}." for m in run.latency_misses()]
    lines += [f"{p}." for p in run.problems]
    return "\n".join(f"- **Warning: {line}**" for line in lines)


def _tuning(search: dict) -> str:
    """How search.json says scored widths were fine-tuned first (--score-steps, --score-epochs,
    --score-top), as a sentence; "" where they were not."""
    every, top = search.get("score_tuning"), search.get("finalist_tuning")
    tuning = every or top
    if not tuning:
        return ""
    passes = tuning.get("epochs")
    length = f"{tuning['steps']} SGD steps" + (
        f" ({passes} pass{'es' * (passes != 1)} over the training split)" if passes else ""
    )
    if every:
        return f" Each width scored was first fine-tuned alone {length}."
    return (
        f" The search scored on the supernet's shared weights; then each budget's "
        f"{top.get('top')} best widths and its uniform one were fine-tuned alone {length} "
        "and scored again, and the best tuned score chose."
    )


def _unfinished(run: RunData) -> list[str]:
    """Stages after the last one done (one skipped before it, e.g. no training for a uniform
    search, is not missing)."""
    stages = [s for s in STAGES if s != "report"]
    done = [i for i, s in enumerate(stages) if run.stages.get(s, {}).get("done")]
    return stages[done[-1] + 1 if done else 0 :]


def _header(run: RunData) -> str:
    c, a = run.config, run.analysis
    model = c.get("model") or a.get("model") or "?"
    done = []
    if c:
        schedule = RunConfig.from_json(c).schedule()
        done.append(
            f"Model `{model}`, data "
            + (f"`{c['data']}`" if c.get("data") else "from the model file's hooks")
            + ", budgets "
            f"{', '.join(b.text for b in run.budgets) or '-'}; searcher "
            f"`{c.get('search', '?')}`, seed {c.get('seed', '?')}; supernet "
            f"{_epochs(schedule.supernet)}; "
            + _retraining(schedule, bool(c.get("pretrained")))
            + (f"; input shape {c['input_shape']}" if c.get("input_shape") else "")
            + "."
        )
    else:
        done.append("No config.json: the options of this run are unknown.")
    if c.get("pretrained"):
        done.append(_pretrained(run))
    if run.metric:
        score = run.search.get("score") or run.metric
        done.append(
            f"Metric: {run.metric} (higher is better), measured on the test split after "
            f"retraining; the search maximised {score} on the validation split."
            + _tuning(run.search)
        )
    if a:
        done.append(
            f"The model as given: {t.count(a.get('flops'))} FLOPs per sample "
            f"(multiply-accumulates), {t.count(a.get('params'))} parameters; "
            f"{sum(g.get('searchable', False) for g in a.get('groups', []))} of "
            f"{len(a.get('groups', []))} channel groups searchable "
            f"({a.get('searchable_channel_fraction', 0):.0%} of conv/linear channels), "
            f"10^{a.get('search_space_log10', 0):.1f} widths."
        )
    else:
        done.append("No analysis.json: the analysis has not run.")
    return f"# widthc report: `{model}`\n\n" + "\n\n".join(done)


def _pretrained(run: RunData) -> str:
    """What a --pretrained run started from: the model as given, measured, and its order."""
    p = run.pretrained
    if not p:
        return "Started from the model's trained weights (`--pretrained`); not measured yet."
    val, order = p.get("original", {}).get("val", {}), p.get("order", {})
    groups, alone = order.get("groups", {}), order.get("left_alone", {})
    moved = sum(g.get("order") != sorted(g.get("order", [])) for g in groups.values())
    why = "; ".join(f"{g['name']}: {g['why']}" for g in alone.values())
    return (
        f"Started from the model's trained weights (`--pretrained`): validation "
        f"{t.metric(val.get('value'))} (chance level {t.metric(val.get('chance'))}), test "
        f"{t.metric(p.get('original', {}).get('test'))}. Channels sorted by "
        f"{order.get('method', '?')} importance, most important first: {moved} of "
        f"{len(groups)} groups reordered, proved equal (outputs vs the model as given: "
        f"{order.get('error', float('nan')):.1e}, FLOPs equal)"
        + (f"; left alone: {why}" if why else "")
        + "."
    )


def _retraining(schedule: Schedule, pretrained: bool) -> str:
    if schedule.retrain == 0:
        return "no retraining"
    how = "fine-tuned from the supernet weights" if schedule.finetune else "from scratch"
    if pretrained and not schedule.finetune:
        how = "fine-tuned from the model's trained weights, channels sorted"
    return f"retrained {_epochs(schedule.retrain)} ({how})"


def _epochs(n) -> str:
    return f"{n} epoch" if n == 1 else f"{n if n is not None else '?'} epochs"


def _results(run: RunData, latency: dict, note: str) -> str:
    head = "## Results per budget\n\n"
    if not run.budgets:
        return head + "_Skipped: no budget yet (no config.json budgets and no search.json)._"
    rows = [
        f"| budget | FLOPs per sample (kept) | params (kept) | test {_short(run)} widthc | test "
        f"{_short(run)} uniform | val. score widthc / uniform | latency widthc / uniform / original | "
        "widthc vs original |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    pct = run.percent
    for b in run.budgets:
        ms = latency.get(b.text, {})
        uniform = b.result.get("uniform", {}).get("score")
        rows.append(
            f"| {_budget(b)} | {t.before_after(*b.flops())} | {t.before_after(*b.params())} | "
            f"{t.metric(b.test('widthc'), pct)} | {t.metric(b.test('uniform'), pct)} | "
            f"{t.metric(b.result.get('score'), pct)} / {t.metric(uniform, pct)} | "
            f"{' / '.join(t.ms(ms.get(k)) for k in ('widthc', 'uniform', 'original'))} | "
            f"{t.ratio(ms.get('widthc'), ms.get('original'))} |"
        )
    notes = [
        f"Test {_short(run)}: the test split, never seen by the search"
        + (f"; original model {t.metric(o, pct)}" if (o := _original(run)) is not None else "")
        + ". Validation score: what the search maximised. Latency: "
        + _latency_note(run)
    ]
    if note:
        notes.append(f"_{note}._")
    files = [_files(run, b) for b in run.budgets]
    if any(files):
        notes.append("Files: " + "; ".join(f for f in files if f) + ".")
    return head + "\n".join(rows) + "\n\n" + "\n\n".join(notes)


def _latency_note(run: RunData) -> str:
    """How the latencies were measured, and what the latency model predicted."""
    how = next((b.metrics["latency"] for b in run.budgets if b.metrics.get("latency")), {})
    clock = {"thread": "the thread's CPU time", "wall": "the wall clock"}.get(how.get("clock"))
    note = (
        f"median of side-by-side runs on {how.get('runtime', 'onnxruntime-cpu, one thread')}"
        + (f" ({clock}" if clock else "")
        + (f"; load average {how['load_average']}" if how.get("load_average") is not None else "")
        + (")" if clock else "")
        + "."
    )
    predicted = [
        f"{b.text}: widthc {t.ms(b.predicted())}, uniform {t.ms(b.predicted('uniform'))}"
        + (f", budget {t.ms(b.latency_budget())}" if b.latency_budget() else "")
        for b in run.budgets
        if b.predicted() is not None
    ]
    if predicted:
        note += " Predicted by the latency model: " + "; ".join(predicted) + "."
    return note


def _short(run: RunData) -> str:
    """The results table's word for the metric: 'acc.' for accuracy, 'metric' otherwise."""
    return "acc." if run.percent else "metric"


def _budget(b: Budget) -> str:
    """'50% (40.55M)': a relative budget with the FLOPs it stands for."""
    target = b.flops_target
    return f"{b.text} ({t.count(target)})" if b.text.endswith("%") and target else b.text


def _original(run: RunData) -> float | None:
    return next((b.test("original") for b in run.budgets if b.test("original") is not None), None)


def _files(run: RunData, budget: Budget) -> str:
    links = [
        f"[{p.relative_to(run.path).as_posix()}]({p.relative_to(run.path).as_posix()})"
        for p in (budget.onnx(), budget.onnx(uniform=True))
        if p is not None
    ]
    return f"{budget.text}: {', '.join(links)}" if links else ""


def _figure(run: RunData, figures: dict, name: str, title: str, caption: str) -> str:
    drawn = figures.get(name)
    head = f"## {title}\n\n"
    if not isinstance(drawn, Path):
        return head + f"_Skipped: {drawn or 'not drawn'}._"
    link = drawn.relative_to(run.path).as_posix()
    return head + f"![{title}]({link})" + (f"\n\n{caption}" if caption else "")


def _frozen(run: RunData) -> str:
    head = "## Frozen channel groups\n\n"
    if not run.analysis:
        return head + "_Skipped: no analysis.json._"
    frozen = [g for g in run.groups if not g.get("searchable")]
    fixed = run.analysis.get("fixed_by_bins", [])
    tail = (
        f"\n\nSearchable but with a single bin (their width cannot change): groups "
        f"{', '.join(map(str, fixed))}."
        if fixed
        else ""
    )
    if not frozen:
        return head + "None: every channel group is searchable." + tail
    rows = ["| group | channels | layers | why it keeps its width |", "|---:|---:|---|---|"]
    for g in frozen:
        reasons = "; ".join(g.get("frozen", [])) or "?"
        rows.append(
            f"| {g.get('id')} | {g.get('channels', '?')} | {_cell(_layers(g))} | {_cell(reasons)} |"
        )
    return head + "\n".join(rows) + tail


def _layers(g: dict) -> str:
    """Producers, then '→' and the layers that read the channels (the first few)."""
    producers = g.get("producers", [])
    readers = [c for c in g.get("consumers", []) if c not in producers]
    names = [*producers, *readers][:_MAX_LAYERS]
    shown = ", ".join(names[: len(producers)])
    if len(names) > len(producers):
        shown += (" → " if producers else "") + ", ".join(names[len(producers) :])
    more = len(producers) + len(readers) - len(names)
    return shown + (f" (+{more} more)" if more > 0 else "")


def _timings(run: RunData) -> str:
    head = "## Stage timings\n\n"
    if not run.stages:
        return head + "_Skipped: no stages.json (no stage has finished)._"
    names = [*STAGES, *(s for s in run.stages if s not in STAGES)]
    rows = ["| stage | done | time |", "|---|---|---:|"]
    total = 0.0
    for name in names:
        stage = run.stages.get(name, {})
        seconds = stage.get("seconds")
        total += seconds or 0.0
        done = "yes" if stage.get("done") else ("this report" if name == "report" else "no")
        rows.append(f"| {name} | {done} | {t.seconds(seconds)} |")
    rows.append(f"| total | | {t.seconds(total)} |")
    return head + "\n".join(rows)


SAME_CPU = (
    "On a CPU of the same kind with as many threads the command gives the same widths and "
    "weights; another CPU or another thread count rounds otherwise and training amplifies "
    "that: expect other widths of similar quality."
)
TIMED = (
    "With a latency budget timings choose too (the latency model, unless cached, and each "
    "budget's finalists are measured), so a width measured near its limit may fall on the other "
    "side of it in another run."
)
RESUMED = "It was resumed with {other}, so the command does not reproduce it bit for bit."


def _reproduce(run: RunData) -> str:
    head = "## Reproduce\n\n"
    command = run.config.get("command")
    if not command:
        return head + "_Skipped: config.json records no command._"
    versions = run.config.get("versions", {})
    used = ", ".join(f"{k} {v}" for k, v in versions.items())
    text = head + f"```\n{command}\n```" + (f"\n\nwith {used}." if used else "")
    resumed = run.config.get("resumed_with")
    if resumed:
        other = ", ".join(f"{k} {v}" for k, v in resumed.items())
        text += f" {RESUMED.format(other=other)}"
    elif "cpu" in versions and run.config.get("device", "cpu") == "cpu":
        text += f" {SAME_CPU}" + (f" {TIMED}" if run.config.get("latency") else "")
    return text


def _cell(text: str) -> str:
    """Markdown table cells cannot hold a bare '|' or a newline."""
    return text.replace("|", "\\|").replace("\n", " ")
