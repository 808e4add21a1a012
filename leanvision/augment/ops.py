"""The 16 AutoAugment operations on uint8 image batches (torchvision transforms.v2 functional ops underneath).

Magnitudes come in ``NUM_LEVELS`` levels; level ``l`` of an op is ``l / (NUM_LEVELS - 1)`` of its largest value, so
level 0 is the identity wherever the op has a magnitude. Signed ops are mirrored (``-v``) by the caller.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from leanvision.errors import ConfigError
from leanvision.registry import unknown_choice

NUM_LEVELS = 10
FILL = 128  # gray, AutoAugment's fill for pixels moved in from outside the image

# fn(images [N, C, H, W] uint8, value, u [N, 2] uniform in [0, 1), pairs [N, C, H, W] or None) -> uint8 images
OpFn = Callable[[Tensor, float, Tensor, "Tensor | None"], Tensor]


@dataclass(frozen=True)
class AugOp:
    """An op, the largest magnitude its top level reaches (None: the op has none) and whether it is mirrored."""

    name: str
    fn: OpFn
    max_value: float | None
    signed: bool = False

    def value(self, level: int) -> float:
        """The (unsigned) magnitude of ``level``; a level outside 0..NUM_LEVELS-1 is a ConfigError."""
        check_level(self.name, level)
        return 0.0 if self.max_value is None else level / (NUM_LEVELS - 1) * self.max_value


def check_level(op: str, level: object, where: str = "") -> int:
    """``level`` when it is an int in 0..NUM_LEVELS-1, else a one-line ConfigError."""
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level < NUM_LEVELS:
        raise ConfigError(f"magnitude {level!r} of {op}{where} is out of range: give an integer level "
                          f"0..{NUM_LEVELS - 1}")  # fmt: skip
    return level


def _affine(x: Tensor, **kw: object) -> Tensor:
    kw = {"angle": 0.0, "translate": [0, 0], "scale": 1.0, "shear": [0.0, 0.0], **kw}
    return TF.affine(x, **kw, interpolation=TF.InterpolationMode.NEAREST, fill=FILL, center=[0, 0])  # type: ignore[arg-type]


def cutout(x: Tensor, size: int, u: Tensor) -> Tensor:
    """Gray out a ``size`` x ``size`` square per image, centred at ``u`` (fractions of height and width)."""
    if size <= 0:
        return x
    h, w = x.shape[-2:]
    cy, cx = (u[:, 0] * h).long(), (u[:, 1] * w).long()
    rows, cols = torch.arange(h), torch.arange(w)
    in_y = (rows >= (cy - size // 2)[:, None]) & (rows < (cy - size // 2 + size)[:, None])
    in_x = (cols >= (cx - size // 2)[:, None]) & (cols < (cx - size // 2 + size)[:, None])
    return x.masked_fill((in_y[:, :, None] & in_x[:, None, :])[:, None], FILL)


def _solarize(x: Tensor, v: float) -> Tensor:
    threshold = 256 - v  # level 0: 256, above every uint8 value, so no pixel is inverted
    return x if threshold > 255 else TF.solarize(x, threshold)


def _sample_pairing(x: Tensor, v: float, pairs: Tensor | None) -> Tensor:
    assert pairs is not None
    return ((1 - v) * x.float() + v * pairs.float()).round_().to(torch.uint8)


_OPS = (
    AugOp("ShearX", lambda x, v, u, p: _affine(x, shear=[math.degrees(math.atan(v)), 0.0]), 0.3, True),
    AugOp("ShearY", lambda x, v, u, p: _affine(x, shear=[0.0, math.degrees(math.atan(v))]), 0.3, True),
    AugOp("TranslateX", lambda x, v, u, p: _affine(x, translate=[round(v * x.shape[-1]), 0]), 0.45, True),
    AugOp("TranslateY", lambda x, v, u, p: _affine(x, translate=[0, round(v * x.shape[-2])]), 0.45, True),
    AugOp("Rotate", lambda x, v, u, p: TF.rotate(x, v, fill=FILL), 30.0, True),  # type: ignore[arg-type]
    AugOp("AutoContrast", lambda x, v, u, p: TF.autocontrast(x), None),
    AugOp("Invert", lambda x, v, u, p: TF.invert(x), None),
    AugOp("Equalize", lambda x, v, u, p: TF.equalize(x), None),
    AugOp("Solarize", lambda x, v, u, p: _solarize(x, v), 256.0),
    AugOp("Posterize", lambda x, v, u, p: TF.posterize(x, 8 - round(v)), 4.0),  # 8 bits (level 0) down to 4
    AugOp("Contrast", lambda x, v, u, p: TF.adjust_contrast(x, 1 + v), 0.9, True),  # factors 0.1..1.9
    AugOp("Color", lambda x, v, u, p: TF.adjust_saturation(x, 1 + v), 0.9, True),
    AugOp("Brightness", lambda x, v, u, p: TF.adjust_brightness(x, 1 + v), 0.9, True),
    AugOp("Sharpness", lambda x, v, u, p: TF.adjust_sharpness(x, 1 + v), 0.9, True),
    AugOp("Cutout", lambda x, v, u, p: cutout(x, round(v * min(x.shape[-2:])), u), 0.2),  # side, of the image
    AugOp("SamplePairing", lambda x, v, u, p: _sample_pairing(x, v, p), 0.4),  # weight of the other image
)
OPS: dict[str, AugOp] = {op.name: op for op in _OPS}
OP_NAMES: tuple[str, ...] = tuple(OPS)


def get_op(name: str) -> AugOp:
    """The op called ``name``; an unknown name is a one-line error naming the closest one."""
    if name not in OPS:
        raise unknown_choice("augmentation op", name, OP_NAMES)
    return OPS[name]


def value_table() -> Tensor:
    """``[len(OP_NAMES), NUM_LEVELS]`` float64: the unsigned magnitude of every (op, level)."""
    return torch.tensor([[op.value(lv) for lv in range(NUM_LEVELS)] for op in _OPS], dtype=torch.float64)


def apply_op(name: str, images: Tensor, values: Tensor, *, u: Tensor, pairs: Tensor | None = None) -> Tensor:
    """``name`` with a (signed) magnitude per image; images sharing a magnitude go through one batched call.

    ``u`` [N, 2] in [0, 1) places Cutout's square; ``pairs`` are SamplePairing's partner images.
    """
    op = get_op(name)
    if op.name == "SamplePairing" and pairs is None:
        raise ConfigError("SamplePairing blends each image with a partner: pass pairs (one image per image)")
    if op.max_value is None:
        return op.fn(images, 0.0, u, pairs)
    out = images.clone()
    for v in values.unique().tolist():
        idx = (values == v).nonzero().flatten()
        out[idx] = op.fn(images[idx], v, u[idx], None if pairs is None else pairs[idx])
    return out
