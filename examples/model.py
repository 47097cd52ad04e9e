"""A minimal model file for `widthc analyze examples/model.py`.

The contract: `model()` returns the nn.Module (it may take `num_classes`); `input_shape` (batch
first) or `example_input()` (a tensor or a tuple of tensors) gives the example inputs the model
is traced on.
"""

import torch
from torch import nn


def _cbr(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
    )


class SmallResNet(nn.Module):
    """A stem, two residual blocks and a classifier: three channel groups to search."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = _cbr(3, 32)
        self.block1 = nn.Sequential(_cbr(32, 64), nn.Conv2d(64, 32, 3, 1, 1), nn.BatchNorm2d(32))
        self.block2 = nn.Sequential(_cbr(32, 64), nn.Conv2d(64, 32, 3, 1, 1), nn.BatchNorm2d(32))
        self.down = _cbr(32, 64, stride=2)
        self.head = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.block1(x))
        x = torch.relu(x + self.block2(x))
        x = self.down(x)
        return self.head(x.mean((2, 3)))


def model(num_classes: int = 10) -> nn.Module:
    return SmallResNet(num_classes)


input_shape = (1, 3, 32, 32)
