"""Capture-ready masked execution and `--compile` (widthc/capture.py, issue 15): every width
runs one function of the same tensors, whose masks change value, not structure; compiled, it is
traced once and equals eager masked execution."""

from __future__ import annotations

import copy

import pytest
import torch
import transformer_zoo as tz
import zoo
from torch._dynamo.utils import counters
from torch.utils._pytree import tree_leaves

import widthc
import widthc.capture
from widthc.export import tensor_error
from widthc.precision import Precision
from widthc.train import MinMinStep, TrainConfig, cross_entropy, train_supernet

# batch norms, residual adds, depthwise and grouped convs, sigmoid gates (zeroing sites),
# concatenation, chunks, two inputs
EAGER = ["residual", "depthwise", "grouped", "se_conv", "concat", "chunk_split", "multi_io",
         "mobilenet_v3_small", "efficientnet_b0"]  # fmt: skip


def _model(name: str):
    return zoo.small_model(name) if name in zoo.SMALL else zoo.torchvision_model(name)


def _widths(program) -> list:
    """The full width, the smallest, and shrunk candidates of random widths."""
    cands = [program.candidates(program.random(seed))[-1] for seed in range(3)]
    return [program.full(), program.smallest(), *cands]


def _run(net, widths, inputs, dtype=torch.float32):
    """Per width (in turn, train mode): outputs, gradients, and the state after the step."""
    out = []
    for choice in widths:
        net.set_choice(choice)
        net.zero_grad(set_to_none=True)
        torch.manual_seed(0)  # the same dropout draws in both
        y = net(*inputs)
        sum(o.square().sum() for o in tree_leaves(y) if o.is_floating_point()).backward()
        grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
        state = copy.deepcopy(net.program.gm.state_dict())
        out.append(([o.detach() for o in tree_leaves(y)], grads, state))
    return out


def _against_capture_ready(program, execution: str, widths, inputs):
    """`_run` of a supernet running `execution`, then of a capture-ready one, from the same
    weights."""
    before = copy.deepcopy(program.gm.state_dict())
    reference = _run(widthc.supernet(program, execution=execution).train(), widths, inputs)
    program.gm.load_state_dict(before)
    net = widthc.supernet(program, execution="masked").capture_ready().train()
    return reference, _run(net, widths, inputs)


@pytest.mark.parametrize("name", EAGER)
def test_capture_ready_is_masked_execution_bit_for_bit(name):
    """fp32, train mode (batch statistics, running statistics written back), five widths
    in turn, the full one included: the same outputs, gradients and running statistics as
    masked execution, exactly (multiplying by one and filling nothing change nothing)."""
    model, inputs = _model(name)
    program = widthc.compile(model, inputs)
    masked, captured = _against_capture_ready(program, "masked", _widths(program), inputs)
    for (o_m, g_m, s_m), (o_c, g_c, s_c) in zip(masked, captured):
        assert all(torch.equal(a, b) for a, b in zip(o_m, o_c))
        assert g_m.keys() == g_c.keys() and all(torch.equal(g_m[k], g_c[k]) for k in g_m)
        assert all(torch.equal(s_m[k], s_c[k]) for k in s_m)


@pytest.mark.parametrize("name", ["residual", "se_conv", "mobilenet_v3_small"])
def test_capture_ready_equals_sliced_in_float64(name):
    """Against sliced execution (the reference `slim` is proved against), float64, train
    mode: outputs, gradients and running statistics within 1e-9 (the masked tests' bound).
    Without dropout: it draws for the tensor it gets, full width or sliced."""
    model, inputs = _model(name)
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    program = widthc.compile(model, inputs)
    model.double()
    inputs = tuple(x.double() for x in inputs)
    sliced, captured = _against_capture_ready(program, "sliced", _widths(program)[1:], inputs)
    for (o_s, g_s, s_s), (o_c, g_c, s_c) in zip(sliced, captured):
        assert max(tensor_error(a, b) for a, b in zip(o_c, o_s)) <= 1e-9
        assert g_s.keys() == g_c.keys()
        assert all(tensor_error(g_c[k], g_s[k]) <= 1e-9 for k in g_s if g_s[k].norm() > 1e-6)
        assert all(tensor_error(s_c[k].double(), s_s[k].double()) <= 1e-9 for k in s_s)


def test_every_width_resolves_the_same_tensors_and_masks():
    """What makes it capturable: for every width the same swapped tensors, in the same order,
    with masks of the same shapes, and a mask at every zeroing site (plain masked execution:
    only what the width shrinks)."""
    model, inputs = _model("se_conv")
    program = widthc.compile(model, inputs)
    net = widthc.supernet(program, execution="masked").capture_ready()
    plain = widthc.supernet(program, execution="masked")
    device = torch.device("cpu")
    seen, plain_counts = set(), set()
    for choice in _widths(program):
        applied = net.applied(choice, device)
        seen.add(
            (
                tuple((id(s.owner), s.attr, tuple(k.shape for k in s.keep)) for s in applied.swaps),
                tuple(None if m is None else tuple(m.shape) for m in applied.sites),
            )
        )
        found = plain.applied(choice, device)
        plain_counts.add(0 if found is None else len(found.swaps))
    assert len(seen) == 1
    ((swaps, sites),) = seen
    assert len(swaps) == len(program.param_dims) and None not in sites and sites
    assert len(plain_counts) > 1  # plain masked execution: it depends on the width


def test_capture_ready_needs_masked_execution():
    model, inputs = _model("residual")
    program = widthc.compile(model, inputs)
    with pytest.raises(widthc.WidthcError, match="--compile needs masked execution"):
        widthc.supernet(program, execution="sliced").capture_ready(compile=True)
    with pytest.raises(widthc.WidthcError, match="this supernet runs sliced"):
        widthc.supernet(program).capture_ready()  # auto: sliced on a CPU


class _Loop:
    step, total_steps = 10, 100

    def __init__(self, opt):
        self.opt, self.precision = opt, Precision()


def _minmin(program, batches, compiled: bool, probes="each", recompiles_fail=False, loss=None):
    """Min-min steps (r=1, f=0.5, SGD with momentum) from the program's current weights:
    per step (candidate, probe losses, trained loss), the state after, and the graphs
    compiled by the first step and by all the others."""
    net = widthc.supernet(program, offset=1, execution="masked").train()
    if compiled:
        net.capture_ready(compile=True)
    cfg = TrainConfig(select_batch_fraction=0.5, probes=probes, momentum=0.9)
    step = MinMinStep(net, net, cfg, loss or cross_entropy())
    step.sampler.manual_seed(0)
    step.trainer = _Loop(torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9))
    records, graphs = [], []
    for i, (x, y) in enumerate(batches):
        start = counters["stats"]["unique_graphs"]
        with torch._dynamo.config.patch(error_on_recompile=recompiles_fail and i > 0):
            record = step(x, y)
        if "chosen_from" in record:
            step.settle(record)
        step.trainer.opt.step()
        step.trainer.opt.zero_grad()
        graphs.append(counters["stats"]["unique_graphs"] - start)
        probe = [float(v) for v in record["candidate_losses"]]
        records.append((int(record["candidate"]), probe, float(record["loss"])))
    return records, copy.deepcopy(program.gm.state_dict()), graphs


def _batches(inputs, n=5, batch=8):
    gen = torch.Generator().manual_seed(0)
    shape = inputs[0].shape[1:]
    return [
        (
            torch.randn(batch, *shape, generator=gen, dtype=inputs[0].dtype),
            torch.randint(0, 10, (batch,), generator=gen),
        )
        for _ in range(n)
    ]


def _compiled_equals_eager(model, inputs, probes="each", tol=1e-5, loss=None):
    """Eager masked against compiled: the same candidates, probe and trained losses within
    `tol`, the weights and running statistics after the steps within `tol`; new widths after
    the first step trace nothing (a recompile raises)."""
    program = model if isinstance(model, widthc.Program) else widthc.compile(model, inputs)
    batches = _batches(inputs)
    before = copy.deepcopy(program.gm.state_dict())
    eager, s_eager, _ = _minmin(program, batches, False, probes, loss=loss)
    program.gm.load_state_dict(before)
    compiled, s_comp, graphs = _minmin(program, batches, True, probes, True, loss)
    assert len({tuple(r[1]) for r in eager}) == len(batches)  # a new width every step
    assert [r[0] for r in compiled] == [r[0] for r in eager]
    for (_, p_e, l_e), (_, p_c, l_c) in zip(eager, compiled):
        assert p_c == pytest.approx(p_e, rel=tol) and l_c == pytest.approx(l_e, rel=tol)
    assert max(tensor_error(s_comp[k].double(), s_eager[k].double()) for k in s_eager) <= tol
    assert graphs[0] >= 1 and sum(graphs[1:]) == 0
    return graphs


@pytest.fixture
def aot_eager(monkeypatch):
    """torch.compile traces and runs the graphs through AOTAutograd without generating code:
    the tracing and its guards (what recompiles) are inductor's, in a fraction of the time."""
    options = widthc.capture.compile_options
    monkeypatch.setattr(
        widthc.capture,
        "compile_options",
        lambda d: {**options(d), "mode": None, "backend": "aot_eager"},
    )


def test_compiled_min_min_equals_eager_and_traces_once_per_shape():
    """Inductor on a CPU (generated C++): the probe graph (no gradients, batch 4) and the
    trained graph (batch 8) are compiled by the first step, and no new width after it
    compiles anything."""
    model, inputs = _model("residual")
    graphs = _compiled_equals_eager(model, inputs)
    assert graphs[0] == 2


@pytest.mark.parametrize("name", ["se_conv", "depthwise", "chunk_split"])
def test_compiled_min_min_traces_once_for_every_width(name, aot_eager):
    model, inputs = _model(name)
    assert _compiled_equals_eager(model, inputs)[0] == 2


def test_compiled_training_forward_with_stacked_probes(aot_eager):
    """`--probes batched`: the stacked probe runs eagerly under vmap, the trained forward
    compiled with the chosen candidate's masks (views of one row) as inputs."""
    model, inputs = _model("se_conv")
    assert _compiled_equals_eager(model, inputs, probes="batched")[0] == 1


@pytest.mark.parametrize("attention", ["conv1d", "fused_bias", "swin"])
def test_compiled_transformer_reads_attributes_by_name(attention, aot_eager):
    """Weights the graph reads as attributes (GPT-2's Conv1D weight, an attention bias, Swin's
    position bias table) are replaced by name too; eval mode, every width one graph."""
    model, inputs = tz.masked_model(attention)
    model = tz.without_norms(model)
    program = widthc.compile(model, inputs)
    program = program.rebin(program.beta, uniform=2)
    net = widthc.supernet(program, execution="masked").eval()
    compiled = widthc.supernet(program, execution="masked").capture_ready(compile=True).eval()
    for choice in _widths(program):
        net.set_choice(choice), compiled.set_choice(choice)
        with torch._dynamo.config.patch(error_on_recompile=choice != program.full()):
            out = compiled(*inputs)
        assert tensor_error(out, net(*inputs)) <= 1e-5


def test_train_supernet_with_compile(aot_eager, tmp_path):
    """The option end to end: `TrainConfig(compile=True)` trains through the compiled step,
    and the epoch's validation scores the capture-ready supernet (eagerly)."""
    model, inputs = _model("residual")
    program = widthc.compile(model, inputs)
    data = torch.utils.data.TensorDataset(*_batches(inputs, n=1, batch=32)[0])
    net = widthc.supernet(program, execution="masked")
    cfg = TrainConfig(epochs=1, batch_size=8, execution="masked", compile=True)
    start = counters["stats"]["unique_graphs"]
    result = train_supernet(net, data, data, config=cfg)  # validation: scoring, eager
    assert result.steps == 4 and counters["stats"]["unique_graphs"] > start
    assert len(result.validation) == 1 and 0 <= result.validation[0]["val_largest"] <= 1


def _square_loss(out, y):
    """The mean square of the outputs: at initialisation a 1000-class cross-entropy scores
    a width's candidates alike to ~1e-7, where rounding decides the argmin."""
    return out.square().mean()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "efficientnet_b0"])
def test_compiled_min_min_equals_eager_torchvision_float64(name):
    """In float64 (in fp32, batch norms over 16 values, 64x64 inputs and probes on 4 samples,
    amplify rounding to 1e-4 between compiled and eager, as between masked and sliced
    execution: tests/test_masked.py), without dropout and stochastic depth (inductor draws
    its own random numbers); the probe losses are read as fp32, hence 1e-6."""
    model, inputs = _model(name)
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout) or type(m).__name__ == "StochasticDepth":
            m.p = 0.0
    program = widthc.compile(model, inputs)
    model.double()
    inputs = tuple(x.double() for x in inputs)
    assert _compiled_equals_eager(program, inputs, tol=1e-6, loss=_square_loss)[0] == 2
