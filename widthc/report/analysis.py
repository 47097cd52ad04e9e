"""The analysis table printed by `widthc analyze`: one row per channel group, then a footer."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from widthc import diagnose
from widthc.ir import ChannelGroup
from widthc.space import human

_MAX_LAYERS = 4  # the table stays readable; `--json` lists every member


def bins_text(bins: tuple[int, ...]) -> str:
    """'16×4' for equal bins, '23×11+3' when the last bin takes a remainder: sums to the width."""
    if len(bins) == 2 and bins[-1] != bins[0]:
        return f"{bins[0]}+{bins[1]}"
    if len(bins) > 2 and bins[-1] != bins[0]:
        return f"{len(bins) - 1}×{bins[0]}+{bins[-1]}"
    return f"{len(bins)}×{bins[0]}"


def layers_text(g: ChannelGroup) -> str:
    """Producers, then '→' and the other layers that read the channels, at most _MAX_LAYERS."""
    readers = [c for c in g.consumers if c not in g.producers]
    names = list(g.producers) + readers
    if not names:
        names = list(g.members)
    shown = names[:_MAX_LAYERS]
    n_prod = min(len(g.producers), len(shown))
    text = ", ".join(shown[:n_prod])
    if len(shown) > n_prod:
        text += (" → " if n_prod else "") + ", ".join(shown[n_prod:])
    if len(names) > len(shown):
        text += f" (+{len(names) - len(shown)} more)"
    return text


def print_analysis(program, name: str, console: Console | None = None, latency=None) -> None:
    """The table of `widthc analyze`; with a latency model (`--runtime`), each group's latency
    sensitivity beside its FLOPs sensitivity, and the model's latency in the footer."""
    console = console or Console()
    per_channel = {}
    if latency is not None:
        per_channel = dict(zip(program.space.ids.tolist(), latency.sensitivity()))
    table = Table(
        title=f"channel groups of {name}",
        caption="bins: count×size (+ a smaller last bin), per block of a grouped conv, in heads "
        "for attention heads (heads ×channels each); layers: producers → readers",
        show_lines=False,
    )
    for col, kw in (
        ("group", {"justify": "right"}),
        ("channels", {"justify": "right"}),
        ("bins", {"justify": "right"}),
        ("sensitivity", {"justify": "right"}),
        *([("µs/channel", {"justify": "right"})] if latency is not None else []),
        ("status", {"ratio": 2}),
        ("layers", {"ratio": 3, "overflow": "fold"}),
    ):
        table.add_column(col, **kw)
    for g in program.groups:
        if g.searchable and len(g.bins) == 1:  # eq. 9 gave one bin: it can never change
            status = "[yellow]fixed by its bins[/yellow] (one bin: lower --beta to search it)"
            bins = bins_text(g.bins)
        elif g.searchable:
            status = "[green]searchable[/green]"
            bins = bins_text(g.bins)
            if g.blocks > 1:  # grouped convs: the same bins in every block
                bins += f" (×{g.blocks} blocks)"
        else:
            status = f"[yellow]frozen[/yellow]: {g.frozen[0]}"
            if len(g.frozen) > 1:
                status += f" (+{len(g.frozen) - 1} more)"
            bins = "-"
        width = f"{g.n} heads ×{g.unit}" if g.heads else str(g.n)
        ms = per_channel.get(g.id)
        latency_cell = [] if latency is None else [_microseconds(ms)]
        table.add_row(
            str(g.id), width, bins, human(g.sensitivity), *latency_cell, status, layers_text(g)
        )
    console.print(table)
    data = program.to_json()
    fixed = len(data["fixed_by_bins"])
    in_practice = f" ({fixed} fixed by their bins)" if fixed else ""
    console.print(
        f"FLOPs: {human(program.flops())} per sample (multiply-accumulates)   "
        f"params: {human(program.params())}\n"
        f"searchable groups: {len(program.searchable)}/{len(program.groups)}{in_practice}   "
        f"searchable conv/linear channels: {data['searchable_channel_fraction']:.0%}   "
        f"search space: 10^{data['search_space_log10']:.1f} widths"
    )
    if latency is not None:
        console.print(
            f"latency: {human(latency.latency(), 'latency')} predicted on {latency.runtime} "
            f"(channel block {latency.block}); µs/channel: what one more channel of the group "
            f"adds, the others at full width"
        )
    why = diagnose.footer(program, data["searchable_channel_fraction"])
    if why:
        console.print(why, markup=False)


def _microseconds(ms: float | None) -> str:
    return "-" if ms is None or ms != ms else f"{1e3 * ms:.3g}"
