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

from leanvision._io import append_jsonl, atomic_write
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
from leanvision.engine.step import StepContext, TrainStep, autocast, standard_step
from leanvision.errors import CheckpointError, ConfigError, DataError
from leanvision.models import arch_of
from leanvision.profile.machine import cpu_name, native_bf16

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
    best_epoch: int | None = None
    epochs_trained: int = 0


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


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.equal(torch.as_tensor(a), torch.as_tensor(b))
    return a == b


# Optimizer settings a resumed run must share with the checkpoint: loading the optimizer state would silently
# replace any new value with the old one. "lr" (and momentum under OneCycleLR) moves with the schedule, so it is
# compared only without one; the schedule's own base ("initial_lr", "max_lr") is compared instead.
_FIXED_KEYS = ("initial_lr", "max_lr", "min_lr", "weight_decay", "nesterov", "dampening", "eps", "alpha", "amsgrad")


def _changed_hyperparams(optimizer: torch.optim.Optimizer, saved: list[dict[str, Any]], scheduler: Any) -> list[str]:
    moving: tuple[str, ...] = ()
    if scheduler is not None:
        moving = ("lr",) + (("momentum", "betas") if getattr(scheduler, "cycle_momentum", False) else ())
    keys = [*_FIXED_KEYS, *(k for k in ("lr", "momentum", "betas") if k not in moving)]
    diffs = []
    for i, (now, then) in enumerate(zip(optimizer.param_groups, saved, strict=False)):
        where = f" (param group {i})" if len(saved) > 1 else ""
        diffs += [
            f"{k}={now[k]} vs {then[k]}{where}" for k in keys if k in now and k in then and not _same(now[k], then[k])
        ]
    return diffs


# Scheduler state that records progress rather than the schedule itself.
_PROGRESS_KEYS = frozenset({"last_epoch", "_step_count", "_last_lr", "_get_lr_called_within_step", "_is_initial"})


def _schedule_changes(new: Any, saved: Any, where: str = "") -> list[str]:
    """Differences between two scheduler state dicts, ignoring the progress counters (e.g. "total_steps=40 vs 20")."""
    if isinstance(new, dict) and isinstance(saved, dict):
        out = []
        for k in sorted(set(new) | set(saved), key=str):
            if k not in _PROGRESS_KEYS:
                out += _schedule_changes(new.get(k), saved.get(k), f"{where}.{k}" if where else str(k))
        return out
    if isinstance(new, (list, tuple)) and isinstance(saved, (list, tuple)) and len(new) == len(saved):
        return [d for a, b in zip(new, saved, strict=True) for d in _schedule_changes(a, b, where)]
    return [] if _same(new, saved) else [f"{where}={new} vs {saved}"]


def _restore(
    ckpt: dict[str, Any],
    path: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler | None,
    epochs: int,
    steps_per_epoch: int | None,
) -> tuple[int, list[dict[str, float]], float | None]:
    """Load the training state of ``ckpt`` in place; returns (completed epochs, history, best val acc).

    Anything the resumed run could not honour is refused: a different total under an LR schedule (the
    checkpoint's schedule would come back and run out), other optimizer settings, other batches per epoch.
    """
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
    saved_groups = ckpt.get("optimizer", {}).get("param_groups", []) if isinstance(ckpt.get("optimizer"), dict) else []
    changed = _changed_hyperparams(optimizer, saved_groups, scheduler)
    if changed:
        raise ConfigError(
            f"checkpoint {path} was trained with other optimizer settings ({'; '.join(changed[:3])}: given vs "
            "checkpoint); a resumed run continues with the checkpoint's, so pass the same settings or start a new run."
        )
    saved_steps = ckpt.get("steps_per_epoch")
    if steps_per_epoch is not None and isinstance(saved_steps, int) and saved_steps != steps_per_epoch:
        raise ConfigError(
            f"checkpoint {path} was trained with {saved_steps} batches per epoch but the training data now gives "
            f"{steps_per_epoch}; resume with the same dataset, subset and batch size."
        )
    if scheduler is not None and isinstance(ckpt.get("scheduler"), dict):
        changed = list(dict.fromkeys(_schedule_changes(scheduler.state_dict(), ckpt["scheduler"])))
        if changed:
            raise ConfigError(
                f"checkpoint {path} follows another learning-rate schedule ({'; '.join(changed[:3])}: given vs "
                "checkpoint); resuming restores the checkpoint's, so build the scheduler as the original run did "
                "(same epochs and settings). To train longer, start a new run from its weights "
                "(load_weights(model, path), or `leanvision train --init-from PATH`)."
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


@dataclass
class _EpochStats:
    loss: float
    acc: float
    samples: int
    lr: float
    input_size: list[int] | None


def _train_epoch(
    model: nn.Module,
    data: Iterable[Any],
    *,
    ctx: StepContext,
    train_step: TrainStep,
    scheduler: LRScheduler | None,
    device: torch.device,
    precision: str,
    bar: TrainProgress,
) -> _EpochStats:
    """One pass over ``data``, one ``train_step`` per batch; ``ctx.step`` advances with every batch."""
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    n, lr, input_size, scored = 0, ctx.optimizer.param_groups[0]["lr"], None, True
    for i, (inputs, targets) in enumerate(data):
        inputs, targets = to_device(inputs, device), to_device(targets, device)
        if input_size is None and isinstance(inputs, torch.Tensor):
            input_size = list(inputs.shape[1:])
        lr = ctx.optimizer.param_groups[0]["lr"]
        with autocast(device, precision):
            loss, outputs = train_step(model, inputs, targets, ctx)
        if scheduler is not None:
            scheduler.step()
        ctx.step += 1
        b = targets.shape[0]
        with torch.no_grad():
            loss_sum += loss.detach().double() * b
            if outputs is None:
                scored = False  # e.g. a GAN step: no logits to score
            else:
                correct += correct_topk(logits_of(outputs).detach(), targets, (1,))[0]
        n += b
        info = None
        if bar.enabled and (i + 1) % _INFO_EVERY == 0:
            info = f"loss {loss_sum.item() / n:.4f}" + (f" acc {correct.item() / n:.3f}" if scored else "")
        bar.batch(info)
    loss_total, correct_total, n_total = all_reduce_sum([loss_sum.item(), float(correct.item()), float(n)])
    if n_total == 0:
        raise DataError("training data yielded no batches; check the loader (empty dataset or drop_last?).")
    acc = correct_total / n_total if scored else math.nan
    return _EpochStats(loss_total / n_total, acc, int(n_total), lr, input_size)


def _arch_record(model: nn.Module, input_size: list[int] | None) -> dict[str, Any] | None:
    """The model's name, arguments and input size for the checkpoint; None when they are not plain data."""
    arch = arch_of(unwrap_model(model))
    if arch is None:
        return None
    try:  # e.g. act_layer=nn.SiLU cannot be stored weights-only: such a checkpoint cannot rebuild its model
        return json.loads(json.dumps({**arch, "input_size": input_size}))
    except (TypeError, ValueError):
        return None


def fit(
    model: nn.Module,
    train_data: Iterable[Any],
    *,
    epochs: int,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: LRScheduler | None = None,
    loss_fn: LossFn | None = None,
    train_step: TrainStep | None = None,
    val_data: Iterable[Any] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    seed: int = 0,
    progress: bool = True,
    config: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    grad_clip: float | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
) -> FitResult:
    """Train ``model`` on ``train_data`` for ``epochs`` epochs (a total, also when resuming).

    ``train_data``/``val_data`` are re-iterables of ``(inputs, targets)`` batches; ``set_epoch(e)`` (0-based)
    is called before epoch e when the loader or its sampler has it. ``optimizer`` defaults to nesterov SGD
    (lr 0.1, momentum 0.9, weight decay 5e-4); ``scheduler`` is stepped ONCE PER BATCH. ``loss_fn(outputs,
    targets, inputs)`` returns the batch-mean loss (default cross-entropy) and is also used for validation.
    ``train_step(model, inputs, targets, ctx)`` replaces the default step (see ``leanvision.engine.step``); without
    one, a model's own ``default_train_step`` attribute is used if it has one, else ``standard_step``. A step with
    state of its own (e.g. a policy controller) gives ``state_dict()``/``load_state_dict()``: it is checkpointed with
    the model and restored on resume.
    ``val_data`` should be a held-out part of the training set (``load_dataset(..., split="val")``): it picks
    ``best.pt``, so it must never be the test set.
    With ``out_dir``: one JSON line of metrics per epoch in ``metrics.jsonl``, and atomic ``best.pt`` (best
    val_acc) / ``last.pt`` (every epoch) checkpoints, written in that order so a crash between the two can
    never leave ``last.pt`` claiming a best epoch that ``best.pt`` does not hold. Checkpoints carry ``config``,
    ``meta`` and, for models built by ``create_model``, the model's name, arguments and input size (``arch``).
    ``resume=path`` restores model, optimizer, scheduler, epoch and RNG state, so the result is bitwise identical
    to an uninterrupted run with the same seed; a resume that changes what the run was (its schedule's total,
    optimizer settings, batches per epoch) is refused. Resuming a finished run trains nothing.
    ``precision="bf16"`` runs each train step's forward under bfloat16 autocast (weights, gradients, optimizer
    and validation stay float32); faster only where the hardware has bf16 arithmetic (AVX512-BF16 or AMX, recent GPUs).
    Under torch.distributed only rank 0 writes files and shows progress.
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"epochs must be a positive int, got {epochs!r}.")
    if grad_clip is not None and not grad_clip > 0:
        raise ConfigError(f"grad_clip must be > 0 (a max gradient norm) or None, got {grad_clip}.")
    device = torch.device(device)
    autocast(device, precision)  # refuses an unknown precision before anything runs
    if precision == "bf16" and device.type == "cpu" and native_bf16() is False:
        warnings.warn(
            f"precision bf16 on a CPU without bfloat16 arithmetic (no AVX-512 or AMX: {cpu_name()}): convolutions "
            "fall back to generic code, and training runs several times slower than with precision fp32",
            stacklevel=2,
        )
    model.to(device)
    if optimizer is None:
        optimizer = make_optimizer(model, "sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    loss_fn = loss_fn or cross_entropy
    # A model may recommend its own step (binary nets clip latent weights, FSF nets add their mask loss).
    train_step = train_step or getattr(unwrap_model(model), "default_train_step", None) or standard_step
    out = Path(out_dir) if out_dir is not None else None
    main = is_main_process()
    config_plain = _plain_config(config)
    meta_plain = _plain_config(meta)
    steps_per_epoch = _num_batches(train_data)

    history: list[dict[str, float]] = []
    best_val_acc: float | None = None
    start = 0
    if resume is not None:
        resume = Path(resume)
        ckpt = load_checkpoint(resume)
        if ckpt.get("precision", "fp32") != precision:
            raise ConfigError(
                f"checkpoint {resume} was trained with precision {ckpt.get('precision', 'fp32')} but precision="
                f"{precision}; a resumed run continues as it started, so pass the same precision."
            )
        start, history, best_val_acc = _restore(
            ckpt,
            resume,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
        )
        if callable(getattr(train_step, "load_state_dict", None)) and ckpt.get("train_step") is not None:
            train_step.load_state_dict(ckpt["train_step"])
        config_plain = config_plain or ckpt.get("config") or {}
        meta_plain = meta_plain or ckpt.get("meta") or {}
    else:
        _seed_everything(seed)

    metrics_path = out / METRICS_FILE if out is not None else None
    if metrics_path is not None and main and resume is not None:
        # Rewritten from the checkpoint's history so the file has exactly one line per finished epoch,
        # even when epochs logged after the checkpoint (an interrupted run) are trained again.
        _write_jsonl(metrics_path, history)

    last_path = resume if resume is not None and start == epochs else None
    best_path = None
    best_epoch = ckpt.get("best_epoch") if resume is not None else None
    ctx = StepContext(
        optimizer=optimizer,
        loss_fn=loss_fn,
        grad_clip=grad_clip,
        epoch=start,
        step=int(ckpt.get("step") or 0) if resume is not None else 0,
        params=list(model.parameters()),
    )
    was_training = model.training
    stateful = callable(getattr(train_step, "state_dict", None))
    with TrainProgress(epochs=epochs, start_epoch=start, enabled=progress and main) as bar:
        for epoch in range(start, epochs):
            _set_epoch(train_data, epoch)
            bar.start_epoch(epoch, steps_per_epoch)
            ctx.epoch = epoch
            t0 = time.perf_counter()
            stats = _train_epoch(model, train_data, ctx=ctx, train_step=train_step, scheduler=scheduler,
                                 device=device, precision=precision, bar=bar)  # fmt: skip
            train_time = time.perf_counter() - t0
            row: dict[str, float] = {"epoch": epoch + 1, "train_loss": stats.loss, "train_acc": stats.acc}
            if val_data is not None:
                val = evaluate(model, val_data, loss_fn=loss_fn, device=device, all_reduce=is_distributed())
                row["val_loss"], row["val_acc"] = val["loss"], val["acc"]
            row["lr"] = stats.lr
            row["epoch_time_s"] = time.perf_counter() - t0
            row["images_per_s"] = stats.samples / train_time if train_time > 0 else math.inf
            row.update(ctx.metrics)  # what the train step reported for this epoch (e.g. a diagnostic)
            ctx.metrics = {}
            history.append(row)
            is_best = val_data is not None and (best_val_acc is None or row["val_acc"] > best_val_acc)
            if is_best:
                best_val_acc, best_epoch = row["val_acc"], epoch + 1
            if out is not None and main:
                out.mkdir(parents=True, exist_ok=True)
                append_jsonl(metrics_path, row)
                state = {
                    "epoch": epoch + 1,
                    "epochs": epochs,
                    "steps_per_epoch": steps_per_epoch,
                    "step": ctx.step,
                    "precision": precision,
                    "model": unwrap_model(model).state_dict(),
                    "arch": _arch_record(model, stats.input_size),
                    "optimizer": optimizer.state_dict(),
                    "optimizer_class": type(optimizer).__name__,
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "train_step": train_step.state_dict() if stateful else None,
                    "rng": rng_state(),
                    "config": config_plain,
                    "meta": meta_plain,
                    "history": history,
                    "best_val_acc": best_val_acc,
                    "best_epoch": best_epoch,
                    "metrics": row,
                }
                if is_best:  # best first: see the docstring
                    best_path = save_checkpoint(out / BEST_FILE, **state)
                last_path = save_checkpoint(out / LAST_FILE, **state)
            bar.end_epoch(epoch, row)
    model.train(was_training)
    if best_path is None and out is not None and resume is not None and (out / BEST_FILE).is_file():
        best_path = out / BEST_FILE  # the best epoch came before the resume point
    return FitResult(
        history=history,
        final=history[-1] if history else {},
        last_checkpoint=last_path,
        best_checkpoint=best_path,
        best_val_acc=best_val_acc,
        best_epoch=best_epoch,
        epochs_trained=epochs - start,
    )
