"""The ask/tell strategy interface (optuna's design): strategies read history, the driver owns the loop."""

from __future__ import annotations

import random
from typing import Any

from leanvision.registry import Registry
from leanvision.search.space import Result, Sample, SearchSpace

STRATEGIES: Registry[Strategy] = Registry("strategy", hint="Known: see leanvision.search.list_strategies().")


class Strategy:
    """Base class: ``ask`` proposes samples, ``tell`` reports one result (maximise ``result['objective']``).

    ``tell`` sees only what a search may use: ``status`` ("ok" or "failed"), ``objective`` (None when failed) and
    other visible metrics; report-only numbers (test accuracy, ground truth) never reach a strategy. A seeded
    strategy given the same sequence of asks and tells proposes the same samples (resume depends on it).
    """

    def __init__(self, space: SearchSpace, *, seed: int = 0) -> None:
        self.space = space
        self.seed = seed
        self.rng = random.Random(seed)

    def ask(self, n: int = 1) -> list[Sample]:
        return [self._ask_one() for _ in range(n)]

    def _ask_one(self) -> Sample:
        raise NotImplementedError

    def tell(self, sample: Sample, result: Result) -> None:
        """Default: nothing to learn (random search)."""


def ok(result: Result) -> bool:
    """Whether a told result is a finished trial with an objective."""
    return result.get("status", "ok") == "ok" and result.get("objective") is not None


def create_strategy(name: str, space: SearchSpace, *, seed: int = 0, **kwargs: Any) -> Strategy:
    """Build a registered strategy by name; an unknown name or option is a one-line ``LeanVisionError``."""
    return STRATEGIES.create(name, space, seed=seed, **kwargs)


def list_strategies(pattern: str = "*") -> list[str]:
    return STRATEGIES.list(pattern)
