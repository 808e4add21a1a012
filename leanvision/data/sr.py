"""Super-resolution data: HR/LR image pairs, training patches, and the field's Y-channel PSNR / SSIM.

Layout (the standard SR packaging): ``<data dir>/SR/<set>/HR/*.png`` and, where a set ships them,
``<set>/LR_bicubic/X<s>/<name>x<s>.png``. A set without LR files (T91, B100) gets them from MATLAB-style bicubic
(:func:`leanvision.data.imresize.imresize`) of the mod-cropped HR image, which reproduces the shipped files exactly.
Evaluation follows the literature: the output rounded to 8 bits, the Y channel of ITU-R BT.601 YCbCr
(MATLAB's ``rgb2ycbcr``), ``scale`` pixels cropped from each border, PSNR with peak 255 and SSIM of Wang et al.
(Gaussian 11x11 window, sigma 1.5).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from leanvision.data._fs import resolve_root
from leanvision.data.imresize import imresize, modcrop
from leanvision.errors import ConfigError, DataError

SR_SETS = ("T91", "Set5", "Set14", "B100")
SR_LAYOUT = "SR/<set>/HR/*.png (sets T91, Set5, Set14, B100) and optionally SR/<set>/LR_bicubic/X<scale>/"
SCALES = (2, 3, 4)


@dataclass(frozen=True)
class SRPair:
    """One image: ``hr`` (mod-cropped to a multiple of the scale) and ``lr``, both uint8 ``H x W x 3``."""

    name: str
    hr: np.ndarray
    lr: np.ndarray


def check_scale(scale: int) -> int:
    """``scale`` when it is one the SR models build (2, 3 or 4), else a one-line ConfigError."""
    if scale not in SCALES:
        raise ConfigError(f"scale must be one of {', '.join(map(str, SCALES))}, got {scale!r}")
    return scale


def read_rgb(path: Path) -> np.ndarray:
    """An image file as uint8 ``H x W x 3`` (grey images are repeated to three channels, as SR code reads them)."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DataError(f"image not found: {path}; check the path")
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))  # writable (torch.from_numpy warns on read-only arrays)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path} ({str(e).split(' <', 1)[0]}): not an image, or corrupt") from None


def _set_dir(name: str, root: str | os.PathLike[str] | None) -> Path:
    base = resolve_root(root, dataset=name, layouts=SR_LAYOUT)
    for folder in (base / "SR" / name, base / name):
        if (folder / "HR").is_dir():
            return folder
    raise DataError(f"no {name} in {base}: expected {base / 'SR' / name / 'HR'}/*.png (layout: {SR_LAYOUT})")


@functools.lru_cache(maxsize=16)
def _load(folder: Path, scale: int) -> tuple[SRPair, ...]:
    lr_root = folder / "LR_bicubic"
    lr_dir = lr_root / f"X{scale}"
    if lr_root.is_dir() and not lr_dir.is_dir():
        have = sorted(p.name[1:] for p in lr_root.glob("X*") if p.is_dir())
        raise DataError(f"{folder.name} has no LR files for scale {scale} ({lr_dir} is missing; it has scale "
                        f"{', '.join(have) or 'none'}): choose one of those scales")  # fmt: skip
    hr_files = sorted(p for p in (folder / "HR").iterdir() if p.suffix.lower() in (".png", ".bmp", ".jpg", ".tif"))
    if not hr_files:
        raise DataError(f"{folder / 'HR'} holds no images")
    pairs = []
    for path in hr_files:
        full = read_rgb(path)
        if min(full.shape[:2]) < scale:
            raise DataError(f"{path} is {full.shape[1]}x{full.shape[0]} pixels, too small for scale {scale}")
        hr = modcrop(full, scale)
        if lr_dir.is_dir():
            lr = read_rgb(lr_dir / f"{path.stem}x{scale}.png")
            if lr.shape[0] * scale != hr.shape[0] or lr.shape[1] * scale != hr.shape[1]:
                raise DataError(f"{lr_dir / f'{path.stem}x{scale}.png'} is not {path.name} reduced {scale}x "
                                f"({lr.shape[1]}x{lr.shape[0]} vs {hr.shape[1]}x{hr.shape[0]})")  # fmt: skip
        else:
            lr = imresize(hr, 1 / scale)
        pairs.append(SRPair(path.stem, hr, lr))
    return tuple(pairs)


def load_sr_set(name: str, scale: int, *, root: str | os.PathLike[str] | None = None) -> list[SRPair]:
    """The HR/LR pairs of an SR set (``SR_SETS`` or any folder with the same layout) at ``scale``, sorted by name."""
    return list(_load(_set_dir(name, root), check_scale(scale)))


def split_pairs(pairs: Sequence[SRPair], val_images: int, *, seed: int = 0) -> tuple[list[SRPair], list[SRPair]]:
    """(train, val): ``val_images`` pairs held out by a seeded permutation, so a search never scores on a test set."""
    if not 0 < val_images < len(pairs):
        raise ConfigError(f"val_images must be between 1 and {len(pairs) - 1} (of {len(pairs)} images), "
                          f"got {val_images}")  # fmt: skip
    order = np.random.default_rng(seed).permutation(len(pairs))
    held = set(order[:val_images].tolist())
    return [p for i, p in enumerate(pairs) if i not in held], [p for i, p in enumerate(pairs) if i in held]


# ---------------------------------------------------------------------------------------------- tensors, metrics


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 ``H x W x 3`` -> float32 ``3 x H x W`` in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255)


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """float ``3 x H x W`` in [0, 1] -> uint8 ``H x W x 3``, rounded to 8 bits as a saved image is."""
    return t.detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """The Y channel (16..235) of uint8 RGB as float64: MATLAB's ``rgb2ycbcr`` (ITU-R BT.601) without rounding."""
    rgb = np.asarray(img, dtype=np.float64) / 255.0
    return 16.0 + 65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]


def _crop(img: np.ndarray, border: int) -> np.ndarray:
    return img[border:-border, border:-border] if border else img


def _y_pair(sr: np.ndarray, hr: np.ndarray, border: int) -> tuple[np.ndarray, np.ndarray]:
    if sr.shape != hr.shape:
        raise ConfigError(f"SR output {sr.shape} and HR {hr.shape} differ in shape")
    if sr.dtype != np.uint8 or hr.dtype != np.uint8:
        raise ConfigError("PSNR/SSIM take 8-bit images (to_uint8 rounds a model's output)")
    return _crop(rgb_to_y(sr), border), _crop(rgb_to_y(hr), border)


def psnr_y(sr: np.ndarray, hr: np.ndarray, *, border: int) -> float:
    """Y-channel PSNR (dB, peak 255) of uint8 RGB images after cropping ``border`` pixels (the scale) per side."""
    a, b = _y_pair(sr, hr, border)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def _gauss(sigma: float = 1.5, radius: int = 5) -> np.ndarray:
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_y(sr: np.ndarray, hr: np.ndarray, *, border: int) -> float:
    """Y-channel SSIM (Wang et al. 2004: 11x11 Gaussian, sigma 1.5, K1 0.01, K2 0.03, L 255), 'valid' window."""
    from scipy.ndimage import correlate1d

    a, b = _y_pair(sr, hr, border)
    g = _gauss()

    def blur(x: np.ndarray) -> np.ndarray:
        return _crop(correlate1d(correlate1d(x, g, axis=0, mode="reflect"), g, axis=1, mode="reflect"), 5)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ma, mb = blur(a), blur(b)
    va, vb, cov = blur(a * a) - ma**2, blur(b * b) - mb**2, blur(a * b) - ma * mb
    s = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    return float(s.mean())


# ------------------------------------------------------------------------------------------------ training patches


class PatchLoader:
    """Batches of aligned (LR, HR) patches, float32 NCHW in [0, 1], drawn at random from ``pairs``.

    Each batch: ``batch_size`` patches of ``patch`` x ``patch`` LR pixels (HR: ``scale`` times larger) from images
    drawn uniformly, each flipped horizontally / vertically and rotated by 90 degrees at random (``augment``).
    ``batches_per_epoch`` batches per epoch; the draws depend only on (seed, epoch), so a resumed fit replays them.
    """

    def __init__(self, pairs: Sequence[SRPair], *, scale: int, patch: int = 32, batch_size: int = 16,
                 batches_per_epoch: int = 100, seed: int = 0, augment: bool = True) -> None:  # fmt: skip
        if not pairs:
            raise ConfigError("PatchLoader needs at least one image pair")
        small = [p.name for p in pairs if min(p.lr.shape[:2]) < patch]
        if small:
            raise ConfigError(f"patch {patch} is larger than the LR image of {small[0]}: choose a smaller patch")
        if batch_size < 1 or batches_per_epoch < 1:
            raise ConfigError(f"batch_size and batches_per_epoch must be >= 1, got {batch_size}, {batches_per_epoch}")
        self.pairs, self.scale, self.patch, self.batch_size = list(pairs), scale, patch, batch_size
        self.batches_per_epoch, self.seed, self.augment, self.epoch = batches_per_epoch, seed, augment, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        p, s = self.patch, self.scale
        for _ in range(self.batches_per_epoch):
            lrs, hrs = [], []
            for i in rng.integers(len(self.pairs), size=self.batch_size):
                pair = self.pairs[i]
                y = int(rng.integers(pair.lr.shape[0] - p + 1))
                x = int(rng.integers(pair.lr.shape[1] - p + 1))
                lr = pair.lr[y : y + p, x : x + p]
                hr = pair.hr[y * s : (y + p) * s, x * s : (x + p) * s]
                if self.augment:
                    hflip, vflip, rot = rng.integers(2, size=3)
                    lr, hr = _augment(lr, hflip, vflip, rot), _augment(hr, hflip, vflip, rot)
                lrs.append(lr)
                hrs.append(hr)
            yield _batch(lrs), _batch(hrs)


def _augment(img: np.ndarray, hflip: int, vflip: int, rot: int) -> np.ndarray:
    if hflip:
        img = img[:, ::-1]
    if vflip:
        img = img[::-1]
    return np.rot90(img) if rot else img


def _batch(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.stack(images))).permute(0, 3, 1, 2).float().div_(255)
