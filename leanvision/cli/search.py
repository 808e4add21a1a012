"""`leanvision search`: turn the command line into a call of leanvision.search.run / resume and one line of output."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import typer

from leanvision.config import check_device, check_threads
from leanvision.errors import ConfigError
from leanvision.search import SearchResult, load_search_config, resume, run
from leanvision.search.journal import JOURNAL


def search_command(config: Path | None, *, resume_run: bool, settings: dict[str, Any], out_dir: Path | None,
                   quiet: bool) -> str:  # fmt: skip
    """Run or resume the search the flags describe; return the line to print."""
    check_threads(settings.get("threads"))
    if settings.get("ray_address") is not None and settings.get("executor") is None:
        settings = {**settings, "executor": "ray"}
    if config is None:
        raise ConfigError("give a search config, e.g. leanvision search configs/search_nb201_evolution.yaml")
    if resume_run and config.is_dir() and (config / JOURNAL).is_file():  # the old spelling: --resume RUN_DIR
        if out_dir is not None:
            raise ConfigError("--out-dir does not apply to --resume RUN_DIR: the search continues in RUN_DIR")
        typer.echo(f"warning: 'leanvision search --resume RUN_DIR' is deprecated and stops working in the next "
                   f"release; use 'leanvision search {config / 'config.yaml'} --resume'", err=True)  # fmt: skip
        return summary(resume(config, progress=not quiet, **settings))
    with warnings.catch_warnings(record=True) as caught:  # the old config spelling: one line, not a traceback
        warnings.simplefilter("always", FutureWarning)
        cfg = load_search_config(config, {**settings, "out_dir": str(out_dir) if out_dir else None})
    for w in caught:
        typer.echo(f"warning: {w.message}", err=True)
    check_threads(cfg.threads)
    check_device(cfg.device)
    return summary(run(cfg, resume=resume_run, progress=not quiet))


def summary(result: SearchResult) -> str:
    """One line: what was searched, the pick, and how to see the report."""
    out, history, report = result.out_dir, result.history, f"; report: leanvision report {result.out_dir}"
    if result.oneshot is not None:
        if not result.picks:
            return f"{result.method}: no pick; journal in {out}"
        truth = "".join(f", {k} {v:.2f}" for k, v in (result.picks_report or [{}])[0].items())
        return f"{result.method}: {len(history)} cells scored on the supernet; pick {result.arch}{truth}{report}"
    best = result.best
    if best is None:
        return f"{len(history)} trials, all failed (first error: {history.trials[0].error}); journal in {out}"
    return (f"{len(history)} trials ({len(history.failed())} failed); best objective {best.objective:.4g} "
            f"(trial {best.trial}): {result.arch}{report}")  # fmt: skip
