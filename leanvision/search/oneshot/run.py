"""Drive a one-shot method round by round: journal each round's scored cells, save its state, resume after a kill."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from leanvision._io import atomic_write
from leanvision.errors import DataError
from leanvision.search.journal import Journal, Trial
from leanvision.search.oneshot.base import OneShotMethod, picks_of
from leanvision.search.space import Sample

STATE = "oneshot_state.pt"


def _save_state(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda f: torch.save(state, f))


def _load_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a torn or foreign file: say which and what to do
        raise DataError(f"cannot read the one-shot state '{path}' ({type(e).__name__}: {e}); "
                        "start a new run directory") from None  # fmt: skip


def _journal_round(journal: Journal, first: int, records: list[dict[str, Any]], seconds: float,
                   ground_truth: Callable[[Sample], dict[str, Any]] | None) -> None:  # fmt: skip
    """Write a round's scored cells as trials ``first``, ``first + 1``, ...; ids already told are skipped, so a
    round cut short by a kill is completed, never duplicated, when it is written again."""
    told = {e["trial"] for e in journal.events if e["kind"] == "tell"}
    for i, rec in enumerate(records):
        trial = first + i
        if trial in told:
            continue
        sample = rec["sample"]
        metrics = {k: v for k, v in rec.items() if k not in ("sample", "objective")}
        report = ground_truth(sample) if ground_truth else {}
        scored = Trial(trial, sample, "ok", float(rec["objective"]), metrics, report, seconds=seconds / len(records))
        journal.ask(trial, sample)
        journal.tell(trial, scored.record())  # the ask/tell driver's record: one reader for both


def run_oneshot(method: OneShotMethod, journal: Journal, out_dir: str | Path, *,
                ground_truth: Callable[[Sample], dict[str, Any]] | None = None,
                progress: bool = False) -> dict[str, Any]:  # fmt: skip
    """Run (or continue, from ``out_dir``'s saved state) every round of ``method``; return its ``result()``.

    After each round the state is saved atomically first, then the round's cells are journalled: a kill at any
    moment loses at most the round in progress, which is run again from the saved state (seeded methods then
    repeat it exactly). ``ground_truth(sample)`` fills each journalled cell's ``report`` (e.g. its NAS-Bench-201
    accuracy); the method never sees it. The result (with the picks' ground truth) is journalled last.
    """
    from rich.progress import Progress

    state_path = Path(out_dir) / STATE
    done, first = -1, 0
    if state_path.exists():
        state = _load_state(state_path)
        method.load_state_dict(state["method"])
        done, first = state["round"], state["first_trial"]
        _journal_round(journal, first, state["records"], state["seconds"], ground_truth)
        first += len(state["records"])
    total = method.rounds()
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"{method.name}: rounds", total=total, completed=done + 1)
        for r in range(done + 1, total):
            t0 = time.monotonic()
            records = method.run_round(r)
            seconds = time.monotonic() - t0
            state = {"round": r, "first_trial": first, "records": records, "seconds": seconds,
                     "method": method.state_dict()}  # fmt: skip
            _save_state(state_path, state)
            _journal_round(journal, first, records, seconds, ground_truth)
            first += len(records)
            bar.update(task, advance=1)
    result = method.result()
    if ground_truth is not None:
        result["picks_report"] = [ground_truth(s) for s in picks_of(result)]
    if not journal.notes("result"):
        journal.note("result", result=result)
    return result
