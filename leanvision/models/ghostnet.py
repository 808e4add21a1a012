"""GhostNet (arXiv 1911.11907): ImageNet 0.5x/1.0x/1.3x, CIFAR variants, and loading timm/official weights.

The network is built from a table (arch as data); the layout, widths and parameter names follow the
official code (huawei-noah/Efficient-AI-Backbones ``ghostnet_pytorch``) and timm's ``ghostnet_100``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from leanvision.errors import CheckpointError
from leanvision.models._base import Classifier, make_classifier
from leanvision.models._registry import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    register_model,
)
from leanvision.ops import ConvBnAct, GhostBottleneck, make_divisible

Row = tuple[int, int, int, float, int]  # dw kernel, #exp (mid), out, SE ratio, stride

# GhostNet-1.0x, ImageNet 224x224 (paper Table 1); one inner tuple per stage of the official code.
GHOSTNET_CFG: tuple[tuple[Row, ...], ...] = (
    ((3, 16, 16, 0, 1),),
    ((3, 48, 24, 0, 2),),
    ((3, 72, 24, 0, 1),),
    ((5, 72, 40, 0.25, 2),),
    ((5, 120, 40, 0.25, 1),),
    ((3, 240, 80, 0, 2),),
    ((3, 200, 80, 0, 1), (3, 184, 80, 0, 1), (3, 184, 80, 0, 1), (3, 480, 112, 0.25, 1), (3, 672, 112, 0.25, 1)),
    ((5, 672, 160, 0.25, 2),),
    ((5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1), (5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1)),
)


def cifar_cfg(cfg: tuple[tuple[Row, ...], ...] = GHOSTNET_CFG) -> tuple[tuple[Row, ...], ...]:
    """The 32x32 layout: the first stride-2 bottleneck (row [3, 48, 24, 0, 2]) runs at stride 1.

    Together with a stride-1 stem this removes the first two downsamplings; because the net is
    built from the table, the stride-1 block gets no depthwise conv and no unused parameters.
    """
    out = [list(stage) for stage in cfg]
    k, exp, c, se, _ = out[1][0]
    out[1][0] = (k, exp, c, se, 1)
    return tuple(tuple(stage) for stage in out)


class GhostNet(Classifier):
    """GhostNet: stem conv, Ghost bottlenecks from ``cfg``, 1x1 conv, pool, 1x1 conv to 1280, classifier.

    ``width`` scales stem, #exp and out (rounded to multiples of 4), not the 1280-wide head (arXiv 1911.11907).
    """

    def __init__(
        self,
        cfg: tuple[tuple[Row, ...], ...] = GHOSTNET_CFG,
        *,
        width: float = 1.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        stem_stride: int = 2,
        head_chs: int = 1280,
        drop_rate: float = 0.2,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        stem_chs = make_divisible(16 * width, 4)
        self.stem = ConvBnAct(in_chans, stem_chs, 3, stride=stem_stride)
        prev, stages = stem_chs, []
        for stage in cfg:
            blocks = []
            for k, exp, c, se, s in stage:
                out, mid = make_divisible(c * width, 4), make_divisible(exp * width, 4)
                blocks.append(GhostBottleneck(prev, mid, out, dw_kernel_size=k, stride=s, se_ratio=se))
                prev = out
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.num_features = make_divisible(cfg[-1][-1][1] * width, 4)
        self.final_conv = ConvBnAct(prev, self.num_features, 1)
        self.head_chs = head_chs
        self.conv_head = nn.Conv2d(self.num_features, head_chs, 1, bias=True)
        self.head_act = nn.ReLU(inplace=True)
        self.classifier = make_classifier(head_chs, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.final_conv(self.blocks(self.stem(x)))

    def forward_head(self, x: Tensor, *, pre_logits: bool = False) -> Tensor:
        x = self.head_act(self.conv_head(x.mean((2, 3), keepdim=True))).flatten(1)
        if self.drop_rate > 0 and self.training:
            x = F.dropout(x, self.drop_rate, training=True)
        return x if pre_logits else self.classifier(x)


def _ghostnet(width: float, *, cifar: bool, **kw: Any) -> GhostNet:
    if cifar:
        return GhostNet(cifar_cfg(), width=width, stem_stride=1, **kw)
    return GhostNet(GHOSTNET_CFG, width=width, **kw)


_IMAGENET = {"input_size": (3, 224, 224), "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "num_classes": 1000}
_CIFAR = {"input_size": (3, 32, 32), "mean": CIFAR10_MEAN, "std": CIFAR10_STD, "num_classes": 10}
_CIFAR_NOTE = "32x32 layout: stem and first stride-2 bottleneck at stride 1"


@register_model(**_IMAGENET, paper="1911.11907", paper_params=2_600_000, paper_macs=42_000_000)
def ghostnet_050(
    *, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.2, head_chs: int = 1280
) -> GhostNet:
    """GhostNet-0.5x for 224x224 ImageNet."""
    return _ghostnet(
        0.5, cifar=False, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, head_chs=head_chs
    )


@register_model(**_IMAGENET, paper="1911.11907", paper_params=5_200_000, paper_macs=141_000_000)
def ghostnet_100(
    *, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.2, head_chs: int = 1280
) -> GhostNet:
    """GhostNet-1.0x for 224x224 ImageNet."""
    return _ghostnet(
        1.0, cifar=False, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, head_chs=head_chs
    )


@register_model(**_IMAGENET, paper="1911.11907", paper_params=7_300_000, paper_macs=226_000_000)
def ghostnet_130(
    *, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.2, head_chs: int = 1280
) -> GhostNet:
    """GhostNet-1.3x for 224x224 ImageNet."""
    return _ghostnet(
        1.3, cifar=False, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, head_chs=head_chs
    )


@register_model(**_CIFAR, paper="1911.11907", notes=_CIFAR_NOTE)
def ghostnet_050_cifar(
    *, num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.2, head_chs: int = 1280
) -> GhostNet:
    """GhostNet-0.5x for 32x32 inputs."""
    return _ghostnet(
        0.5, cifar=True, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, head_chs=head_chs
    )


@register_model(**_CIFAR, paper="1911.11907", notes=_CIFAR_NOTE)
def ghostnet_100_cifar(
    *, num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.2, head_chs: int = 1280
) -> GhostNet:
    """GhostNet-1.0x for 32x32 inputs."""
    return _ghostnet(
        1.0, cifar=True, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, head_chs=head_chs
    )


@register_model(**_CIFAR, paper="1911.11907", notes=_CIFAR_NOTE)
def ghostnet_130_cifar(
    *, num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.2, head_chs: int = 1280
) -> GhostNet:
    """GhostNet-1.3x for 32x32 inputs."""
    return _ghostnet(
        1.3, cifar=True, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, head_chs=head_chs
    )


# --- timm / official weights ------------------------------------------------------------------------------

_SHORTCUT = {"0": "0.conv", "1": "0.bn", "2": "1.conv", "3": "1.bn"}
_GHOST = {"primary_conv.0": "primary.conv", "primary_conv.1": "primary.bn"}
_GHOST |= {"cheap_operation.0": "cheap.conv", "cheap_operation.1": "cheap.bn"}


def timm_to_leanvision_key(key: str, n_stages: int) -> str:
    """Map one timm ``ghostnet_*`` (= official huawei-noah) state-dict key to leanvision's parameter name."""
    key = re.sub(r"^conv_stem\.", "stem.conv.", key)
    key = re.sub(r"^bn1\.", "stem.bn.", key)
    key = re.sub(rf"^blocks\.{n_stages}\.0\.conv\.", "final_conv.conv.", key)
    key = re.sub(rf"^blocks\.{n_stages}\.0\.bn1\.", "final_conv.bn.", key)
    key = re.sub(r"\.((?:primary_conv|cheap_operation)\.\d)\.", lambda m: f".{_GHOST[m.group(1)]}.", key)
    key = re.sub(r"\.shortcut\.(\d)\.", lambda m: f".shortcut.{_SHORTCUT[m.group(1)]}.", key)
    key = re.sub(r"\.conv_dw\.", ".conv_dw.conv.", key)
    return re.sub(r"\.bn_dw\.", ".conv_dw.bn.", key)


def _unwrap(state_dict: Mapping[str, Any]) -> dict[str, Tensor]:
    """The bare tensor dict of a ``{"state_dict": ...}`` checkpoint, without DataParallel ``module.`` prefixes."""
    inner = state_dict.get("state_dict")
    sd = dict(inner if isinstance(inner, Mapping) else state_dict)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
    return sd


def load_timm_state_dict(model: GhostNet, state_dict: Mapping[str, Tensor]) -> GhostNet:
    """Load a timm ``ghostnet_050/100/130`` (or official GhostNet V1) state dict into ``model``; returns it.

    Accepts the raw dict, a ``{"state_dict": ...}`` checkpoint and ``module.``-prefixed (DataParallel) keys.
    Raises ``CheckpointError`` when keys or shapes do not fit (usually a width or num_classes mismatch).
    """
    mapped = {timm_to_leanvision_key(k, len(model.blocks)): v for k, v in _unwrap(state_dict).items()}
    own = model.state_dict()
    missing = sorted(set(own) - set(mapped))
    unexpected = sorted(set(mapped) - set(own))
    wrong = [k for k in own if k in mapped and own[k].shape != mapped[k].shape]
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong))
            if keys
        )
        raise CheckpointError(
            f"state dict does not fit this GhostNet ({detail}); build the model with the checkpoint's width, "
            "in_chans and num_classes (or use ghostnet_from_timm(state_dict, width=...))"
        )
    model.load_state_dict(mapped)
    return model


def ghostnet_from_timm(state_dict: Mapping[str, Tensor], *, width: float = 1.0, cifar: bool = False) -> GhostNet:
    """Build a leanvision GhostNet from a timm ``ghostnet_*`` state dict (in_chans, num_classes read from it).

    ``width`` must be the checkpoint's (``ghostnet_100`` -> 1.0). Outputs match timm's model in eval mode.
    """
    sd = _unwrap(state_dict)
    if "conv_stem.weight" not in sd:
        raise CheckpointError(
            "not a timm/official GhostNet state dict (no 'conv_stem.weight'); pass the dict from "
            "timm.create_model('ghostnet_100').state_dict() or the official .pth"
        )
    num_classes = sd["classifier.weight"].shape[0] if "classifier.weight" in sd else 0
    in_chans = sd["conv_stem.weight"].shape[1]
    model = _ghostnet(width, cifar=cifar, num_classes=num_classes, in_chans=in_chans)
    return load_timm_state_dict(model, sd)
