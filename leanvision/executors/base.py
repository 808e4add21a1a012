"""The executor interface: submit keyed jobs, collect them as they finish; a job that fails is a ``Failure``."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol


@dataclass(frozen=True)
class Failure:
    """A job that did not return: it raised (``error``), ran past its timeout (``timeout``) or its worker died
    (``crash``). ``message`` is one line; ``detail`` may hold the traceback."""

    kind: Literal["error", "timeout", "crash"]
    message: str
    detail: str = ""

    @classmethod
    def from_exception(cls, err: BaseException) -> Failure:
        return cls("error", f"{type(err).__name__}: {err}".splitlines()[0], "".join(traceback.format_exception(err)))


class Executor(Protocol):
    """Runs ``fn(item)`` jobs on ``workers`` slots. Asynchronous: ``next_done`` returns whichever job finishes first.

    ``fn`` must be picklable for the process and Ray executors (a module-level function or an instance of a
    module-level class); it is shipped to each worker once, not with every job.
    """

    workers: int

    def submit(self, key: Any, fn: Callable[[Any], Any], item: Any) -> None: ...

    def next_done(self) -> tuple[Any, Any]:
        """Block until a submitted job ends; return ``(key, result or Failure)``."""
        ...

    def running(self) -> int:
        """Jobs submitted and not yet returned by ``next_done``."""
        ...

    def close(self) -> None: ...


def map_unordered(executor: Executor, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
    """Yield ``(item, result or Failure)`` as jobs finish, keeping every worker busy."""
    todo = iter(enumerate(items))
    held: dict[int, Any] = {}

    def feed() -> None:
        for key, item in todo:
            held[key] = item
            executor.submit(key, fn, item)
            if executor.running() >= executor.workers:
                return

    feed()
    while held:
        key, out = executor.next_done()
        yield held.pop(key), out
        feed()
