"""The search journal: append-only JSONL, one fsync'd record per event; the source of truth for resume."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

from leanvision._io import append_jsonl, read_jsonl
from leanvision.errors import ConfigError, DataError

FORMAT = 1


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
    off by the next append."""

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
    def open(cls, path: str | Path, config: dict[str, Any] | None = None) -> Journal:
        """Read an existing journal; with ``config``, refuse one written by a different search configuration."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"no search journal at '{path}': start the search without --resume first")
        records = read_jsonl(path)
        if not records or records[0].get("kind") != "header" or records[0].get("format") != FORMAT:
            raise DataError(f"'{path}' is not a leanvision search journal (no header record)")
        stored = records[0]["config"]
        if config is not None and _plain(config) != stored:
            diff = sorted(k for k in set(stored) | set(_plain(config)) if stored.get(k) != _plain(config).get(k))
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
