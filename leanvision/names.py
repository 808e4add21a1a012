"""Names a user can choose from, in one place; torch-free, so the command line offers them without importing torch."""

from __future__ import annotations

OPTIMIZERS = ("sgd", "adamw", "rmsprop", "adam")
SCHEDULERS = ("cosine", "step", "constant", "onecycle")
LATENCY_BACKENDS = ("eager", "onnxruntime")
SPLITS = ("train", "val", "test")
