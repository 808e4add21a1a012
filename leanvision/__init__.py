"""leanvision: efficient vision models, compression and search, measured honestly."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from leanvision.errors import LeanVisionError

__version__ = "0.1.0"

# The short public surface, imported lazily so `import leanvision` stays cheap and rooms stay independent.
_LAZY = {
    "create_model": "leanvision.models",
    "list_models": "leanvision.models",
    "model_card": "leanvision.models",
    "latency": "leanvision.profile",
    "load_dataset": "leanvision.data",
    "fit": "leanvision.engine",
    "evaluate": "leanvision.engine",
}

# Rooms exposed as modules. `profile` is the module, never its function (call `lv.profile.profile(model, x)`):
# a name that is a function before `import leanvision.profile` and the package after it would be a trap.
_MODULES = ("profile",)

__all__ = ["LeanVisionError", "__version__", *_LAZY, *_MODULES]


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return import_module(f"leanvision.{name}")
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'leanvision' has no attribute {name!r}")
