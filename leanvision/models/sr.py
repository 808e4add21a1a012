"""Super-resolution networks: ESRN's efficient residual dense blocks (arXiv 1909.11409) and the classic baselines.

ESRN (Song et al., "Efficient Residual Dense Block Search for Image Super-Resolution", AAAI 2020) is RDN-shaped:
a 3x3 conv (F_-1), a 3x3 conv, D searched blocks, global feature fusion (concat of every block's output, 1x1 to
G0, 3x3) plus F_-1, and a pixel-shuffle upsampler. A block is written ``"T_C_G_O"``: type T, C conv layers, growth
rate G, O output channels. The three types, after the authors' code (huawei-noah/vega ``erdb_esr.py``):

* ``S`` shrink: a dense chain whose running concat is shrunk back to G by a 1x1 after every 3x3 conv (the last
  shrink gives O);
* ``G`` group: RDB dense layers (layer c reads (c+1)G channels) as 3x3 group convs, groups min(4, 2^floor(log2(c+1))),
  after a channel shuffle of c+1 groups; a 1x1 fuses (C+1)G to O;
* ``C`` contextual: 2x2 average pooling, a dense chain at half resolution whose 3x3 convs are each applied three
  times with shared weights, a pixel shuffle of the concat back to full resolution and a 1x1 to O.

A block maps its input to G by a 1x1 when the widths differ, and adds a residual: the input when O equals it, the
1x1-mapped input when O = G, else a 1x1 of the input to O. Deviations from vega, stated: x3 upsamples with a 3x3
conv G0 -> 9·(3G0/4) and PixelShuffle(3) (vega's x3 branch cannot run); an LR input of odd size is padded (edge
replicated) to even when a contextual block needs it, and the output cropped back.

Costs are closed forms (:func:`block_cost`, :func:`esrn_cost`) equal to ``leanvision.profile``'s count (MACs of
convolutions, biases not counted; params with biases). The papers' Multi-Adds are at a 1280x720 output
(:func:`lr_size_720p`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leanvision.data.imresize import contributions
from leanvision.data.sr import check_scale
from leanvision.errors import ConfigError
from leanvision.models._registry import ARCH_ATTR
from leanvision.registry import Registry

BLOCK_TYPES = ("S", "G", "C")
HR_720P = (720, 1280)  # (H, W) of the output the papers' Multi-Adds are counted at

SR_MODELS: Registry[nn.Module] = Registry("SR model", hint="Known: see leanvision.models.list_sr_models().")


def lr_size_720p(scale: int) -> tuple[int, int]:
    """The LR (H, W) whose output is 1280x720 (x3: 240x426, output 1278x720)."""
    return HR_720P[0] // scale, HR_720P[1] // scale


def parse_block(code: str) -> tuple[str, int, int, int]:
    """``"T_C_G_O"`` -> (type, conv layers, growth rate, output channels), checked."""
    parts = str(code).split("_")
    try:
        kind, c, g, o = parts[0], int(parts[1]), int(parts[2]), int(parts[3])
    except (IndexError, ValueError):
        raise ConfigError(f"a block is written T_C_G_O (e.g. S_4_16_24), got {code!r}") from None
    if len(parts) != 4 or kind not in BLOCK_TYPES or min(c, g, o) < 1:
        raise ConfigError(f"bad block {code!r}: type one of {', '.join(BLOCK_TYPES)}, C, G and O positive integers")
    if kind == "G" and g % min(4, 2 ** int(math.log2(c))):
        raise ConfigError(f"bad block {code!r}: a group block's growth rate must divide into its conv groups (4)")
    if kind == "C" and ((c + 1) * g) % 4:
        raise ConfigError(f"bad block {code!r}: a contextual block needs (C+1)*G divisible by 4 (pixel shuffle)")
    return kind, c, g, o


def _conv(cin: int, cout: int, k: int, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups)


def _groups(c: int) -> int:
    """Conv groups of a group block's layer c (0-based): min(4, 2^floor(log2(c+1)))."""
    return min(4, 2 ** int(math.log2(c + 1)))


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """ShuffleNet's channel shuffle: (groups, C/groups) -> (C/groups, groups)."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class _Block(nn.Module):
    """The in/out 1x1 maps and the residual every efficient RDB shares."""

    def __init__(self, in_chs: int, code: str) -> None:
        super().__init__()
        self.kind, self.C, self.G, self.out_chs = parse_block(code)
        self.in_chs, self.code = in_chs, code
        self.in_conv = _conv(in_chs, self.G, 1) if in_chs != self.G else None
        self.out_conv = _conv(in_chs, self.out_chs, 1) if self.out_chs not in (self.G, in_chs) else None

    def forward(self, x: Tensor) -> Tensor:
        x_g = self.in_conv(x) if self.in_conv is not None else x
        body = self.body(x_g)
        if self.out_chs == self.in_chs:
            return x + body
        if self.out_chs == self.G:
            return x_g + body
        return self.out_conv(x) + body


class ShrinkRDB(_Block):
    """ESRN's shrink block ``S``: every 3x3 conv's running concat shrunk back to G by a 1x1 (the last to O)."""

    def __init__(self, in_chs: int, code: str) -> None:
        super().__init__(in_chs, code)
        C, G, out = self.C, self.G, self.out_chs
        self.convs = nn.ModuleList(nn.Sequential(_conv(G, G, 3), nn.ReLU(inplace=True)) for _ in range(C))
        self.shrinks = nn.ModuleList(_conv((2 + i) * G, out if i == C - 1 else G, 1) for i in range(C))

    def body(self, x: Tensor) -> Tensor:
        concat, h = x, x
        for conv, shrink in zip(self.convs, self.shrinks, strict=True):
            concat = torch.cat([concat, conv(h)], 1)
            h = shrink(concat)
        return h


class GroupRDB(_Block):
    """ESRN's group block ``G``: RDB dense layers as shuffled 3x3 group convs, a 1x1 fusing (C+1)G to O."""

    def __init__(self, in_chs: int, code: str) -> None:
        super().__init__(in_chs, code)
        C, G = self.C, self.G
        self.convs = nn.ModuleList(nn.Sequential(_conv((c + 1) * G, G, 3, _groups(c)), nn.ReLU(inplace=True))
                                   for c in range(C))  # fmt: skip
        self.fuse = _conv((C + 1) * G, self.out_chs, 1)

    def body(self, x: Tensor) -> Tensor:
        for c, conv in enumerate(self.convs):
            x = torch.cat([x, conv(channel_shuffle(x, c + 1))], 1)
        return self.fuse(x)


class ContextualRDB(_Block):
    """ESRN's contextual block ``C``: pooled by 2, a dense chain of recursive 3x3 convs (each applied 3 times with
    shared weights), pixel-shuffled back to full resolution, a 1x1 to O. Needs an even height and width."""

    def __init__(self, in_chs: int, code: str) -> None:
        super().__init__(in_chs, code)
        C, G, out = self.C, self.G, self.out_chs
        self.convs = nn.ModuleList(nn.Sequential(_conv(G, G, 3), nn.ReLU(inplace=True)) for _ in range(C))
        self.shrinks = nn.ModuleList(_conv((2 + i) * G, G, 1) for i in range(C - 1))
        self.fuse = _conv((C + 1) * G // 4, out, 1)

    def body(self, x: Tensor) -> Tensor:
        h = concat = F.avg_pool2d(x, 2)
        for i, conv in enumerate(self.convs):
            y = conv(conv(conv(h)))  # recursive: one conv's weights, three times
            concat = torch.cat([concat, y], 1)
            if i < len(self.shrinks):
                h = self.shrinks[i](concat)
        return self.fuse(F.pixel_shuffle(concat, 2))


BLOCKS: dict[str, type[_Block]] = {"S": ShrinkRDB, "G": GroupRDB, "C": ContextualRDB}


def _upsampler(G0: int, scale: int, out_chs: int) -> nn.Sequential:
    if scale == 2:
        return nn.Sequential(_conv(G0, 3 * G0, 3), nn.PixelShuffle(2), _conv(3 * G0 // 4, out_chs, 3))
    if scale == 3:
        k = 3 * G0 // 4
        return nn.Sequential(_conv(G0, 9 * k, 3), nn.PixelShuffle(3), _conv(k, out_chs, 3))
    if scale == 4:
        return nn.Sequential(_conv(G0, 4 * G0, 3), nn.PixelShuffle(2), _conv(G0, 4 * G0, 3), nn.PixelShuffle(2),
                             _conv(G0, out_chs, 3))  # fmt: skip
    raise ConfigError(f"scale must be 2, 3 or 4, got {scale!r}")


class ESRN(nn.Module):
    """ESRN's macro network for a list of blocks (``"T_C_G_O"``) at ``scale`` 2, 3 or 4; input and output in [0, 1]."""

    def __init__(self, blocks: Sequence[str], *, scale: int = 2, G0: int = 32, in_chans: int = 3) -> None:
        super().__init__()
        if not blocks:
            raise ConfigError("ESRN needs at least one block")
        if G0 % 4:
            raise ConfigError(f"G0 must be a multiple of 4 (the x2 upsampler's pixel shuffle), got {G0}")
        self.scale, self.G0, self.blocks_code = scale, G0, list(blocks)
        self.sfe1, self.sfe2 = _conv(in_chans, G0, 3), _conv(G0, G0, 3)
        body, width = [], G0
        for code in blocks:
            body.append(BLOCKS[parse_block(code)[0]](width, code))
            width = body[-1].out_chs
        self.body = nn.ModuleList(body)
        self.gff = nn.Sequential(_conv(sum(b.out_chs for b in body), G0, 1), _conv(G0, G0, 3))
        self.up = _upsampler(G0, scale, in_chans)
        self.even = any(b.kind == "C" for b in body)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        if self.even and (h % 2 or w % 2):
            x = F.pad(x, (0, w % 2, 0, h % 2), mode="replicate")
        f_1 = self.sfe1(x)
        y, outs = self.sfe2(f_1), []
        for block in self.body:
            y = block(y)
            outs.append(y)
        y = self.up(self.gff(torch.cat(outs, 1)) + f_1)
        return y[..., : h * self.scale, : w * self.scale]


# ------------------------------------------------------------------------------------------------ closed forms


def _conv_cost(cin: int, cout: int, k: int, pixels: int, groups: int = 1) -> tuple[int, int]:
    w = k * k * (cin // groups) * cout
    return w + cout, w * pixels


def _add(*costs: tuple[int, int]) -> tuple[int, int]:
    return sum(c[0] for c in costs), sum(c[1] for c in costs)


def block_cost(code: str, in_chs: int, hw: tuple[int, int]) -> tuple[int, int]:
    """(params, MACs) of one block reading ``in_chs`` channels at ``hw`` = (H, W), in closed form."""
    kind, C, G, out = parse_block(code)
    px = hw[0] * hw[1]
    parts = []
    if in_chs != G:
        parts.append(_conv_cost(in_chs, G, 1, px))
    if out not in (G, in_chs):
        parts.append(_conv_cost(in_chs, out, 1, px))
    if kind == "S":
        for i in range(C):
            parts += [_conv_cost(G, G, 3, px), _conv_cost((2 + i) * G, out if i == C - 1 else G, 1, px)]
    elif kind == "G":
        parts += [_conv_cost((c + 1) * G, G, 3, px, _groups(c)) for c in range(C)]
        parts.append(_conv_cost((C + 1) * G, out, 1, px))
    else:
        quarter = ((hw[0] + 1) // 2) * ((hw[1] + 1) // 2)  # the pooled map (odd sizes are padded to even first)
        for i in range(C):
            p, m = _conv_cost(G, G, 3, quarter)
            parts.append((p, 3 * m))  # applied three times, weights shared
            if i < C - 1:
                parts.append(_conv_cost((2 + i) * G, G, 1, quarter))
        parts.append(_conv_cost((C + 1) * G // 4, out, 1, 4 * quarter))
    return _add(*parts)


def esrn_cost(blocks: Sequence[str], *, scale: int = 2, G0: int = 32, hw: tuple[int, int] | None = None,
              in_chans: int = 3) -> tuple[int, int]:  # fmt: skip
    """(params, MACs) of :class:`ESRN` at LR size ``hw`` (default: a 1280x720 output), in closed form."""
    h, w = hw or lr_size_720p(scale)
    if any(parse_block(b)[0] == "C" for b in blocks):
        h, w = h + h % 2, w + w % 2  # what forward pads to
    px = h * w
    parts = [_conv_cost(in_chans, G0, 3, px), _conv_cost(G0, G0, 3, px)]
    width = G0
    for code in blocks:
        parts.append(block_cost(code, width, (h, w)))
        width = parse_block(code)[3]
    parts += [_conv_cost(sum(parse_block(b)[3] for b in blocks), G0, 1, px), _conv_cost(G0, G0, 3, px)]
    if scale == 2:
        parts += [_conv_cost(G0, 3 * G0, 3, px), _conv_cost(3 * G0 // 4, in_chans, 3, 4 * px)]
    elif scale == 3:
        k = 3 * G0 // 4
        parts += [_conv_cost(G0, 9 * k, 3, px), _conv_cost(k, in_chans, 3, 9 * px)]
    elif scale == 4:
        parts += [
            _conv_cost(G0, 4 * G0, 3, px),
            _conv_cost(G0, 4 * G0, 3, 4 * px),
            _conv_cost(G0, in_chans, 3, 16 * px),
        ]
    else:
        raise ConfigError(f"scale must be 2, 3 or 4, got {scale!r}")
    return _add(*parts)


def hand_designed(macs: int, *, block: str = "S_4_16_16", scale: int = 2, G0: int = 32) -> list[str]:
    """The control of a search: ``block`` repeated by the shallowest depth whose Multi-Adds at 720p reach ``macs``,
    so that a searched network of ``macs`` is compared at no more than the control's cost."""
    depth = 1
    while esrn_cost([block] * depth, scale=scale, G0=G0)[1] < macs:
        depth += 1
    return [block] * depth


# -------------------------------------------------------------------------------------------------- baselines


def _matlab_upscale_taps(scale: int) -> np.ndarray:
    """Per output phase, MATLAB's bicubic taps over LR pixels offset -2..+3 (a (scale, 6) array)."""
    w, idx = contributions(16, 16 * scale, float(scale))  # interior rows repeat with period ``scale``
    taps = np.zeros((scale, 6))
    for r in range(scale):
        row = 4 * scale + r  # an output pixel far from the borders
        for weight, i in zip(w[row], idx[row], strict=True):
            taps[r, i - (row // scale) + 2] += weight
    return taps


class Bicubic(nn.Module):
    """MATLAB's bicubic ``imresize`` upscaling by ``scale`` (symmetric borders) as a fixed separable filter."""

    def __init__(self, *, scale: int = 2, in_chans: int = 3) -> None:
        super().__init__()
        taps = torch.tensor(_matlab_upscale_taps(scale), dtype=torch.float32)
        self.scale, self.in_chans = scale, in_chans
        self.register_buffer("taps", taps.reshape(scale, 1, 6), persistent=False)

    def _along_rows(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        x = torch.cat([x[:, :, 1:2].flip(2), x[:, :, :1], x, x[:, :, -1:], x[:, :, -2:-1].flip(2),
                       x[:, :, -3:-2]], 2) if h >= 3 else F.pad(x, (0, 0, 2, 3), mode="replicate")  # fmt: skip
        cols = x.permute(0, 1, 3, 2).reshape(-1, 1, h + 5)
        out = F.conv1d(cols, self.taps.to(x.dtype))  # (B*C*W, scale, h): phase r of LR row i is HR row i*s + r
        return out.reshape(b, c, w, self.scale, h).permute(0, 1, 4, 3, 2).reshape(b, c, h * self.scale, w)

    def forward(self, x: Tensor) -> Tensor:
        x = self._along_rows(x)
        return self._along_rows(x.transpose(2, 3)).transpose(2, 3)


class SRCNN(nn.Module):
    """SRCNN (Dong et al., arXiv 1501.00092), the 9-5-5 model (64, 32 filters) on the bicubic-upscaled input, RGB,
    'same' padding (the paper's valid convs shrink the image)."""

    def __init__(self, *, scale: int = 2, in_chans: int = 3) -> None:
        super().__init__()
        self.scale = scale
        self.upscale = Bicubic(scale=scale, in_chans=in_chans)
        self.body = nn.Sequential(_conv(in_chans, 64, 9), nn.ReLU(inplace=True), _conv(64, 32, 5),
                                  nn.ReLU(inplace=True), _conv(32, in_chans, 5))  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.body(self.upscale(x))


class FSRCNN(nn.Module):
    """FSRCNN (Dong, Loy & Tang, arXiv 1608.00367), d=56, s=12, m=4 on the LR image, RGB; a 9x9 deconvolution
    with stride ``scale`` upsamples."""

    def __init__(self, *, scale: int = 2, in_chans: int = 3, d: int = 56, s: int = 12, m: int = 4) -> None:
        super().__init__()
        self.scale = scale
        layers: list[nn.Module] = [_conv(in_chans, d, 5), nn.PReLU(d), _conv(d, s, 1), nn.PReLU(s)]
        for _ in range(m):
            layers += [_conv(s, s, 3), nn.PReLU(s)]
        layers += [_conv(s, d, 1), nn.PReLU(d)]
        self.body = nn.Sequential(*layers)
        self.deconv = nn.ConvTranspose2d(d, in_chans, 9, stride=scale, padding=4, output_padding=scale - 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.deconv(self.body(x))


# --------------------------------------------------------------------------------------------------- registry

# The example architecture the authors' code documents for its x2 search (huawei-noah/vega docs, esr_ea.md).
VEGA_EXAMPLE = ("G_8_16_24", "C_8_16_16", "G_4_16_24", "G_8_16_16", "S_4_24_32", "C_8_16_48", "S_4_16_24",
                "G_6_16_24", "G_8_16_16", "C_8_16_24", "S_8_16_16", "S_8_16_24", "S_8_16_32", "S_6_16_16",
                "G_6_16_64", "G_8_16_16", "S_8_16_32")  # fmt: skip


def register_sr_model(name: str, *, paper: str | None = None, **meta: Any) -> Callable:
    """Register an SR builder ``fn(*, scale, in_chans, ...)``; ``meta`` (published numbers, notes) is kept."""
    return SR_MODELS.register(name, paper=paper, **meta)


def create_sr_model(name: str, *, scale: int = 2, **kw: Any) -> nn.Module:
    """Build a registered SR model; it records its name and arguments, so a checkpoint rebuilds it."""
    kwargs = {"scale": check_scale(scale), **{k: v for k, v in kw.items() if v is not None}}
    model = SR_MODELS.create(name, **kwargs)
    setattr(model, ARCH_ATTR, {"name": name, "kwargs": kwargs})
    return model


def list_sr_models(pattern: str = "*") -> list[str]:
    """Registered SR model names matching ``pattern``."""
    return SR_MODELS.list(pattern)


@register_sr_model("bicubic", notes="MATLAB-style bicubic upscaling, no parameters")
def bicubic(*, scale: int = 2, in_chans: int = 3) -> nn.Module:
    return Bicubic(scale=scale, in_chans=in_chans)


@register_sr_model("srcnn", paper="1501.00092", paper_params=57_000, paper_macs=52.7e9,
                   paper_psnr={"Set5": 36.66, "Set14": 32.42, "B100": 31.36})  # fmt: skip
def srcnn(*, scale: int = 2, in_chans: int = 3) -> nn.Module:
    return SRCNN(scale=scale, in_chans=in_chans)


@register_sr_model("fsrcnn", paper="1608.00367")
def fsrcnn(*, scale: int = 2, in_chans: int = 3) -> nn.Module:
    return FSRCNN(scale=scale, in_chans=in_chans)


@register_sr_model("esrn", paper="1909.11409", paper_params=324_000, paper_macs=73.4e9,
                   paper_psnr={"Set5": 37.85, "Set14": 33.42, "B100": 32.10})  # fmt: skip
def esrn(*, scale: int = 2, in_chans: int = 3, blocks: Sequence[str] = VEGA_EXAMPLE, G0: int = 32) -> nn.Module:
    return ESRN(list(blocks), scale=scale, G0=G0, in_chans=in_chans)
