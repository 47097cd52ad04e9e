"""VGG-19 with batch norm for CIFAR-10, the paper's setting (CafeNet table 3): 398.1M FLOPs,
20.0M parameters (the paper's 399M / 20M).

The CIFAR form: sixteen 3x3 convolutions with batch norm and ReLU, five max-pools (32x32 -> 1x1)
and one Linear 512 -> 10 in place of ImageNet's three-layer classifier.

The paper's recipe (appendix A.2: SGD, momentum 0.9, weight decay 1e-4, batch 128, 400 epochs
from lr 0.1, divided by 10 at epochs 150, 225 and 300; widthc's schedule is a cosine), on a GPU
machine, with CIFAR-10's python files (cifar-10-batches-py) under /data/cifar10:

    widthc slim examples/cifar10_vgg19.py --data cifar10:/data/cifar10 --flops 50% \
        --epochs 400 --retrain-epochs 400 --batch-size 128 --lr 0.1 --weight-decay 1e-4 \
        --stages 3 --alpha 2 --device cuda --out runs/cifar10_vgg19
"""

import torch
from torch import nn

# channels per conv, "M" a 2x2 max-pool: VGG's configuration E (19 weight layers)
CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M")
CONFIG += (512, 512, 512, 512, "M")


class VGG(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for item in CONFIG:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            layers += [nn.Conv2d(cin, item, 3, padding=1), nn.BatchNorm2d(item), nn.ReLU()]
            cin = item
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def model(num_classes: int = 10) -> nn.Module:
    return VGG(num_classes)


input_shape = (1, 3, 32, 32)
