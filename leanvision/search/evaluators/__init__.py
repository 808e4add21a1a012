"""Evaluators: picklable callables ``sample -> {"objective": float, ..., "report": {...}}``."""

from __future__ import annotations

from typing import Any

from leanvision.search.evaluators import sr, tabular, train, zerocost  # noqa: F401  (importing registers them)
from leanvision.search.evaluators._registry import EVALUATORS


def create_evaluator(name: str, **kwargs: Any) -> Any:
    """Build a registered evaluator by name; an unknown name or option is a one-line ``LeanVisionError``."""
    return EVALUATORS.create(name, **kwargs)


def list_evaluators(pattern: str = "*") -> list[str]:
    return EVALUATORS.list(pattern)
