"""The slim and export stages: the searched width (and the uniform baseline) of every budget as
a physically smaller model with the trained supernet's weights, proved equal to the supernet,
then as ONNX with parity, and the latency of each against the original model.

The slimmed model's batch-norm statistics are re-estimated on the search's calibration batches
(as its score was measured); the proof compares it with the supernet at that width, recalibrated
on the same batches.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

import widthc
from widthc.evaluate import recalibrate
from widthc.ir import WidthChoice
from widthc.run import INHERITED, METRICS, ORIGINAL_ONNX, SLIM, SLIM_ONNX, UNIFORM, WIDTHS
from widthc.verify import verify


def slim_all(ctx) -> None:
    from widthc.pipeline import read_search

    data = read_search(ctx.run)
    program = ctx.program
    net = ctx.supernet(trained=True, device=torch.device("cpu"), execution="sliced")  # the proof
    calib, seed = ctx.calibration(), ctx.config.get("seed", 0)
    for r in data["results"]:
        folder = ctx.run.budget_dir(r["text"])
        uniform, _ = slim_one(program, net, calib, seed, r["uniform"], folder / UNIFORM, r)
        last, last_net = program, net
        if r.get("chain"):  # multi-stage: the last stage's model and supernet
            from widthc.stages.multistage import last_supernet

            last, last_net = last_supernet(ctx, r, torch.device("cpu"))
        description, checks = slim_one(last, last_net, calib, seed, r, folder, r, uniform, program)
        ctx.echo(f"budget {r['text']}: slimmed and proved ({checks.summary()})")


def slim_one(
    program, net, calib, seed, entry: dict, folder: Path, result: dict, uniform=None, original=None
):
    """Slim one width (its winning candidate), prove it, write slim.pt and widths.json."""
    from widthc.pipeline import staged_write

    cand = program.validate(WidthChoice.from_json(entry["candidate_choice"]))
    small = widthc.slim(program, cand)
    if calib:
        recalibrate(small, calib, seed)
    small.eval()
    reference = _recalibrated(net, cand, calib, seed)
    checks = verify(program, cand, small, reference=reference, check_onnx=False)
    description = widths_json(program, cand, result, checks, original or program)
    if uniform is not None:
        description["uniform"] = {k: uniform[k] for k in ("groups", "flops", "params")}

    def write(tmp: Path) -> list[str]:
        widthc.save(small, tmp / SLIM)
        shutil.copy2(tmp / SLIM, tmp / INHERITED)  # kept for --finetune after retraining
        (tmp / WIDTHS).write_text(_dumps(description))
        return [SLIM, INHERITED, WIDTHS]

    staged_write(folder, write)
    return description, checks


def widths_json(program, cand: WidthChoice, result: dict, checks, original) -> dict:
    """The width of a slimmed model: channels of every group of the original model before and
    after (a multi-stage result's program is a slimmed model: its groups match by name)."""
    after = {g.name: int(c * g.blocks) for g, c in zip(program.groups, program.counts(cand))}
    return {
        "model": original.traced.name,
        "input_shapes": [list(x.shape) for x in original.example_inputs],
        "search": result["searcher"],
        "budget": {"text": result["text"], "flops": result["budget"]},
        "choice": cand.to_json(),
        "score": entry_score(result, cand),
        "groups": [
            {
                "id": g.id,
                "name": g.name,
                "searchable": g.searchable,
                "channels_before": g.n,
                "channels_after": after.get(g.name, g.n),
            }
            for g in original.groups
        ],
        "flops": {"before": original.flops(), "after": program.flops(cand)},
        "params": {"before": original.params(), "after": program.params(cand)},
        "checks": checks.to_json(),
    }


def entry_score(result: dict, cand: WidthChoice) -> float:
    uniform = result.get("uniform") or {}
    if uniform.get("candidate_choice") == cand.to_json():
        return uniform["score"]
    return result["score"]


def export_all(ctx) -> None:
    """slim.onnx of every slimmed model (with the parity check), original.onnx, latencies."""
    from widthc.pipeline import read_search

    if not ctx.config.get("onnx", True):
        ctx.echo("--no-onnx: no ONNX files, no latency")
        return
    example = tuple(x.cpu() for x in ctx.program.example_inputs)
    original = ctx.run.file(ORIGINAL_ONNX)
    widthc.export_onnx(ctx.model_source.model.cpu().eval(), example, original)
    for r in read_search(ctx.run)["results"]:
        folder = ctx.run.budget_dir(r["text"])
        files = []
        for sub in (folder, folder / UNIFORM):
            small = widthc.load(sub / SLIM)
            report = widthc.export_onnx(small, example, sub / SLIM_ONNX)
            files.append(report.path)
        latency = _latency([original, *files], example)
        if latency is not None:
            update_metrics(folder, latency_ms=dict(zip(("original", "widthc", "uniform"), latency)))


def update_metrics(folder: Path, **entries) -> dict:
    """Read-modify-write of a budget's metrics.json."""
    import json

    from widthc.files import write_text

    path = folder / METRICS
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(entries)
    write_text(path, _dumps(data))
    return data


def _latency(paths: list, example: tuple) -> list[float] | None:
    if len(example) != 1:
        return None  # several inputs: the latency helper feeds one
    from widthc.report import onnx_latency

    return onnx_latency(paths, tuple(example[0].shape))


def _recalibrated(net, cand: WidthChoice, calib: list, seed: int):
    """The supernet at `cand`, its batch-norm statistics re-estimated on `calib`: the reference
    the slimmed (and recalibrated) model must equal."""

    def reference(*inputs):
        with net.isolated(cand) as gm:
            if calib:
                recalibrate(gm, calib, seed)
            gm.eval()
            return gm(*inputs)

    reference.reference_name = "supernet (recalibrated)"
    return reference


def _dumps(data) -> str:
    import json

    return json.dumps(data, indent=2)
