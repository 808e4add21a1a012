"""Quiet-machine helpers shared by the latency benchmarks: load average and CPU used by OTHER processes."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

QUIET_CORES = 0.1  # other processes using more CPU cores than this make a timing untrustworthy


def load1() -> float:
    return os.getloadavg()[0]


def _busy_seconds() -> float | None:
    """CPU seconds spent busy by all processes on all cores since boot (Linux /proc/stat), None elsewhere."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    except (OSError, ValueError):
        return None
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def other_cpu(record: dict):
    """Set ``record["other_cores"]``: cores kept busy by OTHER processes while the block ran.

    The load average cannot tell: this benchmark's own threads raise it to about --threads while it runs.
    All busy CPU time minus this process's own, over the wall time, can.
    """
    busy0, own0, wall0 = _busy_seconds(), time.process_time(), time.perf_counter()
    yield
    busy1, own1, wall1 = _busy_seconds(), time.process_time(), time.perf_counter()
    if busy0 is None or busy1 is None:
        record["other_cores"] = None
    else:
        record["other_cores"] = max(0.0, (busy1 - busy0 - (own1 - own0)) / max(wall1 - wall0, 1e-9))


def others_busy(seconds: float = 5.0) -> float | None:
    """CPU cores other processes keep busy, measured over ``seconds`` of sleep (None where /proc/stat is missing).

    Unlike the load average this is not raised by what this process itself did a moment ago.
    """
    record: dict = {}
    with other_cpu(record):
        time.sleep(seconds)
    return record["other_cores"]


def cores_text(c: dict | float | None) -> str:
    """``record["other_cores"]`` (or the number itself) as text, "unknown" where it could not be measured."""
    value = c.get("other_cores") if isinstance(c, dict) else c
    return "unknown" if value is None else f"{value:.2f}"


def add_load_args(ap: argparse.ArgumentParser) -> None:
    """The quiet-machine flags every timing benchmark takes: --max-load and --allow-busy."""
    ap.add_argument("--max-load", type=float, default=0.5, help="refuse to run above this 1-minute load average")
    ap.add_argument("--allow-busy", action="store_true", help="run even above --max-load (recorded in the JSON)")


def check_quiet(max_load: float, allow_busy: bool) -> float:
    """The 1-minute load average now; exits with a one-line reason when it is above ``max_load`` (unless allowed)."""
    load = load1()
    if load > max_load and not allow_busy:
        sys.exit(
            f"refusing to time: the 1-minute load average is {load:.2f} (> --max-load {max_load}); other "
            "processes would distort the timings. Wait for a quiet machine, or pass --allow-busy to run anyway "
            "(the load is then recorded beside the results)."
        )
    if load > max_load:
        print(f"--allow-busy: 1-minute load average {load:.2f} > {max_load}; timings will be noisy")
    return load
