"""Names a user can choose from, in one place; torch-free, so the command line offers them without importing torch.

Each room dispatches through a table keyed by these names; tests check the tables against them.
"""

from __future__ import annotations

from leanvision.registry import Choices

OPTIMIZERS = Choices("optimizer", ("sgd", "adamw", "rmsprop", "adam"))
SCHEDULERS = Choices("scheduler", ("cosine", "step", "constant", "onecycle"))
LATENCY_BACKENDS = Choices("latency backend", ("eager", "onnxruntime"))
SPLITS = Choices("split", ("train", "val", "test"))
PRECISIONS = Choices("precision", ("fp32", "bf16"))
