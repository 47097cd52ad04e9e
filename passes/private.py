"""Which norms own a private scale and shift per width (`--private-bn`; slimmable networks'
switchable batch norm, Yu et al. 2019): an analysis of a program for the supernet runtime
(widthc/private_rows.py).

Max-max already re-estimates a batch norm's running statistics for every width it scores; what
every width still shares is the norm's affine parameters (the op registry's `private` names: a
batch norm's weight and bias). A norm owns one row of them for each width its group can take
below full, `k = 1 .. n - 1` bins of the group's `n`, added to its own parameters (full width
keeps the model's own, so that it trains and exports as before). A row covers all the norm's
channels: under a locally free offset every candidate pattern of `k` bins reads its channels
from row `k`, as the candidates of one width already share its running statistics after
recalibration.

Covered: a norm module whose channels are exactly one searchable group. Not covered, with the
reason: a norm over the channels of several groups (a concatenation: a row per combination of
widths). A norm whose channels never shrink (a frozen group) needs no row.
"""

from __future__ import annotations

from dataclasses import dataclass

from widthc import ops


@dataclass(frozen=True)
class PrivateNorm:
    """A norm module that owns a row of `params` for each of `group`'s widths below full."""

    module: str  # its path in the program's graph module
    params: tuple[str, ...]  # the per-channel affine parameters ("weight", "bias")
    group: int
    bins: int  # the group's bin count n: rows for k = 1 .. n - 1


def private_norms(program) -> tuple[list[PrivateNorm], list[tuple[str, str]]]:
    """(the norms that own private rows, [(norm, why it does not)]) of `program`."""
    modules = dict(program.gm.named_modules())
    bins = {g.id: len(g.bins) for g in program.searchable}
    found, skipped, seen = [], [], set()
    for node in program.gm.graph.nodes:
        if node.op != "call_module" or node.target in seen:
            continue
        seen.add(node.target)
        spec = ops.lookup(node, modules)
        module = modules[node.target]
        names = tuple(
            n for n in (spec.private if spec else ()) if module._parameters.get(n) is not None
        )
        if not names:
            continue  # not a norm with private parameters, or one without affine parameters
        groups = {
            g
            for n in names
            for lay in program.param_dims.get(f"{node.target}.{n}", {}).values()
            for g in lay.groups
        }
        searchable = groups & bins.keys()
        if not searchable:
            continue  # its channels keep their width
        if len(groups) > 1:
            skipped.append((node.target, "its channels are several groups' (a concatenation)"))
            continue
        (group,) = searchable
        if bins[group] > 1:
            found.append(PrivateNorm(node.target, names, group, bins[group]))
    return found, skipped
