"""The torch.fx tracer widthc uses, and what it does where plain torch.fx stops.

- Leaves (modules traced as one opaque call): registry modules, the user's `--leaf` names or
  classes, timm's no-trace modules, and automatic leaves: when tracing fails inside a submodule,
  the innermost module whose forward was running is traced again as a leaf.
- timm's no-trace functions that the op registry has no rule for are traced into, and stay
  one call where that fails (widthc/fx_enter.py).
- Arguments the example inputs do not give are left out of the traced call, so they take their
  defaults (`mask=None`, `*args` empty) instead of becoming Proxies. (torch.fx's
  `concrete_args` adds placeholders and asserts, a pytree calling convention for a tuple
  default, and mis-binds a decorated forward such as HuggingFace's `wrapper(*args, **kwargs)`.)
- `x.chunk(2, 1)`, `x.split([a, b])`, `x.tensor_split(3)`: a Proxy that knows its length, so
  `list(...)`, `len(...)` and loops trace; shape propagation checks the length (`ASSUMED_LEN`).
- Given the example inputs, a Python value computed from tensor shapes (`if h % 2:`,
  `int(x.shape[-1])`, `(*x.shape[:-1], -1)`) takes the example's value, as HuggingFace's
  tracer does (`transformers.utils.fx`, gone in transformers 5): the graph is specialised to
  the example's shapes at those points. A value that depends on tensor data still fails (and
  the module around it becomes a leaf). Each such value is also computed at another batch
  size; where it differs, `Tracer.batch_sites` says where (widthc/batch.py).
- Ordinary values rather than failures: a tensor's dtype (`torch.finfo(x.dtype)`), a shape
  plus a tuple (`t.size()[:-1] + (h, d)`: one Proxy per size), item assignment
  (`boxes[..., :2] += ref`), `torch.zeros(sizes)` with traced sizes, `*rest` at the root (one
  placeholder per extra input), a function dressed as a module that no model installs.
- Errors name the user's line and the module whose forward ran it (widthc/trace_messages.py).
"""

from __future__ import annotations

import dis
import inspect
import operator
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import fx, nn
from torch.fx import _symbolic_trace

from widthc import fx_enter, ops, trace_messages
from widthc.ir import TensorMeta
from widthc.tree import leaves as flat

ASSUMED_LEN = "widthc.assumed_len"  # node.meta: the length a sized Proxy promised
_SPLITS = {torch.chunk: "chunk", torch.split: "split", torch.tensor_split: "tensor_split"}
_SHAPE_ATTRS = {"shape", "ndim", "dtype", "device", "is_cuda", "layout"}
_SHAPE_METHODS = {"size", "dim", "ndimension", "numel", "get_device"}
_DATA = "symbolically traced variables cannot be used as inputs to control flow ({})"
# tensors made to a size given as a sequence: torch reads each size with `__index__`, which
# would take the example's value (a batch size as a constant); wrapped, the sizes stay traced
_SIZED = (torch.zeros, torch.ones, torch.empty, torch.rand, torch.randn)
_UNCHECKED, _FAILED = object(), object()  # no value at another batch size; it failed there
_COUNT_KWARGS = ("chunks", "split_size_or_sections", "split_size", "sections", "indices")


class _Proxy(fx.Proxy):
    """A Proxy that answers `len`, iteration, `int`, `float` and indexing where the call (a
    literal split count) or the example input's shapes fix the answer (Tracer.length, .scalar)."""

    def __len__(self) -> int:
        return self.tracer.length(self)

    def __iter__(self):
        frame = inspect.currentframe().f_back  # `a, b = proxy`: torch.fx's own rule
        inst = next(i for i in dis.get_instructions(frame.f_code) if i.offset >= frame.f_lasti)
        if inst.opname == "UNPACK_SEQUENCE":
            return (self[i] for i in range(inst.argval))
        return self.tracer.iter(self)

    def __int__(self) -> int:
        return int(self.tracer.scalar(self, "int()"))

    def __index__(self) -> int:
        return operator.index(self.tracer.scalar(self, "an index"))

    def __float__(self) -> float:
        return float(self.tracer.scalar(self, "float()"))

    def __setitem__(self, key, value) -> None:
        # an in-place update of a slice (`boxes[..., :2] += ref`): an op of the graph
        self.tracer.create_proxy("call_function", operator.setitem, (self, key, value), {})

    def __getattr__(self, k: str):
        # a tensor's dtype is a constant of the example (`torch.finfo(x.dtype).min` in a mask)
        dtype = self.tracer.dtype(self) if k == "dtype" else None
        return dtype if dtype is not None else _Attribute(self, k)

    # `t.size()[:-1] + (heads, dim)`: a tuple of one Proxy per size and the literals, so that a
    # reshape sees each size, and each literal channel count can follow the width
    def __add__(self, other):
        items = self.tracer.items(self) if isinstance(other, tuple) else None
        return items + other if items is not None else super().__add__(other)

    def __radd__(self, other):
        items = self.tracer.items(self) if isinstance(other, tuple) else None
        return other + items if items is not None else super().__radd__(other)


class _Attribute(fx.proxy.Attribute, _Proxy):
    """`x.shape`: torch.fx's lazy attribute Proxy, with `len`, iteration and the rest above."""


def _reads_shape(node: fx.Node) -> bool:
    """`x.shape`, `x.size(1)`, `x.dim()`, ...: a Python value read from a tensor's metadata."""
    if node.op == "call_method":
        return node.target in _SHAPE_METHODS
    return node.target is getattr and node.args[1] in _SHAPE_ATTRS


def _known_length(node: fx.Node) -> int | None:
    """How many tensors a split call returns, where its arguments say it without shapes."""
    if node.op == "call_function":
        kind = _SPLITS.get(node.target)
    else:
        kind = node.target if node.op == "call_method" else None
    if kind not in ("chunk", "split", "tensor_split"):
        return None
    count = node.args[1] if len(node.args) > 1 else None
    for key in _COUNT_KWARGS:
        count = node.kwargs.get(key, count)
    if isinstance(count, (list, tuple)) and kind != "chunk":
        return len(count) + (kind == "tensor_split")
    if isinstance(count, int) and not isinstance(count, bool) and kind != "split":
        return count
    return None


class Tracer(fx.Tracer):
    """torch.fx with widthc's leaf policy; remembers the module path of each failure.

    `evaluate(graph, root)` returns a function that gives a node's value on the example inputs
    (shape propagation of the graph traced so far); with it, control flow and Python values
    that depend on tensor shapes (never on tensor data) take the example's values."""

    def __init__(
        self,
        leaves: Iterable,
        autowrap_functions=(),
        given: Sequence | None = None,
        evaluate: Callable | None = None,
        evaluate_other: Callable | None = None,
    ):
        # no-trace functions the registry knows stay one call; the others are traced into
        known = [f for f in autowrap_functions if f in ops.REGISTRY]
        self._entered = [f for f in autowrap_functions if f not in ops.REGISTRY]
        super().__init__(autowrap_functions=(*known, *_SIZED))
        self._autowrap_search.append(torch)  # `torch.zeros(...)` as well as `zeros(...)`
        # see given_inputs(): argument name -> how many inputs it takes (`*rest`: any number)
        self._given = None if given is None else Counter(given)
        leaves = list(leaves)
        self._leaf_types = tuple(x for x in leaves if isinstance(x, type))
        self._leaf_names = {x for x in leaves if isinstance(x, str)}
        self._evaluate = evaluate
        self._value_of = None  # evaluate(graph, root), made on first need
        self._evaluate_other = evaluate_other  # the same at another batch size
        self._other_value_of = None
        # (user's line, what) of every value the graph takes from the example that is not the
        # same at another batch size: there the graph holds at the example's batch only
        self.batch_sites: list[tuple[str, str]] = []
        self._shape_memo: dict[fx.Node, bool] = {}
        self._stack: list[str] = []
        self._failures: list[tuple[BaseException, tuple[str, ...]]] = []

    def trace(self, root, concrete_args=None) -> fx.Graph:
        is_tensor = torch.is_tensor
        # `if not torch.is_tensor(t): t = torch.tensor([t])` (diffusers' timesteps) takes the
        # tensor's branch for a Proxy of a tensor
        torch.is_tensor = lambda obj: is_tensor(obj) or self.dtype(obj) is not None
        try:
            with fx_enter.entered(self, self._entered):
                graph = super().trace(root, concrete_args)
        finally:
            torch.is_tensor = is_tensor
        for node in graph.nodes:
            # torch.fx would write `wrap("torch.zeros")` into the generated code, and every
            # later trace would then look for a global named "torch.zeros"
            if node.target in _SIZED:
                node.meta.pop("is_wrapped", None)
        return graph

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if qualname in self._leaf_names or type(m).__name__ in self._leaf_names:
            return True
        if self._leaf_types and isinstance(m, self._leaf_types):
            return True
        if ops.module_key(m) in ops.REGISTRY:
            return True
        return super().is_leaf_module(m, qualname)

    def create_args_for_root(self, root_fn, is_module, concrete_args=None):
        if self._given is None:
            return super().create_args_for_root(root_fn, is_module, concrete_args)
        # placeholders from the function a decorator wraps (HuggingFace's `wrapper(*args,
        # **kwargs)`): torch.fx would patch the wrapper's code to take every placeholder, and
        # that code has too few variable names for a forward with `**kwargs`; the wrapper
        # itself is then called with the given inputs only
        _, args = super().create_args_for_root(inspect.unwrap(root_fn), is_module, concrete_args)
        kept = list(args[: int(is_module)])
        for name, arg in zip(_arg_names(root_fn, is_module), args[int(is_module) :]):
            if name in self._given and not name.startswith("*"):
                kept.append(arg)
                continue
            self.graph.erase_node(arg.node)
            # inputs given beyond the named arguments: one placeholder each, passed as `*rest`
            # (one Proxy for all of them would be iterated as if it were a tensor)
            n = self._given.get(name, 0) if name[:1] == "*" and name[:2] != "**" else 0
            kept += [self.create_proxy("placeholder", f"{name[1:]}_{i}", (), {}) for i in range(n)]
        return (lambda *given: root_fn(*given)), kept

    def call_module(self, m, forward, args, kwargs):
        try:
            path = self.path_of_module(m)
        except NameError:
            if _holds_tensors(m):
                raise
            # a function dressed as a module that no model installs (the `kernels` package
            # turns HuggingFace's `apply_rotary_pos_emb` into one): traced as the function
            return forward(*args, **kwargs)
        self._stack.append(path)
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception as e:
            if not any(e is f for f, _ in self._failures):
                self._failures.append((e, tuple(self._stack)))
            raise
        finally:
            self._stack.pop()

    def proxy(self, node: fx.Node) -> fx.Proxy:
        length = _known_length(node)
        if length is not None:
            node.meta[ASSUMED_LEN] = length
        return _Proxy(node, self)

    # --- values the traced code needs as Python values ----------------------------------------

    def to_bool(self, obj: fx.Proxy) -> bool:
        return bool(self.scalar(obj, "a condition"))

    def iter(self, obj: fx.Proxy):
        return iter([obj[i] for i in range(self.length(obj))])

    def dtype(self, obj) -> torch.dtype | None:
        """The dtype of a tensor-valued Proxy on the example, or None where it is not known
        (or `obj` is no Proxy)."""
        if not isinstance(obj, fx.Proxy) or obj.tracer is not self:
            return None
        try:
            value = self._concrete(obj, "a dtype")
        except fx.proxy.TraceError:
            return None
        return value.dtype if isinstance(value, TensorMeta) else None

    def items(self, obj: fx.Proxy) -> tuple | None:
        """A tuple-valued Proxy (a shape) as a tuple of Proxies, or None where its value is
        not a tuple or not known."""
        try:
            value, other = self._concrete(obj, "a tuple", other=True)
        except fx.proxy.TraceError:
            return None
        if not isinstance(value, tuple):
            return None
        self._watch_batch(obj, len(value), other, len, "a length")
        return tuple(obj[i] for i in range(len(value)))

    def length(self, obj: fx.Proxy) -> int:
        if ASSUMED_LEN in obj.node.meta:
            return obj.node.meta[ASSUMED_LEN]
        value, other = self._concrete(obj, "len() or iteration", other=True)
        if isinstance(value, TensorMeta):  # a tensor: its length is its batch
            raise fx.proxy.TraceError(_DATA.format("len() or iteration of a tensor"))
        if not isinstance(value, (tuple, list)):
            what = f"len() or iteration of `{obj.node.name}`, which is {type(value).__name__}"
            raise fx.proxy.TraceError(_DATA.format(what))
        self._watch_batch(obj, len(value), other, len, "a length")
        return len(value)

    def scalar(self, obj: fx.Proxy, what: str):
        """The example's value of a Python number or bool computed from tensor shapes only
        (never from tensor data): the graph is specialised to the example's shapes there."""
        value, other = self._concrete(obj, what, other=True)
        if any(isinstance(v, TensorMeta) for v in flat(value)) or not self._shape_only(obj.node):
            raise fx.proxy.TraceError(_DATA.format(what))
        self._watch_batch(obj, value, other, lambda v: v, what)
        return value

    def _watch_batch(self, obj: fx.Proxy, value, other, key: Callable, what: str) -> None:
        """Record the user's line where a value taken from the example (`key` of it) is not
        the same at another batch size (`other`), or cannot be computed there."""
        if other is _UNCHECKED:
            return
        try:
            same = other is not _FAILED and key(other) == value
        except TypeError:
            same = False
        if not same:
            self.batch_sites.append((trace_messages.user_site() or f"node `{obj.node.name}`", what))

    def _concrete(self, obj: fx.Proxy, what: str, other: bool = False):
        """The value of `obj` on the example; with `other`, (that, its value at another batch
        size or _FAILED, or _UNCHECKED where there is none), computed at once."""
        if self._evaluate is None:
            raise fx.proxy.TraceError(_DATA.format(what))
        if self._value_of is None:
            self._value_of = self._evaluate(self.graph, self.root)
        tracing = _symbolic_trace._get_is_fx_tracing()
        try:  # evaluate as plain PyTorch: without fx's patches, modules and parameters are real
            with _symbolic_trace._maybe_revert_all_patches():
                _symbolic_trace._set_is_fx_tracing(False)
                value = self._value_of(obj.node)
                return (value, self._other_value(obj.node)) if other else value
        except Exception as e:  # noqa: BLE001 - the value stays unknown: a trace failure
            raise fx.proxy.TraceError(f"cannot compute `{obj.node.name}` for {what}: {e}") from e
        finally:
            _symbolic_trace._set_is_fx_tracing(tracing)

    def _other_value(self, node: fx.Node):
        if self._evaluate_other is None:
            return _UNCHECKED
        if self._other_value_of is None:
            self._other_value_of = self._evaluate_other(self.graph, self.root)
        try:
            return self._other_value_of(node)
        except Exception:  # noqa: BLE001 - not computable at that batch size: it differs
            return _FAILED

    def _shape_only(self, node: fx.Node) -> bool:
        """Whether `node`'s value follows from tensor shapes, dtypes and constants alone."""
        if node not in self._shape_memo:
            ok = True
            for inp in node.all_input_nodes:
                if any(isinstance(v, TensorMeta) for v in flat(self._value_of(inp))):
                    ok = ok and _reads_shape(node)
                else:
                    ok = ok and self._shape_only(inp)
            self._shape_memo[node] = ok
        return self._shape_memo[node]

    def failure_path(self, e: BaseException) -> tuple[str, ...]:
        """Module paths (outermost first) whose forwards were running when `e` (or the
        exception it was raised from) happened; () for a failure in the root's own forward."""
        seen = e
        while seen is not None:
            for f, path in self._failures:
                if f is seen:
                    return path
            seen = seen.__cause__ or seen.__context__
        return ()


def _holds_tensors(m: nn.Module) -> bool:
    return any(True for _ in m.parameters()) or any(True for _ in m.buffers())


def _arg_names(root_fn, is_module: bool) -> list[str]:
    """The root's arguments in the order torch.fx makes placeholders (`*args`, `**kwargs`)."""
    co = inspect.unwrap(root_fn).__code__
    total = co.co_argcount + co.co_kwonlyargcount
    names = list(co.co_varnames[int(is_module) : total])
    rest = iter(co.co_varnames[total:])
    if co.co_flags & inspect.CO_VARARGS:
        names.append("*" + next(rest))
    if co.co_flags & inspect.CO_VARKEYWORDS:
        names.append("**" + next(rest))
    return names


def timm_leaves() -> tuple[list, list]:
    """timm's own no-trace modules and functions (its models mark them for torch.fx)."""
    try:
        from timm.layers import get_notrace_functions, get_notrace_modules
    except ImportError:
        return [], []
    return list(get_notrace_modules()), list(get_notrace_functions())


def given_inputs(model: nn.Module, n_inputs: int | None) -> list[str] | None:
    """The forward arguments the first `n_inputs` positional inputs give (None: all of them,
    when there are more inputs than named arguments). The tracer leaves every other argument
    out of the call, so it takes its default (`mask=None`) and `*args`, `**kwargs` are empty.
    `n_inputs=None`: the arguments without a default (at least one). Inputs beyond the named
    arguments of a forward with `*rest` are named `*rest` each."""
    params = inspect.signature(model.forward).parameters.values()
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    rest = [f"*{p.name}" for p in params if p.kind == p.VAR_POSITIONAL]
    if n_inputs is None:
        n_inputs = max(1, sum(p.default is p.empty for p in positional))
    if n_inputs > len(positional):
        extra = n_inputs - len(positional)
        return [p.name for p in positional] + rest * extra if rest else None
    required = [p.name for p in positional[n_inputs:] if p.default is p.empty]
    return [p.name for p in positional[:n_inputs]] + required  # a missing input: a clear error
