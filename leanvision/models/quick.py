"""The quickstart CNN and its Ghost twin: small enough to train on sklearn digits in seconds on 2 cores."""

from __future__ import annotations

from torch import Tensor, nn

from leanvision.models._base import Classifier, make_classifier
from leanvision.models._registry import MNIST_MEAN, MNIST_STD, register_model
from leanvision.ops import ConvBnAct, GhostModule


class QuickCNN(Classifier):
    """3x3 conv-BN-ReLU layers (strides 1, 2, 2), global average pool, linear; any input >= 8x8.

    ``ghost_ratio`` replaces every conv by a GhostModule(k=3, ratio) of the same width (arXiv 1911.11907),
    which roughly halves params and MACs at ratio 2.
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_chans: int = 1,
        widths: tuple[int, ...] = (16, 32, 64),
        strides: tuple[int, ...] = (1, 2, 2),
        ghost_ratio: int | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        layers: list[nn.Module] = []
        prev = in_chans
        for w, s in zip(widths, strides, strict=True):
            if ghost_ratio is None:
                layers.append(ConvBnAct(prev, w, 3, stride=s))
            else:
                layers.append(GhostModule(prev, w, kernel_size=3, stride=s, ratio=ghost_ratio, relu=True))
            prev = w
        self.features = nn.Sequential(*layers)
        self.head_chs = self.num_features = prev
        self.classifier = make_classifier(prev, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)


_MNIST = {"input_size": (1, 28, 28), "mean": MNIST_MEAN, "std": MNIST_STD, "num_classes": 10}


@register_model(**_MNIST, notes="3 conv-BN-ReLU (16/32/64), GAP, linear")
def quickstart_cnn(
    *,
    num_classes: int = 10,
    in_chans: int = 1,
    widths: tuple[int, ...] = (16, 32, 64),
    strides: tuple[int, ...] = (1, 2, 2),
) -> QuickCNN:
    """The quickstart baseline CNN."""
    return QuickCNN(num_classes=num_classes, in_chans=in_chans, widths=widths, strides=strides)


@register_model(**_MNIST, paper="1911.11907", notes="quickstart_cnn with GhostModule convs (s=2)")
def quickstart_ghost_cnn(
    *,
    num_classes: int = 10,
    in_chans: int = 1,
    widths: tuple[int, ...] = (16, 32, 64),
    strides: tuple[int, ...] = (1, 2, 2),
    ratio: int = 2,
) -> QuickCNN:
    """The quickstart CNN's Ghost twin (same widths)."""
    return QuickCNN(num_classes=num_classes, in_chans=in_chans, widths=widths, strides=strides, ghost_ratio=ratio)
