"""A search as one library call: ``run(config)`` / ``resume(run_dir)`` write a run directory and return a result.

A config is either an ask/tell search (``strategy`` + ``evaluator``, trials run on an executor) or a weight-sharing
one (a ``oneshot:`` block: one supernet is trained and cells are scored on it). Both journal their trials in the
same format, so ``write_report`` and ``Journal.history`` read either.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from leanvision._io import atomic_write_text
from leanvision.config import read_yaml, validate_model, writable_dir
from leanvision.errors import ConfigError, DataError
from leanvision.executors import EXECUTORS, make_executor
from leanvision.runs import RESUMABLE_KEYS, changed_settings, check_run_dir, interruptible
from leanvision.search.evaluators import EVALUATORS, create_evaluator
from leanvision.search.journal import JOURNAL, History, Journal, Trial
from leanvision.search.loop import search
from leanvision.search.space import Sample, create_space
from leanvision.search.strategies import create_strategy

RUN_CONFIG = "config.yaml"
# What a resume may change: how and how long the search runs, not what it searches.
RUN_KEYS = ("budget", "executor", "workers", "timeout", "threads", "device", "ray_address", "out_dir", "data_dir")
RESUMABLE = RESUMABLE_KEYS | {"budget"}
ASK_TELL_KEYS = ("strategy", "strategy_kwargs", "evaluator", "evaluator_kwargs", "budget", "executor", "workers",
                 "timeout", "ray_address")  # fmt: skip


class OneShotConfig(BaseModel):
    """A weight-sharing method: its name, its own options (``epochs``, ``n_eval``, ...) and the supernet's."""

    model_config = ConfigDict(extra="allow")

    method: str = Field(..., description="spos, betanas, cars or greedy (leanvision.search.oneshot.list_oneshot())")
    supernet: dict[str, Any] = Field(default_factory=dict, description="supernet, data and training options")

    def options(self) -> dict[str, Any]:
        """The method's own options: every key of the block but ``method`` and ``supernet``."""
        return dict(self.model_extra or {})


class SearchConfig(BaseModel):
    """One search; unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")

    space: str = Field(..., description="search space (leanvision.search.list_spaces())")
    space_kwargs: dict[str, Any] = Field(default_factory=dict, description="options of the space")
    strategy: str | None = Field(None, description="strategy (leanvision.search.list_strategies(); default evolution)")
    strategy_kwargs: dict[str, Any] = Field(default_factory=dict, description="options of the strategy")
    evaluator: str | None = Field(None, description="evaluator (leanvision.search.list_evaluators())")
    evaluator_kwargs: dict[str, Any] = Field(default_factory=dict, description="options of the evaluator")
    oneshot: OneShotConfig | None = Field(None, description="a weight-sharing search instead of strategy + evaluator")
    budget: int | None = Field(None, ge=1, description="trials to run, failed ones included (default 100)")
    seed: int = Field(0, ge=0, description="seed of the strategy or method")
    executor: Literal[EXECUTORS] = Field("process", description="where trials run")  # type: ignore[valid-type]
    workers: int | None = Field(None, ge=1, description="parallel trials (default: CPU cores, or the Ray cluster's)")
    timeout: float | None = Field(None, gt=0, description="seconds a trial may run before it is killed (failed)")
    threads: int | None = Field(1, ge=1, description="torch threads per trial (one-shot: of the supernet)")
    device: str = Field("cpu", description="where a trial trains, for evaluators that train (cpu, cuda or cuda:N)")
    ray_address: str | None = Field(None, description="address of a running Ray cluster (default: start one here)")
    data_dir: str | None = Field(None, description="dataset root (default: $LEANVISION_DATA)")
    out_dir: str = Field("runs/search", description="run directory: journal, config, report")

    def defining(self) -> dict[str, Any]:
        """The part of the config that decides what is searched (a journal must match it to be resumed)."""
        return self.model_dump(exclude=set(RUN_KEYS), exclude_none=True)


def _upgrade(data: dict[str, Any], source: str, *, quiet: bool) -> dict[str, Any]:
    """The old one-shot spelling (``strategy: METHOD`` + ``evaluator: supernet``) as a ``oneshot:`` block."""
    from leanvision.search.oneshot import ONESHOT, SUPERNET, list_oneshot

    strategy, evaluator = data.get("strategy"), data.get("evaluator")
    method = isinstance(strategy, str) and strategy in ONESHOT
    if not method and evaluator != SUPERNET:
        return data
    if not method:
        raise ConfigError(f"{source}: evaluator '{SUPERNET}' belongs to the weight-sharing methods "
                          f"({', '.join(list_oneshot())}), written as oneshot: {{method: NAME, ...}}; strategy "
                          f"'{strategy or 'evolution'}' needs one of leanvision.search.list_evaluators()")  # fmt: skip
    if evaluator != SUPERNET:
        raise ConfigError(f"{source}: '{strategy}' is a weight-sharing method: write it as oneshot: "
                          f"{{method: {strategy}, <its options>, supernet: {{...}}}}, not as strategy")  # fmt: skip
    if not quiet:
        warnings.warn(f"{source}: 'strategy: {strategy}' with 'evaluator: supernet' is deprecated and stops working "
                      f"in the next release; write 'oneshot: {{method: {strategy}, <strategy_kwargs>, supernet: "
                      "<evaluator_kwargs>}' instead", FutureWarning, stacklevel=4)  # fmt: skip
    rest = {k: v for k, v in data.items() if k not in ("strategy", "strategy_kwargs", "evaluator", "evaluator_kwargs")}
    block = {"method": strategy, **(data.get("strategy_kwargs") or {}), "supernet": data.get("evaluator_kwargs") or {}}
    return {**rest, "oneshot": block}


def _validate(data: dict[str, Any], source: str, *, quiet: bool = False) -> SearchConfig:
    cfg = validate_model(SearchConfig, _upgrade(data, source, quiet=quiet), source)
    if cfg.oneshot is not None:
        extra = [k for k in ASK_TELL_KEYS if k in cfg.model_fields_set] + (["device"] if cfg.device != "cpu" else [])
        if extra:
            raise ConfigError(f"{source}: a oneshot: search trains one supernet, sized by the method's own options "
                              f"(epochs, rounds), and scores cells on it: remove {', '.join(extra)}")  # fmt: skip
        return cfg
    if cfg.evaluator is None:
        raise ConfigError(f"{source}: 'evaluator' is required (see leanvision.search.list_evaluators()), or give a "
                          "weight-sharing method as oneshot: {method: spos, ...}")  # fmt: skip
    return cfg.model_copy(update={"strategy": cfg.strategy or "evolution", "budget": cfg.budget or 100})


def load_search_config(config: SearchConfig | dict[str, Any] | str | Path,
                       overrides: dict[str, Any] | None = None) -> SearchConfig:  # fmt: skip
    """A validated SearchConfig from a YAML path, a dict or an instance, plus the non-None ``overrides``.

    A problem is a one-line ConfigError naming the key; the old one-shot spelling is read with a FutureWarning.
    """
    if isinstance(config, SearchConfig):
        data, source = config.model_dump(include=config.model_fields_set), "search config"
    elif isinstance(config, dict):
        data, source = dict(config), "search config"
    else:
        data, source = read_yaml(config), str(config)
    return _validate(data | {k: v for k, v in (overrides or {}).items() if v is not None}, source)


def _canonical(stored: dict[str, Any]) -> dict[str, Any]:
    """A journal header's config as today's ``defining()`` (a run started with the old spelling stays resumable)."""
    try:
        return _validate(stored, "journal", quiet=True).defining()
    except ConfigError:
        return stored


@dataclass
class SearchResult:
    """What a search found. ``history``: every finished trial (a one-shot method's scored cells) as journalled;
    ``picks``: the chosen architectures, best first; ``picks_report``: their report-only numbers (ground truth)."""

    out_dir: Path
    method: str
    history: History
    picks: list[Sample]
    arch: str | None  # the first pick as the space writes it (e.g. NAS-Bench-201's cell string)
    picks_report: list[dict[str, Any]]
    oneshot: dict[str, Any] | None = None  # a one-shot method's whole result(): pareto, dropped, op_counts, ...

    @property
    def best(self) -> Trial | None:
        """The finished trial with the highest objective (``None`` when all failed)."""
        return self.history.best()


def run(config: SearchConfig | dict[str, Any] | str | Path, *, resume: bool = False,
        progress: bool = False) -> SearchResult:  # fmt: skip
    """Run the search ``config`` describes, writing ``out_dir`` (journal, config); ``resume`` continues the one there.

    A resume may change only the budget and where or how fast trials run (leanvision.runs' rule); a killed search
    resumes without losing a finished trial.
    """
    cfg = load_search_config(config)
    out = Path(cfg.out_dir)
    held = (out / JOURNAL).is_file()
    changed = []
    if resume and held:
        saved = _validate(read_yaml(out / RUN_CONFIG), str(out / RUN_CONFIG), quiet=True)
        changed = changed_settings(saved.model_dump(), cfg.model_dump(), resumable=RESUMABLE)
    check_run_dir(out, what="search", held=held, resume=resume, changed=changed)
    return _run(cfg, resume=resume, progress=progress)


def resume(run_dir: str | Path, *, budget: int | None = None, progress: bool = False, **settings: Any) -> SearchResult:
    """Continue the search in ``run_dir`` with its saved config; ``budget`` and ``settings`` (executor, workers,
    timeout, threads, ray_address, data_dir: where and how fast trials run) may change."""
    run_dir = Path(run_dir)
    fixed = sorted(k for k, v in settings.items() if v is not None and k not in RESUMABLE)
    check_run_dir(run_dir, what="search", held=(run_dir / JOURNAL).is_file(), resume=True, changed=fixed)
    data = read_yaml(run_dir / RUN_CONFIG) | {"out_dir": str(run_dir)}
    data |= {k: v for k, v in {**settings, "budget": budget}.items() if v is not None}
    return _run(_validate(data, str(run_dir / RUN_CONFIG), quiet=True), resume=True, progress=progress)


def _journal(cfg: SearchConfig, out: Path, resume: bool) -> Journal:
    """The run's journal, checked against ``cfg``, or a new one; the config as used is saved next to it."""
    unused = set(ASK_TELL_KEYS) if cfg.oneshot is not None else set()  # so that it reads back as a oneshot: config
    config_text = yaml.safe_dump(cfg.model_dump(exclude=unused, exclude_none=True), sort_keys=False)
    if not resume:  # the config first: a kill between the two writes leaves no journal, so no run to refuse
        atomic_write_text(writable_dir(out) / RUN_CONFIG, config_text)
        return Journal.create(out / JOURNAL, cfg.defining())
    journal = Journal.open(out / JOURNAL, cfg.defining(), canonical=_canonical)
    done = len(journal.trials())
    if cfg.oneshot is None and done > cfg.budget:
        raise ConfigError(f"the search in '{out}' already has {done} finished trials, more than the budget of "
                          f"{cfg.budget}: give a budget above {done}")  # fmt: skip
    atomic_write_text(out / RUN_CONFIG, config_text)
    return journal


def _run(cfg: SearchConfig, *, resume: bool, progress: bool) -> SearchResult:
    out = Path(cfg.out_dir)
    space = create_space(cfg.space, **cfg.space_kwargs)
    if cfg.oneshot is not None:
        return _run_oneshot(cfg, space, out, resume=resume, progress=progress)
    # bad names and options fail here, before anything is written
    strategy = create_strategy(cfg.strategy, space, seed=cfg.seed, **cfg.strategy_kwargs)
    ev_kwargs, takes = dict(cfg.evaluator_kwargs), inspect.signature(EVALUATORS.get(cfg.evaluator)).parameters
    if cfg.data_dir is not None and "data_dir" in takes:
        ev_kwargs.setdefault("data_dir", cfg.data_dir)
    if "device" in takes:
        ev_kwargs.setdefault("device", cfg.device)
    elif cfg.device != "cpu":
        raise ConfigError(f"evaluator '{cfg.evaluator}' trains nothing and runs on the CPU: drop --device")
    evaluator = create_evaluator(cfg.evaluator, **ev_kwargs)
    with _stoppable(out), make_executor(cfg.executor, workers=cfg.workers, timeout=cfg.timeout,
                                        threads=cfg.threads, address=cfg.ray_address) as executor:  # fmt: skip
        journal = _journal(cfg, out, resume)
        history = search(space, strategy, evaluator, budget=cfg.budget, executor=executor, journal=journal,
                         progress=progress)  # fmt: skip
    best = history.best()
    picks = [best.sample] if best else []
    return SearchResult(out, cfg.strategy, history, picks, space.key(best.sample) if best else None,
                        [best.report] if best else [])  # fmt: skip


def _stoppable(out: Path) -> Any:
    """Ctrl-C, SIGTERM or a full disk: workers and Ray stop, and one line says how to continue from the journal."""
    cmd = f"leanvision search {out / RUN_CONFIG} --resume"
    return interruptible("search", lambda: cmd if (out / JOURNAL).is_file() else None)


def _ground_truth(cfg: SearchConfig) -> Any:
    """``sample -> {"test_200ep": acc}`` from the NAS-Bench-201 table when the space is NB201 and the table is
    there (report only: the method never sees it); ``None`` otherwise."""
    if cfg.space != "nasbench201":
        return None
    from leanvision.search.evaluators.tabular import NB201Tabular

    try:
        table = NB201Tabular(data_dir=cfg.data_dir, dataset=cfg.oneshot.supernet.get("dataset", "cifar10"))
    except DataError:
        return None
    return lambda sample: table(sample)["report"]


def _run_oneshot(cfg: SearchConfig, space: Any, out: Path, *, resume: bool, progress: bool) -> SearchResult:
    from leanvision.search.oneshot import create_oneshot, picks_of, run_oneshot

    one = cfg.oneshot
    supernet = {"threads": cfg.threads, **({"data_dir": cfg.data_dir} if cfg.data_dir else {}), **one.supernet}
    method = create_oneshot(one.method, space, seed=cfg.seed, supernet=supernet, **one.options())
    with _stoppable(out):
        journal = _journal(cfg, out, resume)
        result = run_oneshot(method, journal, out, ground_truth=_ground_truth(cfg), progress=progress)
    picks = picks_of(result)
    return SearchResult(out, one.method, journal.history(), picks, space.key(picks[0]) if picks else None,
                        result.get("picks_report", []), oneshot=result)  # fmt: skip
