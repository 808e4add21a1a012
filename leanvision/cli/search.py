"""`leanvision search` and `leanvision report`: run, resume and report an architecture search."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from leanvision._io import atomic_write_text
from leanvision.cli._common import check_threads, writable_dir
from leanvision.cli.config import read_yaml, validate_model
from leanvision.errors import ConfigError, DataError

JOURNAL, RUN_CONFIG = "journal.jsonl", "config.yaml"
# What a resume may change: how and how long the search runs, not what it searches.
RUN_KEYS = ("budget", "executor", "workers", "timeout", "threads", "ray_address", "out_dir", "data_dir")


class SearchConfig(BaseModel):
    """One search; unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")

    space: str = Field(..., description="search space (leanvision.search.list_spaces())")
    space_kwargs: dict[str, Any] = Field(default_factory=dict, description="options of the space")
    strategy: str = Field("evolution", description="strategy (leanvision.search.list_strategies())")
    strategy_kwargs: dict[str, Any] = Field(default_factory=dict, description="options of the strategy")
    evaluator: str = Field(..., description="evaluator (leanvision.search.list_evaluators())")
    evaluator_kwargs: dict[str, Any] = Field(default_factory=dict, description="options of the evaluator")
    budget: int = Field(100, ge=1, description="trials to run (failed ones count)")
    seed: int = Field(0, ge=0, description="seed of the strategy")
    executor: Literal["inprocess", "process", "ray"] = Field("process", description="where trials run")
    workers: int | None = Field(None, ge=1, description="parallel trials (default: CPU cores, or the Ray cluster's)")
    timeout: float | None = Field(None, gt=0, description="seconds a trial may run before it is killed (failed)")
    threads: int | None = Field(1, ge=1, description="torch threads per worker")
    ray_address: str | None = Field(None, description="address of a running Ray cluster (default: start one here)")
    data_dir: str | None = Field(None, description="dataset root (default: $LEANVISION_DATA)")
    out_dir: str = Field("runs/search", description="run directory: journal, config, report")

    def defining(self) -> dict[str, Any]:
        """The part of the config that decides what is searched (a journal must match it to be resumed)."""
        return self.model_dump(exclude=set(RUN_KEYS))


def load_search_config(path: str | Path, overrides: dict[str, Any] | None = None) -> SearchConfig:
    """Read and validate a search YAML config (+ non-None ``overrides``); a problem is a one-line ConfigError."""
    data = read_yaml(path) | {k: v for k, v in (overrides or {}).items() if v is not None}
    return validate_model(SearchConfig, data, str(path))


def _build(cfg: SearchConfig) -> tuple[Any, Any, Any]:
    from leanvision.search import create_evaluator, create_space, create_strategy

    space = create_space(cfg.space, **cfg.space_kwargs)
    strategy = create_strategy(cfg.strategy, space, seed=cfg.seed, **cfg.strategy_kwargs)
    ev_kwargs = dict(cfg.evaluator_kwargs)
    from leanvision.search.evaluators import EVALUATORS

    if cfg.data_dir is not None and "data_dir" in inspect.signature(EVALUATORS.get(cfg.evaluator)).parameters:
        ev_kwargs.setdefault("data_dir", cfg.data_dir)
    return space, strategy, create_evaluator(cfg.evaluator, **ev_kwargs)


def run_search(cfg: SearchConfig, *, resume: bool = False, progress: bool = True) -> str:
    """Run (or, with ``resume``, continue) the search of ``cfg`` in ``cfg.out_dir``; return a one-line summary."""
    from leanvision.dist import make_executor
    from leanvision.search import Journal, search

    out = Path(cfg.out_dir)
    journal_path = out / JOURNAL
    if not resume and journal_path.exists():
        raise ConfigError(f"'{out}' already holds a search: continue it with --resume {out} or choose another out_dir")
    check_threads(cfg.threads)
    if _is_oneshot(cfg):
        return _run_oneshot(cfg, resume=resume, progress=progress)
    space, strategy, evaluator = _build(cfg)  # bad names and options fail here, before anything is written
    writable_dir(out)
    journal = Journal.open(journal_path, cfg.defining()) if resume else Journal.create(journal_path, cfg.defining())
    atomic_write_text(out / RUN_CONFIG, yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    with make_executor(cfg.executor, workers=cfg.workers, timeout=cfg.timeout, threads=cfg.threads,
                       address=cfg.ray_address) as executor:  # fmt: skip
        history = search(space, strategy, evaluator, budget=cfg.budget, executor=executor, journal=journal,
                         progress=progress)  # fmt: skip
    best = history.best()
    failed = len(history.failed())
    if best is None:
        return f"{len(history)} trials, all failed (first error: {history.trials[0].error}); journal in {out}"
    report = f"; report: leanvision report {out}"
    return (f"{len(history)} trials ({failed} failed); best objective {best.objective:.4g} (trial {best.trial}): "
            f"{space.key(best.sample)}{report}")  # fmt: skip


def _is_oneshot(cfg: SearchConfig) -> bool:
    """Whether ``cfg`` runs a weight-sharing method (its evaluator is the supernet itself), checked for consistency."""
    from leanvision.search.oneshot import ONESHOT, SUPERNET

    oneshot = cfg.strategy in ONESHOT
    if oneshot and cfg.evaluator != SUPERNET:
        raise ConfigError(f"'{cfg.strategy}' is a weight-sharing method: set evaluator: {SUPERNET} (its options, "
                          "e.g. C, resolution, subset, in evaluator_kwargs)")  # fmt: skip
    if not oneshot and cfg.evaluator == SUPERNET:
        raise ConfigError(f"evaluator '{SUPERNET}' is used by the weight-sharing methods "
                          f"({', '.join(ONESHOT.list())}), not by strategy '{cfg.strategy}'")  # fmt: skip
    if oneshot and "budget" in cfg.model_fields_set:
        raise ConfigError(f"budget counts the trials of ask/tell strategies; '{cfg.strategy}' is sized by its own "
                          "options in strategy_kwargs (epochs, rounds): remove budget")  # fmt: skip
    return oneshot


def _ground_truth(cfg: SearchConfig) -> Any:
    """``sample -> {"test_200ep": acc}`` from the NAS-Bench-201 table when the space is NB201 and the table is
    there (report only: the method never sees it); ``None`` otherwise."""
    if cfg.space != "nasbench201":
        return None
    from leanvision.search.evaluators.tabular import NB201Tabular

    dataset = cfg.evaluator_kwargs.get("dataset", "cifar10")
    try:
        table = NB201Tabular(data_dir=cfg.data_dir, dataset=dataset)
    except DataError:
        return None
    return lambda sample: table(sample)["report"]


def _run_oneshot(cfg: SearchConfig, *, resume: bool, progress: bool) -> str:
    from leanvision.search import Journal, create_space
    from leanvision.search.oneshot import create_oneshot, run_oneshot

    out = Path(cfg.out_dir)
    space = create_space(cfg.space, **cfg.space_kwargs)
    supernet = {"threads": cfg.threads, **({"data_dir": cfg.data_dir} if cfg.data_dir else {}), **cfg.evaluator_kwargs}
    method = create_oneshot(cfg.strategy, space, seed=cfg.seed, supernet=supernet, **cfg.strategy_kwargs)
    writable_dir(out)
    journal_path = out / JOURNAL
    journal = Journal.open(journal_path, cfg.defining()) if resume else Journal.create(journal_path, cfg.defining())
    # budget does not apply to a weight-sharing method: left out, so that --resume does not read it as set
    atomic_write_text(out / RUN_CONFIG, yaml.safe_dump(cfg.model_dump(exclude={"budget"}), sort_keys=False))
    result = run_oneshot(method, journal, out, ground_truth=_ground_truth(cfg), progress=progress)
    picks = result.get("picks", [])
    if not picks:
        return f"{cfg.strategy}: no pick; journal in {out}"
    truth = result.get("picks_report", [{}])[0]
    shown = "".join(f", {k} {v:.2f}" for k, v in truth.items())
    return (f"{cfg.strategy}: {len(journal.trials())} cells scored on the supernet; pick {space.key(picks[0])}"
            f"{shown}; report: leanvision report {out}")  # fmt: skip


def resume_search(run_dir: str | Path, overrides: dict[str, Any] | None = None, *, progress: bool = True) -> str:
    """Continue the search in ``run_dir`` with its saved config (``overrides``: only budget and how it runs)."""
    run_dir = Path(run_dir)
    if not (run_dir / JOURNAL).is_file():
        raise DataError(f"no search in '{run_dir}' (no {JOURNAL}): give the run directory of an earlier search")
    bad = sorted(k for k, v in (overrides or {}).items() if v is not None and k not in RUN_KEYS)
    if bad:
        raise ConfigError(f"a resumed search keeps what it searches; only {', '.join(RUN_KEYS)} may change, not {bad}")
    data = read_yaml(run_dir / RUN_CONFIG) | {"out_dir": str(run_dir)}
    data |= {k: v for k, v in (overrides or {}).items() if v is not None}
    return run_search(validate_model(SearchConfig, data, str(run_dir / RUN_CONFIG)), resume=True, progress=progress)


def write_search_report(run_dir: str | Path) -> Path:
    """Render ``report.html`` / ``report.md`` of the search in ``run_dir`` from its journal; return the HTML path."""
    from leanvision.search import Journal
    from leanvision.search.report import search_report

    run_dir = Path(run_dir)
    journal = Journal.open(run_dir / JOURNAL)
    return search_report(journal, run_dir)
