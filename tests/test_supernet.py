"""The supernet (widthc/supernet.py): exact at full width, equal to slim at every sub-network,
really sliced, and batch norm in training mode touches only the active channels."""

from __future__ import annotations

import pytest
import torch
import zoo
from torch import nn
from torch.utils._pytree import tree_leaves

import widthc
from widthc.ir import GroupWidth, WidthChoice
from widthc.passes.slicing import make_plan
from widthc.passes.slim import slim

ZOO = [*zoo.SMALL, *zoo.TORCHVISION]


def _model(name: str):
    return zoo.small_model(name) if name in zoo.SMALL else zoo.torchvision_model(name)


def _max_rel(a, b) -> float:
    errs = [
        float((x - y).abs().max() / y.abs().max().clamp_min(1e-12))
        for x, y in zip(tree_leaves(a), tree_leaves(b))
    ]
    return max(errs)


def _shrunk(program, choice) -> bool:
    return any(
        len(choice.indices(program.groups[g])) < program.groups[g].n for g, _ in choice.widths
    )


@pytest.mark.parametrize("name", ZOO)
def test_full_width_exact_and_equal_to_slim(name):
    model, inputs = _model(name)
    with torch.no_grad():
        reference = model(*inputs)
    program = widthc.compile(model, inputs)
    net = widthc.supernet(program, offset=1).eval()
    # the same Parameter objects (a subset: googlenet's aux heads are not in the eval graph)
    assert {id(p) for p in net.parameters()} <= {id(p) for p in model.parameters()}
    assert {id(p) for p in net.parameters()} == {id(p) for p in program.gm.parameters()}
    with torch.no_grad():
        out = net(*inputs)
        assert all(torch.equal(a, b) for a, b in zip(tree_leaves(out), tree_leaves(reference)))

        shrunk = 0
        for seed in range(2):
            for choice in program.candidates(program.random(seed), offset=1):
                net.set_choice(choice)
                small = slim(program, choice)
                assert _max_rel(net(*inputs), small(*inputs)) <= 1e-5, choice
                shrunk += _shrunk(program, choice)
        if program.searchable:
            assert shrunk > 0  # the comparison really exercised smaller sub-networks
        net.set_choice(program.full())  # back at full width: the original model again
        assert all(
            torch.equal(a, b) for a, b in zip(tree_leaves(net(*inputs)), tree_leaves(reference))
        )


def test_layer_norm_inside_a_group_is_resized():
    """layernorm_mlp: the LayerNorm's group shrinks, so normalized_shape must follow."""
    model, inputs = zoo.small_model("layernorm_mlp")
    program = widthc.compile(model, inputs)
    (gid,) = [g.id for g in program.searchable if "norm" in g.consumers]
    choice = WidthChoice.of({gid: GroupWidth(2, (3,))})  # bins 0 and 3 of the norm's group
    net = widthc.supernet(program).eval()
    net.set_choice(choice)
    seen = []
    hook = model.norm.register_forward_pre_hook(
        lambda m, args: seen.append((m.normalized_shape, tuple(m.weight.shape), args[0].shape[-1]))
    )
    with torch.no_grad():
        out = net(*inputs)
    hook.remove()
    kept = len(choice.indices(program.groups[gid]))
    assert kept < 32
    assert seen == [((kept,), (kept,), kept)]
    assert model.norm.normalized_shape == (32,) and model.norm.weight.shape == (32,)  # restored
    assert _max_rel(out, slim(program, choice)(*inputs)) <= 1e-5


def test_execution_is_sliced_not_masked():
    """Inside the forward, every layer sees sliced weights and inputs; afterwards the full
    Parameters are back in place."""
    model, inputs = zoo.small_model("depthwise")
    program = widthc.compile(model, inputs)
    net = widthc.supernet(program).eval()
    choice = WidthChoice.of({0: 10, 1: GroupWidth(8, (9,))})
    plan = make_plan(program, choice)
    net.set_choice(choice)
    seen = {}

    def record(name):
        def hook(m, args):
            seen[name] = (tuple(m.weight.shape), m.groups, args[0].shape[1], type(m.weight))

        return hook

    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    hooks = [m.register_forward_pre_hook(record(n)) for n, m in convs.items()]
    weights = {n: m.weight for n, m in convs.items()}
    with torch.no_grad():
        net(*inputs)
    for h in hooks:
        h.remove()
    for n, m in convs.items():
        expected = tuple(plan.slice_param(f"{n}.weight", m.weight).shape)
        shape, groups, in_channels, kind = seen[n]
        assert shape == expected
        assert kind is torch.Tensor  # an index_select result, not the Parameter
        assert in_channels == expected[1] * groups
        assert m.weight is weights[n] and m.groups == (m.in_channels if n.startswith("dw") else 1)
    dw_shape, dw_groups, _, _ = seen["dw.0"]
    assert dw_groups == dw_shape[0] < 48  # depthwise groups follow the sliced channels


def test_literal_channel_counts_follow_the_choice():
    """flatten_linear's `x.view(n, 256)`: the literal reads the current choice."""
    model, inputs = zoo.small_model("flatten_linear")
    program = widthc.compile(model, inputs)
    net = widthc.supernet(program).eval()
    assert "widthc_sizes" in net.gm.code and "widthc_sizes" not in program.gm.code
    (gid,) = [g.id for g in program.searchable if "features.2.0" in g.producers]
    choice = WidthChoice.of({gid: 2})
    net.set_choice(choice)
    with torch.no_grad():
        out = net(*inputs)
    assert _max_rel(out, slim(program, choice)(*inputs)) <= 1e-5
    assert net.gm.widthc_sizes.values == [256]  # restored after the forward


def _bn_stats(model):
    return {
        n: (m.running_mean.clone(), m.running_var.clone(), int(m.num_batches_tracked))
        for n, m in model.named_modules()
        if isinstance(m, nn.BatchNorm2d)
    }


def test_batch_norm_training_updates_only_active_channels():
    model, inputs = zoo.small_model("residual")
    program = widthc.compile(model, inputs)
    choice = program.candidates(program.random(1), offset=1)[1]
    plan = make_plan(program, choice)
    small = slim(program, choice).train()
    before = _bn_stats(model)
    net = widthc.supernet(program).train()
    net.set_choice(choice)
    with torch.no_grad():
        out = net(*inputs)
        small_out = small(*inputs)
    assert _max_rel(out, small_out) <= 1e-5  # batch statistics of the active channels only
    after = _bn_stats(model)
    small_modules = dict(small.named_modules())
    touched = 0
    for name, (mean0, var0, count0) in before.items():
        mean1, var1, count1 = after[name]
        assert count1 == count0 + 1
        idx = dict(plan.param_slices(f"{name}.running_mean")).get(0, torch.arange(len(mean0)))
        rest = torch.ones(len(mean0), dtype=torch.bool)
        rest[idx] = False
        assert torch.equal(mean1[rest], mean0[rest]) and torch.equal(var1[rest], var0[rest])
        # the active channels hold exactly what the physically smaller model computed
        assert torch.allclose(mean1[idx], small_modules[name].running_mean, atol=1e-6)
        assert torch.allclose(var1[idx], small_modules[name].running_var, atol=1e-6)
        assert not torch.equal(mean1[idx], mean0[idx])
        touched += int(rest.any())
    assert touched > 0


def test_probing_changes_no_buffer():
    model, inputs = zoo.small_model("chain")
    program = widthc.compile(model, inputs)
    net = widthc.supernet(program).train()
    before = [b.clone() for b in net.buffers()]
    with torch.no_grad(), net.probing():
        for choice in [program.full(), *program.candidates(program.random(0))]:
            net.set_choice(choice)
            net(*inputs)
    assert all(torch.equal(a, b) for a, b in zip(before, net.buffers()))


def test_gradients_reach_only_active_rows():
    """Backward through a sliced forward: the shared full weights get the slim model's gradient
    at the kept positions and exactly zero elsewhere."""
    model, inputs = zoo.small_model("se_conv")
    program = widthc.compile(model, inputs)
    choice = program.candidates(program.random(2), offset=1)[2]
    plan = make_plan(program, choice)
    small = slim(program, choice).eval()
    net = widthc.supernet(program).eval()
    net.set_choice(choice)
    net(*inputs).square().sum().backward()
    small(*inputs).square().sum().backward()
    small_params = dict(small.named_parameters())
    checked = 0
    for name, p in model.named_parameters():
        slices = plan.param_slices(name)
        g = small_params[name].grad
        if not slices:
            assert torch.allclose(p.grad, g, atol=1e-5, rtol=1e-4), name
            continue
        checked += 1
        kept = _scatter(torch.ones_like(g), slices, p.shape).bool()
        assert torch.allclose(p.grad[kept], g.reshape(-1), atol=1e-5, rtol=1e-4), name
        assert torch.count_nonzero(p.grad[~kept]) == 0, name  # exactly zero, not just small
    assert checked > 0


def _scatter(g: torch.Tensor, slices, full_shape) -> torch.Tensor:
    """The full-shape tensor holding `g` at the kept positions and zero elsewhere."""
    for dim, idx in slices:
        shape = list(g.shape)
        shape[dim] = full_shape[dim]
        g = torch.zeros(shape).index_copy_(dim, idx, g)
    return g


def test_plan_is_cached_per_choice():
    model, inputs = zoo.small_model("chain")
    program = widthc.compile(model, inputs)
    net = widthc.supernet(program)
    choice = program.random(0)
    device = torch.device("cpu")
    first = net.applied(choice, device)
    assert net.applied(choice, device) is first
    for seed in range(1, 80):
        net.applied(program.random(seed), device)
    assert len(net._cache) <= 64


def test_bad_choice_and_offset_are_clear_errors():
    model, inputs = zoo.small_model("chain")
    program = widthc.compile(model, inputs)
    with pytest.raises(widthc.WidthcError, match="offset"):
        widthc.supernet(program, offset=-1)
    net = widthc.supernet(program)
    with pytest.raises(widthc.WidthcError, match="does not fit group"):
        net.set_choice(WidthChoice.of({0: 999}))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_slim():
    model, inputs = zoo.torchvision_model("mobilenet_v2")
    program = widthc.compile(model, inputs)
    choice = program.candidates(program.random(0), offset=1)[1]
    small = slim(program, choice).cuda()
    net = widthc.supernet(program).cuda().eval()
    net.set_choice(choice)
    x = inputs[0].cuda()
    with torch.no_grad():
        assert _max_rel(net(x), small(x)) <= 1e-4
    net.train()
    net(x).sum().backward()
    assert all(p.grad is None or p.grad.is_cuda for p in net.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_sweep_equal_to_slim_more_widths_and_offsets(name):
    """The long sweep (make test-all): 6 random widths, offsets 2 and 3, eval and train mode."""
    model, inputs = _model(name)
    program = widthc.compile(model, inputs)
    net = widthc.supernet(program)
    for seed in range(6):
        for offset in (2, 3):
            for choice in program.candidates(program.random(100 + seed), offset)[::4]:
                small = slim(program, choice)
                net.set_choice(choice)
                with torch.no_grad():
                    net.eval()
                    assert _max_rel(net(*inputs), small.eval()(*inputs)) <= 1e-5, choice
                    net.train()
                    with net.probing():  # train mode: batch statistics of the kept channels
                        torch.manual_seed(seed)  # the same dropout masks in both
                        out = net(*inputs)
                        torch.manual_seed(seed)
                        assert _max_rel(out, small.train()(*inputs)) <= 1e-5, choice
