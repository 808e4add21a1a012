"""The training loop: fit a model for some epochs with metrics, atomic checkpoints and exact resume."""

from __future__ import annotations

import json
import math
import os
import random
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from leanvision._io import atomic_write
from leanvision.engine._dist import all_reduce_sum, is_distributed, is_main_process
from leanvision.engine._progress import TrainProgress
from leanvision.engine.checkpoint import (
    load_checkpoint,
    load_model_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
    unwrap_model,
)
from leanvision.engine.evaluate import LossFn, correct_topk, cross_entropy, evaluate, logits_of, to_device
from leanvision.engine.optim import make_optimizer
from leanvision.errors import CheckpointError, ConfigError, DataError

METRICS_FILE = "metrics.jsonl"
LAST_FILE = "last.pt"
BEST_FILE = "best.pt"
_INFO_EVERY = 20  # batches between progress-text refreshes (each costs a device sync)


@dataclass
class FitResult:
    """What a run produced: per-epoch metrics, the last epoch's metrics and the checkpoint paths."""

    history: list[dict[str, float]]
    final: dict[str, float] = field(default_factory=dict)
    last_checkpoint: Path | None = None
    best_checkpoint: Path | None = None
    best_val_acc: float | None = None


def _plain_config(config: dict[str, Any] | None) -> dict[str, Any]:
    if config is None:
        return {}
    try:
        plain = json.loads(json.dumps(config, allow_nan=True))
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"config must be a JSON-serialisable dict (str, int, float, bool, None, list, dict): {e}; "
            "convert Paths and other objects to str first."
        ) from None
    if not isinstance(plain, dict):
        raise ConfigError(f"config must be a dict, got {type(config).__name__}.")
    return plain


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _set_epoch(data: Any, epoch: int) -> None:
    # A BatchLoader has set_epoch itself; a torch DataLoader keeps it on its (Distributed)Sampler.
    batch_sampler = getattr(data, "batch_sampler", None)
    for obj in (data, getattr(data, "sampler", None), getattr(batch_sampler, "sampler", None)):
        if obj is not None and callable(getattr(obj, "set_epoch", None)):
            obj.set_epoch(epoch)
            return


def _num_batches(data: Any) -> int | None:
    try:
        return len(data)
    except TypeError:
        return None


def _write_jsonl(path: Path, rows: list[dict[str, float]]) -> None:
    """Replace ``path`` atomically with one JSON line per row."""
    atomic_write(path, lambda f: f.write("".join(json.dumps(r) + "\n" for r in rows).encode()))


def _append_jsonl(path: Path, row: dict[str, float]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _restore(
    ckpt: dict[str, Any],
    path: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler | None,
    epochs: int,
) -> tuple[int, list[dict[str, float]], float | None]:
    """Load the training state of ``ckpt`` in place; returns (completed epochs, history, best val acc)."""
    if not isinstance(ckpt.get("model"), dict) or not isinstance(ckpt.get("epoch"), int) or "rng" not in ckpt:
        raise CheckpointError(
            f"checkpoint {path} has no training state (model/optimizer/epoch/rng): it was not written by "
            "fit; load its weights with load_weights(model, path) and start a fresh run instead."
        )
    done = ckpt["epoch"]
    if done > epochs:
        raise ConfigError(
            f"checkpoint {path} has already completed {done} epochs but epochs={epochs}; epochs is the total "
            f"number of epochs, so pass epochs >= {done}."
        )
    load_model_state(model, ckpt, source=path)
    saved_opt = ckpt.get("optimizer_class")
    if saved_opt is not None and saved_opt != type(optimizer).__name__:
        raise ConfigError(
            f"checkpoint {path} was trained with {saved_opt} but the optimizer given is "
            f"{type(optimizer).__name__}; pass the same optimizer type as the original run."
        )
    if (ckpt.get("scheduler") is None) != (scheduler is None):
        had = "a scheduler" if ckpt.get("scheduler") is not None else "no scheduler"
        raise ConfigError(
            f"checkpoint {path} was trained with {had} but scheduler={'None' if scheduler is None else 'given'};"
            " pass the same scheduler as the original run."
        )
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"checkpoint {path}: the optimizer/scheduler state does not fit ({e}); build them over the same "
            "parameters with the same settings as the original run."
        ) from e
    set_rng_state(ckpt["rng"])
    return done, list(ckpt.get("history", []))[:done], ckpt.get("best_val_acc")


def _train_epoch(
    model: nn.Module,
    data: Iterable[Any],
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler | None,
    loss_fn: LossFn,
    grad_clip: float | None,
    device: torch.device,
    bar: TrainProgress,
) -> tuple[float, float, int, float]:
    """One pass over ``data``; returns (mean loss, accuracy, samples, lr of the last step)."""
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    n, lr = 0, optimizer.param_groups[0]["lr"]
    for i, (inputs, targets) in enumerate(data):
        inputs, targets = to_device(inputs, device), to_device(targets, device)
        outputs = model(inputs)
        loss = loss_fn(outputs, targets, inputs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        b = targets.shape[0]
        with torch.no_grad():
            loss_sum += loss.detach().double() * b
            correct += correct_topk(logits_of(outputs).detach(), targets, (1,))[0]
        n += b
        info = None
        if bar.enabled and (i + 1) % _INFO_EVERY == 0:
            info = f"loss {loss_sum.item() / n:.4f} acc {correct.item() / n:.3f}"
        bar.batch(info)
    loss_total, correct_total, n_total = all_reduce_sum([loss_sum.item(), float(correct.item()), float(n)])
    if n_total == 0:
        raise DataError("training data yielded no batches; check the loader (empty dataset or drop_last?).")
    return loss_total / n_total, correct_total / n_total, int(n_total), lr


def fit(
    model: nn.Module,
    train_data: Iterable[Any],
    *,
    epochs: int,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: LRScheduler | None = None,
    loss_fn: LossFn | None = None,
    val_data: Iterable[Any] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    seed: int = 0,
    progress: bool = True,
    config: dict[str, Any] | None = None,
    grad_clip: float | None = None,
    device: str | torch.device = "cpu",
) -> FitResult:
    """Train ``model`` on ``train_data`` for ``epochs`` epochs (a total, also when resuming).

    ``train_data``/``val_data`` are re-iterables of ``(inputs, targets)`` batches; ``set_epoch(e)`` (0-based)
    is called before epoch e when the loader or its sampler has it. ``optimizer`` defaults to nesterov SGD
    (lr 0.1, momentum 0.9, weight decay 5e-4); ``scheduler`` is stepped ONCE PER BATCH. ``loss_fn(outputs,
    targets, inputs)`` returns the batch-mean loss (default cross-entropy) and is also used for validation.
    With ``out_dir``: one JSON line of metrics per epoch in ``metrics.jsonl``, and atomic ``last.pt`` (every
    epoch) / ``best.pt`` (best val_acc) checkpoints. ``resume=path`` restores model, optimizer, scheduler,
    epoch and RNG state, so the result is bitwise identical to an uninterrupted run with the same seed.
    Under torch.distributed only rank 0 writes files and shows progress.
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"epochs must be a positive int, got {epochs!r}.")
    if grad_clip is not None and not grad_clip > 0:
        raise ConfigError(f"grad_clip must be > 0 (a max gradient norm) or None, got {grad_clip}.")
    device = torch.device(device)
    model.to(device)
    if optimizer is None:
        optimizer = make_optimizer(model, "sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    loss_fn = loss_fn or cross_entropy
    out = Path(out_dir) if out_dir is not None else None
    main = is_main_process()
    config_plain = _plain_config(config)

    history: list[dict[str, float]] = []
    best_val_acc: float | None = None
    start = 0
    if resume is not None:
        resume = Path(resume)
        ckpt = load_checkpoint(resume)
        start, history, best_val_acc = _restore(
            ckpt, resume, model=model, optimizer=optimizer, scheduler=scheduler, epochs=epochs
        )
        if config is None:
            config_plain = ckpt.get("config") or {}
        if start == epochs:
            warnings.warn(
                f"checkpoint {resume} already completed all {epochs} epochs; nothing to train (weights "
                "loaded). Pass a larger epochs to train further.",
                stacklevel=2,
            )
            best = resume.with_name(BEST_FILE)
            return FitResult(
                history=history,
                final=history[-1] if history else {},
                last_checkpoint=resume,
                best_checkpoint=best if best.is_file() else None,
                best_val_acc=best_val_acc,
            )
    else:
        _seed_everything(seed)

    metrics_path = out / METRICS_FILE if out is not None else None
    if metrics_path is not None and main:
        out.mkdir(parents=True, exist_ok=True)
        # Rewritten from the checkpoint's history so the file has exactly one line per finished epoch,
        # even when epochs logged after the checkpoint (an interrupted run) are trained again.
        _write_jsonl(metrics_path, history)

    last_path = best_path = None
    was_training = model.training
    with TrainProgress(epochs=epochs, start_epoch=start, enabled=progress and main) as bar:
        for epoch in range(start, epochs):
            _set_epoch(train_data, epoch)
            bar.start_epoch(epoch, _num_batches(train_data))
            t0 = time.perf_counter()
            train_loss, train_acc, n, lr = _train_epoch(
                model,
                train_data,
                optimizer=optimizer,
                scheduler=scheduler,
                loss_fn=loss_fn,
                grad_clip=grad_clip,
                device=device,
                bar=bar,
            )
            train_time = time.perf_counter() - t0
            row: dict[str, float] = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc}
            if val_data is not None:
                val = evaluate(model, val_data, loss_fn=loss_fn, device=device, all_reduce=is_distributed())
                row["val_loss"], row["val_acc"] = val["loss"], val["acc"]
            row["lr"] = lr
            row["epoch_time_s"] = time.perf_counter() - t0
            row["images_per_s"] = n / train_time if train_time > 0 else math.inf
            history.append(row)
            is_best = val_data is not None and (best_val_acc is None or row["val_acc"] > best_val_acc)
            if is_best:
                best_val_acc = row["val_acc"]
            if out is not None and main:
                _append_jsonl(metrics_path, row)
                state = {
                    "epoch": epoch + 1,
                    "model": unwrap_model(model).state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "optimizer_class": type(optimizer).__name__,
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "rng": rng_state(),
                    "config": config_plain,
                    "history": history,
                    "best_val_acc": best_val_acc,
                    "metrics": row,
                }
                last_path = save_checkpoint(out / LAST_FILE, **state)
                if is_best:
                    best_path = save_checkpoint(out / BEST_FILE, **state)
            info = f"loss {train_loss:.4f} acc {train_acc:.3f}"
            if val_data is not None:
                info += f" val_loss {row['val_loss']:.4f} val_acc {row['val_acc']:.3f}"
            bar.end_epoch(info)
    model.train(was_training)
    if best_path is None and out is not None and resume is not None and (out / BEST_FILE).is_file():
        best_path = out / BEST_FILE  # the best epoch came before the resume point
    return FitResult(
        history=history,
        final=history[-1] if history else {},
        last_checkpoint=last_path,
        best_checkpoint=best_path,
        best_val_acc=best_val_acc,
    )
