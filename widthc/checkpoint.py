"""Checkpoints that load with `torch.load(weights_only=True)` and resume bit-for-bit.

Every random state is stored as tensors, lists and numbers (no pickled objects): Python's
`random`, numpy's global generator, torch's CPU (and CUDA) generators, and any extra
`torch.Generator` the caller names (the width sampler). Files are written atomically: a temp
file beside the target, then `os.replace`, so a crash never leaves half a checkpoint and the
previous one stays until the new one is complete.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import torch

from widthc.errors import WidthcError
from widthc.files import write_atomic

FORMAT = "widthc-supernet/1"


def rng_state() -> dict:
    """The global random states of this process (python, numpy, torch, cuda)."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "mt": list(mt), "gauss": gauss},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["mt"]), py["gauss"]))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: str | Path, payload: dict) -> None:
    """Write `payload` to `path` atomically (temp file + rename)."""
    write_atomic(path, lambda tmp: torch.save({"format": FORMAT, **payload}, tmp))


def load(path: str | Path, map_location=None) -> dict:
    """Read a checkpoint written by `save`, with `weights_only=True`."""
    path = Path(path)
    if not path.is_file():
        raise WidthcError(f"no checkpoint at {path}: train first, or drop --resume")
    data = load_tensors(path, "widthc checkpoint", map_location)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise WidthcError(f"{path} is not a widthc supernet checkpoint ({FORMAT})")
    return data


def group_signature(program) -> list:
    """[id, name, channels] of every channel group: what a checkpoint was trained for."""
    return [[g.id, g.name, g.n] for g in program.groups]


def check_groups(path, saved: list | None, program) -> None:
    """A clear error when the checkpoint at `path` was trained for another model."""
    if saved is None:
        return
    mine = group_signature(program)
    if [list(x) for x in saved] == mine:
        return
    theirs = {int(i): (name, n) for i, name, n in saved}
    diffs = []
    for i, name, n in mine:
        if i not in theirs:
            diffs.append(f"group {i} (`{name}`) is not there")
        elif theirs[i] != (name, n):
            diffs.append(
                f"group {i} is `{theirs[i][0]}` with {theirs[i][1]} channels there, `{name}` with {n} here"
            )
    extra = len(saved) - len(mine)
    if extra > 0:
        diffs.append(f"it has {extra} more group(s)")
    shown = "; ".join(diffs[:3]) + (f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else "")
    raise WidthcError(f"{path} was trained for another model: {shown}; start a new run directory")


def load_tensors(path: Path, what: str, map_location=None):
    """`torch.load(path, weights_only=True)`: tensors and plain data only, so a file can never
    make widthc run code; a refused or damaged file is one sentence."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise WidthcError(
            f"{path} is not a {what}: it holds Python objects beyond tensors and plain data, "
            f"which widthc refuses to load (nothing in it was run)"
        ) from e
    except Exception as e:  # noqa: BLE001 - anything torch.load raises on a damaged file
        raise WidthcError(
            f"{path} is not a readable {what}: it is damaged or truncated "
            f"({str(e).splitlines()[0].split('. ')[0][:120]})"
        ) from e
