"""A synthetic space and objective with a known optimum: checks a setup (executors, Ray cluster, resume) in seconds."""

from __future__ import annotations

import os
import random
import signal
import time
from typing import Any

from leanvision.errors import ConfigError
from leanvision.search.evaluators import EVALUATORS
from leanvision.search.space import SPACES, Choice, ChoiceSpace, Sample


@SPACES.register("synthetic")
class SyntheticSpace(ChoiceSpace):
    """``dims`` decisions ``x0 .. x{dims-1}``, each one of ``0 .. options-1``."""

    name = "synthetic"

    def __init__(self, *, dims: int = 6, options: int = 5) -> None:
        if dims < 1 or options < 2:
            raise ConfigError(f"synthetic space: need dims >= 1 and options >= 2, got dims={dims}, options={options}")
        self._params = {f"x{i}": Choice(tuple(range(options))) for i in range(dims)}


def _matches(sample: Sample, cond: dict[str, Any] | None) -> bool:
    return bool(cond) and all(sample.get(k) == v for k, v in cond.items())


@EVALUATORS.register("synthetic")
class SyntheticObjective:
    """Objective ``-sum_i (x_i - t_i)^2`` with a hidden target ``t`` drawn from ``seed`` (maximum 0 at ``x = t``).

    For testing failure handling, samples matching ``raise_on`` raise, ``crash_on`` kill their own worker process,
    ``hang_on`` sleep for an hour (dicts such as ``{"x0": 4}``); ``sleep`` seconds per trial make asynchrony real.
    The squared distance to the target goes to ``report`` (never shown to a strategy).
    """

    def __init__(self, *, dims: int = 6, options: int = 5, seed: int = 0, sleep: float = 0.0,
                 raise_on: dict[str, Any] | None = None, crash_on: dict[str, Any] | None = None,
                 hang_on: dict[str, Any] | None = None) -> None:  # fmt: skip
        rng = random.Random(f"synthetic-target-{seed}")  # not the plain seed: a strategy seeded alike draws the same
        self.target = [rng.randrange(options) for _ in range(dims)]
        self.sleep, self.raise_on, self.crash_on, self.hang_on = sleep, raise_on, crash_on, hang_on

    def __call__(self, sample: Sample) -> dict[str, Any]:
        if _matches(sample, self.raise_on):
            raise ValueError(f"synthetic failure for {sample}")
        if _matches(sample, self.crash_on):
            os.kill(os.getpid(), signal.SIGKILL)
        if _matches(sample, self.hang_on):
            time.sleep(3600)
        if self.sleep:
            time.sleep(self.sleep)
        dist = sum((sample[f"x{i}"] - t) ** 2 for i, t in enumerate(self.target))
        return {"objective": -float(dist), "report": {"distance": float(dist)}}
