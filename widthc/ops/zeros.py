"""How an op treats channels that are zero everywhere: what masked execution must know.

Masked execution (DESIGN §6) runs every sub-network at full width: the removed channels of
every weight are multiplied by zero, so a producer (conv, linear, batch norm) writes exact
zeros there, and every value must stay zero at the removed channels for the kept ones to
equal sliced execution's. Each op family says what it does to such channels, as a constant
or as a rule of its arguments (`ctx`, see passes/masking.py):

  ctx.arg(i, name, default) -> value (a TensorMeta for a tensor); ctx.module
  ctx.carries(i, name) -> the argument is a tensor with every removable channel dim of the
      output (not broadcast along it): zero wherever the output must be
  ctx.touches(i, name) -> the argument is a tensor with removable channels in any dim
"""

from __future__ import annotations

from numbers import Number

# f(0) = 0 with a finite derivative there: channels that are zero stay exactly zero
KEEPS = "keeps"
# f(0) is finite but not 0 (sigmoid, exp, x + 1): zero channels become non-zero, so the
# runtime zeroes them again right after the op
SHIFTS = "shifts"
# f(0) or f'(0) is not finite (log, sqrt, x / y): zeros would turn into NaN, the forward or the
# backward; masked execution is refused for the model (it runs sliced)
SINGULAR = "singular"

RESULTS = (KEEPS, SHIFTS, SINGULAR)


def _zero(v) -> bool:
    return v is None or (isinstance(v, Number) and v == 0)


def additive(*at: tuple[int, str]):
    """f(0, 0) = 0 (add, sub, maximum, where's branches): zero where every operand at `at`
    ((position, keyword) pairs) is zero there: a tensor that carries the output's channels, or
    a literal 0."""

    def rule(ctx) -> str:
        ok = all(ctx.carries(i, name) or _zero(ctx.arg(i, name, None)) for i, name in at)
        return KEEPS if ok else SHIFTS

    return rule


def multiplicative(*at: tuple[int, str]):
    """A product: zero where any operand at `at` carries the output's channels."""

    def rule(ctx) -> str:
        return KEEPS if any(ctx.carries(i, name) for i, name in at) else SHIFTS

    return rule


def divides(ctx) -> str:
    """x / y, x // y, x % y: a divisor with removable channels divides by zero; otherwise the
    numerator decides."""
    if ctx.touches(1, "other"):
        return SINGULAR
    return KEEPS if ctx.carries(0, "input") else SHIFTS


def power(ctx) -> str:
    """x ** p: 0 ** p is 0 with a finite derivative for p >= 1 only (0 ** 0.5 has none, 0 ** -1
    is inf); b ** x is finite (b ** 0 = 1)."""
    p = ctx.arg(1, "exponent", None)
    if not ctx.touches(0, "input"):
        return SHIFTS
    if isinstance(p, Number) and not isinstance(p, bool):
        return KEEPS if p >= 1 else SHIFTS if p == 0 else SINGULAR
    return SINGULAR


def bounded(lo_at, hi_at, lo=None, hi=None):
    """clamp / hardtanh: 0 stays 0 when the bounds enclose it. (position, name) of each bound
    in the call, or module attributes `lo`/`hi`."""

    def rule(ctx) -> str:
        if ctx.module is not None:
            low, high = getattr(ctx.module, lo), getattr(ctx.module, hi)
        else:
            low, high = ctx.arg(*lo_at, None), ctx.arg(*hi_at, None)
        ok = (low is None or (isinstance(low, Number) and low <= 0)) and (
            high is None or (isinstance(high, Number) and high >= 0)
        )
        return KEEPS if ok else SHIFTS

    return rule


def threshold(ctx) -> str:
    """nn.Threshold: x if x > threshold else value; at 0 that is 0 or `value`."""
    m = ctx.module
    return KEEPS if m.threshold < 0 or m.value == 0 else SHIFTS


def filled(ctx) -> str:
    """masked_fill(x, mask, value): zero when x is and the fill value is 0."""
    return KEEPS if ctx.carries(0, "input") and _zero(ctx.arg(2, "value", None)) else SHIFTS


def padded(ctx) -> str:
    """F.pad / nn.ConstantPadNd: a constant other than 0 fills the border of zero channels."""
    if ctx.module is not None:
        return KEEPS if _zero(getattr(ctx.module, "value", 0)) else SHIFTS
    mode = ctx.arg(2, "mode", "constant")
    return KEEPS if mode != "constant" or _zero(ctx.arg(3, "value", None)) else SHIFTS


def created(ctx) -> str:
    """torch.zeros and x.new_zeros are zero everywhere; ones, empty and random values are not."""
    target = ctx.node.target
    name = target if isinstance(target, str) else getattr(target, "__name__", "")
    return KEEPS if name in ("zeros", "new_zeros") else SHIFTS


def through(module_attr: str, lookup):
    """A module that applies another module (timm's BatchNormAct2d and its `act`): that module's
    rule, read from the registry by `lookup(module) -> OpSpec | None`."""

    def rule(ctx) -> str:
        inner = getattr(ctx.module, module_attr, None)
        if inner is None:
            return KEEPS
        spec = lookup(inner)
        if spec is None or spec.zeros is None:
            return SINGULAR  # an op of unknown behaviour: refuse rather than guess
        return spec.zeros if isinstance(spec.zeros, str) else spec.zeros(ctx.for_module(inner))

    return rule
