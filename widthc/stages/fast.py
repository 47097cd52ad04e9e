"""`widthc slim --search uniform`: the fast path, without data or training. The same share of
channels in every searchable group, the largest that meets each budget, slimmed from the
model's own weights and proved (output equivalence, FLOPs recount, ONNX parity) before the
files are moved into place. One budget writes into the output folder; several, one
`flops-<budget>` folder each."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import widthc
from widthc import space
from widthc.errors import WidthcError
from widthc.run import SLIM, SLIM_ONNX, WIDTHS, _check_writable, safe_name
from widthc.space import human


def slim_uniform(src, texts: list[str], out, onnx: bool, beta, leaves, align, auto_leaf, echo):
    root = Path(out) if out else Path("runs") / safe_name(src.name.split(":")[-1])
    folders = {t: root / safe_name(f"flops-{t}") if len(texts) > 1 else root for t in texts}
    for folder in folders.values():
        _check_writable(folder)
    program = widthc.compile(
        src.model, src.example_inputs, beta=beta, leaves=leaves, align=align, auto_leaf=auto_leaf
    )
    full = program.flops()
    values = {t: space.parse_budget(t, full) for t in texts}
    for value in values.values():
        program.check_budget(value)
    for t in texts:
        _slim_one(program, src.name, t, values[t], folders[t], onnx, echo)


def _slim_one(program, name: str, text: str, budget: float, folder: Path, onnx: bool, echo):
    """Slim to one budget, prove it (widthc.verify), then move the three files into `folder`."""
    from widthc.verify import verify

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
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WidthcError(f"cannot create --out folder {folder}: {e.strerror or e}") from e
    with tempfile.TemporaryDirectory(prefix=".widthc-", dir=folder) as tmp:
        staged = Path(tmp)
        checks = verify(
            program, choice, small, onnx_path=staged / SLIM_ONNX if onnx else None,
            check_onnx=onnx,
        )  # fmt: skip
        echo(f"checks: {checks.summary()}")
        widthc.save(small, staged / SLIM)
        counts, counts_after = program.counts(), program.counts(choice)
        widths = {
            "model": name,
            "input_shapes": [list(x.shape) for x in program.example_inputs],
            "search": "uniform",
            "budget": {"text": text, "flops": budget},
            "choice": choice.to_json(),
            "groups": [
                {
                    "id": g.id,
                    "name": g.name,
                    "searchable": g.searchable,
                    "channels_before": int(counts[g.id] * g.blocks),
                    "channels_after": int(counts_after[g.id] * g.blocks),
                }
                for g in program.groups
            ],
            "flops": {"before": before, "after": after},
            "params": {"before": params_before, "after": params_after},
            "checks": checks.to_json(),
        }
        (staged / WIDTHS).write_text(json.dumps(widths, indent=2))
        names = [SLIM, *([SLIM_ONNX] if onnx else []), WIDTHS]
        for file in names:
            (staged / file).replace(folder / file)
    echo(f"wrote {', '.join(str(folder / f) for f in names)}")
