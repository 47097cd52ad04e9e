"""The analyze stage: the model traced, its channels grouped and binned (`widthc analyze`)."""

from __future__ import annotations

from widthc.context import Context
from widthc.run import ANALYSIS


def run(ctx: Context) -> None:
    ctx.run.write_json(ANALYSIS, ctx.program.to_json())
