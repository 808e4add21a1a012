"""scikit-learn's 8x8 digits: the embedded default dataset, needs no files."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from leanvision.data._registry import DATASETS
from leanvision.data.dataset import ImageDataset, channel_stats


@functools.cache
def digits_split() -> dict[str, np.ndarray]:
    """Fixed stratified 80/20 split: within each class (in file order) every 5th example is a test example."""
    from sklearn import datasets as sk_datasets

    bunch = sk_datasets.load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # 0..16 -> 0..255
    targets = bunch.target.astype(np.int64)
    is_test = np.zeros(len(targets), dtype=bool)
    for c in range(10):
        idx = np.flatnonzero(targets == c)
        is_test[idx[4::5]] = True
    return {"images": images, "targets": targets, "is_test": is_test}


@DATASETS.register("digits", needs_root=False, splits=("train", "test"), layouts="nothing (embedded in scikit-learn)")
def load_digits(*, root: Path | None, split: str, image_size: tuple[int, int] | None) -> ImageDataset:
    """The 1,797 8x8 grayscale digits; mean/std are computed from the training split."""
    d = digits_split()
    images, targets = torch.from_numpy(d["images"]), torch.from_numpy(d["targets"])
    train = torch.from_numpy(~d["is_test"])
    mean, std = channel_stats(images[train])
    keep = train if split == "train" else ~train
    return ImageDataset(
        images[keep],
        targets[keep],
        classes=[str(i) for i in range(10)],
        name="digits",
        split=split,
        mean=mean,
        std=std,
    )
