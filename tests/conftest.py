"""Shared fixtures: locate the real data, seed everything, keep caches out of the user's home."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path | None:
    for cand in (os.environ.get("LEANVISION_DATA"), REPO.parent / "shared" / "data"):
        if cand and Path(cand).is_dir():
            return Path(cand)
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets (../shared/data or $LEANVISION_DATA); tests that need them skip without."""
    root = _shared_data()
    if root is None:
        pytest.skip("real data not found: set LEANVISION_DATA or place it at ../shared/data")
    return root


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    # Tests use tiny models: one thread avoids oversubscription (2 cores, possibly another busy process), which
    # can make small ops 100x slower. Benchmarks, not tests, measure speed.
    torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Extracted archives and decoded arrays go to a per-session cache, never the user's ~/.cache.
    os.environ.setdefault("LEANVISION_CACHE", str(tmp_path_factory.mktemp("leanvision-cache")))


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
