"""A 1-D CNN for MNIST-1D (`--data mnist1d`: 40-sample signals, 10 classes), 86K FLOPs.

Built so that coupling matters: two residual blocks share one channel stream (their outputs
and the stem's are one group), a depthwise stage ties the inputs and outputs of its depthwise
convolutions to the expansion before them, and an SE gate multiplies those channels by a
per-channel gate (the gate's channels join them). `widthc analyze examples/mnist1d_cnn.py`
shows the groups; a quick run on a CPU:

    widthc slim examples/mnist1d_cnn.py --data mnist1d --flops 50% --epochs 20

The widths (8, 8, 16, 32) are the benchmark's (bench/quality.py, BENCHMARKS.md "quality"): a
quarter of the first version's (32, 32, 64, 128), which was so far over capacity that the
uniform width at 25% FLOPs lost almost nothing. The rule, fixed before any search was run:
the widest of 1/2, 1/4, 3/16, 1/8 of those widths whose full model (plain training with the
benchmark's recipe) stays near the published CNN level (90%+ test) while the uniform width at
25% FLOPs loses at least 2 points of test accuracy to it.
"""

import torch
from torch import nn


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm1d(cout)
    )


class Residual(nn.Module):
    """x + conv(relu(conv(x))): the output channels are the input's (one group)."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.body = nn.Sequential(_conv_bn(channels, hidden), nn.ReLU(), _conv_bn(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class SqueezeExcite(nn.Module):
    """x * sigmoid(fc(relu(fc(mean over length)))): the gate has x's channels."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.reduce = nn.Conv1d(channels, squeeze, 1)
        self.expand = nn.Conv1d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.expand(torch.relu(self.reduce(x.mean(2, keepdim=True))))
        return x * torch.sigmoid(gate)


class InvertedResidual(nn.Module):
    """1x1 expand, depthwise 3, SE gate, 1x1 project, plus the input (MobileNetV2 + SE)."""

    def __init__(self, channels: int, expanded: int):
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn(channels, expanded, 1),
            nn.ReLU(),
            _conv_bn(expanded, expanded, 3, groups=expanded),
            nn.ReLU(),
            SqueezeExcite(expanded, expanded // 4),
            _conv_bn(expanded, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class MNIST1DNet(nn.Module):
    """(N, 1, 40) -> c1 channels x 40 -> 2 residual blocks (hidden h1) -> c2 x 20 -> 2
    depthwise SE blocks (expanded e2) -> global mean -> 10 classes; widths = (c1, h1, c2, e2)."""

    def __init__(self, classes: int = 10, widths: tuple[int, int, int, int] = (8, 8, 16, 32)):
        super().__init__()
        c1, h1, c2, e2 = widths
        self.stem = nn.Sequential(_conv_bn(1, c1, 5), nn.ReLU())
        self.stage1 = nn.Sequential(Residual(c1, h1), Residual(c1, h1))
        self.down = nn.Sequential(_conv_bn(c1, c2, 3, stride=2), nn.ReLU())
        self.stage2 = nn.Sequential(InvertedResidual(c2, e2), InvertedResidual(c2, e2))
        self.head = nn.Linear(c2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.head(x.mean(2))


def model(num_classes: int = 10, widths: tuple[int, int, int, int] = (8, 8, 16, 32)) -> nn.Module:
    return MNIST1DNet(num_classes, widths)


input_shape = (1, 1, 40)
