"""The search journal: append-only JSONL, one fsync'd record per event; the source of truth for resume.

Both drivers, the ask/tell loop and the one-shot round driver, write a trial as an ``ask`` and a ``tell`` record
whose ``result`` is :meth:`Trial.record`, and read trials back with :meth:`Journal.history`.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leanvision._io import append_jsonl, read_jsonl
from leanvision.errors import ConfigError, DataError
from leanvision.search.space import Result, Sample

FORMAT = 1
JOURNAL = "journal.jsonl"  # its name in a run directory


@dataclass
class Trial:
    """One finished evaluation. ``report`` holds numbers no strategy was told (e.g. test accuracy)."""

    trial: int
    sample: Sample
    status: str
    objective: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float | None = None

    def visible(self) -> Result:
        """What the strategy is told: status, objective and metrics, never ``report``."""
        return {"status": self.status, "objective": self.objective, **self.metrics}

    def record(self) -> Result:
        """The ``result`` of the trial's ``tell`` record in the journal."""
        out: Result = {"status": self.status, "objective": self.objective, "metrics": self.metrics,
                       "report": self.report, "seconds": self.seconds}  # fmt: skip
        if self.error is not None:
            out["error"] = self.error
        return out

    @classmethod
    def from_record(cls, trial: int, sample: Sample, rec: Result) -> Trial:
        return cls(trial, sample, rec["status"], rec.get("objective"), rec.get("metrics") or {},
                   rec.get("report") or {}, rec.get("error"), rec.get("seconds"))  # fmt: skip


@dataclass
class History:
    """Finished trials in the order they finished."""

    trials: list[Trial] = field(default_factory=list)

    def ok(self) -> list[Trial]:
        return [t for t in self.trials if t.status == "ok"]

    def best(self) -> Trial | None:
        """The trial with the highest objective (the earliest among ties)."""
        good = self.ok()
        return max(good, key=lambda t: (t.objective, -t.trial)) if good else None

    def failed(self) -> list[Trial]:
        return [t for t in self.trials if t.status != "ok"]

    def __len__(self) -> int:
        return len(self.trials)


def _versions() -> dict[str, str]:
    import numpy
    import torch

    import leanvision

    return {"leanvision": leanvision.__version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version()}  # fmt: skip


def _plain(config: dict[str, Any]) -> dict[str, Any]:
    """The config as it reads back from JSON (tuples become lists), so a fresh and a stored config compare equal."""
    return json.loads(json.dumps(config))


class Journal:
    """Records ``header`` (config incl. seed, versions), then ``ask`` (trial id, sample) and ``tell`` (trial id,
    result) events in the order they happened, and run-level notes (a one-shot method's ``result``). A record
    is on disk once its call returns; a torn last line (a kill during the append) is ignored on reading and cut
    off by the next append. An append the disk refuses raises WriteError and leaves the journal as it was, so a
    resume replays every record written before it."""

    def __init__(self, path: str | Path, config: dict[str, Any], events: list[dict[str, Any]]) -> None:
        self.path, self.config, self.events = Path(path), _plain(config), events

    @classmethod
    def create(cls, path: str | Path, config: dict[str, Any]) -> Journal:
        path = Path(path)
        if path.exists() and path.stat().st_size:
            raise ConfigError(f"'{path}' already holds a search journal: resume it or choose another run directory")
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {"kind": "header", "format": FORMAT, "config": _plain(config), "versions": _versions(),
                  "created": time.time()}  # fmt: skip
        append_jsonl(path, header)
        return cls(path, config, [])

    @classmethod
    def open(cls, path: str | Path, config: dict[str, Any] | None = None, *,
             canonical: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> Journal:  # fmt: skip
        """Read an existing journal; with ``config``, refuse one written by a different search configuration
        (``canonical`` first maps the stored config to the form of ``config``, e.g. from an older spelling)."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"no search journal at '{path}': not the run directory of a search")
        records = read_jsonl(path)
        if not records or records[0].get("kind") != "header" or records[0].get("format") != FORMAT:
            raise DataError(f"'{path}' is not a leanvision search journal (no header record)")
        stored = records[0]["config"]
        seen = _plain(canonical(stored)) if canonical is not None and config is not None else stored
        if config is not None and _plain(config) != seen:
            diff = sorted(k for k in set(seen) | set(_plain(config)) if seen.get(k) != _plain(config).get(k))
            raise ConfigError(
                f"'{path}' was written by another search configuration (differs in: {', '.join(diff)}); "
                "resume with the same config or start a new run directory"
            )
        return cls(path, stored, [r for r in records[1:] if r.get("kind") in ("ask", "tell", "result")])

    def ask(self, trial: int, sample: dict[str, Any]) -> None:
        self._append({"kind": "ask", "trial": trial, "sample": sample})

    def tell(self, trial: int, result: dict[str, Any]) -> None:
        self._append({"kind": "tell", "trial": trial, "result": result, "time": time.time()})

    def note(self, kind: str, **data: Any) -> None:
        """Record a run-level event (e.g. a one-shot method's ``result``); trials are only ``ask``/``tell``."""
        self._append({"kind": kind, **data, "time": time.time()})

    def notes(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["kind"] == kind]

    def _append(self, record: dict[str, Any]) -> None:
        append_jsonl(self.path, record)
        self.events.append(record)

    def trials(self) -> list[dict[str, Any]]:
        """Finished trials as ``{"trial", "sample", **result}`` in the order they finished."""
        samples = {e["trial"]: e["sample"] for e in self.events if e["kind"] == "ask"}
        return [{"trial": e["trial"], "sample": samples[e["trial"]], **e["result"]}
                for e in self.events if e["kind"] == "tell"]  # fmt: skip

    def history(self) -> History:
        """Finished trials as :class:`Trial` objects in the order they finished."""
        return History([Trial.from_record(t["trial"], t["sample"], t) for t in self.trials()])
