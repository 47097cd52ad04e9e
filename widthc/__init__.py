"""widthc: a compiler for neural-network width search (CafeNet, ICLR 2021).

program = widthc.compile(model, example_inputs)   # trace + analyse
program.groups, program.bins, program.flops(choice)
"""

from widthc.errors import Reason, TraceError, WidthcError
from widthc.evaluate import MaxMax
from widthc.export import export_onnx, load, save
from widthc.ir import ChannelGroup, GroupWidth, Layout, TensorMeta, WidthChoice
from widthc.passes.slim import slim
from widthc.program import Program, compile
from widthc.supernet import Supernet, supernet
from widthc.train import TrainConfig, train_supernet

__all__ = [
    "ChannelGroup",
    "GroupWidth",
    "Layout",
    "MaxMax",
    "Program",
    "Reason",
    "Supernet",
    "TensorMeta",
    "TrainConfig",
    "TraceError",
    "WidthChoice",
    "WidthcError",
    "compile",
    "export_onnx",
    "load",
    "save",
    "slim",
    "supernet",
    "train_supernet",
]
__version__ = "0.1.0"
