"""Mean ± standard deviation as every benchmark table prints it (one place for the format)."""

from __future__ import annotations

import statistics


def mean_std(values: list[float], scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
    """`mean ± std` of `values` times `scale` (the sample std, 0 for one value); "-" for none."""
    values = [scale * v for v in values]
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}{unit}"
