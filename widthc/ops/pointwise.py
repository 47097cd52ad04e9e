"""The op table's pointwise entries: elementwise unary and binary ops and comparisons, grouped
by what they do to channels that are zero (masked execution, widthc/ops/zeros.py). Adding an op
is adding it to the list of its kind here."""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import nn

from widthc.ops.common import broadcast_shape, compare_shape, same_shape, spec
from widthc.ops.elementwise import count_compare, elementwise_rule, unary
from widthc.ops.registry import Method, register
from widthc.ops.shape_ops import size_product, size_quotient
from widthc.ops.zeros import (
    KEEPS,
    SHIFTS,
    SINGULAR,
    additive,
    bounded,
    divides,
    filled,
    multiplicative,
    power,
    threshold,
)

UNARY = spec("elementwise unary", same_shape, unary, zeros=KEEPS)
SHIFTING = spec("elementwise unary", same_shape, unary, zeros=SHIFTS)
SINGULAR_AT_0 = spec("elementwise unary", same_shape, unary, zeros=SINGULAR)
COMPARE = spec("comparison", compare_shape, count_compare, zeros=SHIFTS)  # 0 == 0 is True


def _elementwise(zeros, *keys) -> None:
    register(spec("elementwise", broadcast_shape, elementwise_rule, zeros=zeros), *keys)


def register_pointwise() -> None:
    # f(0) = 0, with a finite derivative at 0
    register(
        UNARY,
        # modules
        nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
        nn.Hardswish, nn.Tanh, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
        nn.Softsign, nn.Tanhshrink, nn.Hardshrink, nn.Softshrink,
        # functions
        torch.relu, F.relu, F.relu6, F.gelu, F.silu, F.hardswish, torch.tanh, F.tanh, F.leaky_relu,
        F.elu, F.selu, F.celu, F.mish, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, torch.abs,
        torch.neg, operator.neg, torch.erf, torch.square, torch.sin, F.relu_, torch.relu_, F.elu_,
        F.leaky_relu_, torch.nan_to_num, torch.sign, torch.floor, torch.round, torch.detach,
        torch.clone, torch.positive,
        # methods
        *(Method(n) for n in (
            "relu", "relu_", "tanh", "tanh_", "abs", "neg", "contiguous", "clone", "detach", "float",
            "half", "double", "bfloat16", "to", "type", "type_as", "erf", "square", "sin", "sign",
            "floor", "round", "requires_grad_", "cpu", "cuda",
        )),
    )  # fmt: skip
    # f(0) finite, not 0
    register(
        SHIFTING,
        nn.Hardsigmoid, nn.Sigmoid, nn.Softplus, nn.LogSigmoid, nn.AlphaDropout,
        nn.FeatureAlphaDropout, F.hardsigmoid, F.sigmoid, torch.sigmoid, F.softplus, F.logsigmoid,
        F.alpha_dropout, torch.exp, torch.cos,
        *(Method(n) for n in ("sigmoid", "sigmoid_", "exp", "cos")),
    )  # fmt: skip
    # f(0) or f'(0) not finite
    register(
        SINGULAR_AT_0,
        torch.log, torch.sqrt, torch.rsqrt, torch.reciprocal,
        *(Method(n) for n in ("log", "sqrt", "rsqrt", "reciprocal")),
    )  # fmt: skip
    # 0 stays 0 when the bounds enclose it
    _CLAMP = bounded((1, "min"), (2, "max"))
    register(
        spec("elementwise unary", same_shape, unary, zeros=_CLAMP),
        torch.clamp, torch.clip, Method("clamp"), Method("clamp_"), Method("clip"),
    )  # fmt: skip
    register(
        spec("elementwise unary", same_shape, unary, zeros=bounded((1, "min_val"), (2, "max_val"))),
        F.hardtanh, F.hardtanh_, Method("hardtanh_"),
    )  # fmt: skip
    register(
        spec(
            "elementwise unary", same_shape, unary, zeros=bounded(None, None, "min_val", "max_val")
        ),
        nn.Hardtanh,
    )
    register(spec("elementwise unary", same_shape, unary, zeros=threshold), nn.Threshold)

    _elementwise(
        additive((0, "input"), (1, "other")),
        operator.add, operator.sub, operator.iadd, operator.isub, torch.add, torch.sub,
        torch.maximum, torch.minimum, torch.subtract,
        *(Method(n) for n in ("add", "sub", "maximum", "minimum", "add_", "sub_")),
    )  # fmt: skip
    product = multiplicative((0, "input"), (1, "other"))
    _elementwise(product, operator.imul, torch.mul, torch.multiply, Method("mul"), Method("mul_"))
    # `c * n` also multiplies channel counts (`num_key_value_heads * n_rep`)
    register(spec("size product", broadcast_shape, size_product, zeros=product), operator.mul)
    _elementwise(
        divides,
        operator.truediv, operator.itruediv, operator.mod, torch.div, torch.true_divide,
        *(Method(n) for n in ("div", "div_", "truediv")),
    )  # fmt: skip
    _elementwise(power, operator.pow, torch.pow, Method("pow"))
    _elementwise(additive((1, "input"), (2, "other")), torch.where)
    _elementwise(additive((0, "input"), (2, "other")), Method("where"))
    _elementwise(additive((0, "input"), (1, "end")), torch.lerp, Method("lerp"))
    _elementwise(
        additive((0, "input"), (1, "tensor1"), (2, "tensor2")), torch.addcmul, Method("addcmul")
    )
    _elementwise(filled, torch.masked_fill, Method("masked_fill"), Method("masked_fill_"))
    _elementwise(additive((1, "src")), Method("copy_"))
    register(
        spec("size division", broadcast_shape, size_quotient, zeros=divides), operator.floordiv
    )
    register(
        COMPARE,
        operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge,
        torch.eq, torch.ne, torch.lt, torch.le, torch.gt, torch.ge,
        *(Method(n) for n in ("eq", "ne", "lt", "le", "gt", "ge")),
    )  # fmt: skip
