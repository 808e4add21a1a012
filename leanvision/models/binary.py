"""Binary (1W1A) CIFAR nets with balanced weights and gated residuals, BBG (arXiv 1909.12117).

Standard BNN practice: the first conv and the classifier stay in float, every other conv is a
:class:`~leanvision.ops.binary.BinaryConv2d` inside a :class:`~leanvision.ops.binary.BinaryGatedLayer`.
Model cards report the binary OPs (``bops``) apart from the float MACs (stem, gates, classifier).
"""

from __future__ import annotations

import functools

from torch import Tensor, nn

from leanvision.errors import ConfigError
from leanvision.models._base import Classifier, cifar_resnet_blocks, resnet_stages
from leanvision.models._registry import CIFAR10_MEAN, CIFAR10_STD, register_model
from leanvision.ops.binary import BinaryGatedLayer, binary_train_step
from leanvision.ops.conv_bn_act import ConvBnAct

VGG_WIDTHS: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, "M")


def _float_stem(in_chans: int, chs: int) -> ConvBnAct:
    # No activation: a ReLU before the first sign would binarise every activation to +1.
    stem = ConvBnAct(in_chans, chs, 3, act_layer=None)
    nn.init.kaiming_normal_(stem.conv.weight, mode="fan_out", nonlinearity="relu")
    return stem


class _BinaryNet(Classifier):
    # fit and `leanvision train` use it unless given another step: latent weights stay in [-1, 1].
    default_train_step = staticmethod(binary_train_step)


class BinaryVGG(_BinaryNet):
    """VGG-style binary CNN without skip connections: float stem, binary 3x3 layers, max-pools, GAP, linear.

    ``widths`` lists the binary layers' output channels, ``"M"`` a 2x2 max-pool. ``residual="gate"`` adds BBG's
    gated residual to every binary layer (the float path that lets deep no-skip BNNs train, arXiv 1909.12117);
    ``residual="none"`` with ``balanced=False`` is the XNOR-Net baseline (arXiv 1603.05279).
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_chans: int = 3,
        stem_chs: int = 64,
        widths: tuple[int | str, ...] = VGG_WIDTHS,
        balanced: bool = True,
        residual: str = "gate",
        detach_alpha: bool = False,
    ) -> None:
        super().__init__()
        if not any(isinstance(w, int) for w in widths) or any(w != "M" and not isinstance(w, int) for w in widths):
            raise ConfigError(f"widths must be channel counts (int) and 'M' (max-pool), got {widths!r}")
        self.stem = _float_stem(in_chans, stem_chs)
        layers: list[nn.Module] = []
        prev = stem_chs
        for w in widths:
            if w == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
                continue
            layers.append(BinaryGatedLayer(prev, w, balanced=balanced, residual=residual, detach_alpha=detach_alpha))
            prev = w
        self.features = nn.Sequential(*layers)
        self.head_chs = self.num_features = prev
        self.reset_classifier(num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(self.stem(x))


class BinaryResNet(_BinaryNet):
    """CIFAR ResNet (depth 6n+2) with every block conv binary and its own (gated) shortcut (arXiv 1909.12117).

    Each 3x3 conv of a basic block is a :class:`BinaryGatedLayer`, so the shortcut wraps every binary conv
    (the Bi-Real Net layout, arXiv 1808.00278) and the shape-changing ones use the parameter-free average-pool +
    channel-repeat shortcut. ``residual="identity"`` gives the ungated baseline.
    """

    def __init__(
        self,
        depth: int = 20,
        *,
        num_classes: int = 10,
        in_chans: int = 3,
        widths: tuple[int, int, int] = (16, 32, 64),
        balanced: bool = True,
        residual: str = "gate",
        detach_alpha: bool = False,
    ) -> None:
        super().__init__()
        n = cifar_resnet_blocks(depth)
        self.stem = _float_stem(in_chans, widths[0])
        kw = {"balanced": balanced, "residual": residual, "detach_alpha": detach_alpha}

        def block(in_chs: int, out_chs: int, *, stride: int) -> nn.Sequential:
            return nn.Sequential(
                BinaryGatedLayer(in_chs, out_chs, stride=stride, **kw), BinaryGatedLayer(out_chs, out_chs, **kw)
            )

        self.stages = resnet_stages(widths[0], widths, [n] * len(widths), block)
        self.head_chs = self.num_features = widths[-1]
        self.reset_classifier(num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))


_CIFAR = {"input_size": (3, 32, 32), "mean": CIFAR10_MEAN, "std": CIFAR10_STD, "num_classes": 10}
_OPS = "MACs = float MACs (stem, gates, FC), BOPs = 1-bit x 1-bit MACs, OPs = MACs + BOPs/64"
_VGG = "float stem 64 + 6 binary 3x3 (64-64-M-128-128-M-256-256-M), GAP, FC"


# The BBG builders are the classes (depth 20 for the ResNet): their keyword arguments and defaults are the models'.
register_model(
    "bbg_vgg_cifar", **_CIFAR, paper="1909.12117", notes=f"BBG: {_VGG}; balanced weights + gated residual; {_OPS}"
)(BinaryVGG)
register_model(
    "bbg_resnet20_cifar",
    **_CIFAR,
    paper="1909.12117",
    family="binary",  # a partial has no module of its own
    notes=f"BBG ResNet-20: float stem, 18 binary 3x3 convs each with a gated shortcut (avg-pool + channel repeat "
    f"when the shape changes), GAP, FC; {_OPS}",
)(functools.partial(BinaryResNet, 20))


@register_model(
    **_CIFAR, paper="1603.05279", notes=f"XNOR baseline of bbg_vgg_cifar: {_VGG}; sign(W)*mean(abs(W)), no skip; {_OPS}"
)
def xnor_vgg_cifar(
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    stem_chs: int = 64,
    widths: tuple[int | str, ...] = VGG_WIDTHS,
) -> BinaryVGG:
    """XNOR-Net-style baseline of ``bbg_vgg_cifar``: plain sign(W)*mean(abs(W)) weights, no residual path."""
    return BinaryVGG(
        num_classes=num_classes, in_chans=in_chans, stem_chs=stem_chs, widths=widths, balanced=False, residual="none"
    )
