"""The report of a search run, rendered from its journal: best-so-far curve, result table, the best graph."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from leanvision._io import atomic_write_text
from leanvision.errors import DataError
from leanvision.search.journal import JOURNAL, Journal
from leanvision.search.space import create_space


def best_so_far(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """After each finished trial: the best objective so far and the report-only numbers of that best trial."""
    out, best = [], None
    for n, t in enumerate(trials, 1):
        if t["status"] == "ok" and (best is None or t["objective"] > best["objective"]):
            best = t
        if best is not None:
            out.append({"trials": n, "best objective": best["objective"], **best.get("report", {})})
    return out


def kendall_tau(x: list[float], y: list[float]) -> float | None:
    """Kendall's tau-b of two score lists (``None`` with fewer than 3 pairs or a constant list)."""
    from scipy.stats import kendalltau

    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return float(kendalltau(x, y).statistic)


def latest_scores(trials: list[dict[str, Any]], space: Any) -> list[dict[str, Any]]:
    """Each scored cell once, with its latest supernet score (a one-shot method may re-score cells as it trains)."""
    return list({space.key(t["sample"]): t for t in trials}.values())


def oneshot_figures(trials: list[dict[str, Any]], latest: list[dict[str, Any]], result: dict[str, Any],
                    out: Path) -> list[Path]:  # fmt: skip
    """A one-shot run's figures: scored cells and Pareto set (score and ground truth vs size), supernet score vs
    ground truth with Kendall's tau, the per-op training histogram, and the population's size per round."""
    from leanvision.report import bar_panels, line_panels, scatter_panels

    figures = []
    size = "params" if all("params" in t.get("metrics", {}) for t in trials) else None
    truth_key = next(iter(trials[0].get("report", {})), None) if trials else None
    if size:
        pareto = [(p["params"], p["score"]) for p in result.get("pareto", [])]
        panels = [{"series": {"scored cells": [(t["metrics"][size], t["objective"]) for t in trials],
                              "Pareto set": pareto}, "xlabel": size, "ylabel": "supernet score"}]  # fmt: skip
        if truth_key:
            panels.append({"series": {"scored cells": [(t["metrics"][size], t["report"][truth_key]) for t in trials]},
                           "xlabel": size, "ylabel": f"{truth_key} (ground truth, report only)"})  # fmt: skip
        figures.append(scatter_panels(panels, out / "pareto.png", title="scored cells by size"))
    if truth_key:
        pts = [(t["objective"], t["report"][truth_key]) for t in latest if truth_key in t.get("report", {})]
        tau = kendall_tau(*map(list, zip(*pts, strict=True))) if pts else None
        label = "n/a" if tau is None else f"{tau:.3f}"
        panel = {"series": {"cells (latest score)": pts}, "xlabel": "supernet score", "ylabel": f"{truth_key} "
                 "(ground truth)", "title": f"Kendall tau {label} over {len(pts)} cells"}  # fmt: skip
        figures.append(scatter_panels([panel], out / "tau.png", title="supernet ranking vs ground truth"))
    counts = result.get("op_counts") or {}
    if counts:
        ops = sorted({op for per in counts.values() for op in per})
        rows = [{"model": op, **{e: per.get(op, 0) for e, per in counts.items()}} for op in ops]
        metrics = [(e, f"edge {e}: gradient contributions") for e in counts]
        figures.append(bar_panels(rows, metrics, out / "op_histogram.png", title="per-op training histogram"))
    history = result.get("population_history") or []
    if history:
        series = {"population": [{"round": r, "median params": v} for r, v in enumerate(history)]}
        figures.append(line_panels(series, [("median params", "median params of the population")],
                                   out / "population_size.png", x_key="round"))  # fmt: skip
    return figures


def search_report(journal: Journal, out_dir: str | Path, *, top: int = 20) -> Path:
    """Write ``report.html``/``report.md``, ``results.json`` and the figures into ``out_dir``; return the HTML."""
    from leanvision.report import Column, dag_plot, line_panels, write_report

    out = Path(out_dir)
    cfg = journal.config
    method = (cfg.get("oneshot") or {}).get("method") or cfg.get("strategy")
    space = create_space(cfg["space"], **cfg.get("space_kwargs", {}))
    trials = journal.trials()
    ok = [t for t in trials if t["status"] == "ok"]
    curve = best_so_far(trials)
    figures = []
    if curve:
        report_keys = [k for k in curve[-1] if k not in ("trials", "best objective")]
        metrics = [("best objective", "best objective so far")] + [(k, f"{k} of that pick") for k in report_keys]
        title = "best so far (report-only numbers are never shown to the strategy)"
        path = out / "best_so_far.png"
        figures.append(line_panels({method: curve}, metrics, path, x_key="trials", title=title))
    results_notes = journal.notes("result")
    if results_notes:
        figures += oneshot_figures(ok, latest_scores(ok, space), results_notes[-1]["result"], out)
    ranked = sorted(ok, key=lambda t: (-t["objective"], t["trial"]))[:top]
    if ranked and hasattr(space, "graph"):
        nodes, edges = space.graph(ranked[0]["sample"])
        figures.append(dag_plot(nodes, edges, out / "best_graph.png", title=f"best: trial {ranked[0]['trial']}"))
    metric_keys = sorted({k for t in ranked for k in t.get("metrics", {})})
    report_keys = sorted({k for t in ranked for k in t.get("report", {})})
    rows = [{"trial": t["trial"], "objective": t["objective"], "arch": space.key(t["sample"]),
             "seconds": t.get("seconds"), **t.get("metrics", {}), **{f"report: {k}": v for k, v in t["report"].items()}}
            for t in ranked]  # fmt: skip
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    columns = [Column("trial", "trial"), Column("objective", "objective", fmt)]
    columns += [Column(k, k, fmt) for k in metric_keys] + [Column(f"report: {k}", f"{k} (report only)", fmt)
                                                          for k in report_keys]  # fmt: skip
    columns += [Column("seconds", "seconds", lambda v: f"{v:.2f}"), Column("arch", "architecture")]
    failed = [t for t in trials if t["status"] != "ok"]
    notes = [f"{len(trials)} trials finished, {len(failed)} failed."]
    notes += [f"trial {t['trial']} failed: {t.get('error', '')}" for t in failed[:10]]
    best = ranked[0] if ranked else None
    results = {"config": cfg, "trials": len(trials), "failed": len(failed), "best": best, "best_so_far": curve}
    if results_notes:
        results["oneshot"] = results_notes[-1]["result"]
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    scorer = "the trained supernet" if results_notes else cfg.get("evaluator")
    intro = (f"{method} on {cfg['space']} with {scorer}, seed {cfg.get('seed', 0)}: the top {len(rows)} trials by "
             "objective (the number the search maximised).")  # fmt: skip
    html, _ = write_report(out, title="Search report", rows=rows, columns=columns, figures=figures, notes=notes,
                           intro=intro)  # fmt: skip
    return html


def write_report(run_dir: str | Path) -> Path:
    """Render the report of the search in ``run_dir`` (its ``out_dir``) from its journal; return the HTML path."""
    run_dir = Path(run_dir)
    if not (run_dir / JOURNAL).is_file():
        raise DataError(f"'{run_dir}' is not a search run directory (no {JOURNAL}): the report is made from the "
                        "out_dir of a search (leanvision search CONFIG)")  # fmt: skip
    return search_report(Journal.open(run_dir / JOURNAL), run_dir)
