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


# ---------------------------------------------------------------------------------------------
# where plain torch.fx stops (issue 8): automatic leaves, shapes as Python values, defaults


def _clip_if_large(x):
    """A free function whose branch depends on tensor data (torch.fx cannot trace it)."""
    return x.clamp(max=6.0) if x.max() > 6 else x


class _Gate(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 1)

    def forward(self, x):
        if x.sum() > 0:
            return self.conv(x)
        return x


class _Clipped(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return _clip_if_large(self.conv(x))


class _Untraceable(nn.Module):
    """conv, a gate (control flow on data), conv, a block calling an untraceable function."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.gate = _Gate(8)
        self.mid = nn.Conv2d(8, 16, 3, padding=1)
        self.body = nn.Sequential(nn.ReLU(), _Clipped(16))
        self.expand = nn.Conv2d(16, 24, 1)
        self.shrink = nn.Conv2d(24, 16, 1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x = self.body(self.mid(self.gate(self.stem(x))))
        return self.fc(self.shrink(F.relu(self.expand(x))).mean((2, 3)))


def test_auto_leaves_wrap_the_smallest_failing_modules():
    torch.manual_seed(0)
    model = _Untraceable().eval()
    x = torch.randn(1, 3, 8, 8)
    program = widthc.compile(model, x)
    leaves = dict(program.traced.auto_leaves)
    assert list(leaves) == ["gate", "body.1"]  # not the root, not `body`
    assert "control flow" in leaves["gate"] and "`if x.sum() > 0:`" in leaves["gate"]
    assert "test_trace.py" in leaves["body.1"] and "x.max() > 6" in leaves["body.1"]
    with torch.no_grad():
        assert torch.equal(program.gm(x), model(x))
    by_producer = {p: g for g in program.groups for p in g.producers}
    # the leaves are barriers; the channels between `expand` and `shrink` stay searchable
    assert not by_producer["stem"].searchable and not by_producer["mid"].searchable
    assert any("`_Gate`" in str(r) for r in by_producer["stem"].frozen)
    assert by_producer["expand"].searchable


def test_without_auto_leaf_the_error_names_the_module_that_called_the_function():
    model = _Untraceable().eval()
    with pytest.raises(widthc.TraceError) as gate:
        widthc.compile(model, torch.randn(1, 3, 8, 8), auto_leaf=False)
    assert "_Gate.forward" in str(gate.value) and "--leaf _Gate" in str(gate.value)
    with pytest.raises(widthc.TraceError) as clip:
        widthc.compile(model, torch.randn(1, 3, 8, 8), leaves=("gate",), auto_leaf=False)
    message = str(clip.value)
    assert "_clip_if_large (called from _Clipped.forward, module `body.1`)" in message
    assert "--leaf _Clipped" in message and "_Untraceable" not in message
    assert "`return x.clamp(max=6.0) if x.max() > 6 else x`" in message


class _ShapeBranches(nn.Module):
    """Control flow and Python values computed from shapes only (HF padding helpers, Swin's
    window checks): they take the example's values; the graph must equal the eager model."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.proj = nn.Linear(8, 12)
        self.pos = nn.Parameter(torch.randn(1, 64, 12))
        self.register_buffer("ids", torch.arange(64)[None], persistent=False)

    def forward(self, x):
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if w % 2 != 0:  # pad to even
            x = F.pad(x, (0, 1))
        x = self.conv(x)
        if min(x.shape[-2:]) <= 2:
            x = x * 2
        tokens = self.proj(x.flatten(2).transpose(1, 2))  # (B, L, 12)
        n = tokens.shape[1]
        tokens = tokens + self.pos[:, :n] + self.ids[:, :n, None]
        heads = tokens.view(*tokens.shape[:-1], 3, -1)  # iterating a shape
        return heads.sum(-1).mean(1) + h


def test_shape_dependent_python_values_take_the_example_values():
    torch.manual_seed(0)
    model = _ShapeBranches().eval()
    x = torch.randn(2, 3, 7, 9)
    with pytest.raises(TypeError, match="Proxy"):  # plain torch.fx: `int(x.shape[-2])`
        torch.fx.symbolic_trace(model)
    program = widthc.compile(model, x)
    assert program.traced.auto_leaves == []
    with torch.no_grad():
        torch.testing.assert_close(program.gm(x), model(x), rtol=0, atol=0)
        other_batch = torch.randn(3, 3, 7, 9)  # sizes that were not branched on stay symbolic
        torch.testing.assert_close(program.gm(other_batch), model(other_batch), rtol=0, atol=0)
    assert any(n.target is F.pad for n in program.gm.graph.nodes)  # the branch the input takes


class _DataValue(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.inner = nn.Sequential(nn.Conv2d(8, 8, 1))

    def forward(self, x):
        x = self.conv(x)
        steps = int(x.abs().mean().item() * 3) + 1  # a Python value from tensor data
        for _ in range(steps):
            x = self.inner(x)
        return x


def test_python_values_from_tensor_data_are_never_specialised():
    """`int(t.item())` would take the value of random example data: it must stay a failure."""
    model = _DataValue().eval()
    with pytest.raises(widthc.TraceError, match="_DataValue.forward"):
        widthc.compile(model, torch.randn(1, 3, 4, 4))


class _Optional(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x, mask=None, scale=2.0, *, flip=False):
        x = self.conv(x) * scale
        if mask is not None:
            x = x * mask
        return x.flip(-1) if flip else x


def test_arguments_not_given_are_traced_as_their_defaults():
    torch.manual_seed(0)
    model = _Optional().eval()
    x, mask = torch.randn(1, 3, 6, 6), torch.rand(1, 1, 6, 6)
    program = widthc.compile(model, x)
    placeholders = [n.target for n in program.gm.graph.nodes if n.op == "placeholder"]
    assert placeholders == ["x"]
    assert all(n.op != "call_function" or "assert" not in n.name for n in program.gm.graph.nodes)
    with torch.no_grad():
        assert torch.equal(program.gm(x), model(x))
    given = widthc.compile(model, (x, mask))  # a given optional input is traced
    assert [n.target for n in given.gm.graph.nodes if n.op == "placeholder"] == ["x", "mask"]
    with torch.no_grad():
        assert torch.equal(given.gm(x, mask), model(x, mask))


class _VarArgs(nn.Module):
    """The root forward of ultralytics' models: `forward(self, x, *args, **kwargs)`."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x, *args, **kwargs):
        if isinstance(x, dict):
            return self.loss(x, *args, **kwargs)
        return self.predict(x, *args, **kwargs)

    def predict(self, x, profile=False, embed=None):
        return self.conv(x).relu()


def test_varargs_not_given_are_not_traced():
    model = _VarArgs().eval()
    x = torch.randn(1, 3, 6, 6)
    program = widthc.compile(model, x)
    assert [n.target for n in program.gm.graph.nodes if n.op == "placeholder"] == ["x"]
    with torch.no_grad():
        assert torch.equal(program.gm(x), model(x))


class _C2f(nn.Module):
    """YOLOv8's C2f block: a chunked tensor iterated as a list."""

    def __init__(self, c=16, n=2):
        super().__init__()
        self.cv1 = nn.Conv2d(3, c, 1)
        self.m = nn.ModuleList(nn.Conv2d(c // 2, c // 2, 3, padding=1) for _ in range(n))
        self.cv2 = nn.Conv2d((2 + n) * c // 2, 8, 1)

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


def test_literal_chunk_counts_make_iterable_proxies():
    torch.manual_seed(0)
    model = _C2f().eval()
    x = torch.randn(2, 3, 8, 8)
    gm = widthc.trace.trace(model)  # no example input: the literal count alone
    (chunk,) = [n for n in gm.graph.nodes if n.target == "chunk"]
    assert chunk.meta[widthc.fx_tracer.ASSUMED_LEN] == 2
    with torch.no_grad():
        assert torch.equal(gm(x), model(x))
    program = widthc.compile(model, x)
    small = widthc.slim(program, program.uniform(ratio=0.5))
    from widthc.verify import verify

    assert verify(program, program.uniform(ratio=0.5), small, check_onnx=False).flops_error == 0


def test_a_chunk_count_the_input_cannot_meet_is_a_clear_error():
    class Few(nn.Module):
        def forward(self, x):
            return torch.cat([t * 2 for t in x.chunk(4, 1)], 1)

    with pytest.raises(widthc.WidthcError, match="returns 2 tensors .* asked for, 4"):
        widthc.compile(Few(), torch.randn(1, 2, 4, 4))


class _Anchors(nn.Module):
    """A head that caches on a shape comparison (YOLO's Detect: `self.anchors`)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 4, 1)
        self.shape, self.anchors = None, None

    def forward(self, x):
        if self.shape != x.shape:
            self.anchors = torch.arange(x.shape[-1], dtype=x.dtype)
            self.shape = x.shape
        return self.conv(x) + self.anchors


class _WithAnchors(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(3, 8, 3, padding=1)
        self.head = _Anchors()

    def forward(self, x):
        return self.head(self.body(x).relu())


def test_a_module_that_caches_a_traced_value_becomes_a_leaf():
    model = _WithAnchors().eval()
    x = torch.randn(1, 3, 6, 6)
    program = widthc.compile(model, x)
    assert program.traced.auto_leaves == [
        ("head", "its forward stores traced values in `self.shape`, `self.anchors`")
    ]
    # no Proxy is left in the model (running the leaf for its shape may fill its cache)
    assert not isinstance(model.head.anchors, fx.Proxy) and not isinstance(
        model.head.shape, fx.Proxy
    )
    with torch.no_grad():
        assert torch.equal(program.gm(x), model(x))
    with pytest.raises(widthc.TraceError, match="stores traced values"):
        widthc.compile(_WithAnchors().eval(), x, auto_leaf=False)


class _Clamped(nn.Module):
    """HF Swin's layer: the window clamped to the input's resolution on every call, stored on
    the module and read back in the same call."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.window = 7

    def forward(self, x):
        b, c, h, w = x.shape
        if min(h, w) <= self.window:
            self.window = min(h, w)
        k = self.window
        x = x.permute(0, 2, 3, 1).reshape(b, h // k, k, w // k, k, c)
        return self.fc(x.permute(0, 1, 3, 2, 4, 5).reshape(-1, k * k, c))


def test_a_module_that_stores_what_it_computes_alike_every_call_is_traced_into():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), _Clamped(), nn.Linear(8, 2)).eval()
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        expected = model(x)  # the eager run stores window 4
    model[1].window = 7
    program = widthc.compile(model, x)
    assert program.traced.auto_leaves == []
    assert model[1].window == 7  # as the user gave it: the trace's stores are undone
    assert [g.searchable for g in program.groups if g.producers] == [True, True, False]
    with torch.no_grad():
        assert torch.equal(program.gm(x), expected)


class _Attention(nn.Module):
    def __init__(self, dim=16, heads=2):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, n, c))


class _MhaBlock(nn.Module):
    def __init__(self, dim=16):
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, 2, batch_first=True)

    def forward(self, x):
        return self.mha(x, x, x, need_weights=False)[0]


class _Transformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(8, 16)
        self.attn = _Attention()
        self.mha = _MhaBlock()
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        x = self.embed(x)
        return self.head(self.mha(x + self.attn(x)).mean(1))


def test_attention_flops_do_not_depend_on_which_modules_are_leaves():
    """A leaf's cost is measured (FlopCounterMode): it must count CPU attention (a fused
    kernel it misses by default) and MultiheadAttention (whose eval fast path it misses)."""
    model = _Transformer().eval()
    x = torch.randn(1, 10, 8)  # batch 1: FLOPs per sample
    traced = widthc.compile(model, x)
    as_leaves = widthc.compile(model, x, leaves=(_Attention, _MhaBlock))
    assert {n.target for n in as_leaves.gm.graph.nodes if n.op == "call_module"} >= {"attn", "mha"}
    n, d = 10, 16
    linear = n * (8 * d + 3 * d * d + d * d + 4 * d * d) + 3 * d  # embed, qkv, proj, mha, head
    attention = 2 * (2 * n * n * d)  # two attentions, each q @ k^T and p @ v
    assert traced.flops() == linear + attention
    assert as_leaves.flops() == traced.flops()
