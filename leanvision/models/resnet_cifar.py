"""CIFAR ResNet-20/32/56 (arXiv 1512.03385) and their Ghost versions (arXiv 1911.11907)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from leanvision.errors import ConfigError
from leanvision.models._base import Classifier, make_classifier
from leanvision.models._registry import CIFAR10_MEAN, CIFAR10_STD, register_model
from leanvision.ops import ConvBnAct, GhostModule

SHORTCUTS = ("A", "B")


class ZeroPadShortcut(nn.Module):
    """Option A shortcut: subsample by ``stride`` and zero-pad the new channels (parameter-free)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        extra = out_chs - in_chs
        self.pad = (0, 0, 0, 0, extra // 2, extra - extra // 2)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, self.pad)


def _conv3x3(in_chs: int, out_chs: int, *, stride: int, relu: bool, ghost_ratio: int | None) -> nn.Module:
    if ghost_ratio is None:
        return ConvBnAct(in_chs, out_chs, 3, stride=stride, act_layer=nn.ReLU if relu else None)
    return GhostModule(in_chs, out_chs, kernel_size=3, stride=stride, ratio=ghost_ratio, dw_size=3, relu=relu)


class BasicBlock(nn.Module):
    """relu(conv-BN-ReLU -> conv-BN + shortcut); with ``ghost_ratio`` each 3x3 conv is a GhostModule."""

    def __init__(
        self, in_chs: int, out_chs: int, *, stride: int = 1, shortcut: str = "A", ghost_ratio: int | None = None
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_chs, out_chs, stride=stride, relu=True, ghost_ratio=ghost_ratio)
        self.conv2 = _conv3x3(out_chs, out_chs, stride=1, relu=False, ghost_ratio=ghost_ratio)
        if in_chs == out_chs and stride == 1:
            self.shortcut: nn.Module | None = None
        elif shortcut == "A":
            self.shortcut = ZeroPadShortcut(in_chs, out_chs, stride)
        else:
            self.shortcut = ConvBnAct(in_chs, out_chs, 1, stride=stride, act_layer=None)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return self.act(self.conv2(self.conv1(x)) + shortcut)


class CifarResNet(Classifier):
    """ResNet for 32x32 inputs: 3x3 stem, three stages of n basic blocks (16/32/64 ch), pool, linear.

    ``depth = 6n + 2``. ``shortcut="A"`` is the paper's zero-padding identity, ``"B"`` a 1x1 conv + BN
    projection where the shape changes. ``ghost_ratio`` turns every block conv into a GhostModule with that
    ratio (stem, projections and classifier stay dense). Kaiming-normal init as in He et al.
    """

    def __init__(
        self,
        depth: int = 20,
        *,
        num_classes: int = 10,
        in_chans: int = 3,
        widths: tuple[int, int, int] = (16, 32, 64),
        shortcut: str = "A",
        ghost_ratio: int | None = None,
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ConfigError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110...), got {depth}")
        if shortcut not in SHORTCUTS:
            raise ConfigError(f"shortcut must be 'A' (zero-padding) or 'B' (1x1 projection), got {shortcut!r}")
        n = (depth - 2) // 6
        self.num_classes = num_classes
        self.stem = ConvBnAct(in_chans, widths[0], 3)
        prev, stages = widths[0], []
        for i, w in enumerate(widths):
            blocks = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(prev, w, stride=stride, shortcut=shortcut, ghost_ratio=ghost_ratio))
                prev = w
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head_chs = self.num_features = prev
        self.classifier = make_classifier(prev, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))


_CIFAR = {"input_size": (3, 32, 32), "mean": CIFAR10_MEAN, "std": CIFAR10_STD, "num_classes": 10}
_NOTE = "shortcut A (zero-pad); shortcut='B': 1x1 conv+BN"
_GHOST_NOTE = _NOTE + "; block convs = GhostModule(k=3, s=2, d=3)"
# The GhostNet paper's CIFAR-10 table as recalled by the developers (not re-checked against the PDF).
_PAPER_GHOST_NOTE = "; paper numbers from 1911.11907's CIFAR-10 table (unverified)"


@register_model(**_CIFAR, paper="1512.03385", paper_params=270_000, notes=_NOTE)
def resnet20(
    *, num_classes: int = 10, in_chans: int = 3, shortcut: str = "A", widths: tuple[int, int, int] = (16, 32, 64)
) -> CifarResNet:
    """ResNet-20 for CIFAR."""
    return CifarResNet(20, num_classes=num_classes, in_chans=in_chans, shortcut=shortcut, widths=widths)


@register_model(**_CIFAR, paper="1512.03385", paper_params=460_000, notes=_NOTE)
def resnet32(
    *, num_classes: int = 10, in_chans: int = 3, shortcut: str = "A", widths: tuple[int, int, int] = (16, 32, 64)
) -> CifarResNet:
    """ResNet-32 for CIFAR."""
    return CifarResNet(32, num_classes=num_classes, in_chans=in_chans, shortcut=shortcut, widths=widths)


@register_model(
    **_CIFAR, paper="1512.03385", paper_params=850_000, paper_macs=125_000_000, notes=_NOTE + _PAPER_GHOST_NOTE
)
def resnet56(
    *, num_classes: int = 10, in_chans: int = 3, shortcut: str = "A", widths: tuple[int, int, int] = (16, 32, 64)
) -> CifarResNet:
    """ResNet-56 for CIFAR."""
    return CifarResNet(56, num_classes=num_classes, in_chans=in_chans, shortcut=shortcut, widths=widths)


@register_model(**_CIFAR, paper="1911.11907", notes=_GHOST_NOTE)
def ghost_resnet20(
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    shortcut: str = "A",
    widths: tuple[int, int, int] = (16, 32, 64),
    ratio: int = 2,
) -> CifarResNet:
    """Ghost-ResNet-20 for CIFAR: ResNet-20 with GhostModule block convs."""
    return CifarResNet(
        20, num_classes=num_classes, in_chans=in_chans, shortcut=shortcut, widths=widths, ghost_ratio=ratio
    )


@register_model(
    **_CIFAR, paper="1911.11907", paper_params=430_000, paper_macs=63_000_000, notes=_GHOST_NOTE + _PAPER_GHOST_NOTE
)
def ghost_resnet56(
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    shortcut: str = "A",
    widths: tuple[int, int, int] = (16, 32, 64),
    ratio: int = 2,
) -> CifarResNet:
    """Ghost-ResNet-56 for CIFAR: ResNet-56 with GhostModule block convs."""
    return CifarResNet(
        56, num_classes=num_classes, in_chans=in_chans, shortcut=shortcut, widths=widths, ghost_ratio=ratio
    )
