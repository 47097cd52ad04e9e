"""bench/pretrained_cross.py (issue 20): widthc's slice of a model sorted by Torch-Pruning's
magnitude importance, at Torch-Pruning's widths, is Torch-Pruning's pruned model (the cross
experiment's magnitude cell rests on it), and the table pairs every cell by seed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import widthc
from widthc.ir import WidthChoice
from widthc.verify import relative_error

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def test_the_magnitude_ordered_slice_is_torch_prunings_pruned_model():
    pytest.importorskip("torch_pruning")
    import pretrained_cross as cross

    from widthc.frontends.models import load_model

    src = load_model(str(ROOT / "examples" / "mnist1d_cnn.py"))
    model, example = src.model.eval(), tuple(src.example_inputs)
    torch.manual_seed(3)
    with torch.no_grad():  # batch-norm scales and statistics far from their defaults
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.weight.uniform_(0.1, 2.0)
                m.running_var.uniform_(0.5, 2.0)
                m.running_mean.normal_()
    program = widthc.compile(model, example)
    ordered = cross.magnitude_ordered(program, model)
    l2 = cross.one_channel_bins(widthc.order_channels(program, method="l2").program)
    kept, pruned = cross.pruned_widths(program, model, 0.5 * program.flops(), [])
    assert sum(kept[g.id] < g.block_size for g in program.searchable) >= 3  # pruned in several
    x = (torch.randn(16, 1, 40),)
    choice = WidthChoice.of(kept)
    assert relative_error(widthc.slim(ordered, choice)(*x), pruned(*x)) < 1e-5
    # widthc's own l2 order keeps other channels at the same widths: another model
    assert relative_error(widthc.slim(l2, choice)(*x), pruned(*x)) > 1e-2
    assert ordered.flops(choice) == widthc.compile(pruned, example).flops()


def test_cross_table_pairs_each_cell_with_each_reference_by_seed():
    import pretrained_cross as cross

    def row(seed, widths, order, val):
        return {"seed": seed, "budget": "50%", "widths": widths, "order": order, "val": val}

    rows = [
        row(0, "magnitude", "magnitude", 0.90),
        row(1, "magnitude", "magnitude", 0.80),
        row(0, "magnitude", "torch-pruning", 0.95),
        row(0, "widthc", "l2", 0.93),
        row(1, "widthc", "l2", 0.84),
        row(2, "widthc", "l2", 0.10),
    ]  # fmt: skip  (seed 2 has no reference: not paired)
    stored = {("magnitude", "stored"): {0: {"50%": {"val": 0.91}}}}
    text = cross.table(rows, "val", stored)
    cells = {tuple(c.strip() for c in line.split("|")[2:4]): [c.strip() for c in line.split("|")[4:-1]]
             for line in text.splitlines()[2:]}  # fmt: skip
    # seeds, mean ± std, then Δ vs the magnitude slice, Torch-Pruning magnitude, Taylor
    assert cells[("magnitude", "magnitude")] == ["2", "85.00 ± 7.07", "-", "-5.00 ± 0.00", "-"]
    assert cells[("magnitude", "torch-pruning")] == ["1", "95.00 ± 0.00", "5.00 ± 0.00", "-", "-"]
    assert cells[("widthc", "l2")][:1] == ["3"]
    assert cells[("widthc", "l2")][2:4] == ["3.50 ± 0.71", "-2.00 ± 0.00"]  # +3, +4; -2
    assert cells[("magnitude", "stored")][:3] == ["1", "91.00 ± 0.00", "1.00 ± 0.00"]
    assert ("taylor", "torch-pruning") not in cells  # not measured: no row
