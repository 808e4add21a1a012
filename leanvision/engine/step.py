"""One replaceable training step: methods change a step (penalties, masks, sampled paths) without copying fit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from leanvision.engine.evaluate import LossFn
from leanvision.names import PRECISIONS


@dataclass
class StepContext:
    """What a train step needs besides the model and the batch; ``epoch`` and ``step`` count from 0.

    ``step`` is the global batch index over the whole run (it continues across a resume), so a step function
    may schedule things (a penalty warm-up, a temperature) from it. What a step puts in ``metrics`` (plain data,
    e.g. a diagnostic of the model) is added to the epoch's row of metrics.jsonl, then cleared.
    """

    optimizer: torch.optim.Optimizer
    loss_fn: LossFn
    grad_clip: float | None
    epoch: int
    step: int
    params: list[nn.Parameter]
    metrics: dict[str, Any] = field(default_factory=dict)

    def update(self, loss: torch.Tensor) -> None:
        """Zero the gradients, backpropagate ``loss``, clip the gradient norm if asked, and step the optimizer."""
        self.optimizer.zero_grad(set_to_none=True)
        with full_precision(loss.device):  # fit autocasts the step's forward only (PyTorch's advice for backward)
            loss.backward()
            if self.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.params, self.grad_clip)
            self.optimizer.step()


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The forward's precision: fp32, or bf16 mixed precision (convs and matmuls in bfloat16, weights in float32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=PRECISIONS.check(precision) == "bf16")


def full_precision(device: torch.device) -> torch.autocast:
    """Float32 inside a mixed-precision region (backward, optimizer steps, a controller's policy gradient)."""
    return torch.autocast(device.type, enabled=False)


# (model, inputs, targets, ctx) -> (loss for the metrics, outputs for the accuracy or None). fit steps the LR
# scheduler after it, so a step function never touches the schedule.
TrainStep = Callable[[nn.Module, Any, torch.Tensor, StepContext], tuple[torch.Tensor, Any]]


def standard_step(model: nn.Module, inputs: Any, targets: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, Any]:
    """The default step: forward, ``ctx.loss_fn``, backward, optional clipping, optimizer step."""
    outputs = model(inputs)
    loss = ctx.loss_fn(outputs, targets, inputs)
    ctx.update(loss)
    return loss, outputs
