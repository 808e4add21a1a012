"""Quiet-machine helpers shared by the latency benchmarks: load average and CPU used by OTHER processes."""

from __future__ import annotations

import argparse
import os
import sys

from leanvision.profile.machine import QUIET_CORES, other_cpu, others_busy

__all__ = ["QUIET_CORES", "add_load_args", "check_quiet", "cores_text", "load1", "other_cpu", "others_busy"]


def load1() -> float:
    return os.getloadavg()[0]


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
