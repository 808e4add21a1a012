"""`leanvision evaluate` and `leanvision predict`: what a user does with a trained checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from leanvision.errors import ConfigError


def load_trained(checkpoint: Path, device: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model of a checkpoint written by `leanvision train` (or fit on a create_model model), on ``device``."""
    from leanvision.engine import model_from_checkpoint

    model, ckpt = model_from_checkpoint(checkpoint)
    return model.to(device), ckpt


def evaluate_checkpoint(
    checkpoint: Path,
    *,
    split: str,
    data_dir: str | None,
    dataset: str | None,
    batch_size: int,
    device: str,
) -> dict[str, Any]:
    """Loss and top-1/top-5 accuracy of a checkpoint on a split of the dataset it was trained on."""
    from leanvision.cli.config import TrainConfig
    from leanvision.data import load_dataset, make_loader
    from leanvision.engine import evaluate

    model, ckpt = load_trained(checkpoint, device)
    saved = ckpt.get("config") or {}
    name = dataset or saved.get("dataset") or (ckpt.get("meta") or {}).get("dataset")
    if name is None:
        raise ConfigError(f"{checkpoint} does not say which dataset it was trained on; pass --dataset NAME")
    val_size = 0
    if split != "test":  # train and val are the parts of the training split the run itself used
        if "val_size" not in saved:
            raise ConfigError(f"{checkpoint} does not record its validation split; evaluate it on --split test")
        val_size = TrainConfig(val_size=saved["val_size"]).exact_val_size()
    data = load_dataset(
        name, root=data_dir or saved.get("data_dir"), split=split, image_size=saved.get("image_size"), val_size=val_size
    )
    metrics = evaluate(model, make_loader(data, batch_size=batch_size, shuffle=False), topk=(1, 5), device=device)
    return {"dataset": name, "split": split, **metrics}


def predict_images(checkpoint: Path, images: list[Path], *, top_k: int, device: str) -> list[tuple[Path, list]]:
    """Top-k (class name, probability) for each image file, preprocessed as the checkpoint's training data."""
    from torchvision.transforms.v2 import functional as TF

    from leanvision.data import decode_file, normalize
    from leanvision.models._registry import MODELS

    model, ckpt = load_trained(checkpoint, device)
    arch, meta = ckpt["arch"], ckpt.get("meta") or {}
    contract = MODELS.meta(arch["name"])  # the registered input size and normalisation, for older checkpoints
    c, h, w = arch.get("input_size") or contract["input_size"]
    mean = torch.tensor(meta.get("mean") or contract["mean"]).view(-1, 1, 1)
    std = torch.tensor(meta.get("std") or contract["std"]).view(-1, 1, 1)
    out = []
    for path in images:
        if not path.is_file():
            raise ConfigError(f"image '{path}' not found; give paths of existing image files")
        img = decode_file(path, mode="gray" if c == 1 else "rgb")
        img = TF.resize(img, [h, w], antialias=True)
        x = normalize(img, mean, std).unsqueeze(0).to(device)
        with torch.no_grad():
            probs = torch.softmax(model(x), dim=1)[0].cpu()
        classes = meta.get("classes") or [str(i) for i in range(probs.numel())]
        top = probs.topk(min(top_k, probs.numel()))
        out.append((path, [(classes[i], float(p)) for p, i in zip(top.values, top.indices.tolist(), strict=True)]))
    return out
