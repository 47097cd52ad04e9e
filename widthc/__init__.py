"""widthc: a compiler for neural-network width search (CafeNet, ICLR 2021).

program = widthc.compile(model, example_inputs)   # trace + analyse
program.groups, program.bins, program.flops(choice)
"""

from widthc.errors import Reason, TraceError, WidthcError
from widthc.ir import ChannelGroup, GroupWidth, Layout, TensorMeta, WidthChoice
from widthc.program import Program, compile

__all__ = [
    "ChannelGroup",
    "GroupWidth",
    "Layout",
    "Program",
    "Reason",
    "TensorMeta",
    "TraceError",
    "WidthChoice",
    "WidthcError",
    "compile",
]
__version__ = "0.1.0"
