"""CIFAR ResNet-20/32/56 (arXiv 1512.03385) and their Ghost versions (arXiv 1911.11907)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from leanvision.errors import ConfigError
from leanvision.models._base import Classifier, cifar_resnet_blocks, resnet_stages, variant
from leanvision.models._registry import CIFAR10_MEAN, CIFAR10_STD, register_model
from leanvision.ops import ConvBnAct, GhostModule, init_convs

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
        n = cifar_resnet_blocks(depth)
        if shortcut not in SHORTCUTS:
            raise ConfigError(f"shortcut must be 'A' (zero-padding) or 'B' (1x1 projection), got {shortcut!r}")
        self.stem = ConvBnAct(in_chans, widths[0], 3)
        block = functools.partial(BasicBlock, shortcut=shortcut, ghost_ratio=ghost_ratio)
        self.stages = resnet_stages(widths[0], widths, [n] * len(widths), block)
        self.head_chs = self.num_features = widths[-1]
        self.reset_classifier(num_classes)
        init_convs(self)  # plain and Ghost convs by one rule

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))


_CIFAR = {"input_size": (3, 32, 32), "mean": CIFAR10_MEAN, "std": CIFAR10_STD, "num_classes": 10}
_NOTE = "shortcut A (zero-pad); shortcut='B': 1x1 conv+BN"
_GHOST_NOTE = _NOTE + "; block convs = GhostModule(k=3, s=2, d=3)"
# The GhostNet paper's CIFAR-10 table as recalled by the developers (not re-checked against the PDF).
_PAPER_GHOST_NOTE = "; paper numbers from 1911.11907's CIFAR-10 table (unverified)"


def _resnet(name: str, depth: int, **meta: Any) -> Callable[..., CifarResNet]:
    def build(
        *, num_classes: int = 10, in_chans: int = 3, shortcut: str = "A", widths: tuple[int, int, int] = (16, 32, 64)
    ) -> CifarResNet:
        return CifarResNet(depth, num_classes=num_classes, in_chans=in_chans, shortcut=shortcut, widths=widths)

    return register_model(**_CIFAR, paper="1512.03385", **meta)(variant(build, name, f"ResNet-{depth} for CIFAR."))


def _ghost_resnet(name: str, depth: int, **meta: Any) -> Callable[..., CifarResNet]:
    def build(
        *,
        num_classes: int = 10,
        in_chans: int = 3,
        shortcut: str = "A",
        widths: tuple[int, int, int] = (16, 32, 64),
        ratio: int = 2,
    ) -> CifarResNet:
        return CifarResNet(
            depth, num_classes=num_classes, in_chans=in_chans, shortcut=shortcut, widths=widths, ghost_ratio=ratio
        )

    doc = f"Ghost-ResNet-{depth} for CIFAR: ResNet-{depth} with GhostModule block convs."
    return register_model(**_CIFAR, paper="1911.11907", **meta)(variant(build, name, doc))


resnet20 = _resnet("resnet20", 20, paper_params=270_000, notes=_NOTE)
resnet32 = _resnet("resnet32", 32, paper_params=460_000, notes=_NOTE)
resnet56 = _resnet("resnet56", 56, paper_params=850_000, paper_macs=125_000_000, notes=_NOTE + _PAPER_GHOST_NOTE)
ghost_resnet20 = _ghost_resnet("ghost_resnet20", 20, notes=_GHOST_NOTE)
ghost_resnet56 = _ghost_resnet(
    "ghost_resnet56", 56, paper_params=430_000, paper_macs=63_000_000, notes=_GHOST_NOTE + _PAPER_GHOST_NOTE
)
