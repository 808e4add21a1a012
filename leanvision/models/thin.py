"""The thin control: the same family with its widths scaled until its cost matches a target (MACs by default).

Every "cheaper at equal accuracy" claim should beat the cheapest thing a user could do instead: a uniformly thinner
plain net of the same cost, trained with the same recipe.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from leanvision.errors import ConfigError
from leanvision.ops.fuse import fuse_bn
from leanvision.profile import latency, profile


@dataclass
class WidthMatch:
    """The width found, the model built at it, its cost and the target (``ratio`` = cost / target)."""

    width: float
    model: nn.Module
    cost: float
    target: float

    @property
    def ratio(self) -> float:
        return self.cost / self.target


def macs_at(input_size: Sequence[int]) -> Callable[[nn.Module], float]:
    """A cost function: MACs of one ``input_size`` (C, H, W) image, by leanvision's profiler."""
    return lambda model: float(profile(model, torch.zeros(1, *input_size)).macs)


def latency_at(
    input_size: Sequence[int],
    *,
    batch_size: int = 1,
    backend: str = "eager",
    threads: int | None = None,
    iters: int = 20,
) -> Callable[[nn.Module], float]:
    """A cost function: the median ms of ``leanvision.profile.latency`` on the BatchNorm-folded (deploy) model.

    A measured cost is noisy: bisecting on it finds the width whose latency crosses the target on this machine
    now, so time on a quiet machine and keep the measurement beside the result.
    """
    x = torch.zeros(batch_size, *input_size)
    return lambda model: latency(fuse_bn(model), x, backend=backend, threads=threads, iters=iters).median_ms


def match_width(
    build: Callable[[float], nn.Module],
    target: float,
    *,
    cost: Callable[[nn.Module], float] | None = None,
    input_size: Sequence[int] = (3, 32, 32),
    low: float = 0.01,
    high: float = 1.0,
    iters: int = 20,
) -> WidthMatch:
    """Bisect the width multiplier of ``build(width)`` so that ``cost(model)`` is as close as it gets to ``target``.

    ``cost`` defaults to the MACs of one ``input_size`` image; any cost that does not fall as the width grows works
    (e.g. a measured latency). Channel counts are integers, so the cost is a staircase: of the two widths around the
    target, the one whose cost is nearer wins (the lower one on a tie). ``target`` must lie within the costs at
    ``low`` and ``high``.
    """
    if not 0 < low < high:
        raise ConfigError(f"match_width needs 0 < low < high, got low={low}, high={high}")
    measure = cost or macs_at(input_size)
    lo, hi = build(low), build(high)
    c_lo, c_hi = measure(lo), measure(hi)
    if not c_lo <= target <= c_hi:
        raise ConfigError(
            f"target cost {target:,.0f} is outside what widths {low}..{high} give ({c_lo:,.0f}..{c_hi:,.0f}); "
            "widen the range (low=, high=) or check the target"
        )
    w_lo, w_hi = low, high
    for _ in range(iters):  # invariant: cost(w_lo) <= target <= cost(w_hi)
        if target in (c_lo, c_hi):
            break
        mid = (w_lo + w_hi) / 2
        model = build(mid)
        c = measure(model)
        if c <= target:
            w_lo, lo, c_lo = mid, model, c
        else:
            w_hi, hi, c_hi = mid, model, c
    if c_hi - target < target - c_lo:
        return WidthMatch(w_hi, hi, c_hi, target)
    return WidthMatch(w_lo, lo, c_lo, target)
