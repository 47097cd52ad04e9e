"""MobileNetV2 for CIFAR-10, the paper's setting (CafeNet table 3): 296.5M FLOPs, 2.24M params.

torchvision's `mobilenet_v2(num_classes=10)` with stride 1 in the stem and in the first blocks
of the 24- and 32-channel stages, so a 32x32 image keeps 32x32 until the 64-channel stage (the
usual CIFAR form; the paper reports 297M FLOPs / 2.2M parameters).

The paper's recipe (appendix A.2: SGD, momentum 0.9, cosine from 0.1, weight decay 5e-5, batch
256, 300 epochs; 3 search stages on CIFAR-10, appendix A.3), on a GPU machine, with CIFAR-10's
python files (cifar-10-batches-py) under /data/cifar10:

    widthc slim examples/cifar10_mobilenetv2.py --data cifar10:/data/cifar10 --flops 50% \
        --epochs 300 --retrain-epochs 300 --batch-size 256 --lr 0.1 --weight-decay 5e-5 \
        --stages 3 --alpha 2 --device cuda --out runs/cifar10_mobilenetv2
"""

from torch import nn


def model(num_classes: int = 10) -> nn.Module:
    from torchvision.models import mobilenet_v2

    net = mobilenet_v2(num_classes=num_classes)
    # stem, first block of the 24-channel stage, first block of the 32-channel stage
    for conv in (net.features[0][0], net.features[2].conv[1][0], net.features[4].conv[1][0]):
        conv.stride = (1, 1)
    return net


input_shape = (1, 3, 32, 32)
