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
    val_size: int | float = 0,
    val_seed: int = 0,
) -> ImageDataset:
    """Load one split of a registered dataset into memory, optionally resized and class-balanced subsetted.

    ``split="val"`` is a held-out part of the training split: ``val_size`` examples (a count, or a fraction of
    the training split), class-balanced and fixed by ``val_seed``; with ``val_size`` set, ``split="train"``
    returns the training split without them, so the two never overlap. ``subset`` (seeded by ``seed``) is then
    drawn from the requested part. Pick models on "val"; report on "test".
    """
    builder = DATASETS.get(name)
    meta = DATASETS.meta(name)
    splits = meta.get("splits")
    held_out = split == "val" and (val_size or splits is not None)  # an image folder may have its own val/
    if held_out:
        if not val_size:
            raise ConfigError(
                "split='val' is held out from the training split: pass val_size (e.g. val_size=0.1) to say how much"
            )
    elif splits is not None and split not in splits:
        raise ConfigError(f"dataset '{name}' has splits {', '.join((*splits, 'val'))}; got split={split!r}")
    size = _as_size(image_size)
    base = resolve_root(root, dataset=name, layouts=meta["layouts"]) if meta["needs_root"] else None
    ds = builder(root=base, split="train" if held_out else split, image_size=size)
    if size is not None:
        ds = ds.resized(size)
    if val_size and split in ("train", "val"):  # "train" without the held-out part, or that part
        rest, held = ds.split_off(val_size, seed=val_seed)
        ds = held if split == "val" else rest
    if subset is not None:
        ds = ds.subset(subset, seed=seed)
    return ds
