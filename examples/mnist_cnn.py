"""A 2-D CNN for MNIST (`--data mnist`: the 5,000 bundled 28x28 images), about 2.8M FLOPs.

The ingredients of `mnist1d_cnn.py` in 2-D: two residual blocks that share one channel stream,
a depthwise stage whose depthwise convolutions tie their channels to the expansion before them,
and an SE gate on those channels. A quick run on a CPU:

    widthc slim examples/mnist_cnn.py --data mnist --flops 50% --epochs 10
"""

import torch
from torch import nn


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)
    )


class Residual(nn.Module):
    """x + conv(relu(conv(x))): the output channels are the input's (one group)."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.body = nn.Sequential(_conv_bn(channels, hidden), nn.ReLU(), _conv_bn(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class SqueezeExcite(nn.Module):
    """x * sigmoid(fc(relu(fc(spatial mean)))): the gate has x's channels."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.expand = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.expand(torch.relu(self.reduce(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(gate)


class InvertedResidual(nn.Module):
    """1x1 expand, depthwise 3x3, SE gate, 1x1 project, plus the input (MobileNetV2 + SE)."""

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


class MNISTNet(nn.Module):
    """(N, 1, 28, 28) -> c1 channels x 14x14 -> 2 residual blocks (hidden h1) -> c2 x 7x7 -> 2
    depthwise SE blocks (expanded e2) -> global mean -> 10 classes; widths = (c1, h1, c2, e2)."""

    def __init__(self, classes: int = 10, widths: tuple[int, int, int, int] = (16, 16, 32, 96)):
        super().__init__()
        c1, h1, c2, e2 = widths
        self.stem = nn.Sequential(_conv_bn(1, c1, 3, stride=2), nn.ReLU())
        self.stage1 = nn.Sequential(Residual(c1, h1), Residual(c1, h1))
        self.down = nn.Sequential(_conv_bn(c1, c2, 3, stride=2), nn.ReLU())
        self.stage2 = nn.Sequential(InvertedResidual(c2, e2), InvertedResidual(c2, e2))
        self.head = nn.Linear(c2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.head(x.mean((2, 3)))


def model(num_classes: int = 10, widths: tuple[int, int, int, int] = (16, 16, 32, 96)) -> nn.Module:
    return MNISTNet(num_classes, widths)


input_shape = (1, 1, 28, 28)
