"""Classifier-FID: the Fréchet distance between a small classifier's penultimate features of real and generated
28x28 images (Inception features mean little on MNIST), and the class-coverage entropy of the generated images."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from leanvision.errors import CheckpointError, ConfigError, missing_extra

SHIPPED = Path(__file__).parent / "classifiers"  # one checkpoint per dataset, made by train_classifier


class FeatureNet(nn.Module):
    """A small CNN classifier for 1x28x28 images; its penultimate layer (``features`` wide) gives the FID features.

    No BatchNorm or dropout: its features do not depend on train/eval mode or on the batch they come in.
    """

    def __init__(self, num_classes: int = 10, *, width: int = 16, features: int = 64,
                 mean: float = 0.5, std: float = 0.25) -> None:  # fmt: skip
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(36 * w, features), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(features, num_classes)
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of normalised images (as leanvision's loaders yield them)."""
        return self.head(self.body(x))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features of uint8 images ``[N, 1, 28, 28]``."""
        return self.body((images.float() / 255 - self.mean) / self.std)


class _Features(nn.Module):
    """The feature extractor torchmetrics' FID calls: uint8 images in, penultimate features out, no gradients."""

    def __init__(self, net: FeatureNet) -> None:
        super().__init__()
        self.net = net
        self.num_features = net.head.in_features  # read by torchmetrics instead of probing with a dummy image

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.net.embed(images)


def frechet_metric(features: nn.Module) -> Any:
    """torchmetrics' FrechetInceptionDistance on a custom feature module (``num_features`` attribute), keeping the
    real images' statistics across ``reset()`` so they are computed once."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError:
        raise missing_extra("classifier-FID", "gan") from None
    return FrechetInceptionDistance(feature=features, reset_real_features=False)


def coverage_entropy(logits: torch.Tensor) -> float:
    """Entropy of the predicted-class histogram over log(classes): 1 when every class is generated equally often."""
    counts = torch.bincount(logits.argmax(1), minlength=logits.shape[1]).double()
    p = counts[counts > 0] / counts.sum()
    return float((p * p.reciprocal().log()).sum() / math.log(logits.shape[1]))


class ClassifierFID:
    """Classifier-FID and class coverage of generated uint8 images against a fixed set of real ones."""

    def __init__(self, net: FeatureNet, real: torch.Tensor, *, batch: int = 500, device: str | torch.device = "cpu"):
        self.net, self.batch, self.device = net.to(device).eval(), batch, device
        self.metric = frechet_metric(_Features(self.net)).to(device)
        for chunk in real.split(batch):
            self.metric.update(chunk.to(device), real=True)

    def __call__(self, fake: torch.Tensor) -> dict[str, float]:
        """``{"fid", "coverage"}`` of uint8 images ``[N, 1, 28, 28]``."""
        self.metric.reset()
        logits = []
        with torch.no_grad():
            for chunk in fake.split(self.batch):
                chunk = chunk.to(self.device)
                self.metric.update(chunk, real=False)
                logits.append(self.net.head(self.net.embed(chunk)))
        return {"fid": float(self.metric.compute()), "coverage": coverage_entropy(torch.cat(logits))}


def load_classifier(dataset: str | None = None, *, path: str | os.PathLike[str] | None = None) -> FeatureNet:
    """The classifier of ``path``, or the one shipped for ``dataset`` (mnist, fashion_mnist)."""
    from leanvision.engine import load_checkpoint

    if path is None:
        path = SHIPPED / f"{dataset}.pt"
        if not path.is_file():
            shipped = ", ".join(sorted(p.stem for p in SHIPPED.glob("*.pt")))
            raise ConfigError(f"no classifier-FID network ships for dataset '{dataset}' (only {shipped}): make one "
                              "with leanvision.generative.train_classifier and set classifier: PATH")  # fmt: skip
    state = load_checkpoint(path)
    arch = state.get("feature_net")
    if not isinstance(arch, dict):
        raise CheckpointError(f"{path} is not a classifier-FID network: make one with "
                              "leanvision.generative.train_classifier")  # fmt: skip
    net = FeatureNet(**arch)
    net.load_state_dict(state["model"])
    return net.eval()


def train_classifier(dataset: str, out: str | os.PathLike[str], *, data_dir: str | None = None, epochs: int = 3,
                     seed: int = 0, progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """Train the classifier-FID network on ``dataset``'s training split and save it to ``out``; returns its record
    (test accuracy included). This is how the shipped networks were made."""
    from leanvision.data import load_dataset, make_loader
    from leanvision.engine import evaluate, fit, make_optimizer, save_checkpoint

    train = load_dataset(dataset, root=data_dir, split="train")
    test = load_dataset(dataset, root=data_dir, split="test")
    if train.input_size != (1, 28, 28):
        raise ConfigError(f"the classifier-FID network takes 1x28x28 images; {dataset} has {train.input_size}")
    torch.manual_seed(seed)
    arch = {"num_classes": train.num_classes, "width": 16, "features": 64, "mean": train.mean[0], "std": train.std[0]}
    net = FeatureNet(**arch)
    fit(net, make_loader(train, batch_size=128, shuffle=True, augment=False, seed=seed), epochs=epochs,
        optimizer=make_optimizer(net, "adam", lr=1e-3, weight_decay=0.0), seed=seed, progress=progress)  # fmt: skip
    metrics = evaluate(net, make_loader(test, batch_size=500, shuffle=False), progress=progress)
    record = {"dataset": dataset, "epochs": epochs, "seed": seed, "test_acc": float(metrics["acc"])}
    save_checkpoint(out, model=net.state_dict(), feature_net=arch, meta=record)
    return record
