"""Survivor selection of CARS (arXiv 1909.04977): non-dominated sorting, pNSGA-III, NSGA-III and hypervolume.

Pure numpy on top of pymoo (no torch). Objectives are minimised; accuracy enters as ``1 / acc`` exactly as in
the official CARS code (huawei-noah/vega ``CARS_NSGA``), so the fronts are those of (max acc, min size).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from leanvision.errors import ConfigError, missing_extra

_EPS = 1e-10  # vega adds it so that a 0% individual sorts last instead of dividing by zero


def require_pymoo(what: str) -> None:
    """Refuse, in one line naming the extra, to run ``what`` without pymoo (an optional dependency)."""
    try:
        import pymoo  # noqa: F401
    except ModuleNotFoundError:
        raise missing_extra(what, "search") from None


def non_dominated_fronts(F: np.ndarray | Sequence[Sequence[float]]) -> list[np.ndarray]:
    """The Pareto fronts of the rows of ``F`` (n points x m objectives, minimised), best first, indices sorted.

    Equal points do not dominate each other, so duplicates share a front.
    """
    require_pymoo("non-dominated sorting (CARS, NSGA)")
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    F = np.asarray(F, dtype=float)
    if F.ndim != 2:
        raise ConfigError(f"non_dominated_fronts: F must be a 2-d array (points x objectives), got shape {F.shape}")
    if len(F) == 0:
        return []
    return [np.sort(np.asarray(f, dtype=int)) for f in NonDominatedSorting().do(F)]


def _check(acc: Sequence[float], size: Sequence[float], n: int) -> tuple[np.ndarray, np.ndarray]:
    acc, size = np.asarray(acc, dtype=float), np.asarray(size, dtype=float)
    if acc.ndim != 1 or acc.shape != size.shape:
        raise ConfigError(f"acc and size must be 1-d arrays of one length, got shapes {acc.shape} and {size.shape}")
    if not np.all(np.isfinite(acc)) or not np.all(np.isfinite(size)) or np.any(acc < 0) or np.any(size <= 0):
        raise ConfigError("acc must be finite and >= 0 and size finite and > 0 for every individual")
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ConfigError(f"the number of survivors must be an integer >= 0, got {n!r}")
    return acc, size


def pnsga3_select(acc: Sequence[float], size: Sequence[float], n: int, rng: np.random.Generator) -> np.ndarray:
    """CARS's pNSGA-III survivors: ``n`` indices (sorted) by the union of the k-th fronts of two sorts.

    F1 sorts (1/acc, size), which favours accurate small models; F2 sorts (1/acc, 1/size), which protects
    accurate large models, which plain NSGA-III evicts early because small models learn faster under weight
    sharing (the "small model trap"). Stage k adds ``F1[k] | F2[k]`` minus what an earlier stage already took;
    when that does not fit, a random sample (``rng``) of it fills the last places. vega's ``CARS_NSGA`` tests
    the capacity with the whole union (already-selected members included) but then takes every not-yet-selected
    member when they fit and goes on, so its outcome is this set-difference rule.
    """
    acc, size = _check(acc, size, n)
    if n >= len(acc):
        return np.arange(len(acc))
    inv = 1.0 / (acc + _EPS)
    f1 = non_dominated_fronts(np.column_stack([inv, size]))
    f2 = non_dominated_fronts(np.column_stack([inv, 1.0 / size]))
    selected: set[int] = set()
    for k in range(max(len(f1), len(f2))):
        front = set(f1[k].tolist() if k < len(f1) else []) | set(f2[k].tolist() if k < len(f2) else [])
        new = sorted(front - selected)  # sorted: the sample depends on rng only, not on set order
        if len(selected) + len(new) <= n:
            selected.update(new)
        else:
            selected.update(int(i) for i in rng.choice(new, size=n - len(selected), replace=False))
        if len(selected) == n:
            break
    return np.array(sorted(selected), dtype=int)


def nsga3_select(acc: Sequence[float], size: Sequence[float], n: int, rng: np.random.Generator) -> np.ndarray:
    """Plain NSGA-III survivors on (1/acc, size): ``n`` indices (sorted), the split front cut by niching.

    pymoo's ``ReferenceDirectionSurvival`` with ``n`` Das-Dennis directions (``n - 1`` partitions; NSGA-III
    sizes the population to the number of directions) and a fresh normalisation per call, as vega's
    ``SortAndSelectPopulation`` does; ``rng`` breaks niching ties.
    """
    require_pymoo("NSGA-III selection")
    from pymoo.algorithms.moo.nsga3 import ReferenceDirectionSurvival
    from pymoo.core.population import Population
    from pymoo.core.problem import Problem
    from pymoo.util.ref_dirs import get_reference_directions

    acc, size = _check(acc, size, n)
    if n >= len(acc):
        return np.arange(len(acc))
    if n == 0:
        return np.array([], dtype=int)
    F = np.column_stack([1.0 / (acc + _EPS), size])
    dirs = get_reference_directions("das-dennis", 2, n_partitions=max(1, n - 1))
    idx = ReferenceDirectionSurvival(dirs).do(
        Problem(n_var=1, n_obj=2), Population.new("F", F), n_survive=n, random_state=rng, return_indices=True
    )
    return np.array(sorted(int(i) for i in idx), dtype=int)


def hypervolume(points: np.ndarray | Sequence[Sequence[float]], ref: Sequence[float]) -> float:
    """The hypervolume (minimisation) dominated by ``points`` and bounded by ``ref``; points not better than
    ``ref`` in every objective add nothing (pymoo's ``HV`` indicator)."""
    require_pymoo("the hypervolume")
    from pymoo.indicators.hv import HV

    points = np.asarray(points, dtype=float)
    ref = np.asarray(ref, dtype=float)
    if points.ndim != 2 or points.shape[1] != ref.shape[0]:
        raise ConfigError(f"hypervolume: points must be (n, {ref.shape[0]}), got shape {points.shape}")
    if len(points) == 0:
        return 0.0
    return float(HV(ref_point=ref)(points))


HV_REF = (1.1, 1.1)


def acc_size_hypervolume(acc: Sequence[float], size: Sequence[float], size_range: tuple[float, float]) -> float:
    """The hypervolume of (accuracy %, size) points in a fixed normalised frame, comparable across methods.

    Objectives (minimised): error ``1 - acc / 100`` and ``(size - lo) / (hi - lo)`` over the space's whole size
    range ``(lo, hi)``, both in [0, 1] whatever the population; reference point :data:`HV_REF` = the worst
    value of each plus a 10% margin, so that the extreme points (largest cell, 0% accuracy) still count.
    """
    lo, hi = (float(v) for v in size_range)
    if not hi > lo:
        raise ConfigError(f"acc_size_hypervolume: size_range must be (lo, hi) with hi > lo, got {size_range!r}")
    acc, size = np.asarray(acc, dtype=float), np.asarray(size, dtype=float)
    return hypervolume(np.column_stack([1.0 - acc / 100.0, (size - lo) / (hi - lo)]), HV_REF)
