"""The dataset registry: name -> builder(root, split, image_size) -> ImageDataset."""

from __future__ import annotations

from leanvision.data.dataset import ImageDataset
from leanvision.registry import Registry

DATASETS: Registry[ImageDataset] = Registry("dataset")
