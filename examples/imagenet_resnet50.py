"""ResNet-50 on ImageNet, the paper's setting (CafeNet table 1): 4.09G FLOPs, 25.6M parameters.

torchvision's `resnet50()` at 224x224. The paper's recipe (appendix A.2: SGD, momentum 0.9,
cosine from 0.1 to 1e-5, weight decay 1e-4, batch 256, 300 epochs), on a GPU machine, with
ImageNet unpacked as /data/imagenet/train/CLASS/*.JPEG and /data/imagenet/val/CLASS/*.JPEG
(`val/` is the reported test set; the search's validation split comes from `train/`):

    widthc slim examples/imagenet_resnet50.py --data imagefolder:/data/imagenet \
        --flops 3G,2G,1G --epochs 300 --retrain-epochs 300 --batch-size 256 --lr 0.1 \
        --weight-decay 1e-4 --device cuda --out runs/imagenet_resnet50
"""

from torch import nn


def model(num_classes: int = 1000) -> nn.Module:
    from torchvision.models import resnet50

    return resnet50(num_classes=num_classes)


input_shape = (1, 3, 224, 224)
