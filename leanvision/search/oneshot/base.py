"""The one-shot (weight-sharing) method interface: a method trains a supernet in rounds and scores cells on it.

A one-shot search is not a sequence of independent trials: one supernet is trained with sampled paths and every
candidate is scored with the weights it inherits. So a method is a resumable state machine of ``rounds``: each
``run_round`` trains and/or scores, and returns the candidates it scored; between rounds the driver saves the
whole state (supernet, optimiser, RNG, the method's own) and journals the candidates, so a killed search
continues from its last finished round. Methods see only supernet scores; the driver adds ground truth to the
journal's ``report`` for the user, never for the method.
"""

from __future__ import annotations

from typing import Any

from leanvision.registry import Registry
from leanvision.search.space import Sample


class OneShotMethod:
    """Base class of the weight-sharing methods (SPOS, BETANAS, CARS).

    Subclasses implement:
      - ``rounds()``: the number of rounds (fixed at construction, so progress and resume know the end);
      - ``run_round(r)``: round ``r`` (0-based): train and/or score; return the scored candidates as dicts
        ``{"sample": sample, "objective": supernet score (higher is better), **visible metrics}``;
      - ``state_dict()`` / ``load_state_dict(state)``: everything needed to continue after round r exactly as an
        uninterrupted run would (supernet and optimiser state, RNG states, the method's own state);
      - ``result()``: the method's outcome after the last round: ``{"picks": [samples, best first], ...}`` plus
        method-specific JSON-able entries (``pareto``, ``dropped``, ``op_counts``, ...).
    """

    name = "oneshot"

    def rounds(self) -> int:
        raise NotImplementedError

    def run_round(self, r: int) -> list[dict[str, Any]]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def result(self) -> dict[str, Any]:
        raise NotImplementedError


SUPERNET = "supernet"  # the old spelling of a one-shot config (evaluator: supernet), read for one more release
ONESHOT: Registry[OneShotMethod] = Registry("one-shot method",
                                            hint="Known: see leanvision.search.oneshot.list_oneshot().")  # fmt: skip


def create_oneshot(name: str, space: Any, *, seed: int = 0, supernet: dict[str, Any] | None = None,
                   **kwargs: Any) -> OneShotMethod:  # fmt: skip
    """Build a registered one-shot method on ``space`` with supernet/data/training options ``supernet``."""
    return ONESHOT.create(name, space, seed=seed, supernet=dict(supernet or {}), **kwargs)


def list_oneshot(pattern: str = "*") -> list[str]:
    return ONESHOT.list(pattern)


def picks_of(result: dict[str, Any]) -> list[Sample]:
    """The picked samples of a method's ``result()``, best first."""
    return list(result.get("picks", []))
