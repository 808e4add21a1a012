"""MNIST and Fashion-MNIST read straight from the IDX files (gzip'd or not) in torchvision's layout."""

from __future__ import annotations

import functools
import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from leanvision.data._registry import DATASETS
from leanvision.data.constants import FASHION_MNIST_MEAN, FASHION_MNIST_STD, MNIST_MEAN, MNIST_STD
from leanvision.data.dataset import ImageDataset
from leanvision.errors import DataError

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_UBYTE = 0x08


def _layouts(folder: str) -> str:
    return (
        f"{folder}/raw/train-images-idx3-ubyte.gz etc. (torchvision layout, .gz or uncompressed; "
        f"the root may also be the {folder} or raw folder itself)"
    )


def read_idx(path: Path, *, ndim: int) -> np.ndarray:
    """An unsigned-byte IDX array of ``ndim`` dimensions; corrupt or truncated files raise ``DataError``."""
    fix = "replace it with a good copy (torchvision's md5s identify the original files)"
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read {path}: {e} (corrupt or truncated gzip); {fix}") from None
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path} is too short ({len(data)} bytes) to be an IDX file; {fix}")
    magic = int.from_bytes(data[:4], "big")
    if data[:2] != b"\0\0" or data[2] != _UBYTE or data[3] != ndim:
        raise DataError(
            f"{path} has IDX magic 0x{magic:08x}, expected 0x{(_UBYTE << 8) | ndim:08x} "
            f"(unsigned bytes, {ndim}-d): not the expected IDX file; {fix}"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header])
    want, got = math.prod(dims), len(data) - header
    if want != got:
        raise DataError(
            f"{path} declares {dims[0]} items of shape {tuple(dims[1:])} ({want} bytes) but holds {got} "
            f"bytes: wrong item count or truncated file; {fix}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def _find(root: Path, folder: str, split: str, dataset: str) -> tuple[Path, Path]:
    image_stem, label_stem = _FILES[split]
    tried = []
    for d in (root / folder / "raw", root / folder, root / "raw", root):
        for ext in (".gz", ""):
            images, labels = d / (image_stem + ext), d / (label_stem + ext)
            if images.is_file() and labels.is_file():
                return images, labels
        tried.append(str(d))
    raise DataError(
        f"{dataset} {split} split not found: no {image_stem}[.gz] + {label_stem}[.gz] in "
        f"{', '.join(tried)}; accepted layout: {_layouts(folder)}"
    )


def load_idx_dataset(
    root: Path,
    *,
    dataset: str,
    folder: str,
    split: str,
    classes: list[str],
    mean: tuple[float],
    std: tuple[float],
    image_size: tuple[int, int] | None = None,
) -> ImageDataset:
    """Read one split of an MNIST-style dataset from ``root`` (see :func:`_layouts`); ``load_dataset`` resizes."""
    image_path, label_path = _find(root, folder, split, dataset)
    images = read_idx(image_path, ndim=3)
    labels = read_idx(label_path, ndim=1)
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{image_path} holds {images.shape[0]} images but {label_path} holds {labels.shape[0]} labels; "
            f"the pair does not match, replace them with files from the same release"
        )
    if labels.size and int(labels.max()) >= len(classes):
        raise DataError(
            f"{label_path} has label {int(labels.max())}, outside 0..{len(classes) - 1}; "
            f"the file is corrupt, replace it"
        )
    return ImageDataset(
        torch.from_numpy(images).unsqueeze(1),
        torch.from_numpy(labels.astype(np.int64)),
        classes=classes,
        name=dataset,
        split=split,
        mean=mean,
        std=std,
    )


def _register(name: str, folder: str, classes: list[str], mean: tuple[float], std: tuple[float]) -> None:
    load = functools.partial(load_idx_dataset, dataset=name, folder=folder, classes=classes, mean=mean, std=std)
    DATASETS.register(name, needs_root=True, splits=("train", "test"), layouts=_layouts(folder))(load)


FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
# Both 28x28 grayscale, 60,000 train / 10,000 test: MNIST handwritten digits and Zalando's Fashion-MNIST.
_register("mnist", "MNIST", [str(i) for i in range(10)], MNIST_MEAN, MNIST_STD)
_register("fashion_mnist", "FashionMNIST", FASHION_CLASSES, FASHION_MNIST_MEAN, FASHION_MNIST_STD)
