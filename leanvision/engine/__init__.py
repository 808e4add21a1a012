"""Training engine: fit / evaluate, atomic weights-only checkpoints, optimizers and LR schedules by name."""

from __future__ import annotations

from leanvision.engine.checkpoint import (
    load_checkpoint,
    load_model_state,
    load_weights,
    save_checkpoint,
    unwrap_model,
)
from leanvision.engine.evaluate import cross_entropy, evaluate
from leanvision.engine.fit import FitResult, fit
from leanvision.engine.optim import OPTIMIZERS, SCHEDULERS, make_optimizer, make_scheduler

__all__ = [
    "OPTIMIZERS",
    "SCHEDULERS",
    "FitResult",
    "cross_entropy",
    "evaluate",
    "fit",
    "load_checkpoint",
    "load_model_state",
    "load_weights",
    "make_optimizer",
    "make_scheduler",
    "save_checkpoint",
    "unwrap_model",
]
