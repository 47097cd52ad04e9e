"""Model sources: a `model.py` file, `package.module:function`, `torchvision:NAME`, `timm:NAME`.

A model file defines `model()` (returns the nn.Module) and either `example_input()` (returns a
tensor or a tuple of tensors) or `input_shape` (a tuple, batch first). It is imported the way
Python runs a script: its own folder comes first on `sys.path` while it is imported and while its
functions run, so `from blocks import Block` beside it works from any working directory.
`package.module:function` names a function that returns the nn.Module in an importable module
(the current directory is on `sys.path`, as for `python -m`); that module may define the same
hooks. Optional hooks: `loss(output, target) -> scalar tensor`, `metric(output, target) -> float`
(mean over the batch, higher is better; both required for dict or tuple outputs), and the data
hooks of `widthc.frontends.data`. Nothing is downloaded: library models get random weights.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from widthc.errors import WidthcError


@dataclass
class ModelSource:
    """A loaded model, its example inputs, and where it came from."""

    model: nn.Module
    example_inputs: tuple
    name: str
    module: object = None  # the imported model file, for its optional hooks (data, ...)
    loss: Callable | None = None  # loss(output, target) -> scalar tensor
    metric: Callable | None = None  # metric(output, target) -> float, higher is better


_FILE_PREFIX = "_widthc_model_"  # the sys.modules name of an imported model file
_ENTRY_POINT = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def check_output(src: ModelSource, output) -> None:
    """A dict or tuple output has no obvious loss: the model must say how to train and score."""
    if isinstance(output, torch.Tensor) or (src.loss is not None and src.metric is not None):
        return
    kind = "dict" if isinstance(output, dict) else type(output).__name__
    missing = " and ".join(
        f"{n}(output, target)" for n in ("loss", "metric") if getattr(src, n) is None
    )
    raise WidthcError(
        f"{src.name} returns a {kind} output, so its model file (or module) must define "
        f"{missing}: "
        f"widthc cannot tell which output to train on and how to score it"
    )


@contextlib.contextmanager
def hook_context(module) -> Iterator[None]:
    """While a model file's functions run, its folder comes first on sys.path (as for a script)."""
    name = getattr(module, "__name__", "")
    if not name.startswith(_FILE_PREFIX):
        yield
        return
    with _first_on_path(str(Path(module.__file__).resolve().parent)):
        yield


@contextlib.contextmanager
def _first_on_path(folder: str) -> Iterator[None]:
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        sys.path.remove(folder)  # the first occurrence: ours


def parse_shape(text: str) -> tuple[int, ...]:
    """'1,3,224,224' or '1x3x224x224' -> (1, 3, 224, 224)."""
    parts = text.replace("x", ",").replace(" ", "").strip("()[]").removesuffix(",").split(",")
    try:
        shape = tuple(int(p) for p in parts)  # an empty part ('1,,3') is not a size either
    except ValueError:
        shape = ()
    if not shape or any(s <= 0 for s in shape):
        raise WidthcError(
            f"--input-shape '{text}' is not a shape: give positive integers separated by "
            f"commas, batch first, e.g. 1,3,224,224"
        )
    return shape


def load_model(
    spec: str, input_shape: tuple[int, ...] | None = None, num_classes: int | None = None
) -> ModelSource:
    """Load MODEL as the CLI names it; `input_shape` overrides the example input's shape;
    `num_classes` builds a library model (or a model() that takes it) with that many classes."""
    if spec.startswith("torchvision:"):
        src = _torchvision(spec.split(":", 1)[1], num_classes)
    elif spec.startswith("timm:"):
        src = _timm(spec.split(":", 1)[1], num_classes)
    elif _ENTRY_POINT.fullmatch(spec) and not Path(spec).exists():
        src = _from_entry_point(spec, input_shape is not None, num_classes)
    else:
        src = _from_file(spec, input_shape is not None, num_classes)
    if input_shape is not None:
        src.example_inputs = (torch.randn(*input_shape),)
    return src


def _torchvision(name: str, num_classes: int | None = None) -> ModelSource:
    try:
        import torchvision
        from torchvision.models import get_model, get_model_weights, list_models
    except ImportError as e:
        raise WidthcError("torchvision models need torchvision: pip install 'widthc[zoo]'") from e
    names = list_models(module=torchvision.models)
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise WidthcError(
            f"torchvision has no classification model '{name}'{hint}; "
            f"torchvision.models.list_models() lists them"
        )
    size = 224
    try:
        size = list(get_model_weights(name))[0].transforms().crop_size[0]
    except (ValueError, IndexError, AttributeError):
        pass
    kwargs = {"image_size": size} if name.startswith("vit_") else {}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    model = get_model(name, weights=None, **kwargs)
    return ModelSource(model.eval(), (torch.randn(1, 3, size, size),), f"torchvision:{name}")


def _timm(name: str, num_classes: int | None = None) -> ModelSource:
    try:
        import timm
    except ImportError as e:
        raise WidthcError("timm models need timm: pip install 'widthc[zoo]'") from e
    if name not in timm.list_models():
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise WidthcError(f"timm has no model '{name}'{hint}; timm.list_models() lists them")
    kwargs = {"num_classes": num_classes} if num_classes is not None else {}
    model = timm.create_model(name, pretrained=False, **kwargs)
    size = model.default_cfg.get("input_size", (3, 224, 224))
    return ModelSource(model.eval(), (torch.randn(1, *size),), f"timm:{name}")


def _from_file(
    path_text: str, shape_given: bool = False, num_classes: int | None = None
) -> ModelSource:
    path = Path(path_text)
    if not path.is_file():
        raise WidthcError(
            f"model file '{path_text}' does not exist; give a model.py path, "
            f"package.module:function, torchvision:NAME or timm:NAME"
        )
    if path.suffix != ".py":
        raise WidthcError(f"model file '{path_text}' is not a Python file (.py)")
    mod_name = f"{_FILE_PREFIX}{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        with hook_context(module):
            spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - the user's file failed to import
        raise WidthcError(f"importing '{path_text}' failed: {type(e).__name__}: {e}") from e
    if not callable(getattr(module, "model", None)):
        raise WidthcError(
            f"'{path_text}' defines no model() function: add `def model(): return MyNet()`"
        )
    what = f"model() in '{path_text}'"
    return _build(module, module.model, what, path.stem, path_text, shape_given, num_classes)


def _from_entry_point(
    spec: str, shape_given: bool = False, num_classes: int | None = None
) -> ModelSource:
    """`package.module:function`, imported like `python -m` does (the cwd first on sys.path)."""
    module_name, function = spec.split(":")
    try:
        with _first_on_path(os.getcwd()):
            module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if not (e.name and f"{module_name}.".startswith(f"{e.name}.")):
            raise WidthcError(f"importing '{module_name}' failed: {type(e).__name__}: {e}") from e
        raise WidthcError(
            f"no module named '{e.name}' for MODEL {spec}: install its package, or run widthc "
            f"from the folder that holds it"
        ) from e
    except Exception as e:  # noqa: BLE001 - the user's module failed to import
        raise WidthcError(f"importing '{module_name}' failed: {type(e).__name__}: {e}") from e
    factory = getattr(module, function, None)
    if not callable(factory):
        raise WidthcError(f"module '{module_name}' has no function {function}() for MODEL {spec}")
    return _build(module, factory, f"{function}() of {spec}", spec, spec, shape_given, num_classes)


def _build(module, factory, what: str, name: str, where: str, shape_given, num_classes):
    """Call the model factory and read the module's hooks (example inputs, loss, metric)."""
    kwargs = {}
    if num_classes is not None:
        if "num_classes" not in inspect.signature(factory).parameters:
            raise WidthcError(
                f"{what} takes no num_classes argument: add "
                f"`def model(num_classes=10)` or drop --num-classes"
            )
        kwargs["num_classes"] = num_classes
    try:
        with hook_context(module):
            model = factory(**kwargs)
    except Exception as e:  # noqa: BLE001
        raise WidthcError(f"{what} failed: {type(e).__name__}: {e}") from e
    if not isinstance(model, nn.Module):
        raise WidthcError(f"{what} returned {type(model).__name__}, not a torch.nn.Module")
    if callable(getattr(module, "example_input", None)):
        with hook_context(module):
            example = module.example_input()
        example = tuple(example) if isinstance(example, (tuple, list)) else (example,)
    elif getattr(module, "input_shape", None) is not None:
        example = (torch.randn(*module.input_shape),)
    elif shape_given:
        example = ()
    else:
        raise WidthcError(
            f"'{where}' defines neither example_input() nor input_shape: add "
            f"`input_shape = (1, 3, 224, 224)` or pass --input-shape"
        )
    hooks = {}
    for hook in ("loss", "metric"):
        fn = getattr(module, hook, None)
        if fn is not None and not callable(fn):
            raise WidthcError(f"'{hook}' in '{where}' is not a function {hook}(output, target)")
        hooks[hook] = fn
    return ModelSource(model.eval(), example, name, module, **hooks)
