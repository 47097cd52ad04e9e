"""Importance-ordered channels (passes/order.py, widthc.order_channels; issue 20): every model of
the supernet tests' zoo computes the same outputs and FLOPs with its channels sorted, each
searchable group ends up sorted by the importance it was ordered by, the narrow widths keep
the most important channels, the model given is untouched, and groups no permutation may
touch are left alone with the reason."""

from __future__ import annotations

import pytest
import torch
import transformer_zoo as tz
import zoo
from torch import nn

import widthc
from widthc.config import RunConfig, default
from widthc.errors import WidthcError
from widthc.passes import order
from widthc.verify import relative_error

SMALL = list(zoo.SMALL)


def _batches(inputs, classes: int = 10, n: int = 2):
    g = torch.Generator().manual_seed(1)
    return [
        (
            tuple(torch.randn(x.shape, generator=g) for x in inputs),
            torch.randint(0, classes, (x.shape[0],), generator=g),
        )
        for x in inputs[:1]
        for _ in range(n)
    ]


def _check_ordering(program, inputs, method: str, data=None):
    before = {k: v.clone() for k, v in program.gm.state_dict().items()}
    with torch.no_grad():
        reference = program.gm(*inputs)
    ordering = widthc.order_channels(program, data, method)
    ordered = ordering.program
    # the proof holds: same outputs (float32, fresh inputs too) and the same FLOPs, counted afresh
    assert ordering.error <= 1e-6
    with torch.no_grad():
        assert relative_error(ordered.gm(*inputs), reference) <= 1e-5
    assert widthc.compile(ordered.gm, inputs).flops() == program.flops()
    assert ordered.groups == program.groups and ordered.flops() == program.flops()
    # the model given is untouched, and the ordered one shares no tensor with it
    after = program.gm.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    ids = {id(p) for p in program.gm.parameters()}
    assert not ids & {id(p) for p in ordered.gm.parameters()}
    # every group ordered is sorted now: its importance, measured again, never increases
    kept = [g for g in ordered.groups if g.id in ordering.orders]
    if method != "taylor":  # the Taylor scores of permuted channels move with their gradients
        scores, _ = order.importance(ordered, kept, method)
        for g in kept:
            s = scores[g.id]
            assert torch.all(s[:-1] >= s[1:] - 1e-9 * s.abs().max()), (g.name, s)
    # every searchable group is ordered or left alone with a reason; frozen ones are left alone
    for g in program.groups:
        assert (g.id in ordering.orders) != (g.id in ordering.left_alone), g
        if g.frozen:
            assert str(ordering.left_alone[g.id]).startswith("frozen: ")
    return ordering


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize("method", ["l1", "bn"])
def test_small_zoo_ordered_and_proved(name, method):
    model, inputs = zoo.small_model(name)
    program = widthc.compile(model, inputs)
    ordering = _check_ordering(program, inputs, method)
    if program.searchable:
        assert ordering.moved > 0  # random weights are not sorted already: something moved


@pytest.mark.parametrize("name", ["residual", "se_conv", "concat"])
def test_taylor_reads_the_batches(name):
    model, inputs = zoo.small_model(name)
    program = widthc.compile(model, inputs)
    ordering = _check_ordering(program, inputs, "taylor", _batches(inputs))
    assert set(ordering.scored.values()) == {"taylor"} and ordering.moved > 0
    with pytest.raises(WidthcError, match="taylor importance needs data"):
        widthc.order_channels(program, None, "taylor")


@pytest.mark.slow
@pytest.mark.parametrize("name", zoo.TORCHVISION)
def test_torchvision_zoo_ordered_and_proved(name):
    model, inputs = zoo.torchvision_model(name)
    program = widthc.compile(model, inputs)
    ordering = _check_ordering(program, inputs, "l1")
    assert ordering.moved > 0 and not any(
        "changed the outputs" in str(r) for r in ordering.left_alone.values()
    )


@pytest.mark.parametrize("attention", ["fused_bias", "gqa_sdpa", "conv1d", "mha"])
def test_attention_heads_ordered_whole_and_proved(attention):
    """Issue 19's heads groups count heads: a permutation moves whole heads (q, k and v rows,
    the output projection's columns, a per-head mask, a key/value head with its query heads)."""
    dim = 32 if attention in tz.SAME_WIDTH else 16
    model, inputs = tz.model(tz.Config(attention=attention, dim=dim))
    program = widthc.compile(model, inputs)
    ordering = _check_ordering(program, inputs, "l1")
    assert any(g.unit > 1 and g.id in ordering.orders for g in program.searchable)


def test_narrow_widths_keep_the_most_important_channels():
    model, inputs = zoo.small_model("chain")
    program = widthc.compile(model, inputs)
    ordering = widthc.order_channels(program, None, "l1")
    choice = ordering.program.uniform(ratio=0.5)
    small = widthc.slim(ordering.program, choice)
    g = program.groups[0]  # features.0.0's output channels, read by features.1.0
    (gid, _), *_ = choice.widths
    assert gid == g.id
    kept = choice.channels(g)
    norms = model.features[0][0].weight.detach().abs().sum((1, 2, 3))
    top = torch.sort(norms, descending=True, stable=True).indices[:kept]
    assert torch.equal(small.get_submodule("features.0.0").weight, model.features[0][0].weight[top])
    # the supernet of the ordered program is the ordered model at full width
    net = widthc.supernet(ordering.program).eval()
    with torch.no_grad():
        assert relative_error(net(*inputs), model(*inputs)) <= 1e-5


def test_bn_falls_back_to_l1_without_a_norm():
    model, inputs = zoo.small_model("se_linear")
    program = widthc.compile(model, inputs)
    ordering = widthc.order_channels(program, None, "bn")
    assert "l1" in ordering.scored.values() and "bn" in ordering.scored.values()


class _Argmax(nn.Module):
    """An op reads one group's channels by position: argmax over them."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3), nn.Linear(8, 4)

    def forward(self, x):
        y = self.b(torch.relu(self.a(x)))
        return self.fc((y * y.argmax(1, keepdim=True).float()).mean((2, 3)))


def test_a_group_read_by_position_is_left_alone():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    program = widthc.compile(_Argmax().eval(), x)
    b = next(g for g in program.groups if g.name == "b")
    assert b.ordered == ("argmax",) and b.searchable  # searchable: slimming is still exact
    ordering = _check_ordering(program, (x,), "l1")
    assert str(ordering.left_alone[b.id]) == "an op reads its channels by position at node `argmax`"
    assert ordering.moved == 1  # group a


def test_a_permutation_that_changes_the_outputs_is_put_back(monkeypatch):
    """Were the coupling pass to miss an op that reads channels by position (or the output's),
    the proof finds the group at fault and leaves it alone with the measured error."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    program = widthc.compile(_Argmax().eval(), x)
    monkeypatch.setattr(order, "left_alone", lambda program: {})
    ordering = widthc.order_channels(program, None, "l1")
    alone = {program.groups[g].name: str(r) for g, r in ordering.left_alone.items()}
    assert set(alone) == {"b", "fc"}  # argmax reads b's channels; fc's are the outputs
    assert all(
        r.startswith("permuting it changed the outputs (relative error") for r in alone.values()
    )
    assert ordering.error <= 1e-6 and list(ordering.orders) == [program.groups[0].id]


def test_unknown_method_and_bad_order_are_clear_errors():
    model, inputs = zoo.small_model("chain")
    program = widthc.compile(model, inputs)
    with pytest.raises(WidthcError, match="unknown channel importance 'l3'"):
        widthc.order_channels(program, None, "l3")
    with pytest.raises(WidthcError, match="not a permutation"):
        order.permuted(program, {0: torch.zeros(program.groups[0].n, dtype=torch.long)})


def test_ordering_to_json_names_every_group():
    model, inputs = zoo.small_model("residual")
    program = widthc.compile(model, inputs)
    data = widthc.order_channels(program).to_json()  # the default: widthc slim --pretrained's
    assert data["method"] == default(RunConfig, "order_by") == "l2"
    assert data["flops"]["before"] == data["flops"]["after"]
    orders = {int(g): v["order"] for g, v in data["groups"].items()}
    assert all(sorted(o) == list(range(program.groups[g].block_size)) for g, o in orders.items())
    assert set(orders) | {int(g) for g in data["left_alone"]} == {g.id for g in program.groups}
