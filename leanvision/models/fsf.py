"""CIFAR VGG (arXiv 1409.1556) and its full-stack-filter version (arXiv 1908.02023)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from leanvision.errors import ConfigError
from leanvision.models._base import Classifier, variant
from leanvision.models._registry import CIFAR10_MEAN, CIFAR10_STD, register_model
from leanvision.ops.fullstack import FSFStep, MaskConv2d
from leanvision.ops.init import init_convs

# Widths of the 3x3 convs, "M" = 2x2 max-pool. vgg16 is the official FSF code's CIFAR VGG-16; vgg8 is a small
# CIFAR net (7 convs + the classifier) sized for CPU experiments.
CFGS: dict[str, tuple[int | str, ...]] = {
    "vgg8": (32, 32, "M", 64, 64, "M", 128, 128, "M", 256, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
}


class CifarVGG(Classifier):
    """VGG for 32x32 inputs: [conv3x3-BN-ReLU]* with 2x2 max-pools, global average pool, linear.

    ``fsf_ratio`` = s turns every conv (the stem too, as in the official code) into a ``MaskConv2d`` with n/s
    full-stack filters and per-filter 1-bit masks (``shared_masks=True``: s masks shared by all full-stack
    filters). Convs have no bias (BatchNorm follows; the official code keeps a redundant one). At 32x32 the
    last pool leaves 1x1, so the average pool equals the official flatten; other sizes >= 32 work too.
    """

    def __init__(
        self,
        cfg: Sequence[int | str],
        *,
        num_classes: int = 10,
        in_chans: int = 3,
        fsf_ratio: int | None = None,
        shared_masks: bool = False,
        ortho_weight: float = 0.05,
    ) -> None:
        super().__init__()
        self.fsf_ratio, self.ortho_weight = fsf_ratio, ortho_weight
        layers: list[nn.Module] = []
        prev = in_chans
        for item in cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            if not isinstance(item, int) or item < 1:
                raise ConfigError(f"VGG widths must be positive ints or 'M' (max-pool), got {item!r}")
            if fsf_ratio is None:
                conv: nn.Module = nn.Conv2d(prev, item, 3, padding=1, bias=False)
            else:
                conv = MaskConv2d(prev, item, 3, padding=1, bias=False, ratio=fsf_ratio, shared=shared_masks)
            layers += [conv, nn.BatchNorm2d(item), nn.ReLU(inplace=True)]
            prev = item
        self.features = nn.Sequential(*layers)
        self.head_chs = self.num_features = prev
        self.reset_classifier(num_classes)
        init_convs(self)  # dense and full-stack convs by one rule

    @property
    def default_train_step(self) -> FSFStep | None:
        """The step fit uses unless given another: + ortho_weight x orthogonality loss, proxies clipped (FSF only)."""
        return FSFStep(ortho_weight=self.ortho_weight) if self.fsf_ratio is not None else None

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)


def scaled_cfg(name: str, width: float) -> tuple[int | str, ...]:
    """The conv widths of ``CFGS[name]`` times ``width`` (rounded, at least 1)."""
    if not width > 0:
        raise ConfigError(f"width must be > 0, got {width}")
    return tuple(c if c == "M" else max(1, round(c * width)) for c in CFGS[name])


_CIFAR = {"input_size": (3, 32, 32), "mean": CIFAR10_MEAN, "std": CIFAR10_STD, "num_classes": 10}
# Storage numbers: leanvision.ops.storage_report of the default build (1-bit masks + float32 rest), checked by
# tests/test_fullstack.py. Parameter counts include the float mask proxies that only training needs.
_FSF_NOTE = (
    "full-stack filters, s={s}, 1-bit per-filter masks: stored {fsf:.3f} MB vs {dense:.3f} MB dense float32 "
    "({ratio:.2f}x smaller); MACs = dense twin (a memory method); params include the training-only mask proxies"
)
FSF_VGG8_NOTE = _FSF_NOTE.format(s=4, fsf=0.676, dense=2.347, ratio=3.47)
FSF_VGG16_NOTE = _FSF_NOTE.format(s=4, fsf=16.637, dense=58.930, ratio=3.54) + (
    "; ratio=64 (the official release): 2.846 MB (20.70x)"
)


@register_model(
    **_CIFAR, paper="1409.1556", family="vgg_cifar", notes="widths 32-32-M-64-64-M-128-128-M-256-M, BN, GAP"
)
def vgg8_cifar(*, num_classes: int = 10, in_chans: int = 3, width: float = 1.0) -> CifarVGG:
    """A small CIFAR VGG (7 conv-BN-ReLU + linear); the dense twin of ``fsf_vgg8_cifar``."""
    return CifarVGG(scaled_cfg("vgg8", width), num_classes=num_classes, in_chans=in_chans)


@register_model(**_CIFAR, paper="1409.1556", family="vgg_cifar", notes="13 conv-BN-ReLU, GAP, linear")
def vgg16_cifar(*, num_classes: int = 10, in_chans: int = 3, width: float = 1.0) -> CifarVGG:
    """CIFAR VGG-16 with BatchNorm; the dense twin of ``fsf_vgg16_cifar``."""
    return CifarVGG(scaled_cfg("vgg16", width), num_classes=num_classes, in_chans=in_chans)


def _fsf_vgg(cfg: str, notes: str) -> Callable[..., CifarVGG]:
    def build(
        *,
        num_classes: int = 10,
        in_chans: int = 3,
        ratio: int = 4,
        shared_masks: bool = False,
        width: float = 1.0,
        ortho_weight: float = 0.05,
    ) -> CifarVGG:
        return CifarVGG(
            scaled_cfg(cfg, width),
            num_classes=num_classes,
            in_chans=in_chans,
            fsf_ratio=ratio,
            shared_masks=shared_masks,
            ortho_weight=ortho_weight,
        )

    doc = f"``{cfg}_cifar`` with full-stack filters (arXiv 1908.02023): every conv a MaskConv2d with ``ratio`` = s."
    return register_model(**_CIFAR, paper="1908.02023", notes=notes)(variant(build, f"fsf_{cfg}_cifar", doc))


fsf_vgg8_cifar = _fsf_vgg("vgg8", FSF_VGG8_NOTE)
fsf_vgg16_cifar = _fsf_vgg("vgg16", FSF_VGG16_NOTE)
