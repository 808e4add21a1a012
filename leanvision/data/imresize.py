"""MATLAB's ``imresize`` (bicubic, antialiased when shrinking): the degradation the SR literature's LR images use.

A port of MATLAB's algorithm (``contributions`` + ``resizeAlongDim``): a cubic kernel with a = -0.5, widened by
1/scale when shrinking, symmetric ("mirror with the edge repeated") borders, rows resized before columns, and a
``uint8`` input rounded (half away from zero) and clamped back to ``uint8`` after each dimension, as MATLAB does.
The shared Set5/Set14 ``LR_bicubic`` files are reproduced bit-exactly by it (tests/test_sr_data.py).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from leanvision.errors import ConfigError


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    return (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))


@functools.lru_cache(maxsize=256)
def contributions(in_len: int, out_len: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB's ``contributions``: (weights, 0-based input indices), one row of taps per output pixel."""
    width = 4.0 / scale if scale < 1 else 4.0  # antialiasing: the kernel stretched by 1/scale when shrinking
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = math.ceil(width) + 2
    idx = left[:, None] + np.arange(taps)[None, :]
    dist = u[:, None] - idx
    w = scale * cubic(scale * dist) if scale < 1 else cubic(dist)
    w = w / w.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])  # symmetric borders
    idx = mirror[np.mod(idx.astype(np.int64) - 1, 2 * in_len)]
    keep = np.any(w != 0, axis=0)  # MATLAB drops tap columns that are zero for every output pixel
    return w[:, keep], idx[:, keep]


def _resize_dim(img: np.ndarray, axis: int, out_len: int, scale: float, as_uint8: bool) -> np.ndarray:
    w, idx = contributions(img.shape[axis], out_len, scale)
    taken = np.take(img.astype(np.float64), idx, axis=axis)  # (..., out, taps, ...) along ``axis``
    shape = [1] * taken.ndim
    shape[axis], shape[axis + 1] = w.shape
    out = (taken * w.reshape(shape)).sum(axis=axis + 1)
    if as_uint8:
        return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)
    return out


def imresize(img: np.ndarray, scale: float) -> np.ndarray:
    """Resize an ``H x W`` or ``H x W x C`` image by ``scale`` as MATLAB's ``imresize(img, scale, 'bicubic')``.

    ``uint8`` in, ``uint8`` out (rounded as MATLAB rounds); a float image stays float (no rounding). The output
    size is ``ceil(H * scale) x ceil(W * scale)``, MATLAB's.
    """
    if not scale > 0:
        raise ConfigError(f"imresize: scale must be > 0, got {scale}")
    img = np.asarray(img)
    if img.ndim not in (2, 3):
        raise ConfigError(f"imresize: need an H x W or H x W x C image, got shape {img.shape}")
    as_uint8 = img.dtype == np.uint8
    out = img
    for axis in (0, 1):  # rows first: MATLAB orders the dimensions by scale, ties by dimension
        out = _resize_dim(out, axis, math.ceil(img.shape[axis] * scale), scale, as_uint8)
    return out


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """The top-left part of ``img`` whose height and width are multiples of ``scale`` (the SR convention)."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]
