"""Messages of trace failures: the cause in words, the user's line (file:line and code, never a
frame of torch or widthc), and what to do (mark a module as a leaf, rewrite a branch)."""

from __future__ import annotations

import linecache
import os
import traceback
from pathlib import Path

import torch
from torch import nn

_CONTROL_FLOW = "control flow or a Python value depends on tensor data"
_LOOP = "a loop over the rows of a tensor (a list of inputs given as one tensor)"


def cause_of(e: BaseException) -> str:
    cause = str(e).splitlines()[0] if str(e) else type(e).__name__
    if "iteration of a tensor" in cause:
        return _LOOP
    if "control flow" in cause or "iterate" in cause or "len(" in cause or "'len'" in cause:
        return _CONTROL_FLOW
    if cause == "module is not installed as a submodule":  # torch.fx's NameError
        return "calls a module with weights that the model does not hold as a submodule"
    if cause.startswith("argument of type:"):  # torch.fx cannot record this object in a call
        kind = cause.split("'")[1] if "'" in cause else cause.split(":", 1)[1].strip()
        return f"a `{kind.rsplit('.', 1)[-1]}` object is passed to a traced call ({kind})"
    return cause.rstrip(".")


def _advice(cause: str, cls: str, is_root: bool) -> str:
    if "transformers.cache_utils" in cause:
        return "build the model with `use_cache=False` in its config (no cache objects)"
    leaf = "" if is_root else f"mark the module as a leaf (--leaf {cls}) or "
    where = f" in {cls}.forward" if is_root else ""
    if cause == _CONTROL_FLOW:
        return f"{leaf}rewrite the branch{where} so that it does not depend on tensor values"
    if cause == _LOOP:
        return f"{leaf}rewrite the loop{where} over a fixed number of tensors"
    return f"{leaf}pass only tensors, numbers and containers of them between layers"


def failure_site(e: BaseException) -> tuple | None:
    """(frame, line number, source line) of the innermost frame of the user's code."""
    torch_dir = str(Path(torch.__file__).parent) + os.sep  # not torchvision
    frames = [
        (frame, lineno)
        for frame, lineno in traceback.walk_tb(e.__traceback__)
        if not frame.f_code.co_filename.startswith((torch_dir, "<"))
        and "/widthc/" not in frame.f_code.co_filename
    ]
    if not frames:
        return None
    frame, lineno = frames[-1]
    return frame, lineno, linecache.getline(frame.f_code.co_filename, lineno).strip()


def user_site() -> str | None:
    """`file.py:line (`code`)` of the innermost frame of the user's code on the live stack."""
    torch_dir = str(Path(torch.__file__).parent) + os.sep  # not torchvision
    for frame in reversed(traceback.extract_stack()):
        name = frame.filename
        if not name.startswith((torch_dir, "<")) and "/widthc/" not in name:
            return f"{Path(name).name}:{frame.lineno} (`{(frame.line or '').strip()}`)"
    return None


def leaf_reason(e: BaseException) -> str:
    """Why a module became an automatic leaf, in one line."""
    site = failure_site(e)
    if site is None:
        return cause_of(e)
    frame, lineno, code = site
    return f"{cause_of(e)} at {Path(frame.f_code.co_filename).name}:{lineno} (`{code}`)"


def trace_message(model: nn.Module, e: BaseException, path: tuple[str, ...]) -> str:
    """The TraceError text: the user's line, and the module to mark as a leaf (the innermost
    module whose forward was running, which for a free function is its caller)."""
    module = model.get_submodule(path[-1]) if path else model
    cls = type(module).__name__
    cause = cause_of(e)
    site = failure_site(e)
    advice = _advice(cause, cls, not path)
    if site is None:
        return f"torch.fx cannot trace {cls}: {cause}; {advice}."
    frame, lineno, code = site
    where = f"{frame.f_code.co_filename}:{lineno} (`{code}`)"
    if frame.f_locals.get("self") is module:
        what = f"{cls}.{frame.f_code.co_name}"
    else:
        what = f"{frame.f_code.co_name} (called from {cls}.forward"
        what += f", module `{path[-1]}`)" if path else ")"
    return f"torch.fx cannot trace {what} at {where}: {cause}; {advice}."
