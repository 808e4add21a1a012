"""Measure models: MACs and params per module (`profile`) and wall-clock latency (`latency`)."""

from __future__ import annotations

import sys
import types
from typing import Any

from leanvision.profile.format import format_count, format_profile
from leanvision.profile.macs import Profile, count_params, profile
from leanvision.profile.timing import BACKENDS, LatencyStats, compare_latency, latency

__all__ = [
    "BACKENDS",
    "LatencyStats",
    "Profile",
    "compare_latency",
    "count_params",
    "format_count",
    "format_profile",
    "latency",
    "profile",
]


class _CallablePackage(types.ModuleType):
    # `leanvision.profile` is both this package and the function of the short public surface: once any
    # `import leanvision.profile...` has run, Python binds the package over the lazy function attribute,
    # so calling the package runs the function and `leanvision.profile(model, x)` works either way.
    def __call__(self, model: Any, example_input: Any) -> Profile:
        return profile(model, example_input)


sys.modules[__name__].__class__ = _CallablePackage
