"""CIFAR-10 from torchvision's pickled batches, an ImageFolder tree, or a tar archive of either."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import torch

from leanvision.data._fs import archive_files, build_once, load_arrays, save_arrays
from leanvision.data._registry import DATASETS
from leanvision.data.constants import CIFAR10_MEAN, CIFAR10_STD
from leanvision.data.dataset import ImageDataset
from leanvision.data.folder import IMG_EXTENSIONS, _subdirs, decode_file, decode_folder, stack_images
from leanvision.errors import DataError

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_LAYOUTS = (
    "cifar-10-batches-py/ (torchvision's pickled batches), train/<class>/*.jpg + test/<class>/*.jpg "
    "(ImageFolder), or cifar10-jpeg-q75.tar.gz / cifar-10-python.tar.gz (extracted once into the cache), "
    "each directly in the root or in root/cifar10"
)
_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
_ARCHIVES = ("cifar10*.tar.gz", "cifar10*.tgz", "cifar10*.tar", "cifar-10-python.tar.gz")
# Everything a CIFAR batch pickle legitimately references; anything else (e.g. os.system) is refused.
_PICKLE_GLOBALS = {
    (f"numpy{core}.{mod}", name)
    for core in (".core", "._core")
    for mod, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"))
} | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict[str, object]:
    fix = "replace it with a good copy of cifar-10-python.tar.gz's batches"
    try:
        with open(path, "rb") as f:
            obj = _BatchUnpickler(f, encoding="latin1").load()
    except Exception as e:  # corrupt pickles fail in many ways (EOFError, struct.error, UnicodeError, ...)
        raise DataError(f"cannot read CIFAR batch {path}: {type(e).__name__}: {e}; {fix}") from None
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR batch {path} holds a {type(obj).__name__}, not a dict; {fix}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    obj = _unpickle(path)
    data, labels = obj.get("data"), obj.get("labels")
    fix = "replace it with a good copy"
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"CIFAR batch {path}: 'data' must be uint8 [N, 3072], got {desc}; {fix}")
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"CIFAR batch {path}: 'labels' is missing or not a list of integers; {fix}") from None
    if labels.shape[0] != data.shape[0]:
        raise DataError(f"CIFAR batch {path} holds {data.shape[0]} images but {labels.shape[0]} labels; {fix}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"CIFAR batch {path} has labels outside 0..9; {fix}")
    return data.reshape(-1, 3, 32, 32), labels


def _load_pickles(d: Path, split: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    missing = [str(d / b) for b in _BATCHES[split] if not (d / b).is_file()]
    if missing:
        raise DataError(
            f"CIFAR-10 {split} split incomplete: missing {', '.join(missing)}; restore the full "
            f"cifar-10-batches-py folder (data_batch_1..5, test_batch, batches.meta)"
        )
    parts = [_read_batch(d / b) for b in _BATCHES[split]]
    classes = CIFAR10_CLASSES
    if (d / "batches.meta").is_file():
        names = _unpickle(d / "batches.meta").get("label_names")
        if not isinstance(names, list) or len(names) != 10:
            raise DataError(f"{d / 'batches.meta'} has no list of 10 'label_names'; replace it or delete it")
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    return images, torch.from_numpy(np.concatenate([p[1] for p in parts])), classes


def _check_classes(found: list[str], where: object) -> None:
    if sorted(found) != sorted(CIFAR10_CLASSES):
        raise DataError(
            f"{where} has class folders {sorted(found)}, expected the 10 CIFAR-10 classes {CIFAR10_CLASSES}; "
            f"for other datasets use load_dataset('image_folder', root=...)"
        )


def _load_folder(d: Path, split: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    split_dir = d / split
    if not split_dir.is_dir():
        raise DataError(f"CIFAR-10 {split} split not found: {split_dir} is missing; expected {d}/{split}/<class>/")
    _check_classes(_subdirs(split_dir), split_dir)
    images, targets = decode_folder(split_dir, CIFAR10_CLASSES, mode="rgb", image_size=None)
    if images.shape[1:] != (3, 32, 32):
        raise DataError(f"images under {split_dir} are {tuple(images.shape[2:])}, CIFAR-10 needs 32x32")
    return images, targets, CIFAR10_CLASSES


def _unpack_archive(archive: Path, dest: Path) -> None:
    """One streamed pass over ``archive``: write its non-image files (pickled batches) under ``dest`` and
    decode its ``<split>/<class>/*`` images into ``dest/<split>.npz``.

    The JPEGs themselves are not written out: creating 60,000 small files costs more than decoding them.
    """
    groups: dict[str, list[tuple[int, str, bytes]]] = {split: [] for split in _BATCHES}
    for name, data in archive_files(archive):
        parts = name.split("/")
        if len(parts) >= 3 and parts[-3] in groups and parts[-1].lower().endswith(IMG_EXTENSIONS):
            if parts[-2] not in CIFAR10_CLASSES:
                raise DataError(
                    f"{archive} holds images in class folder {'/'.join(parts[:-1])!r}, not one of the 10 "
                    f"CIFAR-10 classes {CIFAR10_CLASSES}; for other datasets extract it and use image_folder"
                )
            groups[parts[-3]].append((CIFAR10_CLASSES.index(parts[-2]), name, data))
        else:
            target = dest.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    for split, items in groups.items():
        if not items:
            continue
        items.sort(key=lambda item: item[:2])  # ImageFolder order: class, then file name
        paths = [archive / name for _, name, _ in items]
        decoded = [decode_file(p, mode="rgb", data=data) for p, (_, _, data) in zip(paths, items, strict=True)]
        images = stack_images(decoded, paths, where=archive, image_size=None)
        if images.shape[1:] != (3, 32, 32):
            raise DataError(f"images in {archive} are {tuple(images.shape[2:])}, CIFAR-10 needs 32x32")
        targets = np.array([label for label, _, _ in items], dtype=np.int64)
        save_arrays(dest / f"{split}.npz", images=images.numpy(), targets=targets)


def _load_archive(archive: Path, split: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    for attempt in range(2):
        d = build_once(archive, namespace="cifar10", build=lambda tmp: _unpack_archive(archive, tmp))
        if not any(d.glob("*.npz")):
            inner = _locate(d, archives=False)
            if isinstance(inner, list):
                raise DataError(
                    f"{archive} holds no CIFAR-10 layout (train/<class>/*.jpg + test/<class>/*.jpg or "
                    f"cifar-10-batches-py/); replace the archive"
                )
            return _LOADERS[inner[0]](inner[1], split)
        if not (d / f"{split}.npz").is_file():
            raise DataError(f"{archive} has no {split}/<class>/ images; use an archive holding both splits")
        arrays = load_arrays(d / f"{split}.npz", ("images", "targets"))
        if arrays is not None:
            return torch.from_numpy(arrays["images"]), torch.from_numpy(arrays["targets"]), CIFAR10_CLASSES
        if attempt == 0:  # a damaged cache (disk full, manual edits): rebuild it once
            shutil.rmtree(d, ignore_errors=True)
    raise DataError(f"cannot read the decoded cache of {archive} under {d}; delete {d} and retry")


# How each layout that _locate finds is read.
_LOADERS = {"pickle": _load_pickles, "folder": _load_folder, "archive": _load_archive}


def _locate(root: Path, *, archives: bool) -> tuple[str, Path] | list[str]:
    """(layout, path) of the first CIFAR-10 copy found, else the list of places tried."""
    tried = [str(root / "cifar-10-batches-py")]
    if any((root / "cifar-10-batches-py" / b).is_file() for bs in _BATCHES.values() for b in bs):
        return "pickle", root / "cifar-10-batches-py"
    for d in (root / "cifar10", root):
        for cand in (d / "cifar-10-batches-py", d):
            if any((cand / b).is_file() for bs in _BATCHES.values() for b in bs):
                return "pickle", cand
        tried += [str(d / "cifar-10-batches-py"), str(d), f"{d}/{{train,test}}/<class>/"]
        if (d / "train").is_dir() or (d / "test").is_dir():
            return "folder", d
        if archives:
            tried.append(f"{d}/{{{','.join(_ARCHIVES)}}}")
            for pattern in _ARCHIVES:
                hits = sorted(p for p in d.glob(pattern) if p.is_file())
                if hits:
                    return "archive", hits[0]
    return list(dict.fromkeys(tried))


@DATASETS.register("cifar10", needs_root=True, splits=("train", "test"), layouts=CIFAR10_LAYOUTS)
def load_cifar10(*, root: Path, split: str, image_size: tuple[int, int] | None) -> ImageDataset:
    """CIFAR-10, 32x32 RGB, 50,000 train / 10,000 test; trains with crop (4-px padding) + flip."""
    found = _locate(root, archives=True)
    if isinstance(found, list):
        raise DataError(
            f"CIFAR-10 not found under {root}; tried {', '.join(found)}. Accepted layouts: {CIFAR10_LAYOUTS}"
        )
    images, targets, classes = _LOADERS[found[0]](found[1], split)
    return ImageDataset(
        images,
        targets,
        classes=classes,
        name="cifar10",
        split=split,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        train_augment=True,
    )
