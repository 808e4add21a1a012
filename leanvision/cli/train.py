"""`leanvision train`: one supervised training run from a validated TrainConfig."""

from __future__ import annotations

from pathlib import Path

import torch

from leanvision.cli.config import TrainConfig
from leanvision.errors import ConfigError


def run_training(cfg: TrainConfig, *, resume: bool = False, progress: bool = True) -> str:
    """Train ``cfg.model`` on ``cfg.dataset``; write metrics + checkpoints to ``cfg.out_dir``; return a summary."""
    from leanvision.cli.app import writable_dir
    from leanvision.data import load_dataset, make_loader
    from leanvision.engine import fit, make_optimizer, make_scheduler
    from leanvision.models import create_model

    out = Path(cfg.out_dir)
    last = out / "last.pt"
    if resume and not last.is_file():
        raise ConfigError(f"--resume: no checkpoint at '{last}': start without --resume or point --out-dir at a run")
    if not resume and (last.exists() or (out / "metrics.jsonl").exists()):
        raise ConfigError(f"'{out}' already holds a run: pass --resume to continue it or choose another --out-dir")
    writable_dir(out)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    train = load_dataset(
        cfg.dataset, root=cfg.data_dir, split="train", subset=cfg.subset, seed=cfg.seed, image_size=cfg.image_size
    )
    test = load_dataset(
        cfg.dataset, root=cfg.data_dir, split="test", subset=cfg.test_subset, seed=cfg.seed, image_size=cfg.image_size
    )
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, num_classes=train.num_classes, in_chans=train.input_size[0], **cfg.model_kwargs)
    loader = make_loader(train, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed)
    test_loader = make_loader(test, batch_size=max(cfg.batch_size, 256), shuffle=False)
    opt = make_optimizer(model, cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = make_scheduler(
        opt, cfg.scheduler, total_steps=cfg.epochs * len(loader), warmup_steps=cfg.warmup_epochs * len(loader)
    )
    result = fit(
        model,
        loader,
        epochs=cfg.epochs,
        optimizer=opt,
        scheduler=sched,
        val_data=test_loader,
        out_dir=out,
        resume=last if resume else None,
        seed=cfg.seed,
        progress=progress,
        config=cfg.model_dump(),
    )
    final = result.history[-1] if result.history else {}
    acc = final.get("val_acc")
    acc_text = f"test acc {100 * acc:.2f}%" if acc is not None else "no test metric"
    return f"{cfg.model} on {cfg.dataset}: {acc_text} after {cfg.epochs} epochs; metrics and checkpoints in {out}"
