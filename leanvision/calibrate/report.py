"""The report of an operational calibration run: metric table, reliability diagrams, cost curves, a gallery."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from leanvision.calibrate.metrics import cost_curve, reliability
from leanvision.report import Column, line_panels, write_report
from leanvision.report.plots import _COLORS, _grid, _save, plt

THRESHOLD = 0.9  # "high confidence", as in the metrics


def reliability_figure(confidences: Mapping[str, np.ndarray], correct: np.ndarray, path: Path, *,
                       bins: int = 10) -> Path:  # fmt: skip
    """One reliability diagram per method: accuracy per confidence bin against the diagonal, with bin counts."""
    fig, axes = _grid(len(confidences))
    for k, (ax, (name, conf)) in enumerate(zip(axes, confidences.items(), strict=True)):
        r = reliability(conf, correct, bins=bins)
        centres, width = (r["edges"][:-1] + r["edges"][1:]) / 2, 1.0 / bins
        used = r["count"] > 0
        ax.bar(centres[used], r["accuracy"][used], width=width * 0.9, color=_COLORS[k % len(_COLORS)], alpha=0.8,
               label="accuracy")  # fmt: skip
        ax.plot([0, 1], [0, 1], "--", color="#555", lw=1, label="perfect calibration")
        for x, n, acc in zip(centres[used], r["count"][used], r["accuracy"][used], strict=True):
            ax.text(x, min(acc + 0.02, 0.97), str(n), ha="center", fontsize=6)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy")
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path, "reliability on the test part (numbers: examples per bin)")


def cost_figure(confidences: Mapping[str, np.ndarray], correct: np.ndarray, path: Path) -> Path:
    """Mean cost when predictions above a confidence threshold are accepted and the rest go to a person."""
    series = {}
    for name, conf in confidences.items():
        c = cost_curve(conf, correct)
        series[name] = [{"threshold": float(t), "cost": float(v), "accepted": float(a)}
                        for t, v, a in zip(c["threshold"], c["cost"], c["accepted"], strict=True)]  # fmt: skip
    return line_panels(
        series,
        [("cost", "mean cost per example"), ("accepted", "share accepted")],
        path,
        x_key="threshold",
        title="accept above a threshold (wrong accepted: cost 1, sent to a person: 0.2)",
    )


def histogram_figure(before: np.ndarray, after: np.ndarray, path: Path) -> Path:
    """Histogram of the pool's confidences before and after calibration."""
    fig, axes = _grid(1)
    bins = np.linspace(0, 1, 21)
    axes[0].hist(before, bins=bins, alpha=0.6, color=_COLORS[0], label="uncalibrated")
    axes[0].hist(after, bins=bins, alpha=0.6, color=_COLORS[1], label="operational calibration")
    axes[0].set(xlabel="confidence of the prediction", ylabel="pool examples")
    axes[0].legend(fontsize=8)
    return _save(fig, path, "confidences on the unlabelled pool")


def gallery_figure(items: Sequence[Mapping[str, Any]], path: Path, *, cols: int = 8) -> Path:
    """The labelled examples in the order they were selected: label, prediction, confidence before -> after."""
    rows = max(1, -(-len(items) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols, 2.0 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, item in zip(axes.flat, items, strict=False):
        img = item["image"].permute(1, 2, 0).numpy()
        ax.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray", interpolation="nearest")
        wrong = item["label"] != item["prediction"]
        ax.set_title(f"{item['key']}\nlabel {item['label']} pred {item['prediction']}\n"
                     f"{item['confidence_before']:.2f} -> {item['confidence_after']:.2f}", fontsize=6,
                     color="#C44E52" if wrong else "#222")  # fmt: skip
    return _save(
        fig,
        path,
        "labelled examples (red: the model was wrong; confidence before -> after, where the GP has seen their labels)",
    )


def _pct(v: float) -> str:
    return "-" if v != v else f"{100 * v:.1f}"  # NaN: nothing to reduce or keep


METRIC_COLUMNS = [
    Column("method", "method"),
    Column("brier", "Brier", "{:.4f}".format),
    Column("ece", "ECE (%)", lambda v: f"{100 * v:.2f}"),
    Column("hce", f"errors >{THRESHOLD}", str),
    Column("hce_reduction", "of them removed (%)", _pct),
    Column("confident_correct", f"correct >{THRESHOLD}", str),
    Column("confident_correct_kept", "of them kept (%)", _pct),
    Column("accuracy", "accuracy (%)", lambda v: f"{100 * v:.2f}"),
]
POOL_COLUMNS = [Column("what", "on the pool"), Column("before", "uncalibrated"), Column("after", "calibrated")]


def _pool_rows(before: np.ndarray, after: np.ndarray) -> list[dict[str, str]]:
    return [
        {"what": "examples", "before": str(len(before)), "after": str(len(after))},
        {"what": "mean confidence", "before": f"{before.mean():.3f}", "after": f"{after.mean():.3f}"},
        {"what": f"confidence > {THRESHOLD}", "before": str(int((before > THRESHOLD).sum())),
         "after": str(int((after > THRESHOLD).sum()))},
    ]  # fmt: skip


def calibration_report(
    out: Path,
    *,
    title: str,
    intro: str,
    test: Mapping[str, Any] | None,
    pool_confidence: tuple[np.ndarray, np.ndarray],
    gallery: Sequence[Mapping[str, Any]],
) -> tuple[Path, Path]:
    """Write ``report.html`` / ``report.md`` (figures as PNGs beside them); return both paths.

    ``test``: ``{"correct", "confidences": {method: conf}, "metrics": {method: summary}}`` on the labelled test part,
    or None when there is none (then only the pool histogram and the gallery are shown).
    """
    figures, notes = [], []
    if test is not None:
        rows = [{"method": name, **m} for name, m in test["metrics"].items()]
        columns = METRIC_COLUMNS
        figures += [reliability_figure(test["confidences"], test["correct"], out / "reliability.png"),
                    cost_figure(test["confidences"], test["correct"], out / "cost.png")]  # fmt: skip
        notes += [
            f"Measured on the {len(test['correct'])} held-out test examples (none of them was selected or labelled). "
            "Temperature scaling and isotonic regression are fitted on the same labels as the operational calibrator.",
            f"Errors >{THRESHOLD}: wrong predictions with confidence above {THRESHOLD}; correct >{THRESHOLD}: right "
            "ones above it (flattening every confidence would remove the errors but lose these). Calibration never "
            "changes a prediction, so accuracy is the same in every row.",
        ]
    else:
        rows, columns = _pool_rows(*pool_confidence), POOL_COLUMNS
        intro += (" No labelled test part (data.test: 0, or data without labels): Brier, ECE, reliability and cost "
                  "cannot be measured; shown are the pool's confidences and the labelled examples.")  # fmt: skip
    figures.append(histogram_figure(*pool_confidence, out / "pool_confidence.png"))
    if gallery:
        figures.append(gallery_figure(gallery, out / "selected.png"))
    return write_report(out, title=title, rows=rows, columns=columns, figures=figures, notes=notes, intro=intro)
