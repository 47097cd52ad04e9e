"""Human-readable reports: the analysis table printed by `widthc analyze`."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from widthc.space import human


def print_analysis(program, name: str, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"channel groups of {name}", show_lines=False)
    for col, kw in (
        ("group", {"justify": "right"}),
        ("channels", {"justify": "right"}),
        ("bins", {"justify": "right"}),
        ("sensitivity", {"justify": "right"}),
        ("status", {}),
        ("layers", {"overflow": "fold"}),
    ):
        table.add_column(col, **kw)
    for g in program.groups:
        if g.searchable:
            status = "[green]searchable[/green]"
            bins = f"{len(g.bins)}×{g.bins[0]}" if len(set(g.bins[:-1])) <= 1 else str(len(g.bins))
        else:
            status = f"[yellow]frozen[/yellow]: {g.frozen[0]}"
            if len(g.frozen) > 1:
                status += f" (+{len(g.frozen) - 1} more)"
            bins = "-"
        layers = ", ".join(g.producers + g.consumers) or ", ".join(g.members[:4])
        table.add_row(str(g.id), str(g.n), bins, human(g.sensitivity), status, layers)
    console.print(table)
    data = program.to_json()
    console.print(
        f"FLOPs: {human(program.flops())} (multiply-accumulates)   params: {human(program.params())}   "
        f"searchable groups: {len(program.searchable)}/{len(program.groups)}   "
        f"searchable conv/linear channels: {data['searchable_channel_fraction']:.0%}   "
        f"search space: 10^{data['search_space_log10']:.1f} widths"
    )
