"""One supervised training run from a validated config: the library call behind `leanvision train`."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from leanvision._io import atomic_write_text
from leanvision.config import TrainConfig, check_device, check_threads, load_config, validate_model, writable_dir
from leanvision.errors import ConfigError
from leanvision.runs import RESUMABLE_KEYS, changed_settings, check_run_dir, interruptible

RESULTS_FILE = "results.json"

# TrainConfig.policy -> a uint8 batch transform for the loader. The augment room, above the engine, provides it
# (registered on import, and through the "leanvision.policies" entry point), so the engine never imports that room.
_POLICY_LOADER: list[Callable[[str], Any]] = []


def register_policy_loader(fn: Callable[[str], Any]) -> None:
    """Let ``TrainConfig.policy`` (a policy file or name) become the loader's transform through ``fn(policy)``."""
    _POLICY_LOADER[:] = [fn]


def _policy_transform(policy: str) -> Any:
    if not _POLICY_LOADER:
        from importlib.metadata import entry_points

        for ep in entry_points(group="leanvision.policies", name="policy"):
            _POLICY_LOADER.append(ep.load())
            break
        else:
            raise ConfigError("policy: no installed package applies augmentation policies: reinstall leanvision "
                              "(pip install -e .) so its entry points are registered")  # fmt: skip
    return _POLICY_LOADER[0](policy)


@dataclass
class TrainResult:
    """What a training run left in ``out_dir``: its checkpoints, validation pick and test numbers."""

    out_dir: Path
    model: str
    dataset: str
    epochs: int
    epochs_trained: int  # by this call: 0 when a resumed run had already finished
    best_val_acc: float | None
    best_epoch: int | None
    test_acc: float | None
    test_loss: float | None
    test_images: int | None
    weights: str  # which weights were tested: best.pt (with its epoch) or the last epoch
    last_checkpoint: Path
    best_checkpoint: Path | None
    results_file: Path
    history: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> str:
        """One line for a person: validation pick, test accuracy and where the files are."""
        if self.epochs_trained == 0:
            return f"the run in {self.out_dir} already finished all {self.epochs} epochs; nothing to train"
        val = ""
        if self.best_val_acc is not None:
            val = f"best val acc {100 * self.best_val_acc:.2f}% (epoch {self.best_epoch}); "
        return (f"{self.model} on {self.dataset}: {val}test acc {100 * (self.test_acc or 0):.2f}% with {self.weights}; "
                f"metrics, checkpoints and {RESULTS_FILE} in {self.out_dir}")  # fmt: skip


def _datasets(cfg: TrainConfig) -> tuple[Any, Any | None, Any]:
    from leanvision.data import load_dataset

    common = {"root": cfg.data_dir, "image_size": cfg.image_size, "val_size": cfg.exact_val_size()}
    train = load_dataset(cfg.dataset, split="train", subset=cfg.subset, seed=cfg.seed, **common)
    val = load_dataset(cfg.dataset, split="val", **common) if cfg.val_size else None
    test = load_dataset(cfg.dataset, split="test", subset=cfg.test_subset, seed=cfg.seed, **common)
    return train, val, test


def _test_report(model: torch.nn.Module, result: Any, test: Any, cfg: TrainConfig, out: Path,
                 progress: bool) -> dict[str, Any]:  # fmt: skip
    """Test metrics of the model picked on the validation split (best.pt), or of the last epoch without one."""
    from leanvision.data import make_loader
    from leanvision.engine.checkpoint import load_weights
    from leanvision.engine.evaluate import evaluate

    picked = "last epoch"
    if result.best_checkpoint is not None:
        load_weights(model, result.best_checkpoint)
        picked = f"best.pt (epoch {result.best_epoch}, val acc {100 * result.best_val_acc:.2f}%)"
    loader = make_loader(test, batch_size=max(cfg.batch_size, 256), shuffle=False)
    metrics = evaluate(model, loader, device=cfg.device, progress=progress)
    report = {"model": cfg.model, "dataset": cfg.dataset, "weights": picked, "test_acc": metrics["acc"],
              "test_loss": metrics["loss"], "test_images": int(metrics["n"])}  # fmt: skip
    atomic_write_text(out / RESULTS_FILE, json.dumps(report, indent=2) + "\n")
    return report


def _resumed_config(cfg: TrainConfig, out: Path, *, resume: bool) -> tuple[TrainConfig, dict[str, Any] | None]:
    """The config the run really uses and, on resume, its last.pt; refuses what the shared run rule refuses.

    ``cfg`` may be a TrainConfig subclass (a workflow that trains through fit): the saved config is read as one.
    """
    from leanvision.engine.checkpoint import load_checkpoint

    last = out / "last.pt"
    held = last.is_file() if resume else (last.exists() or (out / "metrics.jsonl").exists())
    if not (resume and held):
        check_run_dir(out, what="run", held=held, resume=resume)
        return cfg, None
    ckpt = load_checkpoint(last)
    schema = type(cfg)
    saved = {k: v for k, v in (ckpt.get("config") or {}).items() if k in schema.model_fields}
    old = validate_model(schema, saved, f"{last} (its saved config)")
    changed = changed_settings(old.model_dump(), cfg.model_dump(), keys=cfg.model_fields_set)
    try:
        check_run_dir(out, what="run", held=True, resume=True, changed=changed)
    except ConfigError as e:  # training longer or differently is a new run from these weights
        raise ConfigError(f"{e} (--init-from {last} starts it from these weights)") from None
    return old.model_copy(update={k: getattr(cfg, k) for k in cfg.model_fields_set & RESUMABLE_KEYS}), ckpt


def _finished(cfg: TrainConfig, out: Path) -> TrainResult:
    results = out / RESULTS_FILE
    report = json.loads(results.read_text()) if results.is_file() else {}
    best = out / "best.pt"
    return TrainResult(out, cfg.model, cfg.dataset, cfg.epochs, 0, None, None, report.get("test_acc"),
                       report.get("test_loss"), report.get("test_images"), report.get("weights", "last epoch"),
                       out / "last.pt", best if best.is_file() else None, results)  # fmt: skip


def train(config: TrainConfig | dict[str, Any] | str | Path, *, resume: bool = False,
          progress: bool = True) -> TrainResult:  # fmt: skip
    """Train ``config.model`` on ``config.dataset``, writing metrics, checkpoints and results.json to its out_dir.

    ``val_size`` picks best.pt; the test split is evaluated once, at the end. ``resume`` continues the run in out_dir
    with the settings it was started with.
    """
    from leanvision.data import make_loader
    from leanvision.engine.checkpoint import load_weights
    from leanvision.engine.fit import fit
    from leanvision.engine.optim import make_optimizer, make_scheduler
    from leanvision.models import create_model

    cfg = load_config(TrainConfig, config, source="train config")
    out = Path(cfg.out_dir)
    last = out / "last.pt"
    cfg, ckpt = _resumed_config(cfg, out, resume=resume)
    if ckpt is not None and ckpt.get("epoch", 0) >= cfg.epochs:
        return _finished(cfg, out)
    if cfg.init_from is not None and not Path(cfg.init_from).is_file():
        raise ConfigError(f"init_from: no checkpoint at '{cfg.init_from}'; give the path of a last.pt or best.pt")
    check_threads(cfg.threads)
    check_device(cfg.device)
    transform = _policy_transform(cfg.policy) if cfg.policy else None
    created = not out.exists()
    writable_dir(out)
    try:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        train_ds, val, test = _datasets(cfg)
        torch.manual_seed(cfg.seed)
        model = create_model(cfg.model, num_classes=train_ds.num_classes, in_chans=train_ds.input_size[0],
                             **cfg.model_kwargs)  # fmt: skip
        if cfg.init_from is not None and not resume:
            load_weights(model, cfg.init_from)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        loader = make_loader(train_ds, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed, transform=transform)
        val_loader = make_loader(val, batch_size=max(cfg.batch_size, 256), shuffle=False) if val is not None else None
        opt = make_optimizer(model, cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        sched = make_scheduler(
            opt, cfg.scheduler, total_steps=cfg.epochs * len(loader), warmup_steps=cfg.warmup_epochs * len(loader)
        )
        meta = {"dataset": cfg.dataset, "classes": train_ds.classes, "mean": list(train_ds.mean),
                "std": list(train_ds.std)}  # fmt: skip
        # Ctrl-C, SIGTERM or a full disk: one line saying how to continue (every epoch's checkpoint is whole).
        resume_cmd = f"leanvision train --out-dir {out} --resume"
        with interruptible("training", lambda: resume_cmd if last.is_file() else None):
            result = fit(model, loader, epochs=cfg.epochs, optimizer=opt, scheduler=sched, val_data=val_loader,
                         out_dir=out, resume=last if resume else None, seed=cfg.seed, progress=progress,
                         config=cfg.model_dump(), meta=meta, device=cfg.device, precision=cfg.precision)  # fmt: skip
        report = _test_report(model, result, test, cfg, out, progress)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a run that failed before its first epoch leaves no empty folder behind
        raise
    return TrainResult(out, cfg.model, cfg.dataset, cfg.epochs, result.epochs_trained, result.best_val_acc,
                       result.best_epoch, report["test_acc"], report["test_loss"], report["test_images"],
                       report["weights"], last, result.best_checkpoint, out / RESULTS_FILE,
                       result.history)  # fmt: skip
