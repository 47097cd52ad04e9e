"""The export stage: slim.onnx of every slimmed model (with onnxruntime parity), the original
model's ONNX file, and the latency of each measured side by side with the original's on the
run's runtime (onnxruntime-cpu, one thread, batch 1 unless given), compared with the budget:
a model over its latency budget is said in the terminal here, and in the report's first lines.
"""

from __future__ import annotations

import widthc
from widthc.context import Context
from widthc.latency import timing
from widthc.latency.measure import NOISE, on_budget_scale, over_budget, side_by_side
from widthc.run import ORIGINAL_ONNX, SLIM, SLIM_ONNX, UNIFORM, update_metrics
from widthc.space import human


def run(ctx: Context) -> None:
    onnx, runtime = ctx.config.onnx, ctx.runtime
    if not onnx and runtime.engine == "onnxruntime":
        ctx.echo("--no-onnx: no ONNX files, no latency")
        return
    example = tuple(x.cpu() for x in ctx.program.example_inputs)
    model = ctx.model_source.model.cpu().eval()
    original = ctx.run.file(ORIGINAL_ONNX)
    if onnx:
        widthc.export_onnx(model, example, original)
    for r in ctx.run.read_search()["results"]:
        folder = ctx.run.budget_dir(r["text"])
        models = {"original": original if runtime.engine == "onnxruntime" else model}
        for name, sub in (("widthc", folder), ("uniform", folder / UNIFORM)):
            small = widthc.load(sub / SLIM)
            if onnx:
                widthc.export_onnx(small, example, sub / SLIM_ONNX)
            models[name] = sub / SLIM_ONNX if runtime.engine == "onnxruntime" else small
        ms = side_by_side(runtime, models, example)
        budget = next(
            (lim["value"] for lim in r.get("limits", []) if lim["kind"] == "latency"), None
        )
        predicted = {"widthc": r.get("latency"), "uniform": r.get("uniform", {}).get("latency")}
        scaled = None
        if budget is not None:
            scaled = on_budget_scale(ms["widthc"], ms["original"], ctx.latency.latency())
        update_metrics(
            folder, latency_ms=ms,
            latency={"runtime": runtime.describe(), "clock": runtime.clock, "budget_ms": budget,
                     "measured_ms": scaled, "predicted_ms": predicted,
                     "load_average": timing.load_average()},
        )  # fmt: skip
        over = over_budget(scaled, budget) if scaled is not None else None
        if over is not None:
            noise = f" (within the {NOISE:.0%} noise allowance)" if over <= NOISE else ""
            ctx.echo(
                f"budget {r['text']}: the slimmed model runs {ms['widthc'] / ms['original']:.2f}x "
                f"the original's on {runtime.describe()} (timed beside it), "
                f"{human(scaled, 'latency')}: {over:.0%} over its {human(budget, 'latency')} "
                f"budget{noise} (predicted {human(predicted['widthc'] or 0, 'latency')})"
            )
