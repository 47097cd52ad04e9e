"""Masked execution (widthc/supernet.py, passes/masking.py): every width runs at full width, so
it presents the same shapes, and its outputs and gradients equal sliced execution's."""

from __future__ import annotations

import copy

import pytest
import torch
import transformer_zoo as tz
import zoo
from torch import nn
from torch.utils._pytree import tree_leaves

import widthc
from widthc.evaluate import score_choice
from widthc.export import tensor_error
from widthc.ops import REGISTRY
from widthc.ops.zeros import RESULTS
from widthc.passes.groups import layouts
from widthc.passes.masking import MASKS
from widthc.passes.slicing import make_plan
from widthc.train import MinMinStep, TrainConfig, cross_entropy, sample_width

ZOO = [*zoo.SMALL, *zoo.TORCHVISION]
MIXING = {"layernorm_mlp", "convnext_tiny"}  # a layer norm over searchable channels
# batch statistics in train mode, in float64: rounding amplified by a batch norm over a few
# values cannot hide a logic error there (fp32, batch 2: up to 1e-4 on resnet50)
TRAIN = ["residual", "depthwise", "grouped", "se_conv", "concat", "chunk_split", "multi_io",
         "resnet18", "mobilenet_v3_small", "efficientnet_b0", "densenet121"]  # fmt: skip


def _model(name: str):
    return zoo.small_model(name) if name in zoo.SMALL else zoo.torchvision_model(name)


def _pair(program):
    return (
        widthc.supernet(program, execution="sliced"),
        widthc.supernet(program, execution="masked"),
    )


def _shrunk_choice(program, seed: int = 0):
    cands = program.candidates(program.random(seed))
    return cands[min(1, len(cands) - 1)]


def _forward_backward(net, choice, inputs):
    """Outputs and every parameter's gradient of one forward and backward of `choice`."""
    net.set_choice(choice)
    net.zero_grad(set_to_none=True)
    torch.manual_seed(0)  # the same stochastic-depth draws in both executions
    out = net(*inputs)
    sum(o.square().sum() for o in tree_leaves(out) if o.is_floating_point()).backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    return [o.detach() for o in tree_leaves(out)], grads


def _no_dropout(model: nn.Module) -> None:
    """Dropout draws its masks for the tensor it gets: full width or sliced, other draws."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0


def _check_gradients(program, choice, g_masked: dict, g_sliced: dict, tol: float) -> None:
    names = sorted(g_sliced)
    assert set(g_masked) == set(g_sliced)
    norms = {n: float(g_sliced[n].norm()) for n in names}
    diff = sum(float((g_masked[n] - g_sliced[n]).norm()) ** 2 for n in names) ** 0.5
    assert diff <= tol * sum(v**2 for v in norms.values()) ** 0.5  # all gradients as one
    big = max(norms.values())
    plan = make_plan(program, choice)
    removed_entries = 0
    for n in names:
        if norms[n] > 1e-3 * big:  # (a conv bias before a batch norm: ~0)
            assert float((g_masked[n] - g_sliced[n]).norm()) <= 10 * tol * norms[n], n
        slices = plan.param_slices(n.removeprefix("gm."))
        if slices:
            kept = _kept(slices, g_masked[n].shape)
            assert torch.count_nonzero(torch.where(kept, 0, g_masked[n])) == 0, n  # exactly 0
            removed_entries += int((~kept).sum())
    assert removed_entries > 0


def _kept(slices, shape) -> torch.Tensor:
    """True at the kept positions (broadcastable to `shape`)."""
    kept = torch.ones((1,) * len(shape), dtype=torch.bool)
    for dim, idx in slices:
        vec = torch.zeros(shape[dim], dtype=torch.bool)
        vec[idx] = True
        kept = kept & vec.view([-1 if d == dim else 1 for d in range(len(shape))])
    return kept


@pytest.mark.parametrize("name", ZOO)
def test_masked_equals_sliced(name):
    """fp32, eval mode: the same outputs and gradients (relative error <= 1e-5), the removed
    positions' gradients exactly zero; a model it would not be exact for is refused."""
    model, inputs = _model(name)
    _no_dropout(model)
    program = widthc.compile(model, inputs)
    sliced = widthc.supernet(program, execution="sliced")
    if name in MIXING:
        assert "mixes the channels" in str(sliced.masking.reason)
        with pytest.raises(widthc.WidthcError, match="masked execution would differ"):
            widthc.supernet(program, execution="masked")
        assert sliced.mode(torch.device("cuda")) == "sliced"  # auto falls back
        return
    assert sliced.masking.reason is None
    masked = widthc.supernet(program, execution="masked").eval()
    choice = _shrunk_choice(program)
    out_s, g_s = _forward_backward(sliced.eval(), choice, inputs)
    out_m, g_m = _forward_backward(masked, choice, inputs)
    assert max(tensor_error(a, b) for a, b in zip(out_m, out_s)) <= 1e-5
    if program.searchable:
        _check_gradients(program, choice, g_m, g_s, 1e-5)


# (EfficientViT's linear attention divides by a sum: masked execution refuses `truediv`)
@pytest.mark.parametrize("attention", [*tz.MASKABLE, "swin", "torchvision_swin"])
def test_transformers_with_heads_searched_masked_equals_sliced(attention):
    """Issue 19's attention heads masked: a removed head's q, k and v are zero, and so is its
    output; weights read as attributes (a position embedding, GPT-2's Conv1D weight in
    `torch.addmm`) are masked too. With layer norms over the residual stream: refused."""
    model, inputs = tz.masked_model(attention)
    program = widthc.compile(model, inputs)
    assert "mixes the channels" in str(widthc.supernet(program).masking.reason)
    program = widthc.compile(tz.without_norms(model), inputs)
    program = program.rebin(program.beta, uniform=2)  # a tiny model's bins: often one per group
    assert any(g.unit > 1 for g in program.searchable)  # heads are searched
    sliced, masked = _pair(program)
    assert sliced.masking.reason is None
    shrunk = (program.smallest(), _shrunk_choice(program))  # every group shrunk; a mix
    for choice in [c for c in shrunk if c != program.full()]:
        out_s, g_s = _forward_backward(sliced.eval(), choice, inputs)
        out_m, g_m = _forward_backward(masked.eval(), choice, inputs)
        assert max(tensor_error(a, b) for a, b in zip(out_m, out_s)) <= 1e-5
        _check_gradients(program, choice, g_m, g_s, 1e-5)


def test_multihead_attention_weights_per_head_fall_back_to_sliced():
    """A removed head's attention weights are 1/S, not 0: nn.MultiheadAttention returning them
    per head cannot run masked."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.mha = nn.Linear(5, 16), nn.MultiheadAttention(16, 2, batch_first=True)
            self.head, self.per_head = nn.Linear(16, 3), nn.Linear(2, 3)

        def forward(self, x):
            y = self.embed(x)
            out, w = self.mha(y, y, y, average_attn_weights=False)
            return self.head(out).mean(1) + self.per_head(w.sum(-1).transpose(1, 2)).mean(1)

    program = widthc.compile(M().eval(), torch.randn(2, 6, 5))
    assert [g.unit for g in program.searchable] == [8]
    net = widthc.supernet(program)
    assert "`MultiheadAttention` makes zero channels non-zero" in str(net.masking.reason)
    assert net.mode(torch.device("cuda")) == "sliced"


@pytest.mark.parametrize("name", TRAIN)
def test_masked_training_equals_sliced_float64(name):
    """Train mode (batch statistics, running statistics updated), float64: outputs, gradients
    and running statistics equal sliced execution's; the removed channels' running statistics
    are bit-identical to before."""
    model, inputs = _model(name)
    _no_dropout(model)
    program = widthc.compile(model, inputs)
    model.double()
    inputs = tuple(x.double() if x.is_floating_point() else x for x in inputs)
    sliced, masked = _pair(program)
    choice = _shrunk_choice(program, seed=1)
    before = copy.deepcopy(program.gm.state_dict())
    out_s, g_s = _forward_backward(sliced.train(), choice, inputs)
    after_s = copy.deepcopy(program.gm.state_dict())
    program.gm.load_state_dict(before)
    out_m, g_m = _forward_backward(masked.train(), choice, inputs)
    after_m = program.gm.state_dict()
    assert max(tensor_error(a, b) for a, b in zip(out_m, out_s)) <= 1e-9
    _check_gradients(program, choice, g_m, g_s, 1e-9)
    plan, untouched = make_plan(program, choice), 0
    for key, value in after_m.items():
        if not value.is_floating_point():
            assert torch.equal(value, after_s[key]), key  # num_batches_tracked
            continue
        assert tensor_error(value, after_s[key]) <= 1e-9, key
        for dim, idx in plan.param_slices(key):
            removed = torch.ones(value.shape[dim], dtype=torch.bool)
            removed[idx] = False
            kept_before = before[key].index_select(dim, removed.nonzero().flatten())
            assert torch.equal(value.index_select(dim, removed.nonzero().flatten()), kept_before)
            untouched += int(removed.sum())
    assert untouched > 0


def test_batch_norm_statistics_of_removed_channels_bit_identical_fp32():
    model, inputs = zoo.small_model("residual")
    program = widthc.compile(model, inputs)
    masked = widthc.supernet(program, execution="masked").train()
    choice = _shrunk_choice(program, seed=3)
    plan = make_plan(program, choice)
    norms = {n: m for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    before = {n: (m.running_mean.clone(), m.running_var.clone()) for n, m in norms.items()}
    masked.set_choice(choice)
    masked(*inputs).sum().backward()
    checked = 0
    for n, m in norms.items():
        idx = dict(plan.param_slices(f"{n}.running_mean")).get(0)
        if idx is None:
            continue
        removed = torch.ones(len(m.running_mean), dtype=torch.bool)
        removed[idx] = False
        assert torch.equal(m.running_mean[removed], before[n][0][removed])
        assert torch.equal(m.running_var[removed], before[n][1][removed])
        assert not torch.equal(m.running_mean[idx], before[n][0][idx])  # the kept ones moved
        checked += 1
    assert checked > 0


@pytest.mark.parametrize("name", ["se_conv", "efficientnet_b0"])
def test_every_value_is_zero_at_removed_channels(name):
    """The invariant masked execution rests on: after every layer the removed channels hold
    exact zeros (a sigmoid gate's 0.5 is zeroed again at its site)."""
    model, inputs = _model(name)
    program = widthc.compile(model, inputs)
    masked = widthc.supernet(program, execution="masked").train()
    assert masked.masking.sites  # the sigmoid gates
    choice = _shrunk_choice(program)
    plan = make_plan(program, choice)
    masked.set_choice(choice)
    outputs = {}
    gm = masked.graph("masked")
    zeroed = {  # node -> the node that zeroes its value
        n.args[2].name: n
        for n in gm.graph.nodes
        if n.op == "call_function" and getattr(n.args[0], "target", None) == MASKS
    }
    assert len(zeroed) == len(masked.masking.sites)
    interp = torch.fx.Interpreter(gm)
    run_node = interp.run_node

    def record(node):
        outputs[node.name] = run_node(node)
        return outputs[node.name]

    interp.run_node = record
    gm.forward = lambda *args: interp.run(*args)  # the same run, node by node
    try:
        with torch.no_grad(), masked.probing():
            masked(*inputs)
    finally:
        del gm.forward
    checked = 0
    for node in program.gm.graph.nodes:
        value = outputs.get(zeroed[node.name].name if node.name in zeroed else node.name)
        lays = layouts(node)
        if not isinstance(value, torch.Tensor) or not isinstance(lays, tuple):
            continue
        for d, lay in enumerate(lays):
            idx = plan.positions(lay) if lay is not None else None
            if idx is None or idx.numel() == value.shape[d]:
                continue
            removed = torch.ones(value.shape[d], dtype=torch.bool)
            removed[idx] = False
            assert torch.count_nonzero(value.index_select(d, removed.nonzero().flatten())) == 0
            checked += 1
    assert checked > 10


def test_every_width_presents_the_same_convolution_shapes():
    model, inputs = zoo.torchvision_model("resnet18")
    program = widthc.compile(model, inputs)
    seen = {"sliced": set(), "masked": set()}
    mode = ["sliced"]
    hooks = [
        m.register_forward_pre_hook(
            lambda m, a: seen[mode[0]].add((tuple(a[0].shape), tuple(m.weight.shape)))
        )
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]
    n_convs = len(hooks)
    sliced, masked = _pair(program)
    with torch.no_grad():
        for seed in range(4):
            for net, name in ((sliced.eval(), "sliced"), (masked.eval(), "masked")):
                mode[0] = name
                net.set_choice(program.random(seed))
                net(*inputs)
    for h in hooks:
        h.remove()
    assert len(seen["masked"]) <= n_convs  # one shape per layer, whatever the width
    assert len(seen["sliced"]) > 2 * n_convs


def _zero_model(op):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.b = nn.Conv2d(8, 8, 1)
            self.head = nn.Conv2d(8, 4, 1)

        def forward(self, x):
            y = self.a(x)
            return self.head(op(y, self.b(y)))

    return M()


@pytest.mark.parametrize(
    "op, why",
    [
        (lambda y, z: torch.log(y.abs() + 1) + torch.sqrt(z.abs()), "not finite at zero"),
        (lambda y, z: y / (z.abs() + 1), "not finite at zero"),
        (lambda y, z: y.sigmoid_() * z, "non-zero in place"),
        (lambda y, z: torch.roll(y, 1, 2) + z, None),  # an unknown op freezes its channels
    ],
)
def test_ops_masked_execution_cannot_follow_fall_back_with_a_reason(op, why):
    program = widthc.compile(_zero_model(op), torch.randn(2, 3, 8, 8))
    net = widthc.supernet(program)
    if why is None:
        assert net.masking.reason is None
        return
    assert why in str(net.masking.reason)
    assert net.mode(torch.device("cuda")) == "sliced" and net.mode(torch.device("cpu")) == "sliced"


def test_a_write_into_removable_channels_falls_back_to_sliced():
    """`y[:, :, 0] = 1.0` writes non-zero values into removed channels, in place: refused."""

    def write(y, z):
        y = y + z
        y[:, :, 0] = 1.0
        return y

    program = widthc.compile(_zero_model(write), torch.randn(2, 3, 8, 8))
    net = widthc.supernet(program)
    if not program.searchable:
        pytest.skip("the write froze its channels")
    assert "writes into a tensor with removable channels" in str(net.masking.reason)
    assert net.mode(torch.device("cuda")) == "sliced"


def test_ops_that_shift_zeros_are_zeroed_again():
    """`sigmoid(y) + 1` and `y + 1` make removed channels non-zero: zeroed at their sites."""
    program = widthc.compile(
        _zero_model(lambda y, z: (torch.sigmoid(y) * z + 1) * 2), torch.randn(2, 3, 8, 8)
    )
    sliced, masked = _pair(program)
    assert len(masked.masking.sites) == 2  # after the sigmoid and after the + 1
    auto = widthc.supernet(program)
    assert auto.mode(torch.device("cpu")) == "sliced"
    assert auto.mode(torch.device("cuda")) == "masked"  # static shapes on accelerators
    x = torch.randn(4, 3, 8, 8)
    for seed in range(3):
        choice = _shrunk_choice(program, seed)
        out_s, g_s = _forward_backward(sliced.eval(), choice, (x,))
        out_m, g_m = _forward_backward(masked.eval(), choice, (x,))
        assert tensor_error(out_m[0], out_s[0]) <= 1e-5
        _check_gradients(program, choice, g_m, g_s, 1e-5)


def test_every_registered_op_says_what_it_does_to_zeros():
    for key, spec in REGISTRY.items():
        assert spec.zeros in RESULTS or callable(spec.zeros), key


def test_min_min_steps_and_scores_equal_sliced():
    """Min-min's candidate offsets work unchanged: the same probe losses, the same chosen
    candidates, the same training losses; scoring gives the same metric and leaves the supernet
    bit-for-bit unchanged."""
    model, inputs = zoo.small_model("residual")
    program = widthc.compile(model, inputs)
    before = copy.deepcopy(program.gm.state_dict())
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 3, 16, 16, generator=gen), torch.randint(0, 10, (8,), generator=gen)) for _ in range(4)]  # fmt: skip
    records = {}
    for execution in ("sliced", "masked"):
        program.gm.load_state_dict(before)
        net = widthc.supernet(program, offset=1, execution=execution).train()
        cfg = TrainConfig(decay_used=True, weight_decay=1e-3)
        step = MinMinStep(net, net, cfg, cross_entropy())
        step.sampler.manual_seed(0)
        step.trainer = _FakeLoop(torch.optim.SGD(net.parameters(), lr=0.1))
        records[execution] = []
        for x, y in batches:
            record = step(x, y)
            records[execution].append(
                (record["candidate"], record["candidate_losses"], float(record["loss"]))
            )
            step.trainer.opt.step()
            step.trainer.opt.zero_grad()
        calib, val = [x for x, _ in batches[:2]], batches[2:]
        state = copy.deepcopy(program.gm.state_dict())
        width = sample_width(net, torch.Generator().manual_seed(5))
        records[execution].append(score_choice(net, net.candidates(width)[0], calib, val))
        assert all(torch.equal(v, program.gm.state_dict()[k]) for k, v in state.items())
    sliced, masked = records["sliced"], records["masked"]
    assert [r[0] for r in sliced[:-1]] == [r[0] for r in masked[:-1]]
    assert any(len(r[1]) > 1 for r in sliced[:-1])  # candidates were probed
    for (_, probe_s, loss_s), (_, probe_m, loss_m) in zip(sliced[:-1], masked[:-1]):
        assert probe_m == pytest.approx(probe_s, rel=1e-5)
        assert loss_m == pytest.approx(loss_s, rel=1e-5)
    assert masked[-1] == pytest.approx(sliced[-1])


class _FakeLoop:
    step, total_steps = 10, 100

    def __init__(self, opt):
        from widthc.precision import Precision

        self.opt, self.precision = opt, Precision()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_auto_is_masked_and_equals_sliced_on_cpu():
    model, inputs = zoo.torchvision_model("mobilenet_v3_small")
    program = widthc.compile(model, inputs)
    choice = _shrunk_choice(program)
    sliced = widthc.supernet(program, execution="sliced").eval()
    sliced.set_choice(choice)
    with torch.no_grad():
        ref = sliced(*inputs)
    net = widthc.supernet(program).cuda().eval()
    assert net.mode() == "masked"
    net.set_choice(choice)
    with torch.no_grad():
        out = net(*(x.cuda() for x in inputs))
    assert tensor_error(out.cpu(), ref) <= 1e-4
