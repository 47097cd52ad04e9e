"""Min-min's candidates probed in one forward and chosen on the device (widthc/stacked.py): the
same chosen candidates, probe and trained losses, gradients and batch-norm running statistics
as one forward per candidate with the host choosing (fp32, relative error <= 1e-5)."""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import transformer_zoo as tz
import zoo
from torch import nn
from torch.utils._pytree import tree_leaves
from torch.utils.data import TensorDataset

import widthc
from widthc.export import tensor_error
from widthc.loop import to_host
from widthc.precision import Precision
from widthc.stacked import Stacked
from widthc.train import MinMinStep, TrainConfig, cross_entropy, train_supernet

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import step_counts  # noqa: E402

MIXING = {"layernorm_mlp", "convnext_tiny"}  # masked execution refused: nothing to stack
SLOW = {"vgg11_bn", "resnet50", "densenet121", "regnet_x_400mf"}  # 8-56 s each on one thread
ZOO = [
    pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
    for n in (*zoo.SMALL, *zoo.TORCHVISION)
    if n not in MIXING
]


class _Loop:
    step, total_steps = 10, 100

    def __init__(self, opt):
        self.opt, self.precision = opt, Precision()


def _model(name: str):
    return zoo.small_model(name) if name in zoo.SMALL else zoo.torchvision_model(name)


def _square_loss(out, y):
    """Any model's outputs (tuples, auxiliary heads): the mean square of every float output."""
    return sum(o.float().square().mean() for o in tree_leaves(out) if o.is_floating_point())


def _run(program, probes: str, batches, loss_fn, **cfg) -> list:
    """Records, gradients after each step and the state after all steps, min-min with offset 1
    under masked execution (SGD with momentum between steps); dropout draws from one seed."""
    torch.manual_seed(0)
    device = batches[0][0].device
    net = widthc.supernet(program, offset=1, execution="masked").to(device).train()
    step = MinMinStep(net, net, TrainConfig(probes=probes, **cfg), loss_fn)
    step.sampler.manual_seed(0)
    step.trainer = _Loop(torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9))
    out = []
    for x, y in batches:
        record = to_host([step(x, y)])[0]
        step.settle(record)
        grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
        out.append((record, grads))
        step.trainer.opt.step()
        step.trainer.opt.zero_grad(set_to_none=True)
    return out, copy.deepcopy(program.gm.state_dict()), list(step.histogram)


def _compare(program, batches, loss_fn, **cfg) -> list:
    before = copy.deepcopy(program.gm.state_dict())
    each = _run(program, "each", batches, loss_fn, **cfg)
    program.gm.load_state_dict(before)
    batched = _run(program, "batched", batches, loss_fn, **cfg)
    (rec_e, state_e, hist_e), (rec_b, state_b, hist_b) = each, batched
    for (r_e, g_e), (r_b, g_b) in zip(rec_e, rec_b):
        assert r_b["candidate"] == r_e["candidate"] and r_b["flops"] == r_e["flops"]
        assert r_b["candidate_losses"] == pytest.approx(r_e["candidate_losses"], rel=1e-5)
        assert r_b["loss"] == pytest.approx(r_e["loss"], rel=1e-5)
        assert set(g_b) == set(g_e)
        for n in g_e:
            assert tensor_error(g_b[n], g_e[n]) <= 1e-5, n
    for key, value in state_e.items():  # weights after the updates, running statistics
        if value.is_floating_point():
            assert tensor_error(state_b[key], value) <= 1e-5, key
        else:
            assert torch.equal(state_b[key], value), key  # num_batches_tracked
    assert hist_b == hist_e
    return [r for r, _ in rec_e]


@pytest.mark.parametrize("name", ZOO)
def test_batched_probes_choose_and_train_as_each(name):
    model, inputs = _model(name)
    if len(inputs) != 1:
        pytest.skip("min-min feeds one input tensor")
    program = widthc.compile(model, inputs)
    if not program.searchable:
        pytest.skip("nothing searchable")
    gen = torch.Generator().manual_seed(0)
    shape = (4, *inputs[0].shape[1:])
    batches = [(torch.randn(shape, generator=gen), torch.zeros(4, dtype=torch.long))] * 2
    records = _compare(program, batches, _square_loss)
    assert any(r["candidates"] > 1 for r in records)  # candidates were probed


@pytest.mark.parametrize("attention", [*tz.MASKABLE, "swin", "torchvision_swin"])
def test_batched_probes_of_transformers_with_heads_searched(attention):
    """Attention under vmap (scaled_dot_product_attention, GQA, windows, a position bias
    table): the stacked probes choose and train as one forward each."""
    model, inputs = tz.masked_model(attention)
    program = widthc.compile(tz.without_norms(model), inputs)
    program = program.rebin(program.beta, uniform=2)  # a tiny model's bins: often one per group
    batches = [(inputs[0], torch.zeros(len(inputs[0]), dtype=torch.long))] * 2
    records = _compare(program, batches, _square_loss)
    assert any(r["candidates"] > 1 for r in records)


def test_batched_probes_with_sandwich_decay_and_distillation():
    model, inputs = zoo.small_model("residual")
    program = widthc.compile(model, inputs)
    gen = torch.Generator().manual_seed(1)
    batches = [
        (torch.randn(8, 3, 16, 16, generator=gen), torch.randint(0, 10, (8,), generator=gen))
        for _ in range(6)
    ]
    cfg = {"sandwich": True, "distill": True, "decay_used": True, "weight_decay": 1e-3}
    records = _compare(program, batches, cross_entropy(), select_batch_fraction=0.5, **cfg)
    assert len({r["candidate"] for r in records}) > 1  # not always the first candidate


class _Canary(nn.Module):
    """One searchable group straight into a batch norm: a candidate's batch statistics at a
    channel it keeps would include another candidate's zeros there if the batch mixed them."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(F.relu(self.bn(self.conv(x))).mean((2, 3)))


def test_candidates_keep_their_own_batch_statistics():
    """The stacked probe equals each candidate alone, while a probe whose batch norm pooled
    the candidates' samples (computed here by hand) differs by far more than the tolerance:
    the equality would catch batching that mixes candidates."""
    torch.manual_seed(0)
    model = _Canary()
    program = widthc.compile(model, torch.randn(2, 3, 8, 8)).rebin(0.25, uniform=4)
    net = widthc.supernet(program, offset=1, execution="masked").train()
    width = next(w for s in range(50) if len(net.candidates(w := program.random(s))) == 3)
    cands = net.candidates(width)
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 10, (6,))
    before = copy.deepcopy(program.gm.state_dict())
    stacked = Stacked.of(net, cands, x.device).losses(x, y, cross_entropy())
    alone = []
    with torch.no_grad(), net.probing():
        for c in cands:
            net.set_choice(c)
            alone.append(float(F.cross_entropy(net(x), y)))
    assert stacked.tolist() == pytest.approx(alone, rel=1e-5)
    assert all(torch.equal(v, program.gm.state_dict()[k]) for k, v in before.items())
    keeps = [net.applied(c, x.device).swaps for c in cands]
    masks = [next(s for s in sw if s.owner is model.conv and s.attr == "weight") for sw in keeps]
    h = torch.stack([  # every candidate's conv output, removed channels zero
        F.conv2d(x, model.conv.weight * m.scale[0], model.conv.bias * m.scale[0].flatten(), 1, 1)
        for m in masks
    ])  # fmt: skip
    k, n = h.shape[:2]
    pooled = F.batch_norm(h.flatten(0, 1), None, None, model.bn.weight, model.bn.bias, True)
    keep = torch.stack([m.scale[0].view(1, -1, 1, 1) for m in masks])
    mixed = [
        float(F.cross_entropy(model.fc(F.relu(z * keep[i]).mean((2, 3))), y))
        for i, z in enumerate(pooled.view(k, n, *h.shape[2:]))
    ]
    assert max(abs(a - b) / abs(b) for a, b in zip(mixed, alone)) > 1e-3


def test_a_non_finite_probe_read_late_stops_as_the_host_choice_would():
    model, inputs = zoo.small_model("residual")
    program = widthc.compile(model, inputs)
    net = widthc.supernet(program, execution="masked").train()
    step = MinMinStep(net, net, TrainConfig(), cross_entropy())
    cands = net.candidates(program.random(0))
    record = {"loss": 1.0, "candidate": 2.0, "candidate_losses": [0.5, math.inf, math.nan],
              "chosen_from": cands, "trained_widths": ["candidate"], "trained_losses": [1.0]}  # fmt: skip
    step.histogram = [0, 0, 0]
    step.settle(record)
    assert record["loss"] == math.inf and record["candidate"] == 1
    assert step.histogram == [0, 0, 0] and "trained_widths" not in record
    record = {"loss": 1.0, "candidate": 2.0, "candidate_losses": [0.5, 0.7, 0.2],
              "chosen_from": cands}  # fmt: skip
    step.settle(record)
    assert record["candidate"] == 2 and step.histogram == [0, 0, 1]
    assert record["flops"] == program.flops(cands[2])


def test_batched_probes_need_masked_execution():
    model, inputs = zoo.small_model("residual")
    program = widthc.compile(model, inputs)
    net = widthc.supernet(program, execution="sliced")
    with pytest.raises(widthc.WidthcError, match="--probes batched needs masked execution"):
        MinMinStep(net, net, TrainConfig(probes="batched"), cross_entropy())
    assert not MinMinStep(net, net, TrainConfig(), cross_entropy()).batched  # auto: sliced
    masked = widthc.supernet(program, execution="masked")
    assert not MinMinStep(masked, masked, TrainConfig(), cross_entropy()).batched  # auto on CPU
    assert MinMinStep(masked, masked, TrainConfig(probes="batched"), cross_entropy()).batched


def test_a_batched_step_reads_nothing_back_to_the_host():
    """Counted on the CPU (bench/step_counts.py): one forward per candidate and the host's choice
    read the probe losses once per step; stacked and chosen on the device, nothing, and the
    supernet runs two forwards (probes, trained) instead of four."""
    torch.manual_seed(0)
    model, inputs = zoo.small_model("residual")
    program = widthc.compile(model, inputs)
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 3, 16, 16, generator=gen), torch.randint(0, 10, (8,), generator=gen))
               for _ in range(3)]  # fmt: skip
    each = step_counts.counts(program, batches, "each", 1, 0.5)
    batched = step_counts.counts(program, batches, "batched", 1, 0.5)
    assert each["host reads"] == 1  # the counter sees the read that the host's choice makes
    assert [w.split(":")[0] for w in each["read at"]] == ["tolist at train.py"]
    assert batched["host reads"] == 0 and batched["forwards"] == 2 and each["forwards"] == 4
    assert batched["operators"] < each["operators"]


def test_training_runs_read_late_equal_each(tmp_path):
    """Through the training loop (records read every 3 steps, a checkpoint, settled late):
    the same losses, candidates, histogram and weights as one forward per candidate."""
    model, inputs = zoo.small_model("residual")
    program = widthc.compile(model, inputs)
    before = copy.deepcopy(program.gm.state_dict())
    gen = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(48, 3, 16, 16, generator=gen), torch.randint(0, 10, (48,)))
    results = {}
    for probes in ("each", "batched"):
        program.gm.load_state_dict(before)
        net = widthc.supernet(program, execution="masked")
        cfg = TrainConfig(batch_size=8, log_every=3, checkpoint_every=4, probes=probes)
        result = train_supernet(net, data, config=cfg, run_dir=tmp_path / probes)
        results[probes] = result, copy.deepcopy(program.gm.state_dict())
    (each, state_e), (batched, state_b) = results["each"], results["batched"]
    assert batched.candidates == each.candidates and batched.histogram == each.histogram
    assert len(set(each.candidates)) > 1 and sum(each.histogram) == 6
    assert batched.losses == pytest.approx(each.losses, rel=1e-5)
    assert all(
        tensor_error(state_b[k], v) <= 1e-5 for k, v in state_e.items() if v.is_floating_point()
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batched_probes_on_cuda_choose_and_train_as_each():
    """On the GPU (bench/gpu_check.sh runs it), where `auto` batches: dropout drawn on the
    device, cuDNN's grouped convolutions (TF32 off: fp32 arithmetic on both sides)."""
    model, inputs = zoo.torchvision_model("mobilenet_v3_small")
    program = widthc.compile(model, inputs)
    gen = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(8, 3, 64, 64, generator=gen).cuda(), torch.randint(0, 10, (8,)).cuda())
        for _ in range(3)
    ]
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        records = _compare(program, batches, cross_entropy())
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    assert any(r["candidates"] > 1 for r in records)
    net = widthc.supernet(program).cuda()
    assert MinMinStep(net, net, TrainConfig(), cross_entropy()).batched  # auto on CUDA


def test_a_stacked_probe_vmap_cannot_run_falls_back_to_one_forward_each():
    """bf16 autocast on a CPU: vmap's batch norm refuses bf16 inputs with fp32 running
    statistics; the step says why, probes each candidate alone from then on, and trains."""
    model, inputs = zoo.small_model("residual")
    program = widthc.compile(model, inputs)
    net = widthc.supernet(program, execution="masked").train()
    step = MinMinStep(net, net, TrainConfig(probes="batched"), cross_entropy())
    step.sampler.manual_seed(0)
    step.trainer = _Loop(torch.optim.SGD(net.parameters(), lr=0.01))
    step.trainer.precision = Precision("bf16", False, torch.device("cpu"))
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    with pytest.warns(UserWarning, match="probes each candidate in its own forward"):
        records = [step(x, y) for _ in range(3)]
    assert not step.batched and "BFloat16" in step.unbatched
    assert all(isinstance(r["candidate"], int) for r in records)  # the host's choice
    assert any(len(r["candidate_losses"]) > 1 for r in records)
