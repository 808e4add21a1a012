"""Baselines fitted on the same operational labels: temperature scaling, isotonic regression, last-layer tuning."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from leanvision.calibrate.features import ModelOutputs
from leanvision.errors import ConfigError


def _labels(labels, n: int, k: int) -> np.ndarray:
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != n:
        raise ConfigError(f"got {len(labels)} labels for {n} examples: give one label per example")
    if labels.dtype.kind not in "iu" or (n and (labels.min() < 0 or labels.max() >= k)):
        raise ConfigError(f"labels must be class indices in [0, {k - 1}] (the model has {k} classes)")
    return labels.astype(np.int64)


class TemperatureScaling:
    """softmax(logits / T) with T minimising the negative log-likelihood of the labels (Guo et al., arXiv
    1706.04599); predictions are unchanged."""

    def __init__(self) -> None:
        self.temperature = 1.0

    def fit(self, labelled: ModelOutputs, labels) -> TemperatureScaling:
        from scipy.optimize import minimize_scalar

        y = _labels(labels, len(labelled), labelled.logits.shape[1])
        z = labelled.logits

        def nll(log_t: float) -> float:
            s = z / np.exp(log_t)
            s = s - s.max(1, keepdims=True)
            return float(np.mean(np.log(np.exp(s).sum(1)) - s[np.arange(len(y)), y]))

        self.temperature = float(np.exp(minimize_scalar(nll, bounds=(-4.0, 4.0), method="bounded").x))
        return self

    def calibrate(self, outputs: ModelOutputs) -> np.ndarray:
        return ModelOutputs(outputs.logits / self.temperature, outputs.features).confidence


class IsotonicCalibration:
    """A monotone map from confidence to the probability of being correct (scikit-learn's isotonic regression)."""

    def fit(self, labelled: ModelOutputs, labels) -> IsotonicCalibration:
        from sklearn.isotonic import IsotonicRegression

        y = _labels(labels, len(labelled), labelled.logits.shape[1])
        self.iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        self.iso.fit(labelled.confidence, (labelled.predictions == y).astype(float))
        return self

    def calibrate(self, outputs: ModelOutputs) -> np.ndarray:
        return self.iso.predict(outputs.confidence)


def finetune_last_layer(linear: nn.Linear, labelled: ModelOutputs, labels, *, epochs: int = 100, lr: float = 0.01,
                        weight_decay: float = 1e-3) -> nn.Linear:  # fmt: skip
    """A copy of the classifier's last layer trained further (full batch, Adam, cross-entropy) on the labelled
    operational examples' features: the "practical learning technique" baseline. It changes predictions."""
    y = torch.as_tensor(_labels(labels, len(labelled), linear.out_features))
    x = torch.as_tensor(labelled.features, dtype=linear.weight.dtype)
    if x.shape[1] != linear.in_features:
        raise ConfigError(f"features have {x.shape[1]} dimensions, the layer takes {linear.in_features}")
    layer = copy.deepcopy(linear).cpu().train()
    opt = torch.optim.Adam(layer.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        opt.zero_grad()
        nn.functional.cross_entropy(layer(x), y).backward()
        opt.step()
    return layer.eval()


def linear_outputs(linear: nn.Linear, outputs: ModelOutputs) -> ModelOutputs:
    """The outputs of ``outputs``' features through ``linear`` (e.g. a fine-tuned last layer)."""
    with torch.no_grad():
        logits = linear(torch.as_tensor(outputs.features, dtype=linear.weight.dtype)).double().numpy()
    return ModelOutputs(logits, outputs.features)
