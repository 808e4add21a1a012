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

# Per-optimizer weight decay when none is given: the usual values of the CIFAR/ImageNet recipes.
_DEFAULT_WEIGHT_DECAY = {"sgd": 5e-4, "rmsprop": 1e-5, "adam": 0.0, "adamw": 0.05}


def param_groups(model: nn.Module, *, weight_decay: float, norm_bias_decay: bool = False) -> list[dict[str, object]]:
    """Split trainable parameters into a decayed group and a no-decay group of norm weights and biases.

    A module may also name parameters that must never be decayed (e.g. the real-valued proxies of binary
    masks, which decay would pull to 0 and so flip at random) with a ``no_weight_decay()`` method returning
    their names relative to that module (timm's convention); these stay undecayed even with ``norm_bias_decay``.
    Likewise ``lr_scale()`` returning ``{name: factor}`` puts those parameters in groups whose ``"lr_scale"`` key
    ``make_optimizer`` multiplies the learning rate by (e.g. the coefficient layer of a dynamic conv).
    """
    exempt = _declared_no_weight_decay(model) if weight_decay else set()
    scales = _declared_lr_scales(model)
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        # 0/1-d parameters are biases, norm scales/shifts and scalar gates: decaying them only hurts.
        skip = weight_decay == 0 or id(p) in exempt or (p.ndim <= 1 and not norm_bias_decay)
        groups.setdefault((not skip, scales.get(id(p), 1.0)), []).append(p)
    return [
        {"params": params, "weight_decay": weight_decay if decay else 0.0, **({"lr_scale": s} if s != 1 else {})}
        for (decay, s), params in sorted(groups.items(), key=lambda kv: (not kv[0][0], kv[0][1]))
    ]


def _declared(model: nn.Module, method: str) -> dict[int, object]:
    """``id(param) -> value`` from every module's ``method()`` (a set of names, or a dict of name -> value)."""
    found: dict[int, object] = {}
    for module in model.modules():
        names = getattr(module, method, None)
        if callable(names):
            own = dict(module.named_parameters())
            declared = names()
            values = declared if isinstance(declared, dict) else dict.fromkeys(declared, True)
            # Unknown names are skipped: timm models list optional tokens that a given config may not have.
            found.update({id(own[n]): v for n, v in values.items() if n in own})
    return found


def _declared_no_weight_decay(model: nn.Module) -> set[int]:
    return set(_declared(model, "no_weight_decay"))


def _declared_lr_scales(model: nn.Module) -> dict[int, float]:
    return {k: float(v) for k, v in _declared(model, "lr_scale").items()}


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
    Norm weights and biases get no weight decay unless ``norm_bias_decay=True``; parameters a module declares in
    ``no_weight_decay()`` never do, and those in ``lr_scale()`` train at that multiple of ``lr``. ``momentum`` is
    used by sgd and rmsprop (adam/adamw keep their default betas); ``nesterov`` applies to sgd when momentum > 0.
    """
    key = OPTIMIZERS.check(name.lower())
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
    for g in groups:
        if "lr_scale" in g:
            g["lr"] = lr * g["lr_scale"]
    return _OPTIMIZERS[key](groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)


# Keyed by OPTIMIZERS (a test checks). adam/adamw keep their default betas.
_OPTIMIZERS = {
    "sgd": lambda g, *, lr, momentum, nesterov: torch.optim.SGD(g, lr=lr, momentum=momentum, nesterov=nesterov),
    # alpha=0.9 as in the MobileNet/EfficientNet recipes (torch's default 0.99 adapts too slowly).
    "rmsprop": lambda g, *, lr, momentum, nesterov: torch.optim.RMSprop(g, lr=lr, alpha=0.9, momentum=momentum),
    "adam": lambda g, *, lr, momentum, nesterov: torch.optim.Adam(g, lr=lr),
    "adamw": lambda g, *, lr, momentum, nesterov: torch.optim.AdamW(g, lr=lr),
}


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
        done = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return _PHASES[self.name](self, min(1.0, done))


# What follows the warm-up, by schedule name, as a function of the fraction of post-warm-up steps done; with
# onecycle (torch's own) these are keyed by SCHEDULERS (a test checks).
_PHASES = {
    "constant": lambda s, done: 1.0,
    "step": lambda s, done: s.gamma ** sum(done >= m for m in s.milestones),
    "cosine": lambda s, done: s.min_factor + (1 - s.min_factor) * 0.5 * (1 + math.cos(math.pi * done)),
}


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
    key = SCHEDULERS.check(name.lower())
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
