"""The evaluator registry (its own module, so the evaluators register without importing their package)."""

from __future__ import annotations

from typing import Any

from leanvision.registry import Registry

EVALUATORS: Registry[Any] = Registry("evaluator", hint="Known: see leanvision.search.list_evaluators().")
