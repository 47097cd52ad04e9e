"""The report stage: report.md with its figures, and the summary table in the terminal."""

from __future__ import annotations

from rich.console import Console

from widthc.context import Context
from widthc.report import summary_table, write_report


def run(ctx: Context) -> None:
    path = write_report(ctx.run.path)
    try:
        Console().print(summary_table(ctx.run.path))
    except Exception as e:  # noqa: BLE001 - the report file is written; the table is a courtesy
        ctx.echo(f"(no summary table: {e})")
    ctx.echo(f"report: {path}")
