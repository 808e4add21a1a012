"""The converged CIFAR-10 baselines shipped under benchmarks/baselines/: small, slim, and as accurate as recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from leanvision.engine import evaluate_checkpoint
from leanvision.engine.checkpoint import load_checkpoint, model_from_checkpoint

BASELINES = Path(__file__).resolve().parents[1] / "benchmarks" / "baselines"
SHIPPED = sorted(BASELINES.glob("*.pt"))


def test_baselines_are_shipped() -> None:
    # the compression benchmarks start from these two (their --baseline)
    assert {p.stem for p in SHIPPED} >= {"resnet20_cifar10", "vgg_cifar10"}


@pytest.mark.parametrize("pt", SHIPPED, ids=lambda p: p.stem)
def test_shipped_checkpoint_is_slim_and_rebuilds_its_config_model(pt: Path) -> None:
    cfg = yaml.safe_load(pt.with_suffix(".yaml").read_text())
    record = json.loads(pt.with_suffix(".json").read_text())
    assert pt.stat().st_size == record["bytes"] <= 2 * 2**20
    state = load_checkpoint(pt)
    assert state["slim"] and not {"optimizer", "scheduler", "rng"} & set(state)  # weights only
    model, ckpt = model_from_checkpoint(pt)
    assert ckpt["arch"]["name"] == cfg["model"]
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # float16 on disk, float32 once loaded
    x = torch.zeros(2, *ckpt["arch"]["input_size"])
    assert model(x).shape == (2, 10)


@pytest.mark.slow
@pytest.mark.parametrize("pt", SHIPPED, ids=lambda p: p.stem)
def test_shipped_checkpoint_scores_its_recorded_test_accuracy(pt: Path, shared_data: Path) -> None:
    record = json.loads(pt.with_suffix(".json").read_text())
    r = evaluate_checkpoint(pt, split="test", data_dir=str(shared_data), progress=False)
    assert r.images == 10_000
    assert round(100 * r.acc, 2) == record["test_acc_shipped"]
