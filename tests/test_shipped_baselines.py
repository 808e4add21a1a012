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


@pytest.mark.parametrize("limit", [2 * 2**20, 1000])
def test_ship_writes_slim_weights_under_the_limit_and_only_the_record_above_it(tmp_path, monkeypatch, limit) -> None:
    from leanvision.engine import train

    monkeypatch.syspath_prepend(str(BASELINES))
    import ship  # a script beside the baselines, not a package

    monkeypatch.setattr(ship, "MAX_BYTES", limit)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"model": "quickstart_cnn", "dataset": "digits", "epochs": 2, "seed": 0,
                                      "out_dir": str(tmp_path / "run")}))  # fmt: skip
    train(str(config), progress=False)
    record = ship.ship(config, data_dir=None)
    saved = json.loads((tmp_path / "tiny.json").read_text())
    assert saved == record and [h["epoch"] for h in record["history"]] == [1, 2]
    assert (tmp_path / "tiny.png").is_file()
    if limit == 1000:  # ~100 kB of weights, even in float16: no file, the reason recorded
        assert record["checkpoint"] is None and not (tmp_path / "tiny.pt").exists()
        assert record["test_acc_shipped"] is None and "exceed the 1,000-byte limit" in record["not_shipped"]
    else:
        assert record["checkpoint"] == "tiny.pt" and (tmp_path / "tiny.pt").stat().st_size == record["bytes"]
        assert record["test_acc_shipped"] == pytest.approx(record["test_acc_original"])
