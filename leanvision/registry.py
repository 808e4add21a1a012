"""A small name -> builder registry, populated by decorator (timm / torchvision style)."""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from leanvision.errors import ConfigError, UnknownNameError

T = TypeVar("T")


def close_matches(name: str, choices: list[str], n: int = 3) -> str:
    """Return ' Did you mean: a, b?' for the closest choices, or '' when none is close."""
    hits = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(hits)}?" if hits else ""


def unknown_choice(kind: str, value: object, choices: tuple[str, ...] | list[str]) -> UnknownNameError:
    """The error for a value outside a small fixed set: names the closest choice and lists them all."""
    close = difflib.get_close_matches(str(value), list(choices), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return UnknownNameError(f"unknown {kind} {value!r}; {hint}choose one of: {', '.join(choices)}")


class Choices(tuple[str, ...]):
    """A fixed set of names a user picks from (optimizers, backends, splits...): torch-free, so the CLI can offer them.

    Declared once (``leanvision/names.py`` or a torch-free module of its room); the room dispatches through a table
    keyed by the same names, and a test checks that table against the choices. ``Literal[CHOICES]`` works in pydantic.
    """

    kind: str

    def __new__(cls, kind: str, names: tuple[str, ...]) -> Choices:
        self = super().__new__(cls, names)
        self.kind = kind
        return self

    def __getnewargs__(self) -> tuple[str, tuple[str, ...]]:  # type: ignore[override]
        return self.kind, tuple(self)

    def check(self, value: object) -> str:
        """``value`` when it is one of the choices, else an UnknownNameError naming the closest and listing all."""
        if value not in self:
            raise unknown_choice(self.kind, value, self)
        return value  # type: ignore[return-value]


class Registry(Generic[T]):
    """Maps names to builders plus free-form metadata; raises on duplicates and suggests close matches.

    ``hint`` ends the unknown-name error (e.g. how to list the names); without one the error lists them all.
    """

    def __init__(self, kind: str, *, hint: str | None = None) -> None:
        self.kind = kind
        self.hint = hint
        self._builders: dict[str, Callable[..., T]] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str | None = None, **meta: Any) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: register ``fn`` under ``name`` (default: the function's name) with ``meta``."""

        def deco(fn: Callable[..., T]) -> Callable[..., T]:
            key = name or fn.__name__
            if key in self._builders:
                raise ValueError(f"{self.kind} '{key}' is already registered")
            self._builders[key] = fn
            self._meta[key] = dict(meta)
            return fn

        return deco

    def get(self, name: str) -> Callable[..., T]:
        """The builder registered as ``name``; unknown names raise with close-match suggestions."""
        try:
            return self._builders[name]
        except KeyError:
            close = close_matches(name, list(self._builders))
            rest = self.hint or f"Known: {', '.join(sorted(self._builders))}."
            raise UnknownNameError(f"unknown {self.kind} '{name}'.{close} {rest}") from None

    def meta(self, name: str) -> dict[str, Any]:
        """Metadata given at registration (a copy)."""
        self.get(name)
        return dict(self._meta[name])

    def list(self, pattern: str = "*") -> list[str]:
        """Sorted names matching a shell-style ``pattern`` (case-insensitive)."""
        return sorted(n for n in self._builders if fnmatch.fnmatch(n.lower(), pattern.lower()))

    def build(self, name: str, /, **kwargs: Any) -> T:
        return self.get(name)(**kwargs)

    def create(self, name: str, /, *args: Any, **kwargs: Any) -> T:
        """Like :meth:`build`, but an option the builder does not take is a ``ConfigError`` listing the ones it does."""
        fn = self.get(name)
        params = inspect.signature(fn).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            named = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
            bad = sorted(set(kwargs) - set(named))
            if bad:
                takes = ", ".join(n for n in named[len(args) :]) or "none"
                raise ConfigError(f"{self.kind} '{name}' has no option {', '.join(map(repr, bad))}; it takes: {takes}")
        return fn(*args, **kwargs)

    def __contains__(self, name: object) -> bool:
        return name in self._builders

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self._builders)
