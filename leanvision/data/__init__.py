"""Datasets kept in memory as uint8 tensors, and a fast augmenting batch loader."""

from __future__ import annotations

from leanvision.data._fs import cache_dir, resolve_root
from leanvision.data._registry import DATASETS
from leanvision.data.cifar import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD
from leanvision.data.dataset import ImageDataset, balanced_subset_indices, channel_stats, normalize
from leanvision.data.folder import decode_file
from leanvision.data.load import list_datasets, load_dataset
from leanvision.data.loader import BatchLoader, EpochPlan, crop_flip, make_loader
from leanvision.data.mnist import read_idx

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DATASETS",
    "BatchLoader",
    "EpochPlan",
    "ImageDataset",
    "balanced_subset_indices",
    "cache_dir",
    "channel_stats",
    "crop_flip",
    "decode_file",
    "list_datasets",
    "load_dataset",
    "make_loader",
    "normalize",
    "read_idx",
    "resolve_root",
]
