"""Small matplotlib helpers that save a PNG (Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

from leanvision._io import atomic_write

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # backend chosen above, before pyplot loads

# seaborn's "deep" palette, all ten: up to ten bars or lines never share a colour
_COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974", "#64B5CD"]


def _grid(n: int, panel_width: float = 4.2) -> tuple[Any, list[Any]]:
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(panel_width * cols, 3.4 * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _save(fig: Any, path: str | Path, title: str | None) -> Path:
    path = Path(path)
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    try:  # atomic: a full disk leaves the old plot (or none), never half a PNG
        atomic_write(path, lambda f: fig.savefig(f, format=path.suffix.lstrip(".") or None, dpi=110))
    finally:
        plt.close(fig)
    return path


def bar_panels(
    rows: Sequence[Mapping[str, Any]],
    metrics: Sequence[tuple[str, str]],
    path: str | Path,
    *,
    label_key: str = "model",
    title: str | None = None,
    errors: Mapping[str, str] | None = None,
) -> Path:
    """One bar chart per ``(key, axis label)`` in ``metrics``, one bar per row; rows missing a key are skipped.

    ``errors`` maps a metric key to the key of its error-bar half-width (e.g. ``{"acc": "acc_sd"}``).
    """
    crowded = len(rows) > 6  # more bars than a 4-inch panel can label: widen it and slant the labels
    fig, axes = _grid(len(metrics), 0.45 * len(rows) + 1.5 if crowded else 4.2)
    for ax, (key, label) in zip(axes, metrics, strict=True):
        kept = [r for r in rows if r.get(key) is not None]
        names = [str(r[label_key]) for r in kept]
        err_key = (errors or {}).get(key)
        yerr = [float(r.get(err_key) or 0.0) for r in kept] if err_key else None
        bars = ax.bar(
            range(len(kept)), [float(r[key]) for r in kept], yerr=yerr, capsize=4, color=_COLORS[: len(kept)] or None
        )
        ax.bar_label(bars, fmt="%.3g", fontsize=8)
        ax.set_xticks(
            range(len(kept)), names, rotation=45 if crowded else 15, ha="right" if crowded else "center", fontsize=8
        )
        ax.set_ylabel(label)
        ax.margins(y=0.15)
    return _save(fig, path, title)


def line_panels(
    series: Mapping[str, Sequence[Mapping[str, Any]]],
    metrics: Sequence[tuple[str, str]],
    path: str | Path,
    *,
    x_key: str = "epoch",
    title: str | None = None,
    log_y: Collection[str] = (),
) -> Path:
    """One line chart per metric, one line per named series of records (e.g. training histories); the metrics named
    in ``log_y`` get a log scale."""
    fig, axes = _grid(len(metrics))
    for ax, (key, label) in zip(axes, metrics, strict=True):
        for i, (name, records) in enumerate(series.items()):
            pts = [(r[x_key], r[key]) for r in records if r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", ms=3, label=name, color=_COLORS[i % len(_COLORS)])
        ax.set_xlabel(x_key)
        ax.set_ylabel(label)
        if key in log_y:
            ax.set_yscale("log")
        ax.legend(fontsize=8)
    return _save(fig, path, title)


def dag_plot(
    nodes: Sequence[str], edges: Sequence[tuple[int, int, str]], path: str | Path, *, title: str | None = None
) -> Path:
    """Draw a small DAG: ``nodes`` are labels, ``edges`` are ``(src, dst, label)`` with ``src < dst`` (topological).

    Nodes sit in columns by their longest distance from a source, so parallel branches are visible.
    """
    depth = [0] * len(nodes)
    for src, dst, _ in sorted(edges, key=lambda e: e[1]):
        depth[dst] = max(depth[dst], depth[src] + 1)
    columns: dict[int, list[int]] = {}
    for i, d in enumerate(depth):
        columns.setdefault(d, []).append(i)
    pos = {i: (d, j - (len(col) - 1) / 2) for d, col in columns.items() for j, i in enumerate(col)}
    height = max(len(c) for c in columns.values())
    fig, ax = plt.subplots(figsize=(2.2 * (max(depth) + 1) + 1, 1.3 * height + 1))
    arcs = 0
    for src, dst, label in edges:
        (x0, y0), (x1, y1) = pos[src], pos[dst]
        span = depth[dst] - depth[src]
        # An edge that skips columns bows upward, so it does not run through the nodes it passes.
        rad = -0.25 - 0.05 * span if span > 1 else 0.0
        arcs = max(arcs, span if span > 1 else 0)
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                    arrowprops={"arrowstyle": "->", "color": "#888", "shrinkA": 14, "shrinkB": 14,
                                "connectionstyle": f"arc3,rad={rad}"})  # fmt: skip
        if label:
            mx, my = (x0 + x1) / 2, (y0 + y1) / 2 - rad * (x1 - x0) / 2  # the midpoint of the arc
            ax.text(mx, my, label, fontsize=7, ha="center", va="center",
                    bbox={"boxstyle": "round", "fc": "white", "ec": "#ddd"})  # fmt: skip
    for i, name in enumerate(nodes):
        ax.text(*pos[i], name, ha="center", va="center", fontsize=8,
                bbox={"boxstyle": "round", "fc": _COLORS[0], "ec": "none", "alpha": 0.25})  # fmt: skip
    ax.set_xlim(-0.6, max(depth) + 0.6)
    ax.set_ylim(-height / 2 - 0.2, height / 2 + 0.2 + 0.2 * arcs)
    ax.axis("off")
    return _save(fig, path, title)


def scatter_panels(panels: Sequence[Mapping[str, Any]], path: str | Path, *, title: str | None = None) -> Path:
    """One scatter plot per panel ``{"series": {name: [(x, y), ...]}, "xlabel", "ylabel", "title"?}``."""
    fig, axes = _grid(len(panels))
    for ax, panel in zip(axes, panels, strict=True):
        for i, (name, pts) in enumerate(panel["series"].items()):
            if pts:
                ax.scatter(*zip(*pts, strict=True), s=12 + 10 * i, label=name, color=_COLORS[i % len(_COLORS)],
                           alpha=0.6 if i == 0 else 0.9)  # fmt: skip
        ax.set_xlabel(panel["xlabel"])
        ax.set_ylabel(panel["ylabel"])
        if panel.get("title"):
            ax.set_title(panel["title"], fontsize=9)
        ax.legend(fontsize=8)
    return _save(fig, path, title)
