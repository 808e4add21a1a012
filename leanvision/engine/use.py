"""Using a trained checkpoint: its model and input contract, its accuracy on a dataset split, predictions for images."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from leanvision.config import check_device, check_threads
from leanvision.errors import ConfigError, LeanVisionError
from leanvision.names import SPLITS


@dataclass
class EvalResult:
    """Loss and top-1/top-5 accuracy of a checkpoint on a dataset split."""

    checkpoint: Path
    dataset: str
    split: str
    images: int
    acc: float
    top5: float
    loss: float

    def summary(self) -> str:
        """One line for a person."""
        return accuracy_line(f"{self.dataset} {self.split}", self.images, self.acc, self.top5, self.loss)


def accuracy_line(what: str, images: int, acc: float, top5: float, loss: float) -> str:
    """``WHAT (N images): top-1 ..%, top-5 ..%, loss ..``: how every evaluation is reported."""
    return f"{what} ({images} images): top-1 {100 * acc:.2f}%, top-5 {100 * top5:.2f}%, loss {loss:.4f}"


@dataclass
class Prediction:
    """The top-k (class, probability) of one image file, or why it got none (``error``)."""

    path: Path
    top: list[tuple[str, float]]
    note: str | None = None  # a conversion the image needed to fit the model (e.g. colour to grayscale)
    error: str | None = None


def load_trained(checkpoint: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model of a checkpoint written by `leanvision train` (or fit on a create_model model), on ``device``."""
    from leanvision.engine.checkpoint import model_from_checkpoint

    model, ckpt = model_from_checkpoint(checkpoint)
    return model.to(device), ckpt


def input_contract(ckpt: dict[str, Any]) -> tuple[tuple[int, int, int], torch.Tensor, torch.Tensor]:
    """(C, H, W) and mean/std ``[C, 1, 1]`` the checkpoint's model was trained with."""
    from leanvision.models._registry import MODELS

    arch, meta = ckpt["arch"], ckpt.get("meta") or {}
    contract = MODELS.meta(arch["name"])  # the registered input size and normalisation, for older checkpoints
    c, h, w = arch.get("input_size") or contract["input_size"]
    mean = torch.tensor(meta.get("mean") or contract["mean"], dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(meta.get("std") or contract["std"], dtype=torch.float32).view(-1, 1, 1)
    return (int(c), int(h), int(w)), mean, std


def checkpoint_data(
    ckpt: dict[str, Any], checkpoint: str | Path, *, split: str, data_dir: str | None = None,
    dataset: str | None = None, subset: int | None = None, seed: int = 0,
) -> tuple[str, Any]:  # fmt: skip
    """(dataset name, split) of the data a checkpoint was trained on; train and val are the parts its run used."""
    from leanvision.config import TrainConfig
    from leanvision.data import load_dataset

    SPLITS.check(split)
    saved = ckpt.get("config") or {}
    name = dataset or saved.get("dataset") or (ckpt.get("meta") or {}).get("dataset")
    if name is None:
        raise ConfigError(f"{checkpoint} does not say which dataset it was trained on; pass --dataset NAME")
    val_size = 0
    if split != "test":
        if "val_size" not in saved:
            raise ConfigError(f"{checkpoint} does not record its validation split; evaluate it on --split test")
        val_size = TrainConfig(val_size=saved["val_size"]).exact_val_size()
    data = load_dataset(name, root=data_dir or saved.get("data_dir"), split=split, image_size=saved.get("image_size"),
                        val_size=val_size, subset=subset, seed=seed)  # fmt: skip
    return name, data


def evaluate_checkpoint(
    checkpoint: str | Path, *, split: str = "test", data_dir: str | None = None, dataset: str | None = None,
    subset: int | None = None, seed: int = 0, batch_size: int = 256, device: str = "cpu", threads: int | None = None,
    progress: bool = True,
) -> EvalResult:  # fmt: skip
    """Loss and top-1/top-5 accuracy of a checkpoint on a split (``subset``: a seeded class-balanced sample) of the
    dataset it was trained on."""
    from leanvision.data import make_loader
    from leanvision.engine.evaluate import evaluate

    check_device(device)
    if check_threads(threads):
        torch.set_num_threads(threads)
    model, ckpt = load_trained(checkpoint, device)
    name, data = checkpoint_data(ckpt, checkpoint, split=split, data_dir=data_dir, dataset=dataset, subset=subset,
                                 seed=seed)  # fmt: skip
    loader = make_loader(data, batch_size=batch_size, shuffle=False)
    m = evaluate(model, loader, topk=(1, 5), device=device, progress=progress)
    return EvalResult(Path(checkpoint), name, split, int(m["n"]), m["acc"], m.get("top5", m["acc"]), m["loss"])


def image_files(paths: Iterable[str | Path]) -> list[Path]:
    """The given image files, with each folder replaced by the image files in it (sorted, subfolders too)."""
    from leanvision.data.folder import IMG_EXTENSIONS

    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.name.lower().endswith(IMG_EXTENSIONS))
            if not found:
                raise ConfigError(f"folder '{p}' holds no image files ({', '.join(IMG_EXTENSIONS)})")
            files += found
        else:
            files.append(p)
    return files


def load_image(path: str | Path, contract: tuple[tuple[int, int, int], torch.Tensor, torch.Tensor]
               ) -> tuple[torch.Tensor, str | None]:  # fmt: skip
    """One image file as the model's ``[1, C, H, W]`` input (resized, normalised) and a note on any conversion."""
    from torchvision.transforms.v2 import functional as TF

    from leanvision.data import decode_file, normalize
    from leanvision.errors import DataError

    path = Path(path)
    (c, h, w), mean, std = contract
    if not path.is_file():
        raise ConfigError(f"image '{path}' not found; give paths of existing image files or a folder of them")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read image {path}: {e.strerror}; check its permissions") from None
    source = decode_file(path, mode="unchanged", data=raw).shape[0]
    note = None
    if c == 1 and source >= 3:
        note = f"{path}: colour image converted to grayscale (the model takes 1 channel)"
    elif c == 3 and source <= 2:
        note = f"{path}: grayscale image copied to 3 channels (the model takes RGB)"
    img = TF.resize(decode_file(path, mode="gray" if c == 1 else "rgb", data=raw), [h, w], antialias=True)
    return normalize(img, mean, std).unsqueeze(0), note


def predict(checkpoint: str | Path, images: Iterable[str | Path], *, top_k: int = 3,
            device: str = "cpu") -> list[Prediction]:  # fmt: skip
    """Top-k (class name, probability) for image files (folders: their images); an unreadable file gets ``error``."""
    from leanvision.engine.evaluate import logits_of

    check_device(device)
    model, ckpt = load_trained(checkpoint, device)
    contract = input_contract(ckpt)
    classes = (ckpt.get("meta") or {}).get("classes")
    out = []
    for path in image_files(images):
        try:
            x, note = load_image(path, contract)
        except LeanVisionError as e:
            out.append(Prediction(path, [], error=str(e)))
            continue
        with torch.no_grad():
            probs = torch.softmax(logits_of(model(x.to(device)))[0].cpu().double(), dim=0)
        names = classes or [str(i) for i in range(probs.numel())]
        top = probs.topk(min(top_k, probs.numel()))
        out.append(Prediction(path, [(names[i], float(p)) for p, i in zip(top.values, top.indices.tolist(),
                                                                          strict=True)], note))  # fmt: skip
    return out
