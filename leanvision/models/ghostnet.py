"""GhostNet (arXiv 1911.11907): ImageNet 0.5x/1.0x/1.3x, CIFAR variants, and loading timm/official weights.

The network is built from a table (arch as data); the layout, widths and parameter names follow the
official code (huawei-noah/Efficient-AI-Backbones ``ghostnet_pytorch``) and timm's ``ghostnet_100``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leanvision.errors import CheckpointError, ConfigError
from leanvision.models._base import Classifier, variant
from leanvision.models._registry import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    register_model,
)
from leanvision.ops import ConvBnAct, GhostBottleneck, GhostModule, fuse_bn, make_divisible
from leanvision.ops.align import Layout, relayout_conv
from leanvision.ops.split import PartsConv, SplitGhostBottleneck, ghost_split

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
        self.reset_classifier(num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.final_conv(self.blocks(self.stem(x)))

    def forward_head(self, x: Tensor, *, pre_logits: bool = False) -> Tensor:
        x = self.head_act(self.conv_head(F.adaptive_avg_pool2d(x, 1))).flatten(1)  # GlobalAveragePool in ONNX
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


def _ghostnet_variant(name: str, width: float, *, cifar: bool, **meta: Any) -> Callable[..., GhostNet]:
    def build(
        *, num_classes: int = 10 if cifar else 1000, in_chans: int = 3, drop_rate: float = 0.2, head_chs: int = 1280
    ) -> GhostNet:
        return _ghostnet(
            width, cifar=cifar, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, head_chs=head_chs
        )

    doc = f"GhostNet-{width}x for {'32x32 inputs' if cifar else '224x224 ImageNet'}."
    return register_model(**(_CIFAR if cifar else _IMAGENET), paper="1911.11907", **meta)(variant(build, name, doc))


ghostnet_050 = _ghostnet_variant("ghostnet_050", 0.5, cifar=False, paper_params=2_600_000, paper_macs=42_000_000)
ghostnet_100 = _ghostnet_variant("ghostnet_100", 1.0, cifar=False, paper_params=5_200_000, paper_macs=141_000_000)
ghostnet_130 = _ghostnet_variant("ghostnet_130", 1.3, cifar=False, paper_params=7_300_000, paper_macs=226_000_000)
ghostnet_050_cifar = _ghostnet_variant("ghostnet_050_cifar", 0.5, cifar=True, notes=_CIFAR_NOTE)
ghostnet_100_cifar = _ghostnet_variant("ghostnet_100_cifar", 1.0, cifar=True, notes=_CIFAR_NOTE)
ghostnet_130_cifar = _ghostnet_variant("ghostnet_130_cifar", 1.3, cifar=True, notes=_CIFAR_NOTE)


# --- deploy form for blocked-layout runtimes -----------------------------------------------------------------


def _ghost_layout(gm: GhostModule, multiple: int) -> Layout:
    """Where a Ghost module's channels land when each half is padded: [intrinsic | pad | ghosts | pad]."""
    init = gm.primary.conv.out_channels
    if gm.cheap is None:
        return Layout.dense(init, multiple)
    p1 = Layout.dense(init, multiple).phys
    per = gm.cheap.conv.out_channels // init  # ghosts per intrinsic map (ratio - 1)
    return Layout(tuple(range(init)) + tuple(p1 + i for i in range(gm.n_ghost)), p1 * (1 + per))


@torch.no_grad()
def _align_ghost(gm: GhostModule, src: Layout, multiple: int) -> Layout:
    out = _ghost_layout(gm, multiple)
    init = gm.primary.conv.out_channels
    mid = Layout.dense(init, multiple)
    gm.primary.conv = relayout_conv(gm.primary.conv, src, mid)
    if gm.cheap is not None:
        n_cheap = gm.cheap.conv.out_channels
        gm.cheap.conv = relayout_conv(gm.cheap.conv, mid, Layout(tuple(range(n_cheap)), out.phys - mid.phys))
        # Ghosts the original module computed and sliced off become zero pads instead.
        gm.cheap.conv.weight[gm.n_ghost :] = 0
        if gm.cheap.conv.bias is not None:
            gm.cheap.conv.bias[gm.n_ghost :] = 0
        gm.n_ghost, gm.trim = gm.cheap.conv.out_channels, False
    gm.out_chs = out.phys
    return out


def _align_block(blk: GhostBottleneck, src: Layout, multiple: int) -> Layout:
    mid = _align_ghost(blk.ghost1, src, multiple)
    if blk.conv_dw is not None:
        blk.conv_dw.conv = relayout_conv(blk.conv_dw.conv, mid, mid)
    if blk.se is not None:
        rd = Layout.dense(blk.se.conv_reduce.out_channels, multiple)
        blk.se.conv_reduce = relayout_conv(blk.se.conv_reduce, mid, rd)
        blk.se.conv_expand = relayout_conv(blk.se.conv_expand, rd, mid)  # pad gates are 0.5 x 0 = 0
    out = _align_ghost(blk.ghost2, mid, multiple)
    if blk.shortcut is None:
        if src != out:  # the identity shortcut adds the input as it is laid out
            raise ConfigError("align_channels: an identity shortcut's input and output layouts differ")
    else:
        dw, pw = blk.shortcut
        dw.conv = relayout_conv(dw.conv, src, src)
        pw.conv = relayout_conv(pw.conv, src, out)
    return out


def align_channels(model: GhostNet, multiple: int = 16) -> GhostNet:
    """A deploy copy of ``model`` (BN folded) whose concatenated halves are zero-padded to ``multiple`` channels.

    Same outputs, more physical channels: onnxruntime's CPU provider keeps a channel concat in its blocked
    NCHWc layout only when every input is a multiple of its block (16 with AVX-512, 8 with AVX2), so the
    plain GhostNet export pays two layout conversions per Ghost module. The padded channels are zeros that
    every consumer ignores (zero weights); the profiler counts the MACs spent on them (arXiv 1911.11907).
    """
    if not isinstance(model, GhostNet) or multiple < 1:
        raise ConfigError(f"align_channels takes a GhostNet and multiple >= 1, got {type(model).__name__}, {multiple}")
    m = fuse_bn(model)
    first = m.blocks[0][0]
    stem_out = (
        _ghost_layout(first.ghost2, multiple)
        if first.shortcut is None
        else Layout.dense(m.stem.conv.out_channels, multiple)
    )
    m.stem.conv = relayout_conv(m.stem.conv, Layout.dense(m.stem.conv.in_channels), stem_out)
    layout = stem_out
    for stage in m.blocks:
        for blk in stage:
            layout = _align_block(blk, layout, multiple)
    feats = Layout.dense(m.final_conv.conv.out_channels, multiple)
    m.final_conv.conv = relayout_conv(m.final_conv.conv, layout, feats)
    m.conv_head = relayout_conv(m.conv_head, feats, Layout.dense(m.conv_head.out_channels))
    return m


class _Parts(nn.Module):
    """Tensor -> [tensor] (entering the part-wise blocks) or [tensor] -> tensor (leaving them)."""

    def __init__(self, enter: bool) -> None:
        super().__init__()
        self.enter = enter

    def forward(self, x: Any) -> Any:
        return [x] if self.enter else x[0]


def onnxruntime_form(model: GhostNet, multiple: int | None = 16) -> GhostNet:
    """The deploy copy of ``model`` to export for onnxruntime on CPU: BN folded, halves padded, no concatenation.

    ``align_channels`` pads the Ghost halves to ``multiple`` channels (None: no padding); then every bottleneck
    runs on channel parts (``leanvision.ops.split``): the network has no ``Concat`` left. Same outputs.
    """
    m = fuse_bn(model) if multiple is None else align_channels(model, multiple)
    split = ghost_split(m.blocks[0][0].ghost2) if m.blocks[0][0].shortcut is None else [m.stem.conv.out_channels]
    m.stem = nn.Sequential(_Parts(enter=True), PartsConv(m.stem.conv, [m.stem.conv.in_channels], split, m.stem.act))
    for stage in m.blocks:
        for i, blk in enumerate(stage):
            stage[i] = SplitGhostBottleneck(blk, split)
            split = stage[i].out_split
    final = m.final_conv
    m.final_conv = nn.Sequential(
        PartsConv(final.conv, split, [final.conv.out_channels], final.act), _Parts(enter=False)
    )
    return m


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
