"""Training engine: fit (replaceable train step), evaluate, atomic weights-only checkpoints, optimizers, schedules."""

from __future__ import annotations

from leanvision.engine.checkpoint import (
    load_checkpoint,
    load_model_state,
    load_weights,
    model_from_checkpoint,
    save_checkpoint,
    unwrap_model,
)
from leanvision.engine.evaluate import cross_entropy, evaluate
from leanvision.engine.fit import FitResult, fit
from leanvision.engine.optim import OPTIMIZERS, SCHEDULERS, make_optimizer, make_scheduler
from leanvision.engine.step import StepContext, TrainStep, standard_step

__all__ = [
    "OPTIMIZERS",
    "SCHEDULERS",
    "FitResult",
    "StepContext",
    "TrainStep",
    "cross_entropy",
    "evaluate",
    "fit",
    "load_checkpoint",
    "load_model_state",
    "load_weights",
    "make_optimizer",
    "make_scheduler",
    "model_from_checkpoint",
    "save_checkpoint",
    "standard_step",
    "unwrap_model",
]
