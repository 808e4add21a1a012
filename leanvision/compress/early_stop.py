"""Train until validation accuracy stops improving: one rule for every student a comparison trains.

A fixed step budget favours whichever training set converges at that budget; stopping every run by the same
patience rule on a held-out split and keeping its best checkpoint compares the runs at convergence instead.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from leanvision.engine import fit
from leanvision.engine.evaluate import LossFn
from leanvision.errors import ConfigError


@dataclass
class EarlyStopping:
    """Stop once the metric has not beaten its best by more than ``min_delta`` for ``patience`` checks in a row."""

    patience: int
    min_delta: float = 0.0
    best: float | None = None
    best_check: int = 0  # 1-based index of the best check; 0 before the first
    checks: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) or self.patience < 1:
            raise ConfigError(f"patience must be a positive int (checks without improvement), got {self.patience!r}")
        if not self.min_delta >= 0:
            raise ConfigError(f"min_delta must be >= 0, got {self.min_delta!r}")

    def step(self, value: float) -> bool:
        """Record one check (higher is better); True when training should stop."""
        self.checks += 1
        if self.best is None or value > self.best + self.min_delta:
            self.best, self.best_check = value, self.checks
        return self.checks - self.best_check >= self.patience

    @property
    def improved(self) -> bool:
        """Whether the last check was the best so far."""
        return self.checks > 0 and self.best_check == self.checks


@dataclass
class PlateauResult:
    """Steps trained, the step of the best validation accuracy (whose weights the model holds) and the checks."""

    steps: int
    best_step: int
    best_val_acc: float
    stopped_early: bool
    history: list[dict[str, float]] = field(default_factory=list)  # {"step", "val_acc", "val_loss"} per check


class _Stream:
    """Batches of a re-iterable loader, pass after pass (``set_epoch`` before each), handed out in chunks."""

    def __init__(self, data: Iterable[Any]) -> None:
        self.data, self.epoch, self.it, self.yielded = data, -1, None, True

    def next(self) -> Any:
        while True:
            if self.it is None:
                if not self.yielded:
                    raise ConfigError("the training data yields no batches")
                self.epoch, self.yielded = self.epoch + 1, False
                set_epoch = getattr(self.data, "set_epoch", None)
                if callable(set_epoch):
                    set_epoch(self.epoch)
                self.it = iter(self.data)
            try:
                batch = next(self.it)
            except StopIteration:
                self.it = None
                continue
            self.yielded = True
            return batch


class _Chunk:
    """``n`` batches of a stream: one ``fit`` epoch."""

    def __init__(self, stream: _Stream, n: int) -> None:
        self.stream, self.n = stream, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[Any]:
        return (self.stream.next() for _ in range(self.n))


def fit_until_plateau(
    model: nn.Module,
    train_data: Iterable[Any],
    *,
    val_data: Iterable[Any],
    optimizer: torch.optim.Optimizer,
    check_every: int,
    patience: int,
    max_steps: int,
    loss_fn: LossFn | None = None,
    min_delta: float = 0.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> PlateauResult:
    """Train ``check_every`` steps at a time, checking validation accuracy after each, until ``EarlyStopping``
    (``patience`` checks without improvement) or ``max_steps``; the model ends with its best weights.

    ``train_data`` is a re-iterable loader (passes repeat with ``set_epoch``); ``val_data`` a labelled held-out
    split (never the test set). ``loss_fn`` (e.g. a ``KDLoss``) is used for training and validation loss.
    """
    for name, v in (("check_every", check_every), ("max_steps", max_steps)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{name} must be a positive int (optimizer steps), got {v!r}")
    stop = EarlyStopping(patience, min_delta)
    stream, steps, history, best, done = _Stream(train_data), 0, [], None, False
    while steps < max_steps and not done:
        n = min(check_every, max_steps - steps)
        result = fit(model, _Chunk(stream, n), epochs=1, optimizer=optimizer, loss_fn=loss_fn, val_data=val_data,
                     seed=seed + len(history), progress=False, device=device)  # fmt: skip
        steps += n
        row = result.history[-1]
        history.append({"step": steps, "val_acc": row["val_acc"], "val_loss": row["val_loss"]})
        done = stop.step(row["val_acc"])
        if stop.improved:
            best = (steps, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[1])
    return PlateauResult(steps, best[0], stop.best, done, history)
