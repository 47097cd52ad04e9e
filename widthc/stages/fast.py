"""`widthc slim --search uniform`: the fast path, without data or training. The same share of
channels in every searchable group, the largest that meets each budget, slimmed from the
model's own weights and proved (output equivalence, FLOPs recount, ONNX parity) before the
files are moved into place. One budget writes into the output folder; several, one folder
each. With a latency budget (or `--runtime`), the slimmed model's latency is then measured
side by side with the original's and compared with the budget (widths.json `latency`)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import widthc
from widthc import space as sp
from widthc.context import Context
from widthc.files import staged_write, write_text
from widthc.latency import timing
from widthc.latency.measure import NOISE, on_budget_scale, over_budget, side_by_side
from widthc.run import (
    ORIGINAL_ONNX,
    SLIM,
    SLIM_ONNX,
    WIDTHS,
    budget_folder,
    check_writable,
    safe_name,
    widths_record,
)
from widthc.space import Budget, human
from widthc.verify import verify


def run(ctx: Context, out: str | None) -> None:
    name = ctx.model_source.name
    root = Path(out) if out else Path("runs") / safe_name(name.split(":")[-1])
    check_writable(root)
    budgets = ctx.budgets
    folders = {t: root / budget_folder(t) if len(budgets) > 1 else root for t in budgets}
    for text, budget in budgets.items():
        _slim_one(ctx, text, budget, folders[text])


def _slim_one(ctx: Context, text: str, budget: Budget, folder: Path) -> None:
    """Slim to one budget, prove it (widthc.verify), then move the files into `folder`."""
    program, name, onnx, echo = ctx.program, ctx.model_source.name, ctx.config.onnx, ctx.echo
    choice = program.space.choice(sp.uniform(program.space, budget.load, 1.0))
    small = widthc.slim(program, choice)
    before, after = program.flops(), program.flops(choice)
    params_before, params_after = program.params(), program.params(choice)
    limits = ", ".join(
        f"{lim.text if lim.kind == 'flops' else lim.label()} = {human(lim.value, lim.kind)}"
        + {"flops": " FLOPs", "params": " params"}.get(lim.kind, "")
        for lim in budget.limits
    )
    where = f" on {ctx.runtime.describe()}" if budget.value("latency") else ""
    echo(f"{name}: budget {limits}{where}, search uniform")
    echo(f"{'':8}{'before':>10}{'after':>10}{'ratio':>8}")
    echo(f"{'FLOPs':8}{human(before):>10}{human(after):>10}{after / before:>8.3f}")
    echo(
        f"{'params':8}{human(params_before):>10}{human(params_after):>10}"
        f"{params_after / params_before:>8.3f}"
    )
    names = [SLIM, *([SLIM_ONNX] if onnx else []), WIDTHS]
    record: dict = {}

    def write(staged: Path) -> list[str]:
        onnx_path = staged / SLIM_ONNX if onnx else None
        checks = verify(program, choice, small, onnx_path=onnx_path, check_onnx=onnx)
        echo(f"checks: {checks.summary()}")
        widthc.save(small, staged / SLIM)
        record.update(
            widths_record(program, choice, name, "uniform", text, budget.value("flops"),
                          checks.to_json()),
            limits=budget.to_json(),
        )  # fmt: skip
        (staged / WIDTHS).write_text(json.dumps(record, indent=2))
        return names

    staged_write(folder, write)
    echo(f"wrote {', '.join(str(folder / f) for f in names)}")
    if ctx.measures_latency:
        record["latency"] = _latency(
            ctx, small, folder / SLIM_ONNX if onnx else None, choice, budget
        )
        write_text(folder / WIDTHS, json.dumps(record, indent=2))


def _latency(ctx: Context, small, onnx_path: Path | None, choice, budget: Budget) -> dict:
    """The slimmed model's latency measured beside the original's, and against the budget."""
    runtime, example = ctx.runtime, tuple(x.cpu() for x in ctx.program.example_inputs)
    model = ctx.model_source.model.cpu().eval()
    with tempfile.TemporaryDirectory(prefix="widthc-original-") as tmp:
        original = model
        if runtime.engine == "onnxruntime":
            original = widthc.export_onnx(model, example, Path(tmp) / ORIGINAL_ONNX).path
        slim = onnx_path if onnx_path is not None and runtime.engine == "onnxruntime" else small
        ms = side_by_side(runtime, {"original": original, "slim": slim}, example)
    predicted = ctx.latency.latency(choice)
    limit = budget.value("latency")
    ctx.echo(
        f"{'latency':8}{human(ms['original'], 'latency'):>10}{human(ms['slim'], 'latency'):>10}"
        f"{ms['slim'] / ms['original']:>8.3f}   measured on {runtime.describe()}, predicted "
        f"{human(predicted, 'latency')}"
    )
    scaled = on_budget_scale(ms["slim"], ms["original"], ctx.latency.latency())
    over = over_budget(scaled, limit)
    said = f"{ms['slim'] / ms['original']:.2f}x the original's, {human(scaled, 'latency')}"
    if over is not None:
        noise = f" (within the {NOISE:.0%} noise allowance)" if over <= NOISE else ""
        ctx.echo(f"latency budget missed: {said}, {over:.0%} over {human(limit, 'latency')}{noise}")
    elif limit is not None:
        ctx.echo(f"latency budget met: {said} <= {human(limit, 'latency')}")
    return {
        "runtime": runtime.describe(), "clock": runtime.clock, "original_ms": ms["original"],
        "slim_ms": ms["slim"], "measured_ms": scaled, "predicted_ms": predicted,
        "budget_ms": limit,
        "load_average": timing.load_average(),
    }  # fmt: skip
