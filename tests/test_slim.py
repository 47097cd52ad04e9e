"""`widthc.slim` over the test zoo, at random widths and patterns drawn by hypothesis:
(1) outputs equal the zeroed-weights reference, (2) full width is bit-identical, (3) FLOPs counted
afresh equal program.flops(choice), (4) every node has the planned shape, frozen groups keep
their width and outputs keep their shape, (5) the input model and program are untouched; plus
one SGD step in train mode and the three checks of widthc.verify."""

from __future__ import annotations

import functools

import pytest
import torch
import zoo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.utils._pytree import tree_flatten

import widthc
from widthc.errors import InternalError, WidthcError
from widthc.ir import TensorMeta, WidthChoice
from widthc.passes.coupling import LAYOUTS
from widthc.passes.slicing import make_plan
from widthc.trace import VALUE
from widthc.verify import relative_error, verify, zeroed_reference

# LayerNorm inside a searchable group: the zeroed reference is not exact there (the removed
# channels still move the mean and variance); the supernet tests check these two models.
MIXING = {"layernorm_mlp", "convnext_tiny"}
# more torchvision models for the slow sweep (64x64 inputs, like the zoo)
EXTRA = [
    "alexnet", "resnet34", "resnext50_32x4d", "wide_resnet50_2", "shufflenet_v2_x1_0",
    "mobilenet_v3_large", "regnet_y_400mf", "efficientnet_v2_s", "mnasnet1_0", "squeezenet1_0",
    "densenet169", "vgg16_bn",
]  # fmt: skip

ALL = [*zoo.SMALL, *zoo.TORCHVISION]
EXACT = [name for name in ALL if name not in MIXING]


@functools.cache
def _setup(name: str):
    model, inputs = zoo.small_model(name) if name in zoo.SMALL else zoo.torchvision_model(name)
    return model, inputs, widthc.compile(model, inputs)


def _choice(program, seed: int, j: int) -> WidthChoice:
    """A random width, then one of its locally free candidates (non-contiguous channels)."""
    cands = program.candidates(program.random(seed))
    return cands[j % len(cands)]


def _flat(out) -> list[torch.Tensor]:
    return [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]


SEEDS = given(seed=st.integers(0, 2**31 - 1), j=st.integers(0, 40))
FEW = settings(
    max_examples=5, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
MANY = settings(
    max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)


def test_mixing_models_are_exactly_those_with_channel_mixing_groups():
    for name in ALL:
        _, _, program = _setup(name)
        assert any(g.mixing for g in program.searchable) == (name in MIXING), name


@pytest.mark.parametrize("name", EXACT)
@FEW
@SEEDS
def test_slim_equals_zeroed_reference(name, seed, j):
    model, inputs, program = _setup(name)
    choice = _choice(program, seed, j)
    small = widthc.slim(program, choice)
    with torch.no_grad():
        out, ref = small(*inputs), zeroed_reference(program, choice)(*inputs)
    assert relative_error(out, ref) <= 1e-5
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ALL)
def test_full_width_is_bit_identical(name):
    model, inputs, program = _setup(name)
    small = widthc.slim(program, program.full())
    with torch.no_grad():
        got, want = _flat(small(*inputs)), _flat(model(*inputs))
    assert len(got) == len(want)
    assert all(torch.equal(a, b) for a, b in zip(got, want))


@pytest.mark.parametrize("name", ALL)
@FEW
@SEEDS
def test_flops_recounted_on_the_slim_graph_are_exact(name, seed, j):
    _, inputs, program = _setup(name)
    choice = _choice(program, seed, j)
    small = widthc.slim(program, choice)
    assert widthc.compile(small, inputs).flops() == program.flops(choice)
    assert widthc.compile(small, inputs).params() == program.params(choice)
    assert sum(p.numel() for p in small.parameters()) == sum(
        p.numel() for p in widthc.compile(small, inputs).gm.parameters()
    )


@pytest.mark.parametrize("name", ALL)
@FEW
@SEEDS
def test_every_node_has_its_planned_shape_and_frozen_groups_keep_width(name, seed, j):
    _, inputs, program = _setup(name)
    choice = _choice(program, seed, j)
    plan = make_plan(program, choice)
    small = widthc.slim(program, choice)
    ShapeProp(small).propagate(*inputs)  # torch's own shape propagation, not widthc's
    frozen = {g.id for g in program.groups if not g.searchable}
    shapes = {n.name: n.meta.get("tensor_meta") for n in small.graph.nodes}
    checked = 0
    for node in program.gm.graph.nodes:
        value, lays = node.meta.get(VALUE), node.meta.get(LAYOUTS)
        meta = shapes.get(node.name)
        if not isinstance(value, TensorMeta) or not hasattr(meta, "shape"):
            continue
        assert tuple(meta.shape) == plan.shape(node), node.name
        for dim, lay in enumerate(lays or ()):
            if lay is not None and set(lay.groups) <= frozen:
                assert meta.shape[dim] == value.shape[dim], (node.name, dim)
        checked += 1
    assert checked > 0
    with torch.no_grad():
        got, want = _flat(small(*inputs)), _flat(program.gm(*inputs))
    assert [t.shape for t in got] == [t.shape for t in want]


@pytest.mark.parametrize("name", ["chain", "residual", "concat", "flatten_linear", "resnet18"])
def test_program_and_model_are_untouched(name):
    model, inputs, program = _setup(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    text, code = repr(model), program.gm.code
    flops = program.flops()
    small = widthc.slim(program, program.random(7))
    with torch.no_grad():
        for p in small.parameters():  # writing into the slim model reaches nothing else
            p.add_(1.0)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert repr(model) == text and program.gm.code == code
    assert program.flops() == flops
    ptrs = {t.data_ptr() for t in [*model.parameters(), *model.buffers()]}
    assert not ptrs & {t.data_ptr() for t in [*small.parameters(), *small.buffers()]}


@pytest.mark.parametrize("name", ["chain", "residual", "se_linear", "multi_io", "resnet18"])
def test_one_sgd_step_in_train_mode(name):
    _, inputs, program = _setup(name)
    small = widthc.slim(program, program.uniform(ratio=0.5))
    small.train()
    before = {k: v.clone() for k, v in small.state_dict().items()}
    opt = torch.optim.SGD(small.parameters(), lr=0.1)
    loss = sum(t.float().pow(2).mean() for t in _flat(small(*inputs)))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in small.parameters())
    opt.step()
    after = small.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    # every weight with a gradient moved (a conv bias before a train-mode batch norm has a zero
    # gradient, up to rounding), and every conv/linear weight has one
    moved = [k for k, p in small.named_parameters() if p.grad.abs().max() > 1e-6]
    assert set(moved) <= set(changed)
    assert {k for k in moved if k.endswith("weight")} >= {
        f"{n}.weight" for n, m in small.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))
    }
    if any(k.endswith("running_mean") for k in before):
        assert any(k.endswith("running_mean") for k in changed)


@pytest.mark.parametrize("name", ["residual", "layernorm_mlp", "multi_io"])
def test_verify_runs_the_three_checks(name, tmp_path):
    _, inputs, program = _setup(name)
    choice = program.uniform(ratio=0.5)
    small = widthc.slim(program, choice)
    checks = verify(program, choice, small, onnx_path=tmp_path / "slim.onnx")
    assert checks.equivalence is not None and checks.equivalence <= 1e-5
    assert checks.flops_counted == checks.flops_expected == program.flops(choice)
    assert checks.onnx is not None and checks.onnx <= 1e-4
    assert (tmp_path / "slim.onnx").is_file()
    expected = "supernet" if name in MIXING else "zeroed weights"
    assert checks.reference.startswith(expected)


def test_verify_raises_on_a_wrong_model():
    _, inputs, program = _setup("chain")
    choice = program.uniform(ratio=0.5)
    small = widthc.slim(program, choice)
    with torch.no_grad():
        small.get_submodule("features.0.0").weight.mul_(1.5)  # a wrong weight
    with pytest.raises(InternalError, match="relative error"):
        verify(program, choice, small, check_onnx=False)
    other = widthc.slim(program, program.uniform(ratio=0.25))  # right outputs, wrong width
    with pytest.raises(InternalError, match="differ|FLOPs"):
        verify(program, choice, other, check_onnx=False)


def test_verify_takes_a_reference_callable():
    _, inputs, program = _setup("residual")
    choice = program.uniform(ratio=0.5)
    small = widthc.slim(program, choice)
    ref = zeroed_reference(program, choice)
    checks = verify(program, choice, small, reference=ref, check_onnx=False)
    assert checks.equivalence <= 1e-5 and checks.onnx is None
    with pytest.raises(InternalError, match="relative error"):
        verify(program, choice, small, reference=lambda *x: ref(*x) + 1.0, check_onnx=False)


def test_slim_rejects_a_choice_for_another_program():
    _, _, program = _setup("chain")
    bad = WidthChoice.of({len(program.groups) + 3: 1})
    with pytest.raises(WidthcError, match="not searchable"):
        widthc.slim(program, bad)


@pytest.mark.slow
@pytest.mark.parametrize("name", [*ALL, *EXTRA])
@MANY
@SEEDS
def test_sweep_equivalence_flops_and_shapes(name, seed, j):
    """The default tests' checks with more widths per model, and more models."""
    model, inputs, program = _setup(name)
    choice = _choice(program, seed, j)
    small = widthc.slim(program, choice)
    with torch.no_grad():
        out = small(*inputs)
        shapes = [t.shape for t in _flat(model(*inputs))]
        if not any(g.mixing for g in program.searchable):
            assert relative_error(out, zeroed_reference(program, choice)(*inputs)) <= 1e-5
    assert [t.shape for t in _flat(out)] == shapes
    assert widthc.compile(small, inputs).flops() == program.flops(choice)


def test_verify_runs_a_model_in_training_mode_as_in_eval_and_leaves_it_so():
    """A model whose last BatchNorm sees 1x1 maps (mobilenet_v2 at 32x32) cannot run a batch of
    one in training mode; verify runs it in eval mode, and leaves its mode and statistics."""
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3), nn.AdaptiveAvgPool2d(1), nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16),
        nn.ReLU(), nn.Flatten(), nn.Linear(16, 4),
    )  # fmt: skip
    program = widthc.compile(model.eval(), (torch.randn(1, 3, 8, 8),))
    program.gm.train()
    stats = [b.clone() for b in program.gm.buffers()]
    choice = program.uniform(ratio=0.5)
    small = widthc.slim(program, choice).eval()
    checks = verify(program, choice, small, check_onnx=False)
    assert checks.equivalence is not None and program.gm.training
    assert all(torch.equal(a, b) for a, b in zip(stats, program.gm.buffers()))
