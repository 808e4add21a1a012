"""Training engine: fit (replaceable train step), evaluate, atomic weights-only checkpoints, optimizers, schedules,
and the workflows built on them: train (a run directory from a config), evaluate_checkpoint, predict, quickstart."""

from __future__ import annotations

from leanvision.engine._quickstart import QuickstartResult, quickstart
from leanvision.engine.checkpoint import (
    load_checkpoint,
    load_model_state,
    load_weights,
    model_from_checkpoint,
    save_checkpoint,
    slim_checkpoint,
    unwrap_model,
)
from leanvision.engine.evaluate import cross_entropy, evaluate
from leanvision.engine.fit import FitResult, fit
from leanvision.engine.optim import OPTIMIZERS, SCHEDULERS, make_optimizer, make_scheduler
from leanvision.engine.step import StepContext, TrainStep, standard_step
from leanvision.engine.training import TrainConfig, TrainResult, train
from leanvision.engine.use import (
    EvalResult,
    Prediction,
    checkpoint_data,
    evaluate_checkpoint,
    input_contract,
    load_image,
    load_trained,
    predict,
)

__all__ = [
    "OPTIMIZERS",
    "SCHEDULERS",
    "EvalResult",
    "FitResult",
    "Prediction",
    "QuickstartResult",
    "StepContext",
    "TrainConfig",
    "TrainResult",
    "TrainStep",
    "checkpoint_data",
    "cross_entropy",
    "evaluate",
    "evaluate_checkpoint",
    "fit",
    "input_contract",
    "load_checkpoint",
    "load_image",
    "load_model_state",
    "load_trained",
    "load_weights",
    "make_optimizer",
    "make_scheduler",
    "model_from_checkpoint",
    "predict",
    "quickstart",
    "save_checkpoint",
    "slim_checkpoint",
    "standard_step",
    "train",
    "unwrap_model",
]
