"""Latency of a run's models, as the export stage measured them (metrics.json), or else of its
ONNX files measured here side by side on onnxruntime-cpu, one thread (widthc.latency.timing:
the thread's CPU time, rounds that rotate who goes first, medians).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from widthc.config import DEFAULT_RUNTIME
from widthc.errors import WidthcError
from widthc.latency import timing
from widthc.latency.runtimes import Runtime
from widthc.report.rundir import RunData
from widthc.run import ORIGINAL_ONNX

_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}


def onnx_latency(paths: list[Path], input_shape: tuple, repeats: int = 30) -> list[float]:
    """The median latency (ms) of each ONNX file on one random input of `input_shape` (a
    shape, or one shape per input of a model with several), in the order of `paths`."""
    if repeats < 1:
        raise WidthcError(f"latency needs at least one repeat, got {repeats}")
    shapes = _shapes(input_shape)
    runtime = Runtime(DEFAULT_RUNTIME)
    sessions = [_session(runtime, Path(p)) for p in paths]
    feeds = [_feed(s, shapes, Path(p)) for s, p in zip(sessions, paths)]
    for session, feed, path in zip(sessions, feeds, paths):
        try:
            session.run(None, feed)
        except Exception as e:  # noqa: BLE001 - onnxruntime's errors derive from Exception only
            raise WidthcError(
                f"onnxruntime cannot run {path} on inputs of shape {shapes}: "
                f"{str(e).splitlines()[0]}"
            ) from e
    runners = [functools.partial(s.run, None, f) for s, f in zip(sessions, feeds)]
    return timing.medians(runners, repeats, runtime.clock)


def run_latency(run: RunData) -> tuple[dict[str, dict[str, float]], str]:
    """Per budget text: ms of 'original', 'widthc' and 'uniform', from metrics.json where the
    run measured it, else measured here from the run's ONNX files; and a note on what is
    missing ('' when nothing is)."""
    out = {b.text: b.latency() for b in run.budgets if b.latency()}
    todo = [b for b in run.budgets if b.text not in out and b.onnx() is not None]
    if not todo:
        return out, "" if out else "no latency: the run has no ONNX files yet"
    shape = run.input_shape()
    if shape is None:
        return out, "latency not measured: the run does not record its input shape"
    files: dict[str, Path] = {}
    original = run.path / ORIGINAL_ONNX
    if original.is_file():
        files["original"] = original
    for b in todo:
        files[f"{b.text}/widthc"] = b.onnx()
        if b.onnx(uniform=True) is not None:
            files[f"{b.text}/uniform"] = b.onnx(uniform=True)
    try:
        ms = _measured(tuple((str(p), p.stat().st_mtime_ns) for p in files.values()), shape)
    except WidthcError as e:
        return out, f"latency not measured: {e}"
    measured = dict(zip(files, ms))
    for b in todo:
        out[b.text] = {
            k: measured[f]
            for k, f in (
                ("original", "original"),
                ("widthc", f"{b.text}/widthc"),
                ("uniform", f"{b.text}/uniform"),
            )
            if f in measured
        }
    return out, ""


@functools.lru_cache(maxsize=8)
def _measured(files: tuple[tuple[str, int], ...], shape: tuple) -> list[float]:
    """One measurement per set of files (and their modification times): the report and the
    terminal table of one run show the same numbers."""
    return onnx_latency([Path(p) for p, _ in files], shape)


def _shapes(input_shape: tuple) -> list[tuple[int, ...]]:
    if input_shape and all(isinstance(d, int) for d in input_shape):
        return [tuple(input_shape)]
    shapes = [tuple(s) for s in input_shape]
    if not shapes or not all(s and all(isinstance(d, int) and d > 0 for d in s) for s in shapes):
        raise WidthcError(f"not an input shape: {input_shape!r}; give one like (1, 3, 32, 32)")
    return shapes


def _session(runtime: Runtime, path: Path):
    if not path.is_file():
        raise WidthcError(f"cannot measure the latency of {path}: the file does not exist")
    return runtime.session(path)


def _feed(session, shapes: list[tuple[int, ...]], path: Path) -> dict:
    inputs = session.get_inputs()
    if len(inputs) != len(shapes):
        raise WidthcError(
            f"{path} takes {len(inputs)} inputs, but {len(shapes)} input shape(s) were given"
        )
    rng = np.random.default_rng(0)  # the same input for every file
    feed = {}
    for spec, shape in zip(inputs, shapes):
        dtype = _DTYPES.get(spec.type, np.float32)
        if np.issubdtype(dtype, np.floating):
            feed[spec.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feed[spec.name] = np.zeros(shape, dtype=dtype)
    return feed
