"""An in-memory image classification dataset: uint8 images, int64 targets, normalisation constants."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from leanvision.errors import ConfigError, DataError


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 ``[..., C, H, W]`` -> float32 ``(x / 255 - mean) / std``; ``mean``/``std`` shaped ``[C, 1, 1]``."""
    return images.to(torch.float32).div_(255.0).sub_(mean).div_(std)


def channel_stats(images: torch.Tensor, *, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 ``[N, C, H, W]`` images, on the 0..1 scale."""
    if images.numel() == 0:
        raise DataError("cannot compute channel statistics of an empty dataset; add images to it")
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk):  # chunks keep the float64 copy small
        x = images[start : start + chunk].to(torch.float64).div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.square().sum(dim=(0, 2, 3))
    n = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / n
    std = (total_sq / n - mean.square()).clamp_min(0).sqrt().clamp_min(1e-6)
    return tuple(mean.tolist()), tuple(std.tolist())


def balanced_subset_indices(
    targets: torch.Tensor, k: int, *, num_classes: int, seed: int = 0, classes: Sequence[str] | None = None
) -> torch.Tensor:
    """Sorted indices of ``k`` examples, ``k // num_classes`` per class, the remainder to the first classes."""
    n = targets.shape[0]
    if not isinstance(k, int) or isinstance(k, bool):
        raise ConfigError(f"subset must be an integer number of examples, got {k!r}")
    if k > n:
        raise ConfigError(f"subset={k} exceeds the {n} examples in this split; pass subset <= {n}")
    if k < num_classes:
        raise ConfigError(
            f"subset={k} is smaller than the number of classes ({num_classes}); a class-balanced subset "
            f"needs subset >= {num_classes}"
        )
    per, extra = divmod(k, num_classes)
    gen = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(num_classes):
        want = per + (1 if c < extra else 0)
        pool = torch.nonzero(targets == c).flatten()
        if pool.numel() < want:
            label = classes[c] if classes is not None else str(c)
            raise ConfigError(
                f"subset={k} needs {want} examples of class '{label}' but the split has {pool.numel()}; "
                f"pass a smaller subset"
            )
        chosen.append(pool[torch.randperm(pool.numel(), generator=gen)[:want]])
    return torch.cat(chosen).sort().values


class ImageDataset(Dataset):
    """Decoded images kept in memory as uint8 ``[N, C, H, W]``; ``ds[i]`` is (normalised CHW float, label)."""

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        *,
        classes: Sequence[str],
        name: str,
        split: str,
        mean: Sequence[float],
        std: Sequence[float],
        train_augment: bool = False,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ConfigError(f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
        if targets.dim() != 1 or targets.shape[0] != images.shape[0]:
            raise ConfigError(
                f"targets must be 1-d with one label per image ({images.shape[0]}), got {tuple(targets.shape)}"
            )
        if len(mean) != images.shape[1] or len(std) != images.shape[1]:
            raise ConfigError(f"mean/std need {images.shape[1]} values (one per channel), got {mean}, {std}")
        self.images = images.contiguous()
        self.targets = targets.to(torch.int64)
        self.classes = list(classes)
        self.name = name
        self.split = split
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.train_augment = train_augment

    @property
    def input_size(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def mean_std_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``mean`` and ``std`` as float32 ``[C, 1, 1]`` tensors, ready for :func:`normalize`."""
        return (
            torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1),
            torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1),
        )

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        mean, std = self.mean_std_tensors()
        return normalize(self.images[index], mean, std), int(self.targets[index])

    def _replace(self, images: torch.Tensor, targets: torch.Tensor, *, split: str | None = None) -> ImageDataset:
        return ImageDataset(
            images,
            targets,
            classes=self.classes,
            name=self.name,
            split=self.split if split is None else split,
            mean=self.mean,
            std=self.std,
            train_augment=self.train_augment,
        )

    def subset(self, k: int, *, seed: int = 0) -> ImageDataset:
        """A seeded, class-balanced subset of ``k`` examples (same mean/std as the full split)."""
        idx = balanced_subset_indices(self.targets, k, num_classes=self.num_classes, seed=seed, classes=self.classes)
        return self._replace(self.images[idx], self.targets[idx])

    def split_off(self, size: int | float, *, seed: int = 0) -> tuple[ImageDataset, ImageDataset]:
        """``(rest, held_out)``: a seeded, class-balanced held-out part (split "val") and the remaining examples.

        ``size`` is a count or a fraction in (0, 1) of this dataset. The held-out part depends only on the
        dataset and ``seed``, so every run that uses the same seed validates on the same examples.
        """
        n = len(self)
        count = round(size * n) if isinstance(size, float) and 0 < size < 1 else size
        if isinstance(count, bool) or not isinstance(count, int) or not self.num_classes <= count < n:
            raise ConfigError(
                f"val_size must be a fraction in (0, 1) or a count in [{self.num_classes}, {n}) for the {n} "
                f"{self.split} examples of {self.name}, got {size!r}; e.g. val_size=0.1"
            )
        held = balanced_subset_indices(
            self.targets, count, num_classes=self.num_classes, seed=seed, classes=self.classes
        )
        keep = torch.ones(n, dtype=torch.bool)
        keep[held] = False
        rest = self._replace(self.images[keep], self.targets[keep])
        return rest, self._replace(self.images[held], self.targets[held], split="val")

    def resized(self, size: tuple[int, int]) -> ImageDataset:
        """All images resized to ``size`` = (H, W) with antialiased bilinear interpolation."""
        if tuple(self.images.shape[-2:]) == tuple(size):
            return self
        return self._replace(TF.resize(self.images, list(size), antialias=True), self.targets)

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"input_size={self.input_size}, num_classes={self.num_classes})"
        )
