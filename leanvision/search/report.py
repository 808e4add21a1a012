"""The report of a search run, rendered from its journal: best-so-far curve, result table, the best graph."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from leanvision._io import atomic_write_text
from leanvision.search.journal import Journal
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


def search_report(journal: Journal, out_dir: str | Path, *, top: int = 20) -> Path:
    """Write ``report.html``/``report.md``, ``results.json`` and the figures into ``out_dir``; return the HTML."""
    from leanvision.report import Column, dag_plot, line_panels, write_report

    out = Path(out_dir)
    cfg = journal.config
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
        figures.append(line_panels({cfg["strategy"]: curve}, metrics, path, x_key="trials", title=title))
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
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    intro = (f"{cfg['strategy']} on {cfg['space']} with {cfg['evaluator']}, seed {cfg['seed']}: the top {len(rows)} "
             "trials by objective (the number the strategy maximised).")  # fmt: skip
    html, _ = write_report(out, title="Search report", rows=rows, columns=columns, figures=figures, notes=notes,
                           intro=intro)  # fmt: skip
    return html
