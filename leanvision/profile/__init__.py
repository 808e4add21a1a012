"""Measure models: MACs and params per module (`profile`) and wall-clock latency (`latency`).

Call it as ``leanvision.profile.profile(model, x)`` (like ``torch.profiler.profile``); ``leanvision.profile``
is always this module.

Custom operators (dynamic kernels, gathered sparse execution, binary layers) extend the count in three ways:

* A module may define ``profile_macs(self, inputs: tuple, output) -> int | Mapping[str, int]``. The profiler
  then books exactly what it returns for that module (an int is MACs; a mapping may give ``"macs"`` and/or
  ``"bops"``) and neither counts nor reports the ops that run inside it.
* A module with ``mac_precision = "binary"`` has every MAC counted inside it booked as ``Profile.bops``
  (1-bit x 1-bit multiply-accumulates), reported apart from the float ``Profile.macs``.
  ``Profile.ops = macs + bops / 64`` follows the Bi-Real Net convention (arXiv 1808.00278).
* ``register_op_macs(op, fn)`` adds a formula for a custom torch op (e.g. one made with ``torch.library``):
  ``fn(*args, out=output, **kwargs)`` gets the op's arguments and output and returns MACs like the above.
"""

from __future__ import annotations

from leanvision.profile.format import format_count, format_profile
from leanvision.profile.machine import QUIET_CORES, busiest, busy_text, cpu_name, native_bf16, other_cpu, others_busy
from leanvision.profile.macs import Profile, count_params, profile, register_op_macs
from leanvision.profile.timing import (
    BACKENDS,
    LatencyStats,
    batchnorms_computed,
    check_deploy_form,
    compare_latency,
    latency,
    thread_counts,
)

__all__ = [
    "BACKENDS",
    "QUIET_CORES",
    "LatencyStats",
    "Profile",
    "batchnorms_computed",
    "busiest",
    "busy_text",
    "check_deploy_form",
    "compare_latency",
    "count_params",
    "cpu_name",
    "format_count",
    "format_profile",
    "latency",
    "native_bf16",
    "other_cpu",
    "others_busy",
    "profile",
    "register_op_macs",
    "thread_counts",
]
