"""Which operational examples to label (arXiv 1910.02352): coverage seeds, then a GP-uncertainty rule."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.linalg import solve_triangular

from leanvision.calibrate.features import ModelOutputs
from leanvision.calibrate.gp import ConfidenceGP
from leanvision.calibrate.opcal import OperationalCalibrator
from leanvision.errors import ConfigError

RULES = ("ivr_threshold", "ivr", "straddle", "sigma", "sigma_conf", "random")
Oracle = Callable[[list[int]], Sequence[int]]


def coverage_seeds(Z: np.ndarray, k: int, *, seed: int = 0) -> list[int]:
    """k distinct pool indices spread over the pool: the medoids (nearest points) of k-means clusters of Z."""
    from sklearn.cluster import KMeans

    k = min(k, len(Z))
    centres = KMeans(k, n_init=4, random_state=seed).fit(Z).cluster_centers_
    chosen: list[int] = []
    for c in centres:
        d = ((Z - c) ** 2).sum(1)
        d[chosen] = np.inf  # distinct medoids even when two centres share a nearest point
        chosen.append(int(np.argmin(d)))
    return chosen


def _ivr_scores(gp: ConfidenceGP, Zc: np.ndarray, Zr: np.ndarray, wr: np.ndarray) -> np.ndarray:
    """Integrated variance reduction: sum over reference points u (weights w) of the drop in posterior variance
    at u if candidate x were labelled, sum_u w_u cov(x, u)^2 / (var(x) + noise)."""
    vc = solve_triangular(gp._L, gp._k(gp.X, Zc), lower=True)
    vr = solve_triangular(gp._L, gp._k(gp.X, Zr), lower=True)
    cov = gp._k(Zc, Zr) - vc.T @ vr
    var = np.maximum(gp.amplitude - (vc * vc).sum(0), 0)
    return (cov**2 @ wr) / (var + gp.noise)


def _scores(rule: str, gp: ConfidenceGP, Z: np.ndarray, conf: np.ndarray, cand: np.ndarray, ref: np.ndarray,
            threshold: float) -> np.ndarray:  # fmt: skip
    """How much labelling each candidate is worth under ``rule`` (see ``select_and_calibrate``)."""
    if rule == "ivr":
        return _ivr_scores(gp, Z[cand], Z[ref], conf[ref])
    if rule == "ivr_threshold":
        mu, sd = gp.predict(Z[ref])
        at_threshold = np.exp(-0.5 * ((conf[ref] + mu - threshold) / np.maximum(sd, 1e-3)) ** 2)
        return _ivr_scores(gp, Z[cand], Z[ref], at_threshold)
    mu, sd = gp.predict(Z[cand])
    if rule == "straddle":
        return 1.96 * sd - np.abs(conf[cand] + mu - threshold)
    return sd * conf[cand] if rule == "sigma_conf" else sd


@dataclass
class Selection:
    """The outcome of a selection run: pool indices in the order they were labelled, their labels, the calibrator
    fitted on all of them."""

    indices: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    calibrator: OperationalCalibrator | None = None


def select_and_calibrate(
    pool: ModelOutputs,
    oracle: Oracle,
    budget: int,
    *,
    rule: str = "ivr_threshold",
    n_seeds: int = 10,
    refit_every: int = 10,
    n_reference: int = 500,
    n_candidates: int = 2000,
    calibrator: OperationalCalibrator | None = None,
    seed: int = 0,
    threshold: float = 0.9,
    on_label: Callable[[int], None] | None = None,
) -> Selection:
    """Label ``budget`` pool examples one at a time and return the calibrator fitted on them.

    First ``n_seeds`` k-means medoids (coverage), then each pick maximises ``rule`` among the unlabelled examples:
    ``ivr_threshold`` the reduction of posterior variance summed over the pool (seeded ``n_reference`` points),
    each pool point weighted by how likely its calibrated confidence is to sit at ``threshold`` (where accepting
    or rejecting a prediction flips: the high-confidence errors and confident-correct predictions live there);
    ``ivr`` the same weighted by confidence; ``straddle`` 1.96 sigma - |c + mu - threshold| (level-set search);
    ``sigma`` the GP's posterior deviation (picks outliers); ``sigma_conf`` deviation x confidence; ``random``.
    The ``ivr`` rules score ``n_candidates`` seeded candidates per pick. Hyper-parameters are re-fitted every
    ``refit_every`` labels; in between the GP takes each new label under the
    last ones. ``oracle(indices)`` returns the true labels of pool indices; it is asked once for the seeds, then
    once per pick. Seeded: the same pool, oracle answers and options give the same picks.
    """
    if rule not in RULES:
        raise ConfigError(f"unknown selection rule '{rule}'; choose one of {', '.join(RULES)}")
    n = len(pool)
    if n == 0:
        raise ConfigError("the operational pool is empty: give it some unlabelled examples")
    if not isinstance(budget, int) or budget < 2:
        raise ConfigError(f"the labelling budget must be an integer >= 2, got {budget!r}")
    if budget > n:
        raise ConfigError(f"the labelling budget ({budget}) is larger than the pool ({n} examples): lower the budget "
                          f"or give a larger pool")  # fmt: skip
    cal = calibrator or OperationalCalibrator(seed=seed)
    cal.fit_pool(pool)
    Z, conf = cal.embed(pool.features), pool.confidence
    rng = np.random.default_rng(seed)
    out = Selection(calibrator=cal)
    open_ = np.ones(n, bool)

    def label(idx: list[int]) -> None:
        got = [int(y) for y in oracle(list(idx))]
        if len(got) != len(idx):
            raise ConfigError(f"the label source answered {len(got)} labels for {len(idx)} examples")
        out.indices.extend(idx)
        out.labels.extend(got)
        open_[idx] = False
        if on_label:
            on_label(len(out.indices))

    n_first = min(max(n_seeds, 2), budget)
    label(rng.choice(n, n_first, replace=False).tolist() if rule == "random" else coverage_seeds(Z, n_first, seed=seed))
    if rule == "random":  # the plain baseline: no GP until the end
        rest = rng.choice(np.flatnonzero(open_), budget - len(out.indices), replace=False).tolist()
        for i in rest:
            label([i])
        cal.fit(pool.take(np.array(out.indices)), np.array(out.labels))
        return out
    e = cal.targets(pool.take(np.array(out.indices)), out.labels)
    gp = ConfidenceGP.fit(Z[out.indices], e, scale=cal.length_unit, restarts=cal.restarts, seed=seed)
    since_fit = 0
    ref = rng.choice(n, min(n_reference, n), replace=False)
    while len(out.indices) < budget:
        cand = np.flatnonzero(open_)
        if rule.startswith("ivr") and len(cand) > n_candidates:
            cand = rng.choice(cand, n_candidates, replace=False)
        score = _scores(rule, gp, Z, conf, cand, ref, threshold)
        pick = int(cand[np.argmax(score)])
        label([pick])
        e_new = cal.targets(pool.take(np.array([pick])), out.labels[-1:])
        since_fit += 1
        if since_fit >= refit_every:
            e = cal.targets(pool.take(np.array(out.indices)), out.labels)
            gp = ConfidenceGP.fit(Z[out.indices], e, scale=cal.length_unit, restarts=cal.restarts, seed=seed)
            since_fit = 0
        else:
            gp = gp.with_points(Z[[pick]], e_new)
    cal.fit(pool.take(np.array(out.indices)), np.array(out.labels))
    return out
