"""Weights computed from stored tensors: weight norm (`torch.nn.utils.parametrizations` and the
old forward pre-hook), spectral norm, any other parametrization.

A layer reads `module.weight`, but the tensors that hold the values (and that slim and the
supernet must slice) are others: `weight_g` and `weight_v`, or
`parametrizations.weight.original0/1`. `reparam(module, name)` says which, how their dims follow
the computed weight's dims, and which dims of the computed weight must keep their width.

Weight norm `w = g * v / ||v||`, the norm taken over every dim but `dim`: with `dim` the output
channel dim, each filter is normalised over its own entries, and an L2 norm over kept entries
equals the norm with the removed entries set to zero, so slicing g and v is exact. Any other
`dim` normalises across output channels (a filter's scale depends on the others): frozen.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrizations, parametrize
from torch.nn.utils.spectral_norm import SpectralNorm
from torch.nn.utils.weight_norm import WeightNorm


@dataclass(frozen=True)
class Reparam:
    """How a module's tensor `name` is computed. `sources`: (attribute path from the module,
    for each of its dims the computed weight's dim it follows, or None); `like`: the source
    with the computed weight's shape; `fixed`: computed dims that keep their width, and why;
    `mixes`: dims whose removed channels the zeroed-weights reference cannot express (a
    filter of zeros has no direction: g * v / ||v|| is 0/0), so the supernet is the reference."""

    kind: str
    sources: tuple[tuple[str, tuple[int | None, ...]], ...]
    like: str
    fixed: tuple[int, ...]
    why: str
    mixes: tuple[int, ...] = ()


def reparam(module: nn.Module, name: str) -> Reparam | None:
    """How `module.<name>` is computed from stored tensors, or None when it is stored itself.
    (Reads the stored tensors only: computing the weight would run the parametrization, and a
    spectral norm's power iteration changes its buffers.)"""
    if parametrize.is_parametrized(module, name):
        chain = module.parametrizations[name]
        paths = [f"parametrizations.{name}.{p}" for p in (*chain._parameters, *chain._buffers)]
        norm = chain[0] if len(chain) == 1 else None
        if type(norm).__name__ == "_WeightNorm" and len(paths) == 2:
            return _weight_norm(module, paths, norm.dim)
        kinds = ", ".join(type(p).__name__ for p in chain)
        return _frozen(module, paths, f"parametrization ({kinds}) of `{name}`")
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, WeightNorm) and hook.name == name:
            return _weight_norm(module, [f"{name}_g", f"{name}_v"], hook.dim)
        if isinstance(hook, SpectralNorm) and hook.name == name:
            paths = [f"{name}_orig", f"{name}_u", f"{name}_v"]
            return _frozen(module, paths, f"spectral norm of `{name}`")
    return None


def reparams(module: nn.Module) -> dict[str, Reparam]:
    """Every computed weight of `module`, by name."""
    names = list(getattr(module, "parametrizations", {}))
    hooks = module._forward_pre_hooks.values()
    names += [h.name for h in hooks if isinstance(h, (WeightNorm, SpectralNorm))]
    found = {n: reparam(module, n) for n in dict.fromkeys(names)}
    return {n: r for n, r in found.items() if r is not None}


def recompute(module: nn.Module) -> None:
    """Refresh the weights old-style weight-norm hooks store on `module` (from their sources,
    without autograd history), as the hook does before every forward."""
    for hook in list(module._forward_pre_hooks.values()):
        if isinstance(hook, WeightNorm):
            with torch.no_grad():
                setattr(module, hook.name, hook.compute_weight(module))


def weight_norms(module: nn.Module) -> dict[str, list]:
    """{name: [style, dim]} of every weight norm on `module` ("parametrization" or "hook"),
    what `apply_weight_norm` needs to put them back on a rebuilt module."""
    out = {}
    for name in getattr(module, "parametrizations", {}):
        chain = module.parametrizations[name]
        if len(chain) == 1 and type(chain[0]).__name__ == "_WeightNorm":
            out[name] = ["parametrization", chain[0].dim]
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, WeightNorm):
            out[hook.name] = ["hook", hook.dim]
    return out


def apply_weight_norm(module: nn.Module, name: str, style: str, dim) -> nn.Module:
    dim = None if dim == -1 else dim
    if style == "parametrization":
        return parametrizations.weight_norm(module, name, dim)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch deprecates the hook
        return nn.utils.weight_norm(module, name, dim)


def base_class(module: nn.Module) -> type:
    """The module's class before any parametrization was registered on it."""
    return parametrize.type_before_parametrizations(module)


def tensor_at(module: nn.Module, path: str) -> torch.Tensor:
    for part in path.split("."):
        module = getattr(module, part)
    return module


def output_dim(module: nn.Module) -> int | None:
    """The weight dim that indexes the layer's output channels."""
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return 1
    if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
        return 0
    return None


def _weight_norm(module, paths, dim) -> Reparam:
    g, v = (tensor_at(module, p) for p in paths)  # v has the weight's shape
    dim = None if dim is None or dim == -1 else dim % v.ndim
    if dim is None or dim != output_dim(module):
        what = "the whole weight" if dim is None else f"dim={dim}"
        return _frozen(module, paths, f"weight norm over {what} normalises across channels")
    sources = ((paths[0], _follow(g, v)), (paths[1], tuple(range(v.ndim))))
    why = f"weight norm (dim={dim})"
    return Reparam(why, sources, paths[1], (), why, mixes=(dim,))


def _frozen(module, paths, why) -> Reparam:
    """Every dim keeps its width; `like`: the source of the weight's shape (the largest of
    those of the highest rank: a weight norm's `v`, not its `g` of ones but one dim)."""
    tensors = [tensor_at(module, p) for p in paths]
    ndim = max(t.ndim for t in tensors)
    like = max(
        ((t.numel(), -i, p) for i, (p, t) in enumerate(zip(paths, tensors)) if t.ndim == ndim)
    )[2]
    sources = tuple((p, (None,) * t.ndim) for p, t in zip(paths, tensors))
    return Reparam(why, sources, like, tuple(range(ndim)), why)


def _follow(source: torch.Tensor, weight: torch.Tensor) -> tuple[int | None, ...]:
    """Dims of a same-rank source with the weight's size (not 1) follow the weight's dims."""
    if source.ndim != weight.ndim:
        return (None,) * source.ndim
    return tuple(d if source.shape[d] == weight.shape[d] != 1 else None for d in range(source.ndim))
