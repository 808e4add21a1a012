"""The protocol every leanvision classifier follows (timm's): features -> head, swappable classifier, fuse()."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from torch import Tensor, nn

from leanvision.errors import ConfigError
from leanvision.ops.fuse import fuse_bn


class Classifier(nn.Module):
    """Base of all registered models: ``forward = forward_head(forward_features(x))``.

    Subclasses set ``head_chs`` (width entering the classifier), build the classifier with
    ``reset_classifier(num_classes)`` and implement ``forward_features``; the default ``forward_head`` is global
    average pooling + the classifier.
    """

    num_classes: int
    head_chs: int
    classifier: nn.Module

    def forward_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_head(self, x: Tensor, *, pre_logits: bool = False) -> Tensor:
        """Global average pool, then the classifier (``pre_logits``: the pooled features); override for other heads."""
        x = x.mean((2, 3))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a fresh one for ``num_classes`` (0 = no classifier, return features)."""
        self.classifier = make_classifier(self.head_chs, num_classes)
        self.num_classes = num_classes

    def fuse(self) -> nn.Module:
        """The deploy form: a new eval-mode model with every BatchNorm folded (this model is untouched)."""
        return fuse_bn(self)


def make_classifier(in_features: int, num_classes: int) -> nn.Module:
    """``nn.Linear(in_features, num_classes)``, or ``nn.Identity`` for ``num_classes=0``."""
    if not isinstance(num_classes, int) or num_classes < 0:
        raise ConfigError(f"num_classes must be an integer >= 0 (0 = no classifier), got {num_classes!r}")
    return nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()


def resnet_stages(
    in_chs: int,
    widths: Sequence[int],
    depths: Sequence[int],
    block: Callable[..., nn.Module],
    *,
    expansion: int = 1,
) -> nn.Sequential:
    """ResNet stages: ``depths[i]`` blocks ``block(in_chs, width, stride=s)`` each (outputs ``width * expansion``).

    The first block of every stage but the first has stride 2 (arXiv 1512.03385).
    """
    stages, prev = [], in_chs
    for i, (width, n) in enumerate(zip(widths, depths, strict=True)):
        blocks = []
        for j in range(n):
            blocks.append(block(prev, width, stride=2 if i > 0 and j == 0 else 1))
            prev = width * expansion
        stages.append(nn.Sequential(*blocks))
    return nn.Sequential(*stages)


def cifar_resnet_blocks(depth: int) -> int:
    """Basic blocks per stage of a CIFAR ResNet with ``depth`` = 6n + 2 layers: n (arXiv 1512.03385)."""
    if depth < 8 or (depth - 2) % 6:
        raise ConfigError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110...), got {depth}")
    return (depth - 2) // 6


B = TypeVar("B", bound=Callable[..., nn.Module])


def variant(build: B, name: str, doc: str) -> B:
    """Give a builder made by a family's factory the name and docstring it would have if written out."""
    build.__name__ = build.__qualname__ = name
    build.__doc__ = doc
    return build
