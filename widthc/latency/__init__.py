"""Latency of widths on a named runtime: the runtimes (`runtimes`), timing side by side
(`timing`), the channel block of a runtime (`align`, `--align auto`), measuring widths with an
on-disk cache (`measure`, `cache`) and the fitted per-layer model (`model`)."""

from widthc.latency.model import LatencyModel, Measurement, fit
from widthc.latency.runtimes import RUNTIMES, Runtime, runtime

__all__ = ["RUNTIMES", "LatencyModel", "Measurement", "Runtime", "fit", "runtime"]
