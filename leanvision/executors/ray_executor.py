"""Ray executor: the same interface on a local Ray instance or an existing cluster (``address``)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

from leanvision.errors import ConfigError, missing_extra
from leanvision.executors.base import Failure


def _run(fn: Callable[[Any], Any], item: Any, threads: int | None) -> Any:
    if threads:
        import torch

        torch.set_num_threads(threads)
    return fn(item)


class RayExecutor:
    """Jobs as Ray tasks (1 CPU each, no retries). Starts a local Ray (``workers`` CPUs) unless ``address`` names a
    running cluster (``ray start --head`` on one node, ``ray start --address HEAD:6379`` on the others); then
    ``workers`` defaults to the cluster's CPUs. Timeouts cancel the task (its worker is killed); a dead worker
    is a ``Failure("crash")``. Ray's usage statistics are switched off: nothing leaves the machine."""

    def __init__(self, workers: int | None = None, *, address: str | None = None, timeout: float | None = None,
                 threads: int | None = 1) -> None:  # fmt: skip
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        try:
            import ray
        except ModuleNotFoundError:
            raise missing_extra("the ray executor", "ray") from None

        if timeout is not None and timeout <= 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {timeout}")
        self._own = not ray.is_initialized()
        if self._own:
            term = signal.getsignal(signal.SIGTERM)
            try:
                if address is None:
                    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                             _node_ip_address="127.0.0.1")  # fmt: skip
                else:
                    ray.init(address=address, log_to_driver=False, logging_level="ERROR")
            except ConnectionError as err:
                raise ConfigError(f"cannot reach the Ray cluster at {address!r}: {err}".splitlines()[0]) from err
            finally:
                # ray.init replaces a SIGTERM handler with a silent sys.exit; one the program set (e.g. the CLI's,
                # which stops the search like Ctrl-C and shuts this Ray down through close()) comes back.
                if callable(term) and signal.getsignal(signal.SIGTERM) is not term:
                    signal.signal(signal.SIGTERM, term)
        self.workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.timeout, self.threads = timeout, threads
        self._ray = ray
        self._task = ray.remote(num_cpus=1, max_retries=0)(_run)
        self._fn_refs: dict[int, tuple[Callable[[Any], Any], Any]] = {}
        self._refs: dict[Any, tuple[Any, float]] = {}  # ref -> (key, deadline)

    def submit(self, key: Any, fn: Callable[[Any], Any], item: Any) -> None:
        if id(fn) not in self._fn_refs:  # the evaluator goes to the object store once
            self._fn_refs[id(fn)] = (fn, self._ray.put(fn))
        ref = self._task.remote(self._fn_refs[id(fn)][1], item, self.threads)
        self._refs[ref] = (key, time.monotonic() + self.timeout if self.timeout else float("inf"))

    def running(self) -> int:
        return len(self._refs)

    def next_done(self) -> tuple[Any, Any]:
        ray = self._ray
        if not self._refs:
            raise RuntimeError("next_done() with no job submitted")
        while True:
            first = min(d for _, d in self._refs.values())
            wait_s = None if first == float("inf") else max(0.0, first - time.monotonic())
            done, _ = ray.wait(list(self._refs), num_returns=1, timeout=wait_s)
            if done:
                ref = done[0]
                key, _ = self._refs.pop(ref)
                try:
                    return key, ray.get(ref)
                except ray.exceptions.RayTaskError as err:
                    cause = err.cause if isinstance(err.cause, BaseException) else err
                    return key, Failure.from_exception(cause)
                except (ray.exceptions.WorkerCrashedError, ray.exceptions.RayActorError) as err:
                    return key, Failure("crash", f"Ray worker died: {type(err).__name__}", str(err))
                except ray.exceptions.TaskCancelledError as err:
                    return key, Failure("crash", "Ray task was cancelled", str(err))
            now = time.monotonic()
            for ref, (key, deadline) in list(self._refs.items()):
                if now >= deadline:
                    ray.cancel(ref, force=True)
                    del self._refs[ref]
                    return key, Failure("timeout", f"killed after the {self.timeout:g} s timeout")

    def close(self) -> None:
        if not self._own:  # a cluster outlives this search: stop its tasks (a Ray started here goes down whole)
            for ref in self._refs:
                self._ray.cancel(ref, force=True)
        self._refs.clear()
        self._fn_refs.clear()
        if self._own and self._ray.is_initialized():
            self._ray.shutdown()
            self._own = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
