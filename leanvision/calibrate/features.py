"""What operational calibration reads from a frozen classifier: logits and the features feeding its last layer."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from leanvision.errors import ConfigError


@dataclass(frozen=True)
class ModelOutputs:
    """Per-example logits ``[N, K]`` and last-hidden-layer features ``[N, D]`` (float64 numpy)."""

    logits: np.ndarray
    features: np.ndarray

    def __post_init__(self) -> None:
        if self.logits.ndim != 2 or self.features.ndim != 2 or len(self.logits) != len(self.features):
            raise ConfigError(f"logits [N, K] and features [N, D] must have the same N, got "
                              f"{self.logits.shape} and {self.features.shape}")  # fmt: skip

    def __len__(self) -> int:
        return len(self.logits)

    @property
    def probs(self) -> np.ndarray:
        z = self.logits - self.logits.max(1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(1, keepdims=True)

    @property
    def confidence(self) -> np.ndarray:
        """Max softmax probability."""
        return self.probs.max(1)

    @property
    def predictions(self) -> np.ndarray:
        return self.logits.argmax(1)

    def take(self, index: np.ndarray) -> ModelOutputs:
        return ModelOutputs(self.logits[index], self.features[index])


def last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    """The model's last ``nn.Linear`` in registration order: the layer that feeds the softmax in a classifier."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(f"{type(model).__name__} has no nn.Linear layer; name the layer whose input is the "
                          f"last hidden representation with feature_layer=NAME")  # fmt: skip
    return linears[-1]


def collect_outputs(
    model: nn.Module,
    batches: Iterable,
    *,
    feature_layer: str | None = None,
    device: str | torch.device = "cpu",
) -> ModelOutputs:
    """Run ``model`` (eval mode, no grad) over ``batches`` of inputs (or ``(inputs, targets)``) and keep the logits
    and the input of ``feature_layer`` (default: the last ``nn.Linear``), flattened per example.

    Works on any ``nn.Module`` classifier whose forward returns logits.
    """
    if feature_layer is None:
        feature_layer, layer = last_linear(model)
    else:
        layer = dict(model.named_modules()).get(feature_layer)
        if layer is None:
            raise ConfigError(f"feature_layer '{feature_layer}' is not a module of {type(model).__name__}")
    grabbed: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, inputs, _out: grabbed.append(inputs[0].detach().flatten(1)))
    logits, feats = [], []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                grabbed.clear()
                out = model(x.to(device))
                if len(grabbed) != 1:
                    raise ConfigError(f"feature_layer '{feature_layer}' ran {len(grabbed)} times in one forward "
                                      f"pass; name a layer that runs exactly once")  # fmt: skip
                logits.append(out.detach().float().cpu())
                feats.append(grabbed[0].float().cpu())
    finally:
        handle.remove()
        model.train(was_training)
    if not logits:
        raise ConfigError("no inputs to run the model on: the operational data is empty")
    return ModelOutputs(torch.cat(logits).double().numpy(), torch.cat(feats).double().numpy())
