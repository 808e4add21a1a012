"""The protocol every leanvision classifier follows (timm's): features -> head, swappable classifier, fuse()."""

from __future__ import annotations

from torch import Tensor, nn

from leanvision.errors import ConfigError
from leanvision.ops.fuse import fuse_bn


class Classifier(nn.Module):
    """Base of all registered models: ``forward = forward_head(forward_features(x))``.

    Subclasses set ``num_classes``, ``head_chs`` (width entering the classifier) and ``classifier``, and
    implement ``forward_features``; the default ``forward_head`` is global average pooling + the classifier.
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
