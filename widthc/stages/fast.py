"""`widthc slim --search uniform`: the fast path, without data or training. The same share of
channels in every searchable group, the largest that meets each budget, slimmed from the
model's own weights and proved (output equivalence, FLOPs recount, ONNX parity) before the
files are moved into place. One budget writes into the output folder; several, one
`flops-<budget>` folder each."""

from __future__ import annotations

import json
from pathlib import Path

import widthc
from widthc.context import Context
from widthc.files import staged_write
from widthc.run import (
    SLIM,
    SLIM_ONNX,
    WIDTHS,
    budget_folder,
    check_writable,
    safe_name,
    widths_record,
)
from widthc.space import human
from widthc.verify import verify


def run(ctx: Context, out: str | None) -> None:
    name = ctx.model_source.name
    texts = ctx.config.flops
    root = Path(out) if out else Path("runs") / safe_name(name.split(":")[-1])
    folders = {t: root / budget_folder(t) if len(texts) > 1 else root for t in texts}
    for folder in folders.values():
        check_writable(folder)
    for text, budget in ctx.budgets.items():
        _slim_one(ctx, text, budget, folders[text])


def _slim_one(ctx: Context, text: str, budget: float, folder: Path) -> None:
    """Slim to one budget, prove it (widthc.verify), then move the files into `folder`."""
    program, name, onnx, echo = ctx.program, ctx.model_source.name, ctx.config.onnx, ctx.echo
    choice = program.uniform(flops=budget)
    small = widthc.slim(program, choice)
    before, after = program.flops(), program.flops(choice)
    params_before, params_after = program.params(), program.params(choice)
    echo(f"{name}: budget {text} = {human(budget)} FLOPs, search uniform")
    echo(f"{'':8}{'before':>10}{'after':>10}{'ratio':>8}")
    echo(f"{'FLOPs':8}{human(before):>10}{human(after):>10}{after / before:>8.3f}")
    echo(
        f"{'params':8}{human(params_before):>10}{human(params_after):>10}"
        f"{params_after / params_before:>8.3f}"
    )
    names = [SLIM, *([SLIM_ONNX] if onnx else []), WIDTHS]

    def write(staged: Path) -> list[str]:
        onnx_path = staged / SLIM_ONNX if onnx else None
        checks = verify(program, choice, small, onnx_path=onnx_path, check_onnx=onnx)
        echo(f"checks: {checks.summary()}")
        widthc.save(small, staged / SLIM)
        record = widths_record(program, choice, name, "uniform", text, budget, checks.to_json())
        (staged / WIDTHS).write_text(json.dumps(record, indent=2))
        return names

    staged_write(folder, write)
    echo(f"wrote {', '.join(str(folder / f) for f in names)}")
