"""torchvision's ResNet-18, VGG-16-BN and MobileNetV2 at CIFAR resolution: bring-your-own-network baselines.

Built from torchvision's own modules (its BasicBlocks, VGG feature stack and InvertedResiduals, with their
parameter names) with the usual 32x32 adaptations: a stride-1 3x3 stem without max-pool for ResNet-18, global
pooling and one linear layer for VGG-16-BN, and stride 1 in the stem and first stride-2 block of MobileNetV2.
Registered, so every leanvision command (train, profile, export, compress) takes them.
"""

from __future__ import annotations

import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from leanvision.models._base import Classifier, make_classifier
from leanvision.models._registry import CIFAR10_MEAN, CIFAR10_STD, register_model
from leanvision.ops.fuse import fold_conv_bn, foldable

_CIFAR = {
    "input_size": (3, 32, 32),
    "mean": CIFAR10_MEAN,
    "std": CIFAR10_STD,
    "num_classes": 10,
    "family": "torchvision",
}


class TvResNetCifar(Classifier):
    """torchvision ResNet-18 layers behind a 3x3 stride-1 stem with no max-pool (the CIFAR stem)."""

    def __init__(self, *, num_classes: int, in_chans: int) -> None:
        super().__init__()
        tv = torchvision.models.resnet18()
        self.conv1 = nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.bn1, self.relu = tv.bn1, tv.relu
        self.layer1, self.layer2, self.layer3, self.layer4 = tv.layer1, tv.layer2, tv.layer3, tv.layer4
        self.num_classes, self.head_chs = num_classes, 512
        self.classifier = make_classifier(512, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        x = self.relu(x if self.bn1 is None else self.bn1(x))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def fold_bn(self) -> TvResNetCifar:
        """Fold the stem's BatchNorm (``fuse_bn`` folds the blocks); returns self."""
        if foldable(self.conv1, self.bn1):
            self.conv1, self.bn1 = fold_conv_bn(self.conv1, self.bn1), None
        return self


class TvVGGCifar(Classifier):
    """torchvision VGG-16-BN's feature stack, then global average pooling and one linear layer."""

    def __init__(self, *, num_classes: int, in_chans: int) -> None:
        super().__init__()
        self.features = torchvision.models.vgg16_bn().features
        if in_chans != 3:
            self.features[0] = nn.Conv2d(in_chans, 64, 3, padding=1)
        # 32x32 inputs leave a 1x1 map: torchvision's 7x7 pool and 3-layer head (120M weights) would only copy it.
        self.num_classes, self.head_chs = num_classes, 512
        self.classifier = make_classifier(512, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)


class TvMobileNetV2Cifar(Classifier):
    """torchvision MobileNetV2 features with stride 1 in the stem and the first stride-2 block (4x4 final map)."""

    def __init__(self, *, num_classes: int, in_chans: int, drop_rate: float = 0.2) -> None:
        super().__init__()
        self.features = torchvision.models.mobilenet_v2().features
        stem = self.features[0][0]
        self.features[0][0] = nn.Conv2d(in_chans, stem.out_channels, 3, 1, 1, bias=False)
        nn.init.kaiming_normal_(self.features[0][0].weight, mode="fan_out")
        self.features[2].conv[1][0].stride = (1, 1)  # the depthwise conv of the first stride-2 inverted residual
        self.drop_rate = drop_rate
        self.num_classes, self.head_chs = num_classes, 1280
        self.classifier = make_classifier(1280, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)

    def forward_head(self, x: Tensor, *, pre_logits: bool = False) -> Tensor:
        x = F.dropout(x.mean((2, 3)), self.drop_rate, self.training)  # torchvision's classifier dropout
        return x if pre_logits else self.classifier(x)


@register_model(**_CIFAR, paper="1512.03385", notes="torchvision resnet18 layers; stem 3x3 stride 1, no max-pool")
def tv_resnet18_cifar(*, num_classes: int = 10, in_chans: int = 3) -> TvResNetCifar:
    """torchvision ResNet-18 with the CIFAR stem (3x3 conv, stride 1, no max-pool)."""
    return TvResNetCifar(num_classes=num_classes, in_chans=in_chans)


@register_model(**_CIFAR, paper="1409.1556", notes="torchvision vgg16_bn features; global average pool + linear")
def tv_vgg16_bn_cifar(*, num_classes: int = 10, in_chans: int = 3) -> TvVGGCifar:
    """torchvision VGG-16-BN features with global pooling and a single linear classifier (the CIFAR head)."""
    return TvVGGCifar(num_classes=num_classes, in_chans=in_chans)


@register_model(
    **_CIFAR, paper="1801.04381", notes="torchvision mobilenet_v2 blocks; stride 1 in the stem and first stride-2 block"
)
def tv_mobilenet_v2_cifar(*, num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.2) -> TvMobileNetV2Cifar:
    """torchvision MobileNetV2 with stride 1 in the stem and in the first stride-2 block (4x4 final map)."""
    return TvMobileNetV2Cifar(num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate)
