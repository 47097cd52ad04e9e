"""Where latency measurements are kept between runs, so that a second run measures nothing.

    <root>/latency/<machine>/<runtime>/block.json             the runtime's channel block
    <root>/latency/<machine>/<runtime>/<model>-<bins>.json    the widths measured, in ms

`root` is `--latency-cache DIR`, else `$WIDTHC_CACHE`, else `~/.cache/widthc`. `machine` names
the CPU (model, vector extensions, cores), `runtime` the runtime with its threads, batch size
and version, `model` the traced graph (its ops and shapes, not its weights), `bins` the
binning whose widths were sampled. A file that cannot be read is measured again.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
from pathlib import Path

from widthc.files import write_text
from widthc.machine import cpu_name, cpuinfo
from widthc.ops.registry import op_name
from widthc.trace import VALUE

__all__ = ["ENV", "machine", "model_key", "read", "root", "write"]

ENV = "WIDTHC_CACHE"
_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


def root(option: str | None = None) -> Path:
    return Path(option or os.environ.get(ENV) or Path.home() / ".cache" / "widthc")


def machine() -> str:
    """The CPU as a folder name: architecture and a hash of its model, extensions and cores."""
    info = cpuinfo()
    flags = re.search(r"^flags\s*:\s*(.+)$", info, re.M)
    have = sorted(set(flags.group(1).split()) & set(_FLAGS)) if flags else []
    text = f"{cpu_name(info)}|{have}|{os.cpu_count()}"
    return f"{platform.machine()}-{_digest(text)}"


def folder(cache_root: Path, runtime) -> Path:
    versions = re.sub(r"[^A-Za-z0-9.+-]+", "", runtime.versions().replace(" ", "-"))
    name = f"{runtime.name}-t{runtime.threads}-b{runtime.batch}-{versions}"
    return cache_root / "latency" / machine() / name


def model_key(program) -> str:
    """The traced graph as a file name: the model's name and a hash of every node's op and
    output shape, and of the channel groups (weights do not change a latency)."""
    modules = dict(program.traced.named_modules())
    nodes = []
    for node in program.traced.graph.nodes:
        value = node.meta.get(VALUE)
        shape = getattr(value, "shape", None)
        named = op_name(node, modules) if node.op.startswith("call") else node.op
        nodes.append(f"{named}:{tuple(shape) if shape is not None else ''}")
    groups = [f"{g.n}/{g.blocks}/{g.searchable}" for g in program.groups]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", program.traced.name)[:40]
    return f"{name}-{_digest('|'.join(nodes + groups))}"


def read(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(data, indent=1))


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:10]
