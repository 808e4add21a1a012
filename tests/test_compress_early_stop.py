"""Training until validation accuracy stops improving: the patience rule and the loop that keeps the best weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from leanvision.compress import EarlyStopping, fit_until_plateau
from leanvision.engine import evaluate, make_optimizer
from leanvision.errors import ConfigError


def test_patience_counts_checks_without_improvement():
    stop = EarlyStopping(patience=2)
    decisions = [stop.step(v) for v in (0.5, 0.6, 0.6, 0.59)]  # a tie is no improvement
    assert decisions == [False, False, False, True] and stop.best == 0.6 and stop.best_check == 2
    stop = EarlyStopping(patience=2, min_delta=0.05)
    assert [stop.step(v) for v in (0.5, 0.54, 0.52, 0.7)] == [False, False, True, False]
    assert stop.best == 0.7 and stop.improved
    with pytest.raises(ConfigError, match="patience"):
        EarlyStopping(patience=0)


class _Passes:
    """A re-iterable loader that records the set_epoch calls it gets."""

    def __init__(self, data: TensorDataset, batch_size: int) -> None:
        self.data, self.batch_size, self.epochs = data, batch_size, []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def __len__(self) -> int:
        return -(-len(self.data) // self.batch_size)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.epochs[-1] if self.epochs else 0)
        return iter(DataLoader(self.data, batch_size=self.batch_size, shuffle=True, generator=g))


def _blobs(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 1, 2, 2, generator=g) + (2 * y - 1).float()[:, None, None, None] * 0.7
    return TensorDataset(x, y)


def test_training_stops_on_the_plateau_and_keeps_the_best_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    train = _Passes(_blobs(256, 0), 16)  # 16 batches a pass
    val = DataLoader(_blobs(200, 1), batch_size=200)
    opt = make_optimizer(model, "sgd", lr=0.5, momentum=0.9, weight_decay=0.0)
    res = fit_until_plateau(model, train, val_data=val, optimizer=opt, check_every=5, patience=3, max_steps=2000)
    assert res.stopped_early and res.steps < 2000 and res.steps % 5 == 0
    assert [h["step"] for h in res.history] == list(range(5, res.steps + 1, 5))
    best = max(res.history, key=lambda h: h["val_acc"])  # the first of equal bests
    assert (res.best_step, res.best_val_acc) == (best["step"], best["val_acc"])
    assert res.steps - res.best_step == 3 * 5  # patience checks after the best one
    assert evaluate(model, val)["acc"] == res.best_val_acc  # the model holds the best weights
    assert train.epochs == list(range(len(train.epochs))) and len(train.epochs) == -(-res.steps // 16)


def test_a_budget_caps_the_steps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    train = _Passes(_blobs(64, 0), 16)
    val = DataLoader(_blobs(50, 1), batch_size=50)
    opt = make_optimizer(model, "sgd", lr=1e-4)
    res = fit_until_plateau(model, train, val_data=val, optimizer=opt, check_every=4, patience=50, max_steps=10)
    assert res.steps == 10 and not res.stopped_early and [h["step"] for h in res.history] == [4, 8, 10]
    with pytest.raises(ConfigError, match="check_every"):
        fit_until_plateau(model, train, val_data=val, optimizer=opt, check_every=0, patience=1, max_steps=10)
