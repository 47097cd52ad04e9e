"""widthc's own JSON description of an fx GraphModule, and the module it rebuilds.

`describe(gm)` -> a JSON-able dict: every node (op, target, args, kwargs), every called module
(class by qualified name plus constructor arguments read back from its attributes through
`inspect.signature`), and the parameters and buffers that `get_attr` nodes read. `build(desc)`
rebuilds the GraphModule on the meta device, ready for `load_state_dict(..., assign=True)`.

Functions and classes are named 'module:attribute.path' and resolved only through
`widthc.allowlist`, on save and on load alike.
"""

from __future__ import annotations

import inspect
import math

import torch
from torch import fx, nn

from widthc.allowlist import (
    MODULE_PACKAGES,
    class_name,
    function_name,
    resolve_class,
    resolve_function,
)
from widthc.errors import WidthcError
from widthc.ops import reparam

_TORCH_VALUES = (torch.dtype, torch.device, torch.memory_format, torch.layout)


def describe(gm: fx.GraphModule) -> dict:
    """The JSON description of `gm` (see module docstring). Raises WidthcError naming the first
    node or module that cannot be described."""
    if type(gm.graph._codegen) is not fx.graph.CodeGen:
        raise WidthcError(
            f"cannot describe {type(gm).__name__}: its graph uses a custom code generator "
            f"({type(gm.graph._codegen).__name__})"
        )
    modules, attrs, nodes = {}, {}, []
    named = dict(gm.named_modules())
    for node in gm.graph.nodes:
        target = node.target
        if node.op == "call_function":
            target = function_name(node.target, node.name)
        elif node.op == "call_module" and node.target not in modules:
            modules[node.target] = _describe_module(node.target, named[node.target])
        elif node.op == "get_attr":
            attrs[node.target] = _describe_attr(gm, node)
        nodes.append(
            {
                "name": node.name,
                "op": node.op,
                "target": target,
                "args": encode(node.args, node.name),
                "kwargs": encode(node.kwargs, node.name),
            }
        )
    return {
        "class_name": type(gm).__name__,
        "training": gm.training,
        "modules": modules,
        "attrs": attrs,
        "nodes": nodes,
        "frozen_params": [k for k, p in gm.named_parameters() if not p.requires_grad],
    }


def build(desc: dict) -> fx.GraphModule:
    """The GraphModule `desc` describes, its tensors on the meta device (no values yet)."""
    root = nn.Module()
    with torch.device("meta"):
        for path in sorted(desc["modules"], key=lambda p: p.count(".")):
            if not _has(root, path):
                _install(root, path, _build_module(path, desc["modules"][path]))
        for target, a in desc["attrs"].items():
            if _has(root, target):
                continue
            owner_name, _, attr = target.rpartition(".")
            owner = _container(root, owner_name)
            empty = torch.empty(a["shape"], dtype=_dtype(a["dtype"]))
            if a["kind"] == "parameter":
                owner.register_parameter(attr, nn.Parameter(empty, a["requires_grad"]))
            else:
                owner.register_buffer(attr, empty, persistent=a.get("persistent", True))
    graph, env = fx.Graph(), {}
    for n in desc["nodes"]:
        op, target = n["op"], n["target"]
        if op == "call_function":
            target = resolve_function(target)
        elif op == "call_method" and not (
            isinstance(target, str) and callable(getattr(torch.Tensor, target, None))
        ):
            raise WidthcError(f"node `{n['name']}` calls `{target}`, which is no tensor method")
        args, kwargs = decode(n["args"], env), decode(n["kwargs"], env)
        env[n["name"]] = graph.create_node(op, target, args, kwargs, name=n["name"])
    gm = fx.GraphModule(root, graph, desc["class_name"])
    return gm


def finish(gm: fx.GraphModule, desc: dict) -> None:
    """Restore what the state dict does not hold: training flags and frozen parameters."""
    gm.train(desc["training"])
    for path, m in desc["modules"].items():
        gm.get_submodule(path).train(m["training"])
    params = dict(gm.named_parameters())
    for name in desc["frozen_params"]:
        params[name].requires_grad_(False)


def check_same_structure(gm: fx.GraphModule, rebuilt: fx.GraphModule) -> None:
    """Raise WidthcError if a rebuilt module differs from the original: its repr (with every
    submodule) and its state-dict shapes must match, else a constructor argument is not shown
    by its attributes."""
    named = dict(rebuilt.named_modules())
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        a, b = gm.get_submodule(node.target), named[node.target]
        shapes_a = {k: tuple(v.shape) for k, v in a.state_dict().items()}
        shapes_b = {k: tuple(v.shape) for k, v in b.state_dict().items()}
        if repr(a) != repr(b) or shapes_a != shapes_b:
            what = " ".join(repr(b).split())[:200]
            raise WidthcError(
                f"cannot describe module `{node.target}` ({class_name(type(a))}): rebuilt from "
                f"its attributes it reads `{what}` instead of `{' '.join(repr(a).split())[:200]}`"
            )


# --- modules -----------------------------------------------------------------------------------


def _describe_module(path: str, module: nn.Module) -> dict:
    cls = reparam.base_class(module)
    name = class_name(cls)
    norms = reparam.weight_norms(module)
    if cls is not type(module) and set(norms) != set(module.parametrizations):
        raise WidthcError(
            f"cannot describe module `{path}` ({name}): widthc files hold weight norm as the "
            f"only parametrization; save the weights with torch.save"
        )
    if resolve_class(name) is not cls:
        raise WidthcError(
            f"cannot describe module `{path}` ({name}): widthc files hold modules of "
            f"{', '.join(MODULE_PACKAGES)} only; trace through it (do not pass it as a leaf) "
            f"or save the weights with torch.save"
        )
    kwargs = {}
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in ("device", "dtype"):
            continue
        value = _constructor_value(module, p)
        if value is _MISSING:
            if p.default is p.empty:
                raise WidthcError(
                    f"cannot describe module `{path}` ({name}): its constructor argument "
                    f"`{p.name}` is not stored as an attribute"
                )
            continue
        if isinstance(value, (nn.Module, torch.Tensor)):
            raise WidthcError(
                f"cannot describe module `{path}` ({name}): its constructor argument "
                f"`{p.name}` is a {type(value).__name__}"
            )
        kwargs[p.name] = encode(value, path)
    desc = {"class": name, "kwargs": kwargs, "training": module.training}
    if norms:
        desc["weight_norm"] = norms
    return desc


_MISSING = object()


def _constructor_value(module: nn.Module, p: inspect.Parameter):
    """The value of constructor argument `p` that `module` shows, or _MISSING."""
    if not hasattr(module, p.name):
        # timm's conventions: `act_layer=nn.SiLU` builds the child `act`, and arguments such as
        # `inplace` are passed on to a child that stores them
        child = getattr(module, p.name.removesuffix("_layer"), None)
        if p.name.endswith("_layer") and isinstance(child, nn.Module):
            return type(child)
        seen = {
            getattr(c, p.name)
            for c in module.children()
            if isinstance(getattr(c, p.name, None), (bool, int, float, str))
        }
        return seen.pop() if len(seen) == 1 else _MISSING
    value = getattr(module, p.name)
    if isinstance(p.default, bool) and (value is None or isinstance(value, torch.Tensor)):
        return value is not None  # `bias=True` is stored as the bias tensor itself
    return value


def _build_module(path: str, m: dict) -> nn.Module:
    cls = resolve_class(m["class"])
    if cls is None:
        raise WidthcError(
            f"module `{path}` names class `{m['class']}`, which widthc does not allow"
        )
    module = cls(**{k: decode(v, {}) for k, v in m["kwargs"].items()})
    for name, (style, dim) in m.get("weight_norm", {}).items():
        if style not in ("parametrization", "hook") or not isinstance(dim, int):
            raise WidthcError(f"module `{path}` names an unknown weight norm {style!r}")
        module = reparam.apply_weight_norm(module, name, style, dim)
    return module


def _describe_attr(gm: fx.GraphModule, node: fx.Node) -> dict:
    if node.target == "training":  # the module's own train/eval flag (see trace.py)
        return {"kind": "training"}
    owner_name, _, attr = node.target.rpartition(".")
    owner = gm.get_submodule(owner_name) if owner_name else gm
    value = getattr(owner, attr, None)
    if not isinstance(value, torch.Tensor):
        raise WidthcError(
            f"cannot describe node `{node.name}`: it reads `{node.target}`, which is a "
            f"{type(value).__name__}, not a parameter or buffer"
        )
    return {
        "kind": "parameter" if isinstance(value, nn.Parameter) else "buffer",
        "persistent": attr not in owner._non_persistent_buffers_set,
        "shape": list(value.shape),
        "dtype": str(value.dtype).removeprefix("torch."),
        "requires_grad": value.requires_grad,
    }


def _has(root: nn.Module, path: str) -> bool:
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return False
    return True


def _container(root: nn.Module, path: str) -> nn.Module:
    obj = root
    for part in path.split(".") if path else ():
        if not hasattr(obj, part):
            obj.add_module(part, nn.Module())
        obj = getattr(obj, part)
    return obj


def _install(root: nn.Module, path: str, module: nn.Module) -> None:
    owner_name, _, attr = path.rpartition(".")
    _container(root, owner_name).add_module(attr, module)


# --- argument values ---------------------------------------------------------------------------


def encode(x, where: str):
    """A node argument as JSON: nodes, tuples, slices and torch values become tagged objects."""
    if x is None or isinstance(x, (bool, int, str)):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else {"$float": repr(x)}
    if isinstance(x, fx.Node):
        return {"$node": x.name}
    if isinstance(x, list):
        return [encode(v, where) for v in x]
    if isinstance(x, tuple):
        return {"$tuple": [encode(v, where) for v in x]}
    if isinstance(x, dict):
        return {"$dict": [[encode(k, where), encode(v, where)] for k, v in x.items()]}
    if isinstance(x, slice):
        return {"$slice": [encode(v, where) for v in (x.start, x.stop, x.step)]}
    if x is Ellipsis:
        return {"$ellipsis": None}
    if isinstance(x, _TORCH_VALUES):
        kind = type(x).__name__
        return {f"${kind}": str(x).removeprefix("torch.")}
    if isinstance(x, type) and resolve_class(class_name(x)) is x:
        return {"$class": class_name(x)}
    raise WidthcError(
        f"cannot describe `{where}`: it holds a {type(x).__name__} value ({x!r:.60}), which "
        f"widthc files cannot store"
    )


def decode(x, env: dict):
    """The inverse of `encode`; `env` maps node names to the nodes built so far."""
    if isinstance(x, list):
        return [decode(v, env) for v in x]
    if not isinstance(x, dict):
        return x
    ((tag, v),) = x.items()
    if tag == "$node":
        return env[v]
    if tag == "$tuple":
        return tuple(decode(e, env) for e in v)
    if tag == "$dict":
        return {decode(k, env): decode(e, env) for k, e in v}
    if tag == "$slice":
        return slice(*(decode(e, env) for e in v))
    if tag == "$ellipsis":
        return Ellipsis
    if tag == "$float":
        return float(v)
    if tag == "$dtype":
        return _dtype(v)
    if tag == "$device":
        return torch.device(v)
    if tag == "$class" and resolve_class(v) is not None:
        return resolve_class(v)
    if tag in ("$memory_format", "$layout"):
        value = getattr(torch, v, None)
        if isinstance(value, _TORCH_VALUES):
            return value
    raise WidthcError(f"the model file holds an unknown value {x!r:.60}")


def _dtype(name: str) -> torch.dtype:
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        raise WidthcError(f"the model file names an unknown dtype `{name}`")
    return value
