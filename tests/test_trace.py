"""Tracing and shape propagation (DESIGN §3): shapes equal torch.fx's own ShapeProp, several
inputs and structured outputs work, op_key follows subclasses, and compiling is deterministic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
import zoo
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

import widthc
from widthc import ops
from widthc.ir import TensorMeta
from widthc.passes.flops import count_macs
from widthc.trace import VALUE

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # googlenet init


def _widthc_shapes(value):
    """Nested shapes and dtypes of a widthc value; None for what is not a tensor."""
    if isinstance(value, TensorMeta):
        return (tuple(value.shape), value.dtype)
    if isinstance(value, (tuple, list)):
        return tuple(_widthc_shapes(v) for v in value)
    if isinstance(value, dict):
        return {k: _widthc_shapes(v) for k, v in value.items()}
    return None


def _shapeprop_shapes(value):
    if isinstance(value, TensorMetadata):  # a NamedTuple: test it before plain tuples
        return (tuple(value.shape), value.dtype)
    if isinstance(value, (tuple, list)):
        return tuple(_shapeprop_shapes(v) for v in value)
    if isinstance(value, dict):
        return {k: _shapeprop_shapes(v) for k, v in value.items()}
    return None


def _compare_with_shapeprop(model: nn.Module, inputs: tuple) -> int:
    """Compile, then run ShapeProp on the same graph; return the number of tensor nodes."""
    program = widthc.compile(model, inputs)
    ShapeProp(program.gm).propagate(*inputs)
    compared = 0
    for node in program.gm.graph.nodes:
        if node.op == "output":
            continue
        ours = _widthc_shapes(node.meta[VALUE])
        if "tensor_meta" in node.meta:
            theirs = _shapeprop_shapes(node.meta["tensor_meta"])
            assert ours == theirs, f"node {node.name} ({node.op} {node.target})"
            compared += 1
        else:  # ShapeProp saw no tensor here: neither may widthc
            assert not isinstance(node.meta[VALUE], TensorMeta), node.name
    return compared


@pytest.mark.parametrize("name", sorted(zoo.SMALL))
def test_shapes_equal_shapeprop_small_zoo(name):
    model, inputs = zoo.small_model(name)
    assert _compare_with_shapeprop(model, inputs) >= 5


# inputs kept small where the architecture allows it; vit and maxvit need 224x224
TORCHVISION_SHAPES = {
    "resnet18": 64, "mobilenet_v3_small": 64, "efficientnet_b0": 64, "densenet121": 64,
    "convnext_tiny": 64, "googlenet": 64, "shufflenet_v2_x1_0": 64, "swin_t": 64,
    "regnet_y_400mf": 64, "vit_b_32": 224, "maxvit_t": 224,
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(TORCHVISION_SHAPES))
def test_shapes_equal_shapeprop_torchvision(name):
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    size = TORCHVISION_SHAPES[name]
    assert _compare_with_shapeprop(model, (torch.randn(2, 3, size, size),)) >= 20


class TupleOut(nn.Module):
    """Two inputs, a (tensor, list) output: structured outputs keep their widths."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(5, 8, 1)
        self.c = nn.Conv2d(8, 12, 3, padding=1)
        self.head = nn.Linear(12, 4)

    def forward(self, x, y):
        f = F.relu(self.a(x) + self.b(y))
        g = F.relu(self.c(f))
        return self.head(g.mean((2, 3))), [g, f]


def _assert_same_outputs(a, b):
    if isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same_outputs(a[k], b[k])
    else:
        assert type(a) is type(b) and len(a) == len(b)
        for u, v in zip(a, b):
            _assert_same_outputs(u, v)


def test_multi_input_dict_output_compiles():
    model, inputs = zoo.small_model("multi_io")
    program = widthc.compile(model, inputs)
    with torch.no_grad():
        _assert_same_outputs(program.gm(*inputs), model(*inputs))
    by_producer = {p: g for g in program.groups for p in g.producers}
    # both dict outputs keep their widths, the inner stream and `mid` stay searchable
    assert not by_producer["cls"].searchable and not by_producer["seg"].searchable
    assert by_producer["img.0"] is by_producer["aux"] and by_producer["aux"].searchable
    assert by_producer["mid.0"].searchable


def test_multi_input_tuple_list_output_compiles():
    torch.manual_seed(0)
    model = TupleOut().eval()
    inputs = (torch.randn(2, 3, 8, 8), torch.randn(2, 5, 8, 8))
    program = widthc.compile(model, inputs)
    with torch.no_grad():
        _assert_same_outputs(program.gm(*inputs), model(*inputs))
    by_producer = {p: g for g in program.groups for p in g.producers}
    # `g` and `f` are network outputs (inside the list): frozen; `a` and `b` share one group
    assert by_producer["a"] is by_producer["b"]
    assert not by_producer["a"].searchable and not by_producer["c"].searchable
    assert all("output" in str(r) for r in by_producer["c"].frozen)
    assert program.flops() == pytest.approx(count_macs(model, inputs))


def test_missing_example_input_is_a_clear_error():
    with pytest.raises(widthc.WidthcError, match="input `y`"):
        widthc.compile(TupleOut(), (torch.randn(1, 3, 8, 8),))


class PlainConv(nn.Conv2d):
    """A subclass that keeps Conv2d.forward: it is a Conv2d to the registry."""


class GainConv(nn.Conv2d):
    """A conv with a learned scalar gain: it overrides forward, so it is NOT a Conv2d to the
    registry; it is traced into, and its F.conv2d call is analysed instead."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gain = nn.Parameter(torch.tensor(1.5))

    def forward(self, x):
        return F.conv2d(x, self.weight * self.gain, self.bias, self.stride, self.padding)


class SubclassNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.plain = PlainConv(3, 16, 3, padding=1)
        self.gain_conv = GainConv(16, 24, 3, padding=1)
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        return self.fc(F.relu(self.gain_conv(F.relu(self.plain(x)))).mean((2, 3)))


def test_op_key_resolves_subclasses_through_the_mro():
    assert ops.module_key(PlainConv(3, 4, 1)) is nn.Conv2d
    assert ops.module_key(GainConv(3, 4, 1)) is GainConv
    assert ops.module_key(nn.Conv2d(3, 4, 1)) is nn.Conv2d

    torch.manual_seed(0)
    model = SubclassNet().eval()
    x = torch.randn(2, 3, 8, 8)
    program = widthc.compile(model, (x,))
    modules = dict(program.gm.named_modules())
    call_modules = {n.target: n for n in program.gm.graph.nodes if n.op == "call_module"}
    assert ops.op_key(call_modules["plain"], modules) is nn.Conv2d  # a leaf, known as Conv2d
    assert "gain_conv" not in call_modules  # traced into ...
    assert any(n.target is F.conv2d for n in program.gm.graph.nodes)  # ... down to F.conv2d
    assert program.flops() == pytest.approx(count_macs(model, (x,)))
    # the plain conv's output channels are searchable and read by the gain conv
    plain = next(g for g in program.groups if "plain" in g.producers)
    assert plain.searchable and plain.n == 16
    with torch.no_grad():
        torch.testing.assert_close(program.gm(x), model(x), rtol=0, atol=0)


def _json(program) -> str:
    return json.dumps(program.to_json(), sort_keys=True)


@pytest.mark.parametrize("name", ["concat", "chunk_split", "residual", "unknown_op"])
def test_compiling_twice_gives_the_same_json(name):
    model, inputs = zoo.small_model(name)
    first = _json(widthc.compile(model, inputs))
    assert _json(widthc.compile(model, inputs)) == first
    # other weights, other input values: the same analysis
    other, other_inputs = zoo.small_model(name, seed=7)
    assert _json(widthc.compile(other, other_inputs)) == first


def test_group_ids_follow_the_graph_order():
    model, inputs = zoo.torchvision_model("resnet18")
    program = widthc.compile(model, inputs)
    assert [g.id for g in program.groups] == list(range(len(program.groups)))
    assert program.groups[0].producers[0] == "conv1"
    assert program.groups[-1].producers == ("fc",)
    for g in program.groups:  # bins always cover the group exactly
        assert sum(g.bins) * g.blocks == g.n


_PROBE = """
import json
import zoo, widthc
out = {}
for name in ("concat", "chunk_split", "se_linear", "multi_io"):
    model, inputs = zoo.small_model(name)
    out[name] = widthc.compile(model, inputs).to_json()
print(json.dumps(out, sort_keys=True))
"""


def test_group_ids_do_not_depend_on_the_hash_seed():
    """Set and dict orders of strings change with PYTHONHASHSEED; group ids must not."""
    outs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(Path(__file__).parent)}
        done = subprocess.run(
            [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True
        )
        outs.append(done.stdout.strip().splitlines()[-1])
    assert outs[0] == outs[1]
    assert len(json.loads(outs[0])["concat"]["groups"]) > 3


def test_trace_keeps_user_names_and_leaves_modules_shared():
    model, inputs = zoo.small_model("chain")
    program = widthc.compile(model, inputs)
    assert isinstance(program.gm, fx.GraphModule)
    targets = {n.target for n in program.gm.graph.nodes if n.op == "call_module"}
    assert {"features.0.0", "features.0.1", "fc"} <= targets
    # the GraphModule shares the user's weights (no copy)
    assert program.gm.get_submodule("fc").weight is model.fc.weight


class _Dropouts(nn.Module):
    """One dropout follows the module's mode, one is switched off for good."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        x = F.dropout(self.conv(x), 0.5, self.training)
        return F.dropout(x, 0.5, training=False)


def test_training_flags_follow_the_module_not_the_trace():
    model = _Dropouts().eval()
    program = widthc.compile(model, torch.randn(1, 3, 8, 8))
    first, second = [n for n in program.gm.graph.nodes if n.target is F.dropout]
    flag = first.kwargs["training"]
    assert isinstance(flag, torch.fx.Node) and (flag.op, flag.target) == ("get_attr", "training")
    assert second.kwargs["training"] is False  # a literal False stays a literal
    x = torch.randn(2, 3, 8, 8)
    gm = program.gm
    gm.eval()
    assert torch.equal(gm(x), model(x))
    gm.train()
    assert not torch.equal(gm(x), model.eval()(x))  # dropout is on while training
    gm.eval()


def test_saved_models_keep_the_training_flag(tmp_path):
    model = _Dropouts().eval()
    program = widthc.compile(model, torch.randn(1, 3, 8, 8))
    small = widthc.slim(program, program.uniform(ratio=0.5))
    widthc.save(small, tmp_path / "s.pt")
    loaded = widthc.load(tmp_path / "s.pt")
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(loaded(x), small(x))
    loaded.train()
    assert not torch.equal(loaded(x), small(x))
