"""The machine a run computes on, as far as its numbers depend on it.

Matrix products round differently on another CPU (the BLAS library picks its kernels by the
CPU's vector extensions) and with another number of threads, and training amplifies the
difference: the same command and seed give the same bits on a CPU of the same kind with as
many threads, and other widths of similar quality otherwise (BENCHMARKS.md, "reproducibility").
"""

from __future__ import annotations

import platform
import re
from pathlib import Path

import torch


def cpuinfo() -> str:
    """/proc/cpuinfo's text ('' where there is none)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_name(info: str | None = None) -> str:
    """The CPU's model name, e.g. 'Intel(R) Xeon(R) Processor'."""
    found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo() if info is None else info, re.M)
    return found.group(1) if found else platform.processor()


def cpu() -> str:
    """The CPU and the vector extensions torch's kernels use, e.g. 'AMD EPYC 7B13 (AVX2)'."""
    return f"{cpu_name() or platform.machine()} ({torch.backends.cpu.get_cpu_capability()})"
