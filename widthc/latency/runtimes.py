"""The runtimes a latency is measured on, by name: whether this machine has one, and how to run
a model there (a zero-argument callable per model, timed by `widthc.latency.timing`).

    onnxruntime-cpu   the model exported to ONNX, onnxruntime's CPU provider (the default)
    onnxruntime-cuda  the same on onnxruntime's CUDA provider
    torch-cpu         the PyTorch module itself, eval mode, `torch.inference_mode()`
    torch-cuda        the same on the GPU

`threads` is the CPU threads of one inference (onnxruntime's intra-op threads, torch's
threads), `batch` the batch size of the timed input (the example input's rows repeated).
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from widthc.config import RUNTIMES
from widthc.errors import WidthcError
from widthc.export import export_onnx

__all__ = ["RUNTIMES", "Runtime", "runtime"]

_NEEDS = {"onnxruntime": "onnxruntime (pip install onnxruntime, or onnxruntime-gpu)"}


@dataclass(frozen=True)
class Runtime:
    """A named runtime with its threads and batch size."""

    name: str
    threads: int = 1
    batch: int = 1

    @property
    def engine(self) -> str:
        return self.name.split("-")[0]

    @property
    def device(self) -> str:
        return self.name.split("-")[1]

    @property
    def clock(self) -> str:
        """'thread': one CPU thread's time, the latency on a core of its own, unaffected by
        other processes on a shared machine; 'wall' where work leaves the calling thread."""
        return "thread" if self.device == "cpu" and self.threads == 1 else "wall"

    def describe(self) -> str:
        threads = f"{self.threads} thread" + ("s" if self.threads > 1 else "")
        return f"{self.name}, {threads}, batch {self.batch}"

    def check(self) -> Runtime:
        """This runtime, or one sentence on why this machine cannot run it."""
        if self.engine in _NEEDS:
            try:
                importlib.import_module(self.engine)
            except ImportError:
                raise WidthcError(
                    f"--runtime {self.name} needs {_NEEDS[self.engine]}, which is not installed "
                    f"here"
                ) from None
        if self.device == "cuda" and not torch.cuda.is_available():
            raise WidthcError(
                f"--runtime {self.name} needs a CUDA GPU and torch sees none here: use "
                f"{self.engine}-cpu"
            )
        return self

    def versions(self) -> str:
        """What the measurements depend on beyond the machine: the engine's version."""
        engine = importlib.import_module(self.engine) if self.engine in _NEEDS else torch
        return f"{self.engine} {engine.__version__}"

    def inputs(self, example_inputs) -> tuple[torch.Tensor, ...]:
        """The example inputs at this runtime's batch size (their first row repeated)."""
        return tuple(x[:1].repeat(self.batch, *([1] * (x.ndim - 1))) for x in example_inputs)

    def runner(self, module: torch.nn.Module, example_inputs, folder: Path) -> Callable:
        """A callable that runs one inference of `module` here; an ONNX runtime exports it
        into `folder` first (with widthc's parity check)."""
        return self.runners(module, example_inputs, folder, 1)[0]

    def runners(self, module: torch.nn.Module, example_inputs, folder: Path, n: int) -> list:
        """`n` callables that each run `module` here on their own copy (session) of it."""
        make = self.prepare(module, example_inputs, folder)
        return [make() for _ in range(n)]

    def prepare(self, module, example_inputs, folder: Path) -> Callable[[], Callable]:
        """A maker of runners of `module` (a module, or an ONNX file for an onnxruntime
        runtime), each on its own copy (session) of it: a copy's place in memory changes its
        speed by a few percent on a busy machine, so a latency is measured on several."""
        if isinstance(module, Path):
            return lambda: self.onnx_runner(module, example_inputs)
        if self.engine == "onnxruntime":
            path = folder / f"model-{len(list(folder.iterdir()))}.onnx"
            export_onnx(module.cpu().eval(), tuple(x.cpu() for x in example_inputs), path)
            return lambda: self.onnx_runner(path, example_inputs)
        device = torch.device(self.device)
        xs = tuple(x.to(device) for x in self.inputs(example_inputs))
        return lambda: self._torch_runner(copy.deepcopy(module).to(device).eval(), xs)

    def _torch_runner(self, module: torch.nn.Module, xs: tuple) -> Callable:
        def run():
            with torch.inference_mode(), self._torch_threads():
                module(*xs)
            if self.device == "cuda":
                torch.cuda.synchronize()

        return run

    def onnx_runner(self, path: Path, example_inputs) -> Callable:
        """A callable that runs one inference of the ONNX file at `path` here."""
        session = self.session(path)
        xs = self.inputs(example_inputs)
        feed = {spec.name: x.cpu().numpy() for spec, x in zip(session.get_inputs(), xs)}
        return lambda: session.run(None, feed)

    def session(self, path: Path):
        """An onnxruntime session with this runtime's provider and threads."""
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
        import onnxruntime as ort  # checked by `check`; torch runtimes never load it

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        provider = "CUDAExecutionProvider" if self.device == "cuda" else "CPUExecutionProvider"
        try:
            return ort.InferenceSession(str(path), options, providers=[provider])
        except Exception as e:  # noqa: BLE001 - onnxruntime's errors derive from Exception only
            raise WidthcError(f"onnxruntime cannot load {path}: {str(e).splitlines()[0]}") from e

    @contextlib.contextmanager
    def _torch_threads(self):
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def runtime(name: str, threads: int = 1, batch: int = 1) -> Runtime:
    """The runtime called `name` (one sentence for a name that is none)."""
    if name not in RUNTIMES:
        raise WidthcError(f"--runtime {name} is not a runtime: choose one of {', '.join(RUNTIMES)}")
    if threads < 1 or batch < 1:
        raise WidthcError(
            f"a runtime needs 1 thread and a batch of 1 or more, got {threads}, {batch}"
        )
    return Runtime(name, threads, batch)
