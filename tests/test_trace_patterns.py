"""Tracing patterns of other people's models (issue 17): graphs that must hold at every batch
size, Python values that are constants of the example, decorated forwards, functions dressed
as modules, `*rest` at the root, and refusals that name the real cause and the user's line."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn
from zoo import check_random_widths

import widthc
from widthc.verify import verify

# --- batch freedom -----------------------------------------------------------------------------


class _BatchMask(nn.Module):
    """transformers' mask helpers: position ids made at batch 1, expanded only where the batch
    differs, then indexed by batch row (IndexError at batch 3 on a graph traced at batch 1)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 4)

    def forward(self, x):
        batch, length = x.shape[0], x.shape[1]
        positions = torch.arange(length).unsqueeze(0)
        if batch != positions.shape[0]:
            positions = positions.expand(batch, -1)
        bias = positions[torch.arange(batch)].float().unsqueeze(-1)
        mask = torch.zeros((batch, length, 1))  # sizes given as a sequence stay traced
        return self.fc2(torch.relu(self.fc1(x) + bias + mask))


class _BakedBatch(nn.Module):
    """A batch size read as a Python int: the graph holds at the traced batch only."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 8, 3), nn.Linear(8 * 36, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).reshape(int(x.shape[0]), -1))


def test_a_graph_specialised_to_batch_one_is_traced_again_to_hold_at_any_batch():
    torch.manual_seed(0)
    model, x = _BatchMask().eval(), torch.randn(1, 5, 8)
    program = check_random_widths(model, x)
    assert program.traced.batch_note is None
    x3 = torch.randn(3, 5, 8)
    with torch.no_grad():
        torch.testing.assert_close(program.gm(x3), model(x3))
        torch.testing.assert_close(program.gm(x), model(x))


def test_a_graph_that_holds_at_one_batch_only_is_exported_and_proved_there():
    torch.manual_seed(0)
    program = widthc.compile(_BakedBatch().eval(), torch.randn(1, 3, 8, 8))
    note = program.traced.batch_note
    assert note is not None and note.size == 1
    assert "int() at test_trace_patterns.py:" in str(note) and "reshape(int(x.shape[0])" in str(
        note
    )
    assert program.to_json()["batch_note"] == str(note)
    choice = program.uniform(ratio=0.5)
    checks = verify(program, choice, widthc.slim(program, choice))
    assert checks.onnx_batches == (1,) and checks.onnx is not None and checks.onnx <= 1e-4
    assert str(note) in checks.summary()
    net = widthc.supernet(program)
    with pytest.raises(widthc.WidthcError, match="run it at batch size 1 .--batch-size 1."):
        net(torch.randn(4, 3, 8, 8))


def test_export_at_a_batch_the_model_does_not_run_at_is_one_sentence(tmp_path):
    torch.manual_seed(0)
    program = widthc.compile(_BakedBatch().eval(), torch.randn(1, 3, 8, 8))
    with pytest.raises(widthc.WidthcError) as e:
        widthc.export_onnx(program.gm, program.example_inputs, tmp_path / "m.onnx")
    assert "runs at batch size 1 but not at 3" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "m.onnx").exists()


# --- values that are constants of the example ------------------------------------------------


class _FinfoMask(nn.Module):
    """The eager attention mask: `torch.finfo(x.dtype).min` fills the masked positions."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.out = nn.Linear(8, 16), nn.Linear(8, 16), nn.Linear(16, 4)

    def forward(self, x):
        n = x.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool).triu(1)
        scores = self.q(x) @ self.k(x).transpose(-1, -2)
        scores = scores.masked_fill(causal, torch.finfo(scores.dtype).min)
        return self.out(scores.softmax(-1) @ self.q(x))


def test_a_dtype_is_a_constant_of_the_example():
    torch.manual_seed(0)
    program = check_random_widths(_FinfoMask(), torch.randn(1, 5, 8))
    assert not program.traced.auto_leaves


def _kernel_function(module_class=nn.Module):
    """The `kernels` package's `use_kernel_forward_from_hub` on a function: an nn.Module
    instance that no model installs as a submodule (HuggingFace's `apply_rotary_pos_emb`)."""

    class Func(module_class):
        def forward(self, a, b):
            return a * torch.sigmoid(b)

    return Func()


_gate = _kernel_function()


class _WithKernelFunction(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.out = nn.Linear(8, 16), nn.Linear(8, 16), nn.Linear(16, 4)

    def forward(self, x):
        return self.out(_gate(self.a(x), self.b(x)))


def test_a_function_dressed_as_a_module_is_traced_as_a_function():
    torch.manual_seed(0)
    program = check_random_widths(_WithKernelFunction(), torch.randn(1, 5, 8))
    assert not program.traced.auto_leaves  # the root was a leaf-less graph, not refused
    assert any(n.target is torch.sigmoid for n in program.gm.graph.nodes)


def _with_defaults(forward):
    """HuggingFace's decorators: `wrapper(*args, **kwargs)` around a forward with `**kwargs`."""

    @functools.wraps(forward)
    def wrapper(*args, **kwargs):
        return forward(*args, **kwargs)

    return wrapper


class _Decorated(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 4)

    @_with_defaults
    def forward(self, x, mask=None, position_ids=None, cache=None, use_cache=None, **kwargs):
        return self.fc2(torch.relu(self.fc1(x)))


def test_a_decorated_forward_with_many_arguments_traces():
    torch.manual_seed(0)
    program = check_random_widths(_Decorated(), torch.randn(1, 5, 8))
    assert [n.target for n in program.gm.graph.nodes if n.op == "placeholder"] == ["x"]


# --- the root's `*rest` ------------------------------------------------------------------------


class _Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 4)

    def forward(self, x, scale, shift=None):
        y = self.fc((self.conv(x) * scale).mean((2, 3)))
        return y if shift is None else y + shift


class _PassesRestOn(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = _Scaled()

    def forward(self, x, *rest):
        return self.inner(x, *rest)


def test_varargs_at_the_root_take_one_placeholder_per_input():
    torch.manual_seed(0)
    model = _PassesRestOn().eval()
    inputs = (torch.randn(1, 3, 8, 8), torch.rand(1, 1, 1, 1), torch.randn(1, 4))
    program = check_random_widths(model, inputs)
    placeholders = [n.target for n in program.gm.graph.nodes if n.op == "placeholder"]
    assert placeholders == ["x", "rest_0", "rest_1"]
    with torch.no_grad():
        assert torch.equal(program.gm(*inputs), model(*inputs))


# --- refusals name the real cause and the user's line ----------------------------------------


def test_torchvision_detection_is_refused_at_its_line():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.detection.ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=3
    ).eval()
    with pytest.raises(widthc.WidthcError) as e:
        widthc.compile(model, torch.randn(1, 3, 64, 64))
    message = str(e.value)
    assert "torchvision/models/detection/ssd.py:" in message and "(`for img in images:`)" in message
    assert "a loop over the rows of a tensor" in message and "\n" not in message


# --- library functions marked not traceable ----------------------------------------------------


def _pre_pool(x, hw):
    """MViTv2's `reshape_pre_pool`: the heads merged into the batch, head_dim as channels."""
    return x.reshape(-1, hw[0], hw[1], x.shape[-1]).permute(0, 3, 1, 2)


def _post_pool(x, heads):
    """MViTv2's `reshape_post_pool`: the heads taken back out of the batch."""
    return x.reshape(-1, heads, x.shape[1], x.shape[2] * x.shape[3]).transpose(2, 3)


def _data_gate(x):
    """Control flow on tensor data (always true here): torch.fx cannot trace into it."""
    return x * 2 if x.abs().sum() >= 0 else x


class _PooledAttention(nn.Module):
    """MViTv2's pooled attention (4 heads of 4 on a 2x2 image): the queries pooled by a
    depthwise conv over head_dim, with the heads in the batch dim."""

    def __init__(self):
        super().__init__()
        self.qkv, self.proj, self.head = nn.Linear(16, 48), nn.Linear(16, 16), nn.Linear(16, 3)
        self.pool = nn.Conv2d(4, 4, 3, padding=1, groups=4)

    def forward(self, x):
        B, N, _ = x.shape
        q, k, v = self.qkv(_data_gate(x)).reshape(B, N, 3, 4, 4).permute(2, 0, 3, 1, 4).unbind(0)
        q = _post_pool(self.pool(_pre_pool(q, (2, 2))), 4)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.head(self.proj(y.transpose(1, 2).reshape(B, N, 16)).mean(1))


def test_library_functions_marked_not_traceable_are_traced_into_where_they_can_be(monkeypatch):
    """timm's no-trace functions that the op registry has no rule for: `_pre_pool` and
    `_post_pool` are traced into, so the heads follow through the batch dim and are searched;
    `_data_gate` cannot be, and is recorded as one call (on the input: nothing to freeze)."""
    from widthc import fx_tracer

    monkeypatch.setattr(fx_tracer, "timm_leaves", lambda: ([], [_pre_pool, _post_pool, _data_gate]))
    torch.manual_seed(0)
    program = check_random_widths(_PooledAttention(), torch.randn(2, 4, 16), seeds=(0,))
    targets = [n.target for n in program.traced.graph.nodes if n.op == "call_function"]
    assert _data_gate in targets and _pre_pool not in targets and _post_pool not in targets
    heads = next(g for g in program.groups if "qkv" in g.producers)
    assert heads.searchable and (heads.n, heads.unit) == (4, 4), heads.frozen
