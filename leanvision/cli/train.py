"""`leanvision train`: one supervised training run from a validated TrainConfig."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from leanvision._io import atomic_write_text
from leanvision.cli._common import Interrupted, check_device, check_threads, writable_dir
from leanvision.cli.config import TrainConfig, resume_config
from leanvision.errors import ConfigError

RESULTS_FILE = "results.json"


def _datasets(cfg: TrainConfig) -> tuple[Any, Any | None, Any]:
    from leanvision.data import load_dataset

    common = {"root": cfg.data_dir, "image_size": cfg.image_size, "val_size": cfg.exact_val_size()}
    train = load_dataset(cfg.dataset, split="train", subset=cfg.subset, seed=cfg.seed, **common)
    val = load_dataset(cfg.dataset, split="val", **common) if cfg.val_size else None
    test = load_dataset(cfg.dataset, split="test", subset=cfg.test_subset, seed=cfg.seed, **common)
    return train, val, test


def _test_report(model: torch.nn.Module, result: Any, test: Any, cfg: TrainConfig, out: Path) -> dict[str, Any]:
    """Test metrics of the model picked on the validation split (best.pt), or of the last epoch without one."""
    from leanvision.data import make_loader
    from leanvision.engine import evaluate, load_weights

    picked = "last epoch"
    if result.best_checkpoint is not None:
        load_weights(model, result.best_checkpoint)
        picked = f"best.pt (epoch {result.best_epoch}, val acc {100 * result.best_val_acc:.2f}%)"
    metrics = evaluate(model, make_loader(test, batch_size=max(cfg.batch_size, 256), shuffle=False), device=cfg.device)
    report = {
        "model": cfg.model,
        "dataset": cfg.dataset,
        "weights": picked,
        "test_acc": metrics["acc"],
        "test_loss": metrics["loss"],
        "test_images": int(metrics["n"]),
    }
    atomic_write_text(out / RESULTS_FILE, json.dumps(report, indent=2) + "\n")
    return report


def run_training(cfg: TrainConfig, *, resume: bool = False, progress: bool = True) -> str:
    """Train ``cfg.model`` on ``cfg.dataset``; write metrics + checkpoints to ``cfg.out_dir``; return a summary.

    The validation split (``val_size``) picks ``best.pt``; the test split is evaluated once, at the end.
    """
    from leanvision.data import make_loader
    from leanvision.engine import fit, load_checkpoint, load_weights, make_optimizer, make_scheduler
    from leanvision.models import create_model

    out = Path(cfg.out_dir)
    last = out / "last.pt"
    if resume:
        if not last.is_file():
            raise ConfigError(
                f"--resume: no checkpoint at '{last}': start without --resume or point --out-dir at a run"
            )
        ckpt = load_checkpoint(last)
        cfg = resume_config(cfg, ckpt.get("config") or {}, checkpoint=last)
        if ckpt.get("epoch", 0) >= cfg.epochs:
            return f"the run in {out} already finished all {cfg.epochs} epochs; nothing to train"
    elif last.exists() or (out / "metrics.jsonl").exists():
        raise ConfigError(f"'{out}' already holds a run: pass --resume to continue it or choose another --out-dir")
    if cfg.init_from is not None and not Path(cfg.init_from).is_file():
        raise ConfigError(f"init_from: no checkpoint at '{cfg.init_from}'; give the path of a last.pt or best.pt")
    check_threads(cfg.threads)
    check_device(cfg.device)
    created = not out.exists()
    writable_dir(out)
    try:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        train, val, test = _datasets(cfg)
        torch.manual_seed(cfg.seed)
        model = create_model(cfg.model, num_classes=train.num_classes, in_chans=train.input_size[0], **cfg.model_kwargs)
        if cfg.init_from is not None and not resume:
            load_weights(model, cfg.init_from)
        loader = make_loader(train, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed)
        val_loader = make_loader(val, batch_size=max(cfg.batch_size, 256), shuffle=False) if val is not None else None
        opt = make_optimizer(model, cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        sched = make_scheduler(
            opt, cfg.scheduler, total_steps=cfg.epochs * len(loader), warmup_steps=cfg.warmup_epochs * len(loader)
        )
        meta = {"dataset": cfg.dataset, "classes": train.classes, "mean": list(train.mean), "std": list(train.std)}
        try:
            result = fit(
                model,
                loader,
                epochs=cfg.epochs,
                optimizer=opt,
                scheduler=sched,
                val_data=val_loader,
                out_dir=out,
                resume=last if resume else None,
                seed=cfg.seed,
                progress=progress,
                config=cfg.model_dump(),
                meta=meta,
                device=cfg.device,
            )
        except KeyboardInterrupt:
            saved = f"resume with: leanvision train --out-dir {out} --resume" if last.is_file() else "nothing saved yet"
            raise Interrupted(f"training interrupted; {saved}") from None
        report = _test_report(model, result, test, cfg, out)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a run that failed before its first epoch leaves no empty folder behind
        raise
    val_text = f"best val acc {100 * result.best_val_acc:.2f}% (epoch {result.best_epoch}); " if val else ""
    return (
        f"{cfg.model} on {cfg.dataset}: {val_text}test acc {100 * report['test_acc']:.2f}% with {report['weights']}; "
        f"metrics, checkpoints and {RESULTS_FILE} in {out}"
    )
