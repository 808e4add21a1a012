"""Optimizers and per-step learning-rate schedules by name."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from leanvision.errors import ConfigError
from leanvision.names import OPTIMIZERS, SCHEDULERS
from leanvision.registry import unknown_choice

# Per-optimizer weight decay when none is given: the usual values of the CIFAR/ImageNet recipes.
_DEFAULT_WEIGHT_DECAY = {"sgd": 5e-4, "rmsprop": 1e-5, "adam": 0.0, "adamw": 0.05}


def param_groups(model: nn.Module, *, weight_decay: float, norm_bias_decay: bool = False) -> list[dict[str, object]]:
    """Split trainable parameters into a decayed group and a no-decay group of norm weights and biases.

    A module may also name parameters that must never be decayed (e.g. the real-valued proxies of binary
    masks, which decay would pull to 0 and so flip at random) with a ``no_weight_decay()`` method returning
    their names relative to that module (timm's convention); these stay undecayed even with ``norm_bias_decay``.
    """
    if weight_decay == 0:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    exempt = _declared_no_weight_decay(model)
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        # 0/1-d parameters are biases, norm scales/shifts and scalar gates: decaying them only hurts.
        skip = id(p) in exempt or (p.ndim <= 1 and not norm_bias_decay)
        (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def _declared_no_weight_decay(model: nn.Module) -> set[int]:
    ids = set()
    for module in model.modules():
        names = getattr(module, "no_weight_decay", None)
        if callable(names):
            own = dict(module.named_parameters())
            # Unknown names are skipped: timm models list optional tokens that a given config may not have.
            ids.update(id(own[n]) for n in names() if n in own)
    return ids


def make_optimizer(
    model: nn.Module,
    name: str = "sgd",
    *,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float | None = None,
    nesterov: bool = True,
    norm_bias_decay: bool = False,
) -> torch.optim.Optimizer:
    """Build a named optimizer over ``model``'s trainable parameters.

    ``weight_decay=None`` takes the per-optimizer default (sgd 5e-4, rmsprop 1e-5, adam 0, adamw 0.05).
    Norm weights and biases get no weight decay unless ``norm_bias_decay=True``. ``momentum`` is used by
    sgd and rmsprop (adam/adamw keep their default betas); ``nesterov`` applies to sgd when momentum > 0.
    """
    key = name.lower()
    if key not in OPTIMIZERS:
        raise unknown_choice("optimizer", name, OPTIMIZERS)
    if not lr > 0:
        raise ConfigError(f"learning rate must be > 0, got lr={lr}; pass a positive lr such as 0.1 for sgd.")
    if not 0 <= momentum < 1:
        raise ConfigError(f"momentum must be in [0, 1), got {momentum}; 0.9 is the usual value.")
    wd = _DEFAULT_WEIGHT_DECAY[key] if weight_decay is None else weight_decay
    if wd < 0:
        raise ConfigError(f"weight_decay must be >= 0, got {wd}; pass 0 to disable it.")
    groups = param_groups(model, weight_decay=wd, norm_bias_decay=norm_bias_decay)
    if not groups:
        raise ConfigError("the model has no trainable parameters; unfreeze some (requires_grad=True).")
    if key == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
    if key == "rmsprop":
        # alpha=0.9 as in the MobileNet/EfficientNet recipes (torch's default 0.99 adapts too slowly).
        return torch.optim.RMSprop(groups, lr=lr, alpha=0.9, momentum=momentum)
    if key == "adam":
        return torch.optim.Adam(groups, lr=lr)
    return torch.optim.AdamW(groups, lr=lr)


@dataclass
class _Schedule:
    """LR multiplier per step: linear warmup then a cosine, step or constant phase.

    A plain-data callable (not a closure) so LambdaLR's state_dict stays weights-only loadable.
    """

    name: str
    total_steps: int
    warmup_steps: int
    milestones: list[float] = field(default_factory=list)
    gamma: float = 0.1
    min_factor: float = 0.0

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.name == "constant":
            return 1.0
        if self.name == "step":
            done = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
            return self.gamma ** sum(done >= m for m in self.milestones)
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str = "cosine",
    *,
    total_steps: int,
    warmup_steps: int = 0,
    milestones: Sequence[float] = (0.5, 0.75),
    gamma: float = 0.1,
    min_lr_factor: float = 0.0,
) -> LRScheduler:
    """Build a named LR schedule meant to be stepped ONCE PER BATCH over ``total_steps`` batches.

    cosine: linear warmup, then cosine decay to ``min_lr_factor`` x lr. step: multiply by ``gamma`` at each
    fraction in ``milestones`` of the post-warmup steps. constant: warmup, then flat. onecycle: torch's
    OneCycleLR peaking at the optimizer's lr after ``warmup_steps`` (30 % of the steps when 0).
    """
    key = name.lower()
    if key not in SCHEDULERS:
        raise unknown_choice("scheduler", name, SCHEDULERS)
    if total_steps < 1:
        raise ConfigError(
            f"total_steps must be >= 1, got {total_steps}; pass epochs * len(train_loader) "
            "(the schedule is stepped once per batch)."
        )
    if not 0 <= warmup_steps < total_steps:
        raise ConfigError(
            f"warmup_steps must be in [0, total_steps={total_steps}), got {warmup_steps}; shorten the warmup."
        )
    if key == "onecycle":
        # OneCycleLR peaks at step pct_start * total_steps - 1; +1 makes the peak land on step warmup_steps.
        pct = (warmup_steps + 1) / total_steps if warmup_steps else 0.3
        max_lr = [g["lr"] for g in optimizer.param_groups]
        return OneCycleLR(optimizer, max_lr=max_lr, total_steps=total_steps, pct_start=pct)
    marks = sorted(float(m) for m in milestones)
    if key == "step" and not all(0 < m < 1 for m in marks):
        raise ConfigError(f"step milestones are fractions of training in (0, 1), got {list(milestones)}.")
    fn = _Schedule(key, total_steps, warmup_steps, marks, float(gamma), float(min_lr_factor))
    return LambdaLR(optimizer, fn)
