"""Executors for search trials: in-process, a local process pool, and Ray. Only this package imports Ray."""

from __future__ import annotations

from typing import Any

from leanvision.dist.base import Executor, Failure, map_unordered
from leanvision.dist.inprocess import InProcessExecutor
from leanvision.dist.local import ProcessExecutor, default_workers
from leanvision.errors import ConfigError

EXECUTORS = ("inprocess", "process", "ray")


def make_executor(kind: str = "process", *, workers: int | None = None, timeout: float | None = None,
                  threads: int | None = 1, address: str | None = None) -> Any:  # fmt: skip
    """Build an executor by name: ``inprocess`` (serial), ``process`` (local pool) or ``ray``."""
    if address is not None and kind != "ray":
        raise ConfigError("--ray-address needs the ray executor (executor: ray)")
    if kind == "inprocess":
        return InProcessExecutor()
    if kind == "process":
        return ProcessExecutor(workers or default_workers(), timeout=timeout, threads=threads)
    if kind == "ray":
        from leanvision.dist.ray_executor import RayExecutor

        return RayExecutor(workers, address=address, timeout=timeout, threads=threads)
    from leanvision.registry import unknown_choice

    raise unknown_choice("executor", kind, EXECUTORS)


__all__ = ["EXECUTORS", "Executor", "Failure", "InProcessExecutor", "ProcessExecutor", "default_workers",
           "make_executor", "map_unordered"]  # fmt: skip
