"""The in-process executor: jobs run one at a time in the caller's process, in submission order (tests, debugging)."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

from leanvision.executors.base import Failure


class InProcessExecutor:
    """Serial and deterministic; a job that raises becomes a ``Failure``. Timeouts cannot be enforced here."""

    workers = 1

    def __init__(self) -> None:
        self._queue: collections.deque[tuple[Any, Callable[[Any], Any], Any]] = collections.deque()

    def submit(self, key: Any, fn: Callable[[Any], Any], item: Any) -> None:
        self._queue.append((key, fn, item))

    def next_done(self) -> tuple[Any, Any]:
        if not self._queue:
            raise RuntimeError("next_done() with no job submitted")
        key, fn, item = self._queue.popleft()
        try:
            return key, fn(item)
        except Exception as err:  # a failing job is a result, not the end of the search
            return key, Failure.from_exception(err)

    def running(self) -> int:
        return len(self._queue)

    def close(self) -> None:
        self._queue.clear()

    def __enter__(self) -> InProcessExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
