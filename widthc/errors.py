"""Errors and the reasons that travel with every freeze decision."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["InternalError", "Reason", "TraceError", "WidthcError"]


class WidthcError(Exception):
    """A problem with the user's input: the CLI prints the message as one sentence, exit code 2."""


class TraceError(WidthcError):
    """torch.fx could not trace the model; the message names the line and suggests a leaf."""


class InternalError(Exception):
    """widthc broke one of its own invariants (exit code 1): a bug to report, not a bad input."""


@dataclass(frozen=True)
class Reason:
    """Why a channel group keeps its full width: the node (fx name) and op that forced it."""

    why: str
    node: str = ""
    op: str = ""

    def __str__(self) -> str:
        where = f" at node `{self.node}`" if self.node else ""
        what = f" (`{self.op}`)" if self.op and self.op not in self.why else ""
        return f"{self.why}{what}{where}"

    def to_json(self) -> dict:
        return {"why": self.why, "node": self.node, "op": self.op}
