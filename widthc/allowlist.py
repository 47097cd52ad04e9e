"""What a widthc file may name: the functions and module classes that a saved description
(`widthc.graph_json`) resolves, on save and on load alike.

Names are 'module:attribute.path'. Only functions inside `FUNCTION_PACKAGES` and module classes
inside `MODULE_PACKAGES` are ever resolved, and none whose name mentions files, downloads or
loading: loading a description never imports or calls anything else.
"""

from __future__ import annotations

import builtins
import importlib
import warnings
from functools import cache

from torch import nn

from widthc.errors import WidthcError

# Names are "module:attribute.path". A function or class resolves only inside these packages.
FUNCTION_PACKAGES = (
    "torch",
    "operator",
    "math",
    "torchvision.ops",
    "torchvision.models",  # helpers that torchvision models wrap for fx (swin's relative bias)
    "timm.layers",
    "timm.models",
)
MODULE_PACKAGES = ("torch.nn", "torchvision.ops", "timm.layers")
# public names searched first, in order, for a stable name of a call_function target
_INDEXED = ("torch", "torch.nn.functional", "operator", "math", "torchvision.ops", "timm.layers")
# builtins that fx records as call_function (x.shape is getattr(x, "shape"), ...)
_BUILTINS = ("getattr", "len", "int", "float", "bool", "min", "max", "abs", "round", "slice")
# no model op has these in its name; they read or write files or the network
_DENIED_WORDS = ("load", "save", "file", "download", "url", "hub")


@cache
def _function_index() -> dict[int, tuple[str, object]]:
    index: dict[int, tuple[str, object]] = {}
    for ns in _INDEXED:
        obj = _import_optional(ns)
        if obj is None:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name in sorted(dir(obj)):
                value = getattr(obj, name, None)
                if name.startswith("_") or not callable(value) or isinstance(value, type):
                    continue
                if not _denied(f"{ns}:{name}"):
                    index.setdefault(id(value), (f"{ns}:{name}", value))
    for name in _BUILTINS:
        value = getattr(builtins, name)
        index.setdefault(id(value), (f"builtins:{name}", value))
    return index


def function_name(fn, node_name: str = "") -> str:
    """The allowlisted name of a call_function target, e.g. 'torch:cat'."""
    hit = _function_index().get(id(fn))
    if hit is not None and hit[1] is fn:
        return hit[0]
    module, qual = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    name = f"{module}:{qual}"
    if module and qual and _resolve(name, FUNCTION_PACKAGES) is fn and not _denied(name):
        return name
    where = f" at node `{node_name}`" if node_name else ""
    raise WidthcError(
        f"cannot describe the function {module or '?'}.{qual or fn}{where}: widthc files only "
        f"call functions of {', '.join(FUNCTION_PACKAGES)} and Python's getattr/len"
    )


def resolve_function(name: str):
    """The function an allowlisted name stands for; WidthcError otherwise."""
    if name.startswith("builtins:"):
        short = name.removeprefix("builtins:")
        obj = getattr(builtins, short) if short in _BUILTINS else None
    else:
        obj = _resolve(name, FUNCTION_PACKAGES)
        if isinstance(obj, type):  # classes are built only as modules, from the module list
            obj = None
    if obj is None or not callable(obj) or _denied(name):
        raise WidthcError(f"the model file calls `{name}`, which widthc does not allow")
    return obj


def class_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def resolve_class(name: str) -> type | None:
    """The nn.Module subclass an allowlisted name stands for, or None."""
    cls = _resolve(name, MODULE_PACKAGES)
    ok = isinstance(cls, type) and issubclass(cls, nn.Module) and not _denied(name)
    return cls if ok else None


def _denied(name: str) -> bool:
    return any(word in name.lower() for word in _DENIED_WORDS)


def _resolve(name: str, packages: tuple[str, ...]):
    """Import `module` of 'module:attr.path' if it lies in `packages`, then follow attributes."""
    module, sep, path = name.partition(":")
    if not sep or not path or not any(module == p or module.startswith(p + ".") for p in packages):
        return None
    obj = _import_optional(module)
    for part in path.split("."):
        if part == "<locals>":
            return None
        obj = getattr(obj, part, None)
    return obj


def _import_optional(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None
