"""The machine a measurement ran on: its CPU, whether it computes bfloat16 natively, and how busy OTHER processes
kept it (which a latency measurement is judged by)."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import cache

import torch

QUIET_CORES = 0.1  # other processes using more CPU cores than this make a timing untrustworthy


def _busy_seconds() -> float | None:
    """CPU seconds spent busy by all processes on all cores since boot (Linux /proc/stat), None elsewhere."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    except (OSError, ValueError):
        return None
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@contextmanager
def other_cpu(record: dict) -> Iterator[dict]:
    """Set ``record["other_cores"]``: CPU cores kept busy by OTHER processes while the block ran (None off Linux).

    The load average cannot tell: a benchmark's own threads raise it to about their count while it runs.
    All busy CPU time minus this process's own, over the wall time, can.
    """
    busy0, own0, wall0 = _busy_seconds(), time.process_time(), time.perf_counter()
    try:
        yield record
    finally:
        busy1, own1, wall1 = _busy_seconds(), time.process_time(), time.perf_counter()
        record["other_cores"] = (
            None if busy0 is None or busy1 is None
            else max(0.0, (busy1 - busy0 - (own1 - own0)) / max(wall1 - wall0, 1e-9))
        )  # fmt: skip


def others_busy(seconds: float = 5.0) -> float | None:
    """CPU cores other processes keep busy, measured over ``seconds`` of sleep (None where /proc/stat is missing).

    Unlike the load average this is not raised by what this process itself did a moment ago.
    """
    with other_cpu({}) as record:
        time.sleep(seconds)
    return record["other_cores"]


def busiest(loads: Iterable[float | None]) -> float | None:
    """The most cores other processes used in any of several timings (None when none could be measured)."""
    known = [c for c in loads if c is not None]
    return max(known) if known else None


def busy_text(other_cores: float | None) -> str:
    """``other_cores`` as a clause for a report: how many cores others used, and whether that makes timings noisy."""
    if other_cores is None:
        return "the load of other processes could not be measured here"
    quiet = other_cores <= QUIET_CORES
    return (f"other processes kept {other_cores:.2f} CPU cores busy meanwhile"
            + ("" if quiet else f" (over {QUIET_CORES}: a busy machine, so the times are noisy)"))  # fmt: skip


@cache
def cpu_name() -> str:
    """``"AMD EPYC [AVX2]"``: the CPU's model name (Linux /proc/cpuinfo; else what ``platform`` knows) and the best
    instruction set torch uses on it. Timings from two CPUs don't compare; a virtual machine may show only a family
    name, so the instruction set tells more of them apart."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), name)
    except OSError:  # not Linux
        pass
    return f"{name} [{torch.backends.cpu.get_cpu_capability()}]"


@cache
def native_bf16() -> bool | None:
    """Whether this CPU computes bfloat16 convolutions natively (AVX-512 or AMX in oneDNN); None where torch can't say.

    Without it oneDNN has no bf16 kernels and convolutions fall back to slow generic code: on a 2-core AVX2 CPU a
    bf16 training step of ResNet-18 measured 11x slower than float32 (docs/results.md).
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN, or without this private check
        return None
