"""The search driver: ask the strategy, run trials on an executor, tell results as they arrive, journal it all."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from leanvision.errors import ConfigError
from leanvision.executors import Failure, InProcessExecutor
from leanvision.search.journal import History, Journal, Trial
from leanvision.search.space import Result, Sample, SearchSpace
from leanvision.search.strategies.base import Strategy


def _to_trial(trial: int, sample: Sample, out: Any, seconds: float) -> Trial:
    if isinstance(out, Failure):
        return Trial(trial, sample, "failed", error=f"{out.kind}: {out.message}", seconds=seconds)
    obj = out.get("objective") if isinstance(out, dict) else None
    if not isinstance(obj, (int, float)) or isinstance(obj, bool) or not math.isfinite(obj):
        msg = f"error: the evaluator returned {out!r:.200} (need a dict with a finite 'objective')"
        return Trial(trial, sample, "failed", error=msg, seconds=seconds)
    metrics = {k: v for k, v in out.items() if k not in ("objective", "report", "status")}
    return Trial(trial, sample, "ok", float(obj), metrics, dict(out.get("report") or {}), seconds=seconds)


def search(space: SearchSpace, strategy: Strategy, evaluator: Callable[[Sample], Result], *, budget: int,
           executor: Any = None, journal: Journal | None = None, progress: bool = False) -> History:  # fmt: skip
    """Run ``budget`` trials (failed ones count) and return the history.

    Asynchronous: each worker slot gets a new sample as soon as a result arrives, and the strategy is told
    results in arrival order. With a ``journal`` that already holds events (``Journal.open``) the search resumes:
    the strategy replays its asks and tells in the recorded order (it must propose the same samples — seeded
    strategies do), unfinished trials run again, finished ones are never lost or repeated.
    """
    if budget < 1:
        raise ConfigError(f"budget must be >= 1 trial, got {budget}")
    executor = executor or InProcessExecutor()
    history, asked, rerun = History(), {}, []
    if journal is not None and journal.events:
        asked, rerun = _replay(space, strategy, journal, history)
    next_id = max(asked, default=-1) + 1
    started: dict[int, float] = {}
    shown = _Progress(budget, history) if progress else None

    def launch(trial: int, sample: Sample) -> None:
        started[trial] = time.monotonic()
        executor.submit(trial, evaluator, sample)

    try:
        for trial in rerun:
            launch(trial, asked[trial])
        while len(history) < budget:
            while executor.running() < executor.workers and len(asked) < budget:
                sample = strategy.ask(1)[0]
                asked[next_id] = sample
                if journal is not None:
                    journal.ask(next_id, sample)
                launch(next_id, sample)
                next_id += 1
            if shown:
                shown.update(executor.running())
            key, out = executor.next_done()
            t = _to_trial(key, asked[key], out, time.monotonic() - started.pop(key))
            if journal is not None:
                journal.tell(key, t.record())
            strategy.tell(asked[key], t.visible())
            history.trials.append(t)
    finally:
        if shown:
            shown.close(executor.running() if len(history) < budget else 0)
    return history


def _replay(space: SearchSpace, strategy: Strategy, journal: Journal, history: History) -> tuple[dict, list[int]]:
    asked: dict[int, Sample] = {}
    for e in journal.events:
        if e["kind"] not in ("ask", "tell"):
            continue
        if e["kind"] == "ask":
            proposed = strategy.ask(1)[0]
            if space.key(proposed) != space.key(e["sample"]):
                raise ConfigError(
                    f"cannot resume '{journal.path}': the strategy now proposes {space.key(proposed)} where the "
                    f"journal has {space.key(e['sample'])} (trial {e['trial']}); was the search not seeded?"
                )
            asked[e["trial"]] = e["sample"]
        else:
            t = Trial.from_record(e["trial"], asked[e["trial"]], e["result"])
            strategy.tell(t.sample, t.visible())
            history.trials.append(t)
    done = {t.trial for t in history.trials}
    return asked, [k for k in sorted(asked) if k not in done]


class _Progress:
    """A live line: trials done/running/failed, best objective so far, ETA (rich)."""

    def __init__(self, budget: int, history: History) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.history = history
        self.bar = Progress(TextColumn("search"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                            TimeRemainingColumn(), transient=False)  # fmt: skip
        self.task = self.bar.add_task("search", total=budget, completed=len(history), info="")
        self.bar.start()

    def update(self, running: int) -> None:
        best = self.history.best()
        info = (
            f"running {running}, failed {len(self.history.failed())}, best {best.objective:.4g}"
            if best
            else f"running {running}, failed {len(self.history.failed())}"
        )
        self.bar.update(self.task, completed=len(self.history), info=info)  # fmt: skip

    def close(self, running: int) -> None:
        self.update(running)
        self.bar.stop()
