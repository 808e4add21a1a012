"""Synthetic distribution shifts for trying operational calibration on a registered dataset."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from leanvision.data import ImageDataset
from leanvision.errors import ConfigError

KINDS = ("rotate", "darken")


def apply_shift(ds: ImageDataset, kind: str, *, degrees: Sequence[float] = (25.0, 45.0), factor: float = 0.5,
                classes: Sequence[int] | None = None, seed: int = 0) -> ImageDataset:  # fmt: skip
    """A copy of ``ds`` with the shift applied to every image (global) or only to those whose label is in
    ``classes`` (class-local). ``rotate``: each image by a seeded angle drawn uniformly from ``degrees`` (a (low,
    high) range in degrees, counter-clockwise); ``darken``: pixel values times ``factor``."""
    from torchvision.transforms.v2 import functional as TF

    if kind not in KINDS:
        raise ConfigError(f"unknown shift '{kind}'; choose one of {', '.join(KINDS)}")
    if classes is not None:
        bad = [c for c in classes if not 0 <= int(c) < ds.num_classes]
        if bad:
            raise ConfigError(f"shift classes {bad} are not class indices of '{ds.name}' (0-{ds.num_classes - 1})")
    mask = torch.ones(len(ds), dtype=torch.bool) if classes is None else torch.isin(ds.targets, torch.tensor(classes))
    images = ds.images.clone()
    idx = mask.nonzero().flatten()
    if kind == "rotate":
        lo, hi = (float(d) for d in degrees)
        if not lo <= hi:
            raise ConfigError(f"rotate: degrees must be (low, high) with low <= high, got {tuple(degrees)}")
        angles = torch.empty(len(idx)).uniform_(lo, hi, generator=torch.Generator().manual_seed(seed))
        for i, a in zip(idx.tolist(), angles.tolist(), strict=True):
            images[i] = TF.rotate(images[i], a, interpolation=TF.InterpolationMode.BILINEAR)
    else:
        if not 0 <= factor <= 1:
            raise ConfigError(f"darken: factor must be in [0, 1], got {factor}")
        images[idx] = (images[idx].float() * factor).round().to(torch.uint8)
    return ds._replace(images, ds.targets)
