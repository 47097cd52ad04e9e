"""Numbers as the report writes them; a value that was not measured is shown as '-'."""

from __future__ import annotations

from widthc.space import human

MISSING = "-"


def metric(x: float | None, percent: bool = True) -> str:
    """An accuracy in [0, 1] as a percentage ('71.3%'); any other metric (or any value with
    `percent=False`) to 4 digits."""
    if x is None:
        return MISSING
    return f"{100 * x:.1f}%" if percent and 0 <= x <= 1 else f"{x:.4g}"


def count(x: float | None) -> str:
    """FLOPs or parameters: '81.1M'."""
    return MISSING if x is None else human(x)


def before_after(before: float | None, after: float | None) -> str:
    """'81.1M → 40.2M (50%)': the share kept, when both are known."""
    if after is None:
        return MISSING
    if not before:
        return count(after)
    return f"{count(before)} → {count(after)} ({after / before:.0%})"


def ms(x: float | None) -> str:
    return MISSING if x is None else f"{x:.3g} ms"


def ratio(x: float | None, of: float | None) -> str:
    """'0.52×': x as a multiple of `of`."""
    return MISSING if x is None or not of else f"{x / of:.2f}×"


def seconds(x: float | None) -> str:
    if x is None:
        return MISSING
    if x < 120:
        return f"{x:.1f} s"
    return f"{x / 60:.1f} min" if x < 7200 else f"{x / 3600:.1f} h"
