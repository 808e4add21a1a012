"""Helpers shared by the search tests: a table-free NAS-Bench-201 objective, a history trace, kill-then-resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leanvision.search import Journal, search


def conv_count(sample):
    """A deterministic objective on NAS-Bench-201 cells (no table needed): 3x3 convs minus pools."""
    ops = list(sample.values())
    return {"objective": float(ops.count("nor_conv_3x3") - ops.count("avg_pool_3x3"))}


def trace(history):
    return [(t.trial, json.dumps(t.sample), t.status, t.objective) for t in history.trials]


def resumed_after_kill(space, make_strategy, evaluator, budget: int, kill_at: int, path: Path):
    """Run a search that is stopped (like a kill) on its `kill_at`-th evaluation, then resume it from the journal."""
    calls = 0

    def stopping(sample):
        nonlocal calls
        calls += 1
        if calls == kill_at:
            raise KeyboardInterrupt
        return evaluator(sample)

    with pytest.raises(KeyboardInterrupt):
        search(space, make_strategy(), stopping, budget=budget, journal=Journal.create(path, {}))
    assert len(Journal.open(path).trials()) == kill_at - 1
    return search(space, make_strategy(), evaluator, budget=budget, journal=Journal.open(path))
