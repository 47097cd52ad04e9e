"""A MobileNetV2-style network for 8x8 grey-scale digits (scikit-learn's `load_digits`).

Used by `make demo`. Inverted residual blocks (1x1 expand, 3x3 depthwise, 1x1 project) give
widthc the couplings it is built for: residual streams shared by several blocks, and depthwise
convs that tie their input and output channels.
"""

import torch
from torch import nn


def _conv(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(),
    ]


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.residual = stride == 1 and cin == cout
        self.body = nn.Sequential(
            *_conv(cin, hidden),
            *_conv(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetDigits(nn.Module):
    """8x8 input -> 16 stem channels -> 4 stages of inverted residuals -> 10 classes."""

    # (expansion, channels, blocks, stride) per stage, as in MobileNetV2's table 2
    STAGES = ((1, 16, 1, 1), (4, 24, 2, 1), (4, 32, 2, 2), (4, 64, 2, 2))

    def __init__(self, classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = [*_conv(1, 16, 3)]
        cin = 16
        for expand, cout, blocks, stride in self.STAGES:
            for i in range(blocks):
                layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
                cin = cout
        layers += _conv(cin, 128)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.1), nn.Linear(128, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def model(num_classes: int = 10) -> nn.Module:
    return MobileNetDigits(num_classes)


input_shape = (1, 1, 8, 8)
