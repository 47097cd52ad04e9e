"""Shape propagation: every node's value on the example inputs, from the op registry.

Shapes come from the registry's formulas (graph work, no forward pass); an op without a formula
runs on meta tensors, and only if that fails on real random tensors, whose conv/linear/matmul
and attention cost is then measured with FlopCounterMode (`node.meta["widthc.measured_macs"]`),
so that a model's FLOPs do not depend on which modules are leaves. Every node's value lands in
`node.meta["widthc.value"]`: a `TensorMeta`, a Python value, or a structure. `gm` is an
fx.GraphModule or a `trace.Traced` (a graph and the module it came from).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import fx, nn
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from widthc import fx_tracer, ops
from widthc.errors import WidthcError
from widthc.ir import TensorMeta
from widthc.tree import leaves

VALUE = "widthc.value"
MEASURED = "widthc.measured_macs"


def to_value(x):
    """Real values -> analysis values: tensors become TensorMeta, the rest stays."""
    if isinstance(x, torch.Tensor):
        return TensorMeta(tuple(x.shape), x.dtype)
    if isinstance(x, torch.Size) or not isinstance(x, (tuple, list, dict)):
        return x
    return tree_map(
        lambda v: TensorMeta(tuple(v.shape), v.dtype) if isinstance(v, torch.Tensor) else v, x
    )


def _to_meta(x):
    return tree_map(
        lambda v: (
            torch.empty(v.shape, dtype=v.dtype, device="meta") if isinstance(v, TensorMeta) else v
        ),
        x,
    )


def _has_tensor(x) -> bool:
    return any(isinstance(v, TensorMeta) for v in leaves(x))


class NodeView:
    """How a rule reads a traced node's arguments once shapes are known (coupling, FLOPs):
    `arg(i, name, default)` is the value of positional argument i or keyword `name`."""

    def __init__(self, node: fx.Node):
        self.node = node

    def _raw(self, i: int, name: str | None):
        if i < len(self.node.args):
            return self.node.args[i]
        if name is not None and name in self.node.kwargs:
            return self.node.kwargs[name]
        return ops.REQUIRED

    def arg(self, i: int, name: str | None = None, default=ops.REQUIRED):
        raw = self._raw(i, name)
        if raw is ops.REQUIRED:
            if default is ops.REQUIRED:
                raise KeyError(f"argument {name or i} of {self.node.name}")
            return default
        return fx.node.map_arg(raw, lambda n: n.meta[VALUE])


class ShapeCtx:
    """What a shape rule sees: the node, its module and its argument values."""

    def __init__(self, node: fx.Node, module, args, kwargs, run):
        self.node, self.module, self.args, self.kwargs = node, module, args, kwargs
        self._run = run

    def arg(self, i: int, name: str | None = None, default=ops.REQUIRED):
        if i < len(self.args):
            return self.args[i]
        if name is not None and name in self.kwargs:
            return self.kwargs[name]
        if default is ops.REQUIRED:
            raise KeyError(f"argument {name or i} of {self.node.name}")
        return default

    def values(self) -> list:
        return leaves((self.args, self.kwargs))

    def run_meta(self):
        return self._run(self.node, self.args, self.kwargs, meta=True)


class ShapeProp:
    def __init__(self, gm, example_inputs: Sequence, record: bool = True):
        """`record=False`: values only (node.meta keeps the example's, no cost is measured)."""
        self.gm = gm
        self.record = record
        self.modules = dict(gm.named_modules())
        self.examples = list(example_inputs)
        self.real: dict[fx.Node, torch.Tensor] = {}
        self.gen = torch.Generator().manual_seed(0)
        self.env: dict[fx.Node, object] = {}
        self.placeholders = 0
        self.last: fx.Node | None = None  # the last node evaluated (graph order)

    def run(self) -> None:
        for node in self.gm.graph.nodes:
            self.step(node)

    def value_of(self, node: fx.Node):
        """Evaluate the graph up to `node` and return its value. Incremental: the graph may
        grow between calls (the tracer asks while it traces)."""
        start = self.last.next if self.last is not None else next(iter(self.gm.graph.nodes))
        while node not in self.env:
            self.step(start)
            start = start.next
        return self.env[node]

    def step(self, node: fx.Node) -> None:
        env = self.env
        if node.op == "placeholder":
            if self.placeholders < len(self.examples):
                real = self.examples[self.placeholders]
            elif node.args:
                real = node.args[0]
            else:
                raise WidthcError(
                    f"the model's forward takes an input `{node.target}` that the example "
                    f"inputs do not provide ({len(self.examples)} given)"
                )
            self.placeholders += 1
            if isinstance(real, torch.Tensor):
                self.real[node] = real
            value = to_value(real)
        elif node.op == "get_attr":
            real = _fetch_attr(self.gm, node.target)
            if isinstance(real, torch.Tensor):
                self.real[node] = real
            value = to_value(real)
        elif node.op == "output":
            value = None
        else:
            args = fx.node.map_arg(node.args, lambda n: env[n])
            kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
            value = self.eval_node(node, args, kwargs)
        env[node] = value
        self.last = node
        if self.record:
            node.meta[VALUE] = value
            if fx_tracer.ASSUMED_LEN in node.meta:
                _check_length(node)

    def eval_node(self, node: fx.Node, args, kwargs):
        if node.op != "call_module" and not _has_tensor((args, kwargs)):
            # Python arithmetic on sizes, or a tensor built from Python values
            return to_value(_call(self.modules, node, args, kwargs))
        spec = ops.lookup(node, self.modules)
        if spec is not None and spec.shape is not None:
            module = self.modules.get(node.target) if node.op == "call_module" else None
            try:
                return spec.shape(ShapeCtx(node, module, args, kwargs, self.execute))
            except Exception:  # noqa: BLE001 - a formula that does not fit falls back to running
                pass
        return self.execute(node, args, kwargs, meta=node.op != "call_module", measure=self.record)

    def execute(self, node, args, kwargs, meta=True, measure=False):
        """Run one op on meta tensors, or on real random ones when meta is not enough."""
        counter = _counter() if measure else None
        if meta:
            try:
                if counter is not None:
                    with counter:
                        out = _call(self.modules, node, _to_meta(args), _to_meta(kwargs))
                else:
                    out = _call(self.modules, node, _to_meta(args), _to_meta(kwargs))
                if counter is not None:
                    node.meta[MEASURED] = counter.get_total_flops() / 2
                return to_value(out)
            except Exception:  # noqa: BLE001
                counter = _counter() if measure else None
        real_args = self._materialize(node.args, args)
        real_kwargs = self._materialize(node.kwargs, kwargs)
        try:
            # measured with autograd on: in eval mode without it, nn.MultiheadAttention takes a
            # fused path that FlopCounterMode does not count
            with torch.set_grad_enabled(counter is not None):
                if counter is not None:
                    with counter:
                        out = _call(self.modules, node, real_args, real_kwargs)
                    node.meta[MEASURED] = counter.get_total_flops() / 2
                else:
                    out = _call(self.modules, node, real_args, real_kwargs)
        except Exception as e:  # noqa: BLE001
            layer = node.target if node.op == "call_module" else node.name
            cause = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise WidthcError(
                f"the model does not run on the example input: layer `{layer}` "
                f'({ops.op_name(node, self.modules)}) fails with "{cause.rstrip(".")}"; '
                f"check the input shape (--input-shape)"
            ) from e
        return to_value(out)

    def _materialize(self, raw, values):
        """Real tensors for a node's arguments: the real ones where known, random otherwise."""
        flat_raw, _ = tree_flatten(raw)
        flat_val, spec = tree_flatten(values)
        out = []
        for r, v in zip(flat_raw, flat_val):
            if isinstance(v, TensorMeta):
                real = self.real.get(r) if isinstance(r, fx.Node) else None
                if real is None or tuple(real.shape) != v.shape:
                    real = _random(v, self.gen)
                out.append(real)
            else:
                out.append(v)
        if len(flat_raw) != len(flat_val):  # structures differ (a Node that holds a tuple)
            out = [_random(v, self.gen) if isinstance(v, TensorMeta) else v for v in flat_val]
        return tree_unflatten(out, spec)


def _sdpa_macs(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _counter() -> FlopCounterMode:
    """FlopCounterMode that also counts CPU attention (it counts 0 for its fused kernel)."""
    cpu_sdpa = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    return FlopCounterMode(display=False, custom_mapping={cpu_sdpa: _sdpa_macs})


def _random(v: TensorMeta, gen: torch.Generator) -> torch.Tensor:
    if v.dtype.is_floating_point:
        return torch.randn(v.shape, dtype=v.dtype, generator=gen)
    return torch.zeros(v.shape, dtype=v.dtype)


def _check_length(node: fx.Node) -> None:
    """A sized Proxy promised the traced code `n` results (fx_tracer): hold it to that."""
    n, value = node.meta[fx_tracer.ASSUMED_LEN], node.meta[VALUE]
    if not isinstance(value, (tuple, list)) or len(value) != n:
        got = len(value) if isinstance(value, (tuple, list)) else type(value).__name__
        raise WidthcError(
            f"`{node.name}` ({node.target}) returns {got} tensors on the example input, but the "
            f"traced code took the count it was asked for, {n}: give an input whose split "
            f"dimension has at least {n} entries"
        )


def _call(modules, node: fx.Node, args, kwargs):
    if node.op == "call_module":
        return modules[node.target](*args, **kwargs)
    if node.op == "call_function":  # a helper may mutate its list arguments (torchvision's do)
        return node.target(*_thaw(args), **_thaw(kwargs))
    self_obj, *rest = args
    return getattr(self_obj, node.target)(*rest, **kwargs)


def _thaw(x):
    """fx's immutable argument lists and dicts as plain ones (other values unchanged: a
    ModelOutput, a dict subclass, stays itself)."""
    if type(x) in (list, fx.immutable_collections.immutable_list):
        return [_thaw(v) for v in x]
    if type(x) in (dict, fx.immutable_collections.immutable_dict):
        return {k: _thaw(v) for k, v in x.items()}
    if type(x) is tuple:
        return tuple(_thaw(v) for v in x)
    return x


def _fetch_attr(gm, target: str):
    obj = gm if isinstance(gm, nn.Module) else gm.root  # a GraphModule, or trace.Traced
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def propagate_shapes(gm, example_inputs: Sequence) -> None:
    """Fill `node.meta[VALUE]` for every node (see module docstring)."""
    ShapeProp(gm, example_inputs).run()
