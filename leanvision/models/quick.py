"""The quickstart CNN and its Ghost twin: small enough to train on sklearn digits in seconds on 2 cores."""

from __future__ import annotations

from torch import Tensor, nn

from leanvision.models._base import Classifier
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
        self.reset_classifier(num_classes)

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


class LeNet5(Classifier):
    """LeNet-5 (LeCun et al. 1998) for 28x28 inputs: conv5(6, pad 2)-ReLU-maxpool, conv5(16)-ReLU-maxpool,
    linear 400-120-84-classes with ReLU; the last hidden layer (84) is what operational calibration reads."""

    def __init__(self, *, num_classes: int = 10, in_chans: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU())
        self.head_chs = self.num_features = 84
        self.reset_classifier(num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)

    def forward_head(self, x: Tensor, *, pre_logits: bool = False) -> Tensor:
        x = self.hidden(x)
        return x if pre_logits else self.classifier(x)


@register_model(**_MNIST, notes="LeCun et al. 1998: 61,706 params; the small MNIST model of the calibration examples")
def lenet5(*, num_classes: int = 10, in_chans: int = 1) -> LeNet5:
    """LeNet-5 for 28x28 digits."""
    return LeNet5(num_classes=num_classes, in_chans=in_chans)
