"""MobileNetV2 on ImageNet, the paper's setting (CafeNet table 1): 301M FLOPs, 3.50M parameters.

torchvision's `mobilenet_v2()` at 224x224. The paper's recipe (appendix A.2: SGD, momentum
0.9, cosine from 0.1 to 1e-5, weight decay 5e-5, batch 256, 300 epochs), on a GPU machine, with
ImageNet unpacked as /data/imagenet/train/CLASS/*.JPEG and /data/imagenet/val/CLASS/*.JPEG
(`val/` is the reported test set; the search's validation split comes from `train/`):

    widthc slim examples/imagenet_mobilenetv2.py --data imagefolder:/data/imagenet \
        --flops 200M,150M,100M --epochs 300 --retrain-epochs 300 --batch-size 256 --lr 0.1 \
        --weight-decay 5e-5 --device cuda --out runs/imagenet_mobilenetv2
"""

from torch import nn


def model(num_classes: int = 1000) -> nn.Module:
    from torchvision.models import mobilenet_v2

    return mobilenet_v2(num_classes=num_classes)


input_shape = (1, 3, 224, 224)
