"""``load_dataset``: one entry point for every registered dataset."""

from __future__ import annotations

import os

# Imported for their registrations.
from leanvision.data import cifar, digits, folder, mnist  # noqa: F401
from leanvision.data._fs import resolve_root
from leanvision.data._registry import DATASETS
from leanvision.data.dataset import ImageDataset
from leanvision.errors import ConfigError


def _as_size(image_size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ConfigError(f"image_size must be a positive int or (height, width), got {image_size!r}")
    return size  # type: ignore[return-value]


def list_datasets(pattern: str = "*") -> list[str]:
    """Registered dataset names matching ``pattern``."""
    return DATASETS.list(pattern)


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike[str] | None = None,
    split: str = "train",
    subset: int | None = None,
    seed: int = 0,
    image_size: int | tuple[int, int] | None = None,
) -> ImageDataset:
    """Load one split of a registered dataset into memory, optionally resized and class-balanced subsetted."""
    builder = DATASETS.get(name)
    meta = DATASETS.meta(name)
    splits = meta.get("splits")
    if splits is not None and split not in splits:
        raise ConfigError(f"dataset '{name}' has splits {', '.join(splits)}; got split={split!r}")
    size = _as_size(image_size)
    base = resolve_root(root, dataset=name, layouts=meta["layouts"]) if meta["needs_root"] else None
    ds = builder(root=base, split=split, image_size=size)
    if size is not None:
        ds = ds.resized(size)
    if subset is not None:
        ds = ds.subset(subset, seed=seed)
    return ds
