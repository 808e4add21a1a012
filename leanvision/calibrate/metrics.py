"""Calibration metrics on a held-out operational test set: Brier, ECE, high-confidence errors, cost curves."""

from __future__ import annotations

import numpy as np

from leanvision.errors import ConfigError


def _check(conf: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    conf, correct = np.asarray(conf, np.float64).reshape(-1), np.asarray(correct, bool).reshape(-1)
    if len(conf) != len(correct) or len(conf) == 0:
        raise ConfigError(f"need one confidence per prediction (and at least one), got {len(conf)} and {len(correct)}")
    return conf, correct


def brier(conf, correct) -> float:
    """Mean squared gap between the confidence and the 0/1 correctness of the prediction."""
    conf, correct = _check(conf, correct)
    return float(np.mean((conf - correct) ** 2))


def reliability(conf, correct, *, bins: int = 15) -> dict[str, np.ndarray]:
    """Equal-width confidence bins: count, mean confidence and accuracy per bin (empty bins have NaN)."""
    conf, correct = _check(conf, correct)
    idx = np.minimum((conf * bins).astype(int), bins - 1)
    count = np.bincount(idx, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, conf, bins) / count
        acc = np.bincount(idx, correct.astype(float), bins) / count
    return {"edges": np.linspace(0, 1, bins + 1), "count": count, "confidence": mean_conf, "accuracy": acc}


def ece(conf, correct, *, bins: int = 15) -> float:
    """Expected calibration error: the count-weighted |accuracy - confidence| over equal-width bins."""
    r = reliability(conf, correct, bins=bins)
    used = r["count"] > 0
    return float(np.sum(r["count"][used] * np.abs(r["accuracy"][used] - r["confidence"][used])) / r["count"].sum())


def high_conf_errors(conf, correct, *, threshold: float = 0.9) -> int:
    """Wrong predictions whose confidence is above ``threshold``."""
    conf, correct = _check(conf, correct)
    return int(np.sum(~correct & (conf > threshold)))


def confident_correct(conf, correct, *, threshold: float = 0.9) -> int:
    """Correct predictions whose confidence is above ``threshold`` (what flattening every confidence would lose)."""
    conf, correct = _check(conf, correct)
    return int(np.sum(correct & (conf > threshold)))


def cost_curve(conf, correct, *, thresholds=None, cost_wrong: float = 1.0, cost_reject: float = 0.2) -> dict:
    """Mean cost per example when predictions with confidence > t are accepted and the rest go to a person.

    An accepted wrong prediction costs ``cost_wrong``, a rejected one ``cost_reject`` (whatever its correctness),
    an accepted correct one nothing.
    """
    conf, correct = _check(conf, correct)
    t = np.linspace(0, 1, 101) if thresholds is None else np.asarray(thresholds, np.float64)
    accept = conf[None, :] > t[:, None]
    cost = (accept & ~correct[None, :]) * cost_wrong + (~accept) * cost_reject
    return {"threshold": t, "cost": cost.mean(1), "accepted": accept.mean(1)}


def summary(conf, correct, *, before=None, before_correct=None, threshold: float = 0.9) -> dict[str, float]:
    """Brier, ECE, high-confidence errors and confident-correct predictions; with ``before`` (the uncalibrated
    confidences; ``before_correct`` their correctness when the method changed the predictions) also the share of
    high-confidence errors removed and of confident-correct predictions kept."""
    out = {
        "brier": brier(conf, correct),
        "ece": ece(conf, correct),
        "hce": high_conf_errors(conf, correct, threshold=threshold),
        "confident_correct": confident_correct(conf, correct, threshold=threshold),
        "accuracy": float(np.mean(np.asarray(correct, bool))),
    }
    if before is not None:
        correct0 = correct if before_correct is None else before_correct
        h0 = high_conf_errors(before, correct0, threshold=threshold)
        c0 = confident_correct(before, correct0, threshold=threshold)
        out["hce_reduction"] = 1 - out["hce"] / h0 if h0 else float("nan")
        out["confident_correct_kept"] = out["confident_correct"] / c0 if c0 else float("nan")
    return out
