"""Image decoding and ImageFolder trees (``root/<split>/<class>/*`` or ``root/<class>/*``)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as TF

from leanvision.data._registry import DATASETS
from leanvision.data.dataset import ImageDataset, channel_stats
from leanvision.errors import DataError

SPLIT_NAMES = ("train", "val", "valid", "validation", "test")
FOLDER_LAYOUTS = "<root>/<split>/<class>/<image> (e.g. train/ and test/) or <root>/<class>/<image>"
_TV_MODES = {"rgb": ImageReadMode.RGB, "gray": ImageReadMode.GRAY, "unchanged": ImageReadMode.UNCHANGED}
_PIL_GRAY = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F"}


def _decode_pil(data: bytes, mode: str) -> torch.Tensor:
    # Fallback for formats torchvision's decoders do not read (BMP, TIFF, PPM, ...).
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        gray = mode == "gray" or (mode == "unchanged" and im.mode in _PIL_GRAY)
        arr = torch.from_numpy(np.array(im.convert("L" if gray else "RGB")))
    return arr.unsqueeze(0) if arr.dim() == 2 else arr.permute(2, 0, 1).contiguous()


def decode_file(path: Path, *, mode: str = "rgb", data: bytes | None = None) -> torch.Tensor:
    """One image file as uint8 ``[C, H, W]``; ``mode`` is 'rgb', 'gray' or 'unchanged' (1-4 channels).

    ``data``: the file's bytes when already in memory (``path`` then only names it in errors).
    """
    if data is None:
        try:
            data = path.read_bytes()
        except OSError as e:
            raise DataError(f"cannot read image {path}: {e}; check its permissions or remove it") from None
    if data:
        try:
            return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=_TV_MODES[mode])
        except RuntimeError:
            pass
    try:
        return _decode_pil(data, mode)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        reason = str(e).split(" <_io.", 1)[0]  # PIL names the in-memory buffer, which tells the user nothing
        raise DataError(
            f"cannot decode image {path} ({reason}): the file is truncated, corrupt or not an image; "
            "replace or remove it"
        ) from None


def _same_channels(images: list[torch.Tensor]) -> list[torch.Tensor]:
    # Mixed folders: grayscale (+alpha) becomes RGB if any image has colour; alpha is dropped.
    if all(t.shape[0] <= 2 for t in images):
        return [t[:1] for t in images]
    return [t[:3] if t.shape[0] >= 3 else t[:1].expand(3, -1, -1) for t in images]


def stack_images(
    images: list[torch.Tensor], paths: Sequence[Path], *, where: Path, image_size: tuple[int, int] | None
) -> torch.Tensor:
    """Stack ``[C, H, W]`` images into ``[N, C, H, W]``, resizing to ``image_size`` or requiring one size."""
    if image_size is not None:
        size = list(image_size)
        images = [t if list(t.shape[1:]) == size else TF.resize(t, size, antialias=True) for t in images]
    else:
        first = images[0].shape[1:]
        for t, p in zip(images, paths, strict=True):
            if t.shape[1:] != first:
                raise DataError(
                    f"images under {where} have different sizes: {paths[0]} is {first[0]}x{first[1]} but {p} "
                    f"is {t.shape[1]}x{t.shape[2]}; pass image_size=(H, W) to resize them all"
                )
    return torch.stack(images)


def list_images(split_dir: Path, classes: Sequence[str]) -> tuple[list[Path], list[int]]:
    """Image files under ``split_dir/<class>/`` (torchvision's ImageFolder rules), sorted, with labels."""
    items = make_dataset(
        str(split_dir), {c: i for i, c in enumerate(classes)}, extensions=IMG_EXTENSIONS, allow_empty=True
    )
    return [Path(p) for p, _ in items], [t for _, t in items]


def decode_folder(
    split_dir: Path,
    classes: Sequence[str],
    *,
    mode: str = "unchanged",
    image_size: tuple[int, int] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode every image of an ImageFolder split into uint8 ``[N, C, H, W]`` and int64 targets."""
    paths, targets = list_images(split_dir, classes)
    if not paths:
        raise DataError(
            f"no images under {split_dir}/<class>/ (extensions {', '.join(IMG_EXTENSIONS)}); "
            f"accepted layouts: {FOLDER_LAYOUTS}"
        )

    images = [decode_file(p, mode=mode) for p in paths]
    if mode == "unchanged":
        images = _same_channels(images)
    return stack_images(images, paths, where=split_dir, image_size=image_size), torch.tensor(targets)


def _subdirs(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def folder_layout(root: Path, split: str) -> tuple[Path, list[Path]]:
    """(directory of ``split``, all split directories); no split directories means ``root/<class>/*``."""
    splits = [root / s for s in SPLIT_NAMES if (root / s).is_dir()]
    if (root / split).is_dir() and root / split not in splits:
        splits.append(root / split)
    if not splits:
        return root, []
    if not (root / split).is_dir():
        found = ", ".join(p.name for p in splits)
        raise DataError(
            f"image_folder: no '{split}' split under {root} (found: {found}); pass split= one of those "
            f"or add {root / split}/<class>/<image>"
        )
    return root / split, splits


@DATASETS.register("image_folder", needs_root=True, splits=None, layouts=FOLDER_LAYOUTS)
def load_image_folder(*, root: Path, split: str, image_size: tuple[int, int] | None) -> ImageDataset:
    """Any user dataset in ImageFolder layout; mean/std come from the train split when there is one."""
    split_dir, split_dirs = folder_layout(root, split)
    # Classes are the union over splits so that a class missing from one split keeps its index.
    classes = sorted({c for d in (split_dirs or [root]) for c in _subdirs(d)})
    if not classes:
        raise DataError(f"image_folder: no class folders under {split_dir}; accepted layouts: {FOLDER_LAYOUTS}")
    images, targets = decode_folder(split_dir, classes, image_size=image_size)
    train_dir = root / "train"
    if split_dirs and split_dir != train_dir and train_dir.is_dir():
        stats_images, _ = decode_folder(train_dir, classes, image_size=tuple(images.shape[-2:]))
        if stats_images.shape[1] != images.shape[1]:
            stats_images = images
        mean, std = channel_stats(stats_images)
    else:
        mean, std = channel_stats(images)
    return ImageDataset(images, targets, classes=classes, name="image_folder", split=split, mean=mean, std=std)
