"""The slim stage: the searched width (and the uniform baseline) of every budget as a
physically smaller model with the trained supernet's weights, proved equal to the supernet.

The slimmed model's batch-norm statistics are re-estimated on the search's calibration batches
(as its score was measured); the proof compares it with the supernet at that width, recalibrated
on the same batches.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

import widthc
from widthc.context import Context
from widthc.evaluate import recalibrate
from widthc.files import staged_write
from widthc.ir import WidthChoice
from widthc.private_rows import rows_of
from widthc.run import INHERITED, SLIM, UNIFORM, WIDTHS, widths_record
from widthc.verify import verify


def run(ctx: Context) -> None:
    data = ctx.run.read_search()
    program = ctx.program
    cpu = torch.device("cpu")
    net = ctx.supernet(trained=True, device=cpu)
    calib = ctx.calibration()
    for r in data["results"]:
        folder = ctx.run.budget_dir(r["text"])
        uniform, _ = slim_one(ctx, program, net, calib, r["uniform"], folder / UNIFORM, r)
        last, last_net = program, net
        if r.get("chain"):  # multi-stage: the last stage's model and supernet
            last, last_net = ctx.last_supernet(r, cpu)
        _, checks = slim_one(ctx, last, last_net, calib, r, folder, r, uniform)
        ctx.echo(f"budget {r['text']}: slimmed and proved ({checks.summary()})")


def slim_one(ctx, program, net, calib, entry: dict, folder: Path, result: dict, uniform=None):
    """Slim one width (its winning candidate), prove it, write slim.pt and widths.json; returns
    that description and the checks."""
    seed = ctx.config.seed
    cand = program.validate(WidthChoice.from_json(entry["candidate_choice"]))
    with rows_of(net.private, cand, written=True):  # --private-bn: the width's own scale, shift
        small = widthc.slim(program, cand)
    if calib:
        recalibrate(small, calib, seed)
    small.eval()
    reference = _recalibrated(net, cand, calib, seed)
    checks = verify(program, cand, small, reference=reference, check_onnx=False)
    original = ctx.program
    description = widths_record(
        program, cand, original.traced.name, result["searcher"], result["text"],
        result["budget"], checks.to_json(), original, _score(result, cand),
    )  # fmt: skip
    if uniform is not None:
        description["uniform"] = {k: uniform[k] for k in ("groups", "flops", "params")}

    def write(tmp: Path) -> list[str]:
        widthc.save(small, tmp / SLIM)
        shutil.copy2(tmp / SLIM, tmp / INHERITED)  # kept for --finetune after retraining
        (tmp / WIDTHS).write_text(json.dumps(description, indent=2))
        return [SLIM, INHERITED, WIDTHS]

    staged_write(folder, write)
    return description, checks


def _score(result: dict, cand: WidthChoice) -> float:
    """The score of the width `cand` is a candidate of: the uniform one's or the searched."""
    uniform = result.get("uniform") or {}
    if uniform.get("candidate_choice") == cand.to_json():
        return uniform["score"]
    return result["score"]


def _recalibrated(net, cand: WidthChoice, calib: list, seed: int):
    """The supernet at `cand`, its batch-norm statistics re-estimated on `calib`: the reference
    the slimmed (and recalibrated) model must equal."""

    def reference(*inputs):
        with net.isolated(cand, execution="sliced") as gm:  # the proof's reference: sliced
            if calib:
                recalibrate(gm, calib, seed)
            gm.eval()
            return gm(*inputs)

    reference.reference_name = "supernet (recalibrated)"
    return reference
