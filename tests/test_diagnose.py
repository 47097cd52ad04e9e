"""No silent zero (issue 8): a model with (nearly) nothing searchable says which leaves or ops
froze its channels, in `widthc.diagnose.freeze_summary` and under `widthc analyze`'s table."""

from __future__ import annotations

import io

import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

import widthc
from widthc.diagnose import footer, freeze_summary
from widthc.report.analysis import print_analysis


class Opaque(nn.Module):
    """A block the user marks as a leaf: its two convs are hidden from the analysis."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(16, 32, 3, padding=1)
        self.b = nn.Conv2d(32, 16, 3, padding=1)

    def forward(self, x):
        return self.b(F.relu(self.a(x)))


class Checked(nn.Module):
    """Data-dependent control flow: an automatic leaf."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(16, 24, 1)

    def forward(self, x):
        return self.conv(x) if x.mean() > 0 else self.conv(-x)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.block = Opaque()
        self.check = Checked()
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        return self.fc(self.check(self.block(F.relu(self.stem(x)))).mean((2, 3)))


def test_freeze_summary_names_leaves_and_counts_their_channels():
    program = widthc.compile(Net().eval(), torch.randn(1, 3, 8, 8), leaves=(Opaque,))
    assert not program.searchable
    causes = dict(freeze_summary(program))
    assert causes["inside leaf `Opaque` (a leaf you asked for)"] == 32 + 16
    (checked,) = [c for c in causes if c.startswith("inside leaf `Checked`")]
    assert "control flow" in checked and causes[checked] == 24
    assert causes["touches unknown op `Opaque`"] == 16  # the stem's channels meet the leaf
    assert causes["output of the network"] == 10
    assert list(causes.values()) == sorted(causes.values(), reverse=True)


def test_analyze_footer_explains_a_model_with_nothing_searchable():
    program = widthc.compile(Net().eval(), torch.randn(1, 3, 8, 8), leaves=(Opaque,))
    line = footer(program, program.to_json()["searchable_channel_fraction"])
    assert line.startswith("frozen conv/linear channels by cause: inside leaf `Opaque`")
    out = io.StringIO()
    print_analysis(program, "net", Console(file=out, width=200))
    assert " ".join(line.split()) in " ".join(out.getvalue().split())  # rich wraps lines


def test_no_footer_when_most_channels_are_searchable():
    model = nn.Sequential(nn.Conv2d(3, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.Flatten(1))
    program = widthc.compile(model.eval(), torch.randn(1, 3, 8, 8))
    fraction = program.to_json()["searchable_channel_fraction"]
    assert fraction >= 0.5 and footer(program, fraction) is None
    out = io.StringIO()
    print_analysis(program, "seq", Console(file=out, width=200))
    assert "by cause" not in out.getvalue()
