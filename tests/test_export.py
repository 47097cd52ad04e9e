"""widthc.save / widthc.load (exact round trip, weights_only loading, clear errors for what
cannot be described or allowed) and widthc.export_onnx (parity at batch 1 and 3 through the
dynamic batch axis, the file written only after the checks pass)."""

from __future__ import annotations

import copy
import functools
import json

import onnx
import pytest
import torch
import zoo
from torch import fx, nn
from torch.utils._pytree import tree_flatten

import widthc
from widthc import export
from widthc.errors import WidthcError

# vgg11_bn at 64x64 pools 2x2 up to 7x7, which only the (slower) dynamo exporter handles
TV_ONNX_SLOW = ["vgg11_bn"]
TV_ONNX_FAST = [m for m in zoo.TORCHVISION if m not in TV_ONNX_SLOW]


@functools.cache
def _slimmed(name: str, seed: int = 0):
    model, inputs = zoo.small_model(name) if name in zoo.SMALL else zoo.torchvision_model(name)
    program = widthc.compile(model, inputs)
    return widthc.slim(program, program.random(seed)), inputs


def _flat(out) -> list[torch.Tensor]:
    return [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]


# --- save / load ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*zoo.SMALL, *zoo.TORCHVISION])
def test_save_load_round_trip_is_exact(name, tmp_path):
    small, inputs = _slimmed(name)
    path = widthc.save(small, tmp_path / "slim.pt")
    loaded = widthc.load(path)
    assert isinstance(loaded, fx.GraphModule)
    assert not loaded.training
    with torch.no_grad():
        got, want = _flat(loaded(*inputs)), _flat(small(*inputs))
    assert len(got) == len(want) > 0
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert loaded.state_dict().keys() == small.state_dict().keys()
    assert [n.name for n in loaded.graph.nodes] == [n.name for n in small.graph.nodes]
    assert list(tmp_path.iterdir()) == [tmp_path / "slim.pt"]  # no temp file left


def test_file_loads_with_weights_only(tmp_path):
    small, _ = _slimmed("concat")
    widthc.save(small, tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    assert payload["format"] == "widthc.graph" and payload["version"] == 1
    desc = json.loads(payload["graph"])
    ops = {n["op"] for n in desc["nodes"]}
    assert {"placeholder", "call_module", "output"} <= ops
    assert desc["modules"]["stem.0"]["class"] == "torch.nn.modules.conv:Conv2d"
    conv = small.get_submodule("stem.0")
    assert desc["modules"]["stem.0"]["kwargs"]["out_channels"] == conv.out_channels
    assert all(torch.equal(payload["state_dict"][k], v) for k, v in small.state_dict().items())


def test_train_mode_frozen_params_and_dtype_survive(tmp_path):
    small, inputs = _slimmed("residual")
    small = copy.deepcopy(small).double()
    small.train()
    small.get_submodule("stem.1").eval()
    small.get_parameter("fc.weight").requires_grad_(False)
    widthc.save(small, tmp_path / "m.pt")
    loaded = widthc.load(tmp_path / "m.pt")
    assert loaded.training and not loaded.get_submodule("stem.1").training
    assert not loaded.get_parameter("fc.weight").requires_grad
    assert loaded.get_parameter("stem.0.weight").requires_grad
    assert loaded.get_parameter("stem.0.weight").dtype == torch.float64
    x = inputs[0].double()
    loaded.eval(), small.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), small(x))


def test_get_attr_parameters_and_constants_round_trip(tmp_path):
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.scale = nn.Parameter(torch.rand(1, 8, 1, 1))
            self.register_buffer("offset", torch.rand(8))
            self.register_buffer("index", torch.tensor([2, 0, 1]), persistent=False)

        def forward(self, x):
            y = self.conv(x) * self.scale + self.offset[None, :, None, None]
            y = y + y[:, self.index].sum(1, keepdim=True)
            return torch.clamp(y, min=float("-inf"), max=2.5)[..., 1:, :].flatten(1)

    gm = fx.symbolic_trace(Scaled().eval())
    widthc.save(gm, tmp_path / "m.pt")
    loaded = widthc.load(tmp_path / "m.pt")
    x = torch.randn(2, 3, 6, 6)
    assert torch.equal(loaded(x), gm(x))
    assert isinstance(loaded.get_parameter("scale"), nn.Parameter)
    assert torch.equal(loaded.get_buffer("index"), torch.tensor([2, 0, 1]))
    assert "index" not in loaded.state_dict()


class _Custom(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.w = nn.Parameter(torch.ones(c))

    def forward(self, x):
        return x * self.w[None, :, None, None]


class _WithCustom(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.custom = _Custom(8)

    def forward(self, x):
        return self.custom(self.conv(x))


def test_undescribable_module_names_the_module(tmp_path):
    program = widthc.compile(_WithCustom().eval(), torch.randn(1, 3, 8, 8), leaves=[_Custom])
    small = widthc.slim(program, program.full())
    with pytest.raises(WidthcError, match=r"cannot describe module `custom` \(.*_Custom\)"):
        widthc.save(small, tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()


def test_module_that_its_attributes_do_not_show_is_refused(tmp_path):
    class Attend(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = nn.MultiheadAttention(8, 2, add_bias_kv=True, batch_first=True)

        def forward(self, x):
            return self.mha(x, x, x)[0]

    gm = fx.symbolic_trace(Attend().eval())
    with pytest.raises(WidthcError, match="cannot describe module `mha`.*rebuilt from its attr"):
        widthc.save(gm, tmp_path / "m.pt")


@pytest.mark.parametrize(
    ("source", "name", "size"),
    [("timm", "efficientnet_b0", 64), ("torchvision", "swin_t", 224)],
)
def test_library_leaves_and_wrapped_helpers_round_trip(tmp_path, source, name, size):
    """timm's BatchNormAct2d leaves (`act_layer` read back from the child `act`) and the helper
    functions torchvision wraps for fx (swin's relative position bias)."""
    if source == "timm":
        timm = pytest.importorskip("timm")
        model = timm.create_model(name, pretrained=False).eval()
    else:
        model = pytest.importorskip("torchvision").models.get_model(name, weights=None).eval()
    x = torch.randn(1, 3, size, size)
    program = widthc.compile(model, x)
    small = widthc.slim(program, program.random(0))
    widthc.save(small, tmp_path / "m.pt")
    loaded = widthc.load(tmp_path / "m.pt")
    with torch.no_grad():
        assert torch.equal(loaded(x), small(x))
    desc = json.loads(torch.load(tmp_path / "m.pt", weights_only=True)["graph"])
    if source == "timm":
        kwargs = [m["kwargs"] for m in desc["modules"].values()]
        acts = [k["act_layer"] for k in kwargs if "act_layer" in k]
        assert acts and acts[0] == {"$class": "torch.nn.modules.activation:SiLU"}
    else:
        targets = {n["target"] for n in desc["nodes"] if n["op"] == "call_function"}
        assert any(t.startswith("torchvision.models.swin_transformer:") for t in targets)


def _user_function(x):
    return x * 2


fx.wrap("_user_function")


def test_undescribable_function_names_the_node(tmp_path):
    class Net(nn.Module):
        def forward(self, x):
            return _user_function(x)

    gm = fx.symbolic_trace(Net())
    with pytest.raises(WidthcError, match="cannot describe the function .*_user_function"):
        widthc.save(gm, tmp_path / "m.pt")


def test_save_needs_a_graph_module(tmp_path):
    with pytest.raises(WidthcError, match="GraphModule"):
        widthc.save(nn.Linear(2, 2), tmp_path / "m.pt")
    small, _ = _slimmed("chain")
    with pytest.raises(WidthcError, match="does not exist"):
        widthc.save(small, tmp_path / "missing" / "m.pt")


def _tampered(tmp_path, edit) -> str:
    small, _ = _slimmed("chain")
    widthc.save(small, tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    desc = json.loads(payload["graph"])
    edit(desc)
    payload["graph"] = json.dumps(desc)
    torch.save(payload, tmp_path / "bad.pt")
    return str(tmp_path / "bad.pt")


def _call_os_system(desc):
    node = next(n for n in desc["nodes"] if n["op"] == "call_function")
    node["target"] = "os:system"


def _build_subprocess(desc):
    desc["modules"]["fc"]["class"] = "subprocess:Popen"


def _call_torch_save(desc):
    node = next(n for n in desc["nodes"] if n["op"] == "call_function")
    node["target"] = "torch:save"


@pytest.mark.parametrize("edit", [_call_os_system, _build_subprocess, _call_torch_save])
def test_load_refuses_what_is_not_allowlisted(tmp_path, edit):
    path = _tampered(tmp_path, edit)
    with pytest.raises(WidthcError, match="does not allow"):
        widthc.load(path)


def test_load_errors(tmp_path):
    with pytest.raises(WidthcError, match="does not exist"):
        widthc.load(tmp_path / "nothing.pt")
    torch.save({"weights": torch.ones(2)}, tmp_path / "plain.pt")
    with pytest.raises(WidthcError, match="not a widthc model file"):
        widthc.load(tmp_path / "plain.pt")
    (tmp_path / "junk.pt").write_text("junk")
    with pytest.raises(WidthcError, match="not a readable widthc model file"):
        widthc.load(tmp_path / "junk.pt")
    small, _ = _slimmed("chain")
    widthc.save(small, tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    del payload["state_dict"]["fc.bias"]
    torch.save(payload, tmp_path / "m.pt")
    with pytest.raises(WidthcError, match="do not match its architecture"):
        widthc.load(tmp_path / "m.pt")


# --- ONNX -----------------------------------------------------------------------------------------


def _onnx_case(name: str, slow: bool = False):
    return pytest.param(name, marks=[pytest.mark.slow] if slow else [], id=name)


ONNX_CASES = (
    [_onnx_case(n) for n in zoo.SMALL]
    + [_onnx_case(n) for n in TV_ONNX_FAST]
    + [_onnx_case(n, slow=True) for n in TV_ONNX_SLOW]
)


@pytest.mark.parametrize("name", ONNX_CASES)
def test_onnx_parity_at_batch_1_and_3(name, tmp_path):
    small, inputs = _slimmed(name)
    report = widthc.export_onnx(small, inputs, tmp_path / "slim.onnx")
    assert set(report.errors) == {1, 3}
    assert report.error <= 1e-4
    assert report.providers[-1] == "CPUExecutionProvider"
    model = onnx.load(str(tmp_path / "slim.onnx"))
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    for value in [*model.graph.input, *model.graph.output]:
        batch = value.type.tensor_type.shape.dim[0]
        assert batch.dim_param and not batch.dim_value, value.name  # a symbolic batch axis
    assert list(tmp_path.iterdir()) == [tmp_path / "slim.onnx"]


def test_multi_io_names_inputs_and_outputs(tmp_path):
    small, inputs = _slimmed("multi_io")
    report = widthc.export_onnx(small, inputs, tmp_path / "m.onnx")
    assert report.inputs == ("x", "meta")
    assert report.outputs == ("logits", "mask")


def test_parity_failure_names_the_output_and_writes_nothing(tmp_path):
    """A runtime that computes other outputs is the user's to know (one sentence, exit 2), not
    a widthc bug: the PyTorch model is still proved; only the ONNX file is refused."""
    small, inputs = _slimmed("multi_io")
    with pytest.raises(
        WidthcError, match=r"ONNX output `logits` differs .* batch size 1.*--no-onnx"
    ):
        widthc.export_onnx(small, inputs, tmp_path / "m.onnx", tolerance=0.0)
    assert list(tmp_path.iterdir()) == []


def test_dynamo_exporter_is_the_fallback(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no TorchScript here")

    monkeypatch.setattr(export, "_export_torchscript", broken)
    small, inputs = _slimmed("chain")
    report = widthc.export_onnx(small, inputs[0][:1], tmp_path / "m.onnx")  # a batch-1 example
    assert report.exporter == "dynamo"
    assert report.error <= 1e-4


def test_unexportable_model_is_a_clear_error(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("unsupported op")

    monkeypatch.setattr(export, "_export_torchscript", broken)
    monkeypatch.setattr(export, "_export_dynamo", broken)
    small, inputs = _slimmed("chain")
    with pytest.raises(WidthcError, match="torch.onnx cannot export .*unsupported op.*--no-onnx"):
        widthc.export_onnx(small, inputs, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_export_restores_train_mode(tmp_path):
    small, inputs = _slimmed("residual")
    small.train()
    try:
        widthc.export_onnx(small, inputs, tmp_path / "m.onnx")
        assert small.training
    finally:
        small.eval()
