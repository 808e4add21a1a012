"""Concat-free deploy form of Ghost networks: activations kept as channel parts (arXiv 1911.11907).

A Ghost module's output is ``cat([intrinsic, ghosts])``. Every consumer in a Ghost bottleneck is linear per
channel group, so it can run on the parts separately: a depthwise conv and an SE gate split by channel, a
dense 1x1 conv becomes a sum of convs over the parts (onnxruntime fuses the sum into the convolution), and a
residual add is done part by part. The network then never concatenates: in onnxruntime each channel
``Concat`` is a full copy, plus two NCHWc layout conversions when a part is not a multiple of the block.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from leanvision.errors import ConfigError
from leanvision.ops.conv_bn_act import ConvBnAct
from leanvision.ops.ghost import GhostBottleneck, GhostModule


def _offsets(split: list[int]) -> list[slice]:
    out, start = [], 0
    for n in split:
        out.append(slice(start, start + n))
        start += n
    return out


def _sub_conv(conv: nn.Conv2d, rows: slice, cols: slice | None, bias: bool) -> nn.Conv2d:
    """A copy of ``conv`` restricted to output ``rows`` and input ``cols`` (depthwise: ``cols=None``)."""
    w = conv.weight.detach()[rows]
    depthwise = cols is None
    w = w if depthwise else w[:, cols]
    sub = nn.Conv2d(
        w.shape[0] if depthwise else w.shape[1],
        w.shape[0],
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        groups=w.shape[0] if depthwise else 1,
        bias=bias and conv.bias is not None,
    ).to(w)
    sub.weight.data.copy_(w)
    if sub.bias is not None:
        sub.bias.data.copy_(conv.bias.detach()[rows])
    return sub.eval()


class PartsConv(nn.Module):
    """A conv (+ activation) on a list of channel parts, returning a list of parts; exact against the whole conv.

    Depthwise: part k of the output is the conv of part k of the input. Dense (``groups=1``): output part k is
    the sum over input parts j of the conv restricted to rows k and columns j (the bias added once).
    """

    def __init__(self, conv: nn.Conv2d, in_split: list[int], out_split: list[int], act: nn.Module | None = None):
        super().__init__()
        if type(conv) is not nn.Conv2d or sum(in_split) != conv.in_channels or sum(out_split) != conv.out_channels:
            raise ConfigError(
                f"PartsConv: splits {in_split} -> {out_split} do not fit {type(conv).__name__} "
                f"{conv.in_channels} -> {conv.out_channels}"
            )
        self.depthwise = conv.groups > 1
        if self.depthwise and not (conv.groups == conv.in_channels == conv.out_channels and in_split == out_split):
            raise ConfigError("PartsConv: a grouped conv must be depthwise with equal input and output splits")
        if conv.groups > 1:
            self.convs = nn.ModuleList(_sub_conv(conv, r, None, True) for r in _offsets(out_split))
        else:
            cols = _offsets(in_split)
            self.convs = nn.ModuleList(
                nn.ModuleList(_sub_conv(conv, r, c, bias=j == len(cols) - 1) for j, c in enumerate(cols))
                for r in _offsets(out_split)
            )
        self.act = act

    def forward(self, parts: list[Tensor]) -> list[Tensor]:
        if self.depthwise:
            out = [conv(x) for conv, x in zip(self.convs, parts, strict=True)]
        else:
            out = []
            for row in self.convs:
                y = row[0](parts[0])
                for conv, x in zip(row[1:], parts[1:], strict=True):
                    y = y + conv(x)
                out.append(y)
        return out if self.act is None else [self.act(y) for y in out]


def _folded(m: ConvBnAct) -> nn.Conv2d:
    if m.bn is not None:
        raise ConfigError("split: fold the BatchNorms first (fuse_bn(model) or model.fuse())")
    return m.conv


def ghost_split(gm: GhostModule) -> list[int]:
    """Channel sizes of a Ghost module's output parts: [intrinsic, ghosts] (or [out] without ghosts)."""
    init = gm.primary.conv.out_channels
    return [init] if gm.cheap is None else [init, gm.n_ghost]


class SplitGhostModule(nn.Module):
    """A folded Ghost module on channel parts: primary conv over the input parts, cheap op on the intrinsic part."""

    def __init__(self, gm: GhostModule, in_split: list[int]) -> None:
        super().__init__()
        init = gm.primary.conv.out_channels
        self.primary = PartsConv(_folded(gm.primary), in_split, [init], gm.primary.act)
        self.cheap = None if gm.cheap is None else _folded(gm.cheap)
        self.cheap_act = None if gm.cheap is None else gm.cheap.act
        self.n_ghost, self.trim = gm.n_ghost, gm.trim

    def forward(self, parts: list[Tensor]) -> list[Tensor]:
        (x1,) = self.primary(parts)
        if self.cheap is None:
            return [x1]
        x2 = self.cheap(x1)
        if self.trim:
            x2 = x2[:, : self.n_ghost]
        return [x1, x2 if self.cheap_act is None else self.cheap_act(x2)]


class SplitGhostBottleneck(nn.Module):
    """A folded Ghost bottleneck on channel parts: never concatenates; output parts = ghost2's [intrinsic, ghosts]."""

    def __init__(self, blk: GhostBottleneck, in_split: list[int]) -> None:
        super().__init__()
        self.ghost1 = SplitGhostModule(blk.ghost1, in_split)
        mid = ghost_split(blk.ghost1)
        self.conv_dw = None if blk.conv_dw is None else PartsConv(_folded(blk.conv_dw), mid, mid, blk.conv_dw.act)
        self.se_reduce = self.se_expand = None
        if blk.se is not None:
            rd = [blk.se.conv_reduce.out_channels]
            self.se_reduce = PartsConv(blk.se.conv_reduce, mid, rd, blk.se.act)
            self.se_expand = PartsConv(blk.se.conv_expand, rd, mid)
        self.ghost2 = SplitGhostModule(blk.ghost2, mid)
        self.out_split = ghost_split(blk.ghost2)
        if blk.shortcut is None:
            if in_split != self.out_split:
                raise ConfigError(f"split: identity shortcut with input parts {in_split} != output {self.out_split}")
            self.shortcut = None
        else:
            dw, pw = blk.shortcut
            self.shortcut = nn.Sequential(
                PartsConv(_folded(dw), in_split, in_split, dw.act), PartsConv(_folded(pw), in_split, self.out_split)
            )

    def forward(self, parts: list[Tensor]) -> list[Tensor]:
        shortcut = parts if self.shortcut is None else self.shortcut(parts)
        x = self.ghost1(parts)
        if self.conv_dw is not None:
            x = self.conv_dw(x)
        if self.se_reduce is not None:
            (s,) = self.se_reduce([F.adaptive_avg_pool2d(p, 1) for p in x])
            gates = self.se_expand([s])
            x = [p * F.hardsigmoid(g) for p, g in zip(x, gates, strict=True)]
        return [y + s for y, s in zip(self.ghost2(x), shortcut, strict=True)]
