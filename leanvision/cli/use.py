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


def input_contract(ckpt: dict[str, Any]) -> tuple[tuple[int, int, int], torch.Tensor, torch.Tensor]:
    """(C, H, W) and mean/std ``[C, 1, 1]`` the checkpoint's model was trained with."""
    from leanvision.models._registry import MODELS

    arch, meta = ckpt["arch"], ckpt.get("meta") or {}
    contract = MODELS.meta(arch["name"])  # the registered input size and normalisation, for older checkpoints
    c, h, w = arch.get("input_size") or contract["input_size"]
    mean = torch.tensor(meta.get("mean") or contract["mean"], dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(meta.get("std") or contract["std"], dtype=torch.float32).view(-1, 1, 1)
    return (int(c), int(h), int(w)), mean, std


def load_calibration(calibration: Path) -> Any:
    """An OperationalCalibrator written by `leanvision calibrate`; a bad file is a one-line ConfigError."""
    from leanvision.calibrate import OperationalCalibrator

    return OperationalCalibrator.load(calibration)


def check_calibration_fits(cal: Any, features_dim: int, calibration: Path, checkpoint: Path) -> None:
    """Refuse a calibration file fitted on another model's features: its GP would read meaningless inputs."""
    want = len(cal.pca_mean)
    if want != features_dim:
        made_for = (cal.meta or {}).get("model", "another model")
        raise ConfigError(
            f"'{calibration}' was made for {made_for} (features of {want} dimensions), but {checkpoint}'s model has "
            f"{features_dim}: calibrate this checkpoint with `leanvision calibrate` and pass that file"
        )


def _split_data(ckpt: dict[str, Any], checkpoint: Path, *, split: str, data_dir: str | None, dataset: str | None):
    from leanvision.cli.config import TrainConfig
    from leanvision.data import load_dataset

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
    return name, data


def evaluate_checkpoint(
    checkpoint: Path,
    *,
    split: str,
    data_dir: str | None,
    dataset: str | None,
    batch_size: int,
    device: str,
    calibration: Path | None = None,
) -> dict[str, Any]:
    """Loss and top-1/top-5 accuracy of a checkpoint on a split of the dataset it was trained on; with
    ``calibration`` also Brier, ECE, high-confidence errors and confident-correct counts before/after it."""
    from leanvision.data import make_loader
    from leanvision.engine import evaluate

    cal = load_calibration(calibration) if calibration is not None else None  # a bad file fails before any work
    model, ckpt = load_trained(checkpoint, device)
    name, data = _split_data(ckpt, checkpoint, split=split, data_dir=data_dir, dataset=dataset)
    loader = make_loader(data, batch_size=batch_size, shuffle=False)
    metrics = evaluate(model, loader, topk=(1, 5), device=device)
    out = {"dataset": name, "split": split, **metrics}
    if cal is not None:
        out["calibration"] = _calibration_metrics(model, loader, data.targets.numpy(), cal, calibration, checkpoint,
                                                  device)  # fmt: skip
    return out


def _calibration_metrics(model, loader, targets, cal, calibration: Path, checkpoint: Path, device: str) -> dict:
    from leanvision.calibrate import collect_outputs, summary

    outputs = collect_outputs(model, loader, device=device)
    check_calibration_fits(cal, outputs.features.shape[1], calibration, checkpoint)
    before, correct = outputs.confidence, outputs.predictions == targets
    return {"before": summary(before, correct), "after": summary(cal.calibrate(outputs), correct, before=before)}


def predict_images(
    checkpoint: Path, images: list[Path], *, top_k: int, device: str, calibration: Path | None = None
) -> list[tuple[Path, list, float | None]]:
    """Top-k (class name, probability) for each image file, preprocessed as the checkpoint's training data, and
    with ``calibration`` the calibrated confidence of the top-1 class (else None)."""
    from torchvision.transforms.v2 import functional as TF

    from leanvision.data import decode_file, normalize

    cal = load_calibration(calibration) if calibration is not None else None
    model, ckpt = load_trained(checkpoint, device)
    (c, h, w), mean, std = input_contract(ckpt)
    meta = ckpt.get("meta") or {}
    out = []
    for path in images:
        if not path.is_file():
            raise ConfigError(f"image '{path}' not found; give paths of existing image files")
        img = decode_file(path, mode="gray" if c == 1 else "rgb")
        img = TF.resize(img, [h, w], antialias=True)
        x = normalize(img, mean, std).unsqueeze(0).to(device)
        calibrated = None
        if cal is not None:
            logits, calibrated = _calibrated(model, x, cal, calibration, checkpoint, device)
        else:
            with torch.no_grad():
                logits = model(x)[0].cpu()
        probs = torch.softmax(logits.double(), dim=0)
        classes = meta.get("classes") or [str(i) for i in range(probs.numel())]
        top = probs.topk(min(top_k, probs.numel()))
        out.append(
            (path, [(classes[i], float(p)) for p, i in zip(top.values, top.indices.tolist(), strict=True)], calibrated)
        )
    return out


def _calibrated(model, x: torch.Tensor, cal, calibration: Path, checkpoint: Path, device: str):
    """The logits of one image and the calibrated confidence of its top-1 class."""
    from leanvision.calibrate import collect_outputs

    outputs = collect_outputs(model, [x], device=device)
    check_calibration_fits(cal, outputs.features.shape[1], calibration, checkpoint)
    return torch.from_numpy(outputs.logits[0]), float(cal.calibrate(outputs)[0])
