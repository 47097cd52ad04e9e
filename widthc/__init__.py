"""widthc: a compiler for neural-network width search (CafeNet, ICLR 2021).

program = widthc.compile(model, example_inputs)   # trace + analyse
program.groups, program.bins, program.flops(choice)

The public names below are imported on first use, so that `import widthc.cli` (and
`widthc --help`) does not load torch.
"""

from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

_API = {
    "Reason": "widthc.errors",
    "TraceError": "widthc.errors",
    "WidthcError": "widthc.errors",
    "MaxMax": "widthc.evaluate",
    "export_onnx": "widthc.export",
    "load": "widthc.export",
    "save": "widthc.export",
    "ChannelGroup": "widthc.ir",
    "GroupWidth": "widthc.ir",
    "Layout": "widthc.ir",
    "TensorMeta": "widthc.ir",
    "WidthChoice": "widthc.ir",
    "slim": "widthc.passes.slim",
    "Ordering": "widthc.ordering",
    "order_channels": "widthc.ordering",
    "Program": "widthc.program",
    "compile": "widthc.program",
    "Supernet": "widthc.supernet",
    "supernet": "widthc.supernet",
    "RunConfig": "widthc.config",
    "TrainConfig": "widthc.config",
    "train_supernet": "widthc.train",
}

__all__ = [
    "ChannelGroup",
    "GroupWidth",
    "Layout",
    "MaxMax",
    "Ordering",
    "Program",
    "Reason",
    "RunConfig",
    "Supernet",
    "TensorMeta",
    "TraceError",
    "TrainConfig",
    "WidthChoice",
    "WidthcError",
    "compile",
    "export_onnx",
    "load",
    "order_channels",
    "save",
    "slim",
    "supernet",
    "train_supernet",
]


class _Package(types.ModuleType):
    """`widthc` itself: public names imported on first use. The function `widthc.supernet`
    shares its name with the module `widthc.supernet`; importing that module does not replace
    the function (as when every name was imported eagerly)."""

    def __getattr__(self, name: str):
        if name in _API:
            value = getattr(importlib.import_module(_API[name]), name)
            super().__setattr__(name, value)  # imported once
            return value
        raise AttributeError(f"module 'widthc' has no attribute {name!r}")

    def __setattr__(self, name: str, value) -> None:
        if name in _API and isinstance(value, types.ModuleType):
            return  # a submodule named like a public function: the function stays
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *_API})


sys.modules[__name__].__class__ = _Package
