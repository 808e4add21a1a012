"""Evaluation of a classifier over batches: mean loss and top-k accuracy."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from leanvision.engine._dist import all_reduce_sum
from leanvision.engine._progress import track
from leanvision.errors import ConfigError, DataError

LossFn = Callable[[Any, torch.Tensor, Any], torch.Tensor]


def cross_entropy(outputs: Any, targets: torch.Tensor, inputs: Any) -> torch.Tensor:
    """Default loss: cross-entropy on the logits; targets are class indices or class probabilities."""
    return F.cross_entropy(logits_of(outputs), targets)


def logits_of(outputs: Any) -> torch.Tensor:
    """Models with auxiliary outputs return a tuple whose first element is the logits."""
    return outputs[0] if isinstance(outputs, (tuple, list)) else outputs


def to_device(obj: Any, device: torch.device | str) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


def hard_targets(targets: torch.Tensor) -> torch.Tensor:
    """Class indices, also for soft (mixup / label-smoothed) probability targets."""
    return targets.argmax(dim=1) if targets.is_floating_point() and targets.ndim == 2 else targets


def correct_topk(logits: torch.Tensor, targets: torch.Tensor, ks: Sequence[int]) -> list[torch.Tensor]:
    """Number of samples whose target is among the top-k logits, for each k (0-d tensors, no sync)."""
    labels = hard_targets(targets)
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hit = top == labels.unsqueeze(1)
    return [hit[:, :k].any(dim=1).sum() for k in ks]


def evaluate(
    model: nn.Module,
    data: Iterable[tuple[Any, torch.Tensor]],
    *,
    loss_fn: LossFn | None = None,
    device: torch.device | str = "cpu",
    topk: Sequence[int] = (1,),
    all_reduce: bool = False,
    progress: bool = False,
) -> dict[str, float]:
    """Mean loss and accuracy of ``model`` over ``data`` in eval mode without gradients.

    Returns ``{"loss", "acc", "n"}`` plus ``"top{k}"`` for every k > 1 in ``topk``. ``loss_fn(outputs,
    targets, inputs)`` must return the batch mean (default cross-entropy). The training flag is restored.
    ``all_reduce=True`` sums the counts over a torch.distributed group (every rank must call it then).
    ``progress=True`` shows a batch bar on a terminal.
    """
    ks = sorted({1, *topk})
    if ks[0] < 1:
        raise ConfigError(f"topk values must be >= 1, got {list(topk)}.")
    loss_fn = loss_fn or cross_entropy
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    hits = [torch.zeros((), dtype=torch.int64, device=device) for _ in ks]
    n = 0
    try:
        with torch.no_grad():
            for inputs, targets in track(data, description="evaluating", enabled=progress):
                inputs, targets = to_device(inputs, device), to_device(targets, device)
                outputs = model(inputs)
                b = targets.shape[0]
                loss_sum += loss_fn(outputs, targets, inputs).detach().double() * b
                for h, c in zip(hits, correct_topk(logits_of(outputs), targets, ks), strict=True):
                    h += c
                n += b
    finally:
        model.train(was_training)
    local = [loss_sum.item(), float(n), *(float(h.item()) for h in hits)]
    totals = all_reduce_sum(local) if all_reduce else local
    loss_total, n_total, *hit_totals = totals
    if n_total == 0:
        raise DataError("evaluation data yielded no samples; check the loader (empty split or drop_last?).")
    out = {"loss": loss_total / n_total, "acc": hit_totals[0] / n_total, "n": int(n_total)}
    for k, h in zip(ks, hit_totals, strict=True):
        if k > 1:
            out[f"top{k}"] = h / n_total
    return out
