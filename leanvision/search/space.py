"""Search spaces: samples are JSON-able dicts; a space samples, mutates, validates and builds them."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from leanvision.errors import ConfigError
from leanvision.registry import Registry

Sample = dict[str, Any]
Result = dict[str, Any]


@dataclass(frozen=True)
class Choice:
    """One categorical decision: the value is one of ``options`` (JSON scalars)."""

    options: tuple[Any, ...]

    def __post_init__(self) -> None:
        if len(self.options) < 1 or len(set(self.options)) != len(self.options):
            raise ValueError(f"Choice needs distinct options, got {self.options!r}")


@runtime_checkable
class SearchSpace(Protocol):
    """What strategies need from a space. Samples are plain dicts so they cross processes and land in journals."""

    name: str

    def params(self) -> dict[str, Choice]:
        """A flat categorical view (for TPE-like strategies); empty when the space has none."""
        ...

    def sample(self, rng: random.Random) -> Sample: ...

    def mutate(self, sample: Sample, rng: random.Random) -> Sample: ...

    def validate(self, sample: Sample) -> None:
        """Raise ``ConfigError`` saying what is wrong with ``sample``."""
        ...

    def key(self, sample: Sample) -> str:
        """A canonical string: equal for samples that denote the same architecture."""
        ...

    def build(self, sample: Sample, **kwargs: Any) -> Any: ...


class ChoiceSpace:
    """A space of independent categorical ``params``: uniform sampling, one-decision mutation, exact validation.

    Subclasses set ``name`` and ``_params`` (and usually ``build``/``key``).
    """

    name = "choices"
    _params: dict[str, Choice]

    def params(self) -> dict[str, Choice]:
        return dict(self._params)

    def sample(self, rng: random.Random) -> Sample:
        return {k: rng.choice(p.options) for k, p in self._params.items()}

    def mutate(self, sample: Sample, rng: random.Random) -> Sample:
        """Change exactly one decision to a different option (regularised evolution's mutation)."""
        movable = [k for k, p in self._params.items() if len(p.options) > 1]
        if not movable:
            return dict(sample)
        k = rng.choice(movable)
        child = dict(sample)
        child[k] = rng.choice([o for o in self._params[k].options if o != sample[k]])
        return child

    def validate(self, sample: Sample) -> None:
        if not isinstance(sample, dict):
            raise ConfigError(f"{self.name}: a sample is a dict of {', '.join(self._params)}, got {sample!r}")
        missing, extra = set(self._params) - set(sample), set(sample) - set(self._params)
        if missing or extra:
            raise ConfigError(
                f"{self.name}: sample keys differ from the space's (missing {sorted(missing)}, unknown {sorted(extra)})"
            )
        for k, p in self._params.items():
            if sample[k] not in p.options:
                raise ConfigError(f"{self.name}: {k}={sample[k]!r} is not one of {list(p.options)}")

    def key(self, sample: Sample) -> str:
        return json.dumps([sample[k] for k in self._params])

    def size(self) -> int:
        n = 1
        for p in self._params.values():
            n *= len(p.options)
        return n

    def build(self, sample: Sample, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{self.name} does not build models")


def check_options(name: str, values: Sequence[Any], allowed: Sequence[Any]) -> None:
    """Raise ``ConfigError`` if a configured option list is empty or has values outside ``allowed``."""
    bad = [v for v in values if v not in allowed]
    if not values or bad:
        raise ConfigError(f"{name}: choose a non-empty subset of {list(allowed)}, got {list(values)}")


SPACES: Registry[SearchSpace] = Registry("search space", hint="Known: see leanvision.search.list_spaces().")


def create_space(name: str, **kwargs: Any) -> SearchSpace:
    """Build a registered search space by name; an unknown name or option is a one-line ``LeanVisionError``."""
    return SPACES.create(name, **kwargs)


def list_spaces(pattern: str = "*") -> list[str]:
    return SPACES.list(pattern)
