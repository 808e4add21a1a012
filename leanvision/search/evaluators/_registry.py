"""The evaluator registry (its own module, so the evaluators register without importing their package)."""

from __future__ import annotations

from typing import Any

from leanvision.registry import Registry

EVALUATORS: Registry[Any] = Registry("evaluator", hint="Known: see leanvision.search.list_evaluators().")

_SPACES: dict[str, Any] = {}


def cached_space(name: str, kwargs: dict[str, Any]) -> Any:
    """The search space ``name(**kwargs)``, built once per process: trials in a worker share it."""
    key = repr((name, sorted(kwargs.items())))
    if key not in _SPACES:
        from leanvision.search.space import create_space

        _SPACES[key] = create_space(name, **kwargs)
    return _SPACES[key]
