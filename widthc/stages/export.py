"""The export stage: slim.onnx of every slimmed model (with onnxruntime parity), the original
model's ONNX file, and the latency of each against the original."""

from __future__ import annotations

import widthc
from widthc.context import Context
from widthc.report import onnx_latency
from widthc.run import ORIGINAL_ONNX, SLIM, SLIM_ONNX, UNIFORM, update_metrics


def run(ctx: Context) -> None:
    if not ctx.config.onnx:
        ctx.echo("--no-onnx: no ONNX files, no latency")
        return
    example = tuple(x.cpu() for x in ctx.program.example_inputs)
    original = ctx.run.file(ORIGINAL_ONNX)
    widthc.export_onnx(ctx.model_source.model.cpu().eval(), example, original)
    for r in ctx.run.read_search()["results"]:
        folder = ctx.run.budget_dir(r["text"])
        files = []
        for sub in (folder, folder / UNIFORM):
            small = widthc.load(sub / SLIM)
            files.append(widthc.export_onnx(small, example, sub / SLIM_ONNX).path)
        if len(example) == 1:  # several inputs: the latency helper feeds one
            latency = onnx_latency([original, *files], tuple(example[0].shape))
            if latency is not None:
                names = ("original", "widthc", "uniform")
                update_metrics(folder, latency_ms=dict(zip(names, latency)))
