"""Adversarial AutoAugment (arXiv 1912.11188) as one call: target net and policy controller trained together."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from leanvision.config import TrainConfig, check_device, check_threads, load_config, writable_dir
from leanvision.errors import ConfigError
from leanvision.runs import interruptible

POLICY_FILE = "policy.json"
TRAINED = ("adversarial", "cooperative")  # controllers that REINFORCE trains (to raise or to lower the loss)


class AugSearchConfig(TrainConfig):
    """A training run (every TrainConfig key) whose augmentation is searched while the target network trains."""

    controller: Literal["adversarial", "cooperative", "uniform", "none"] = Field(
        "adversarial", description="adversarial: REINFORCE maximises the loss; cooperative: it minimises the loss (a "
        "control: do easier policies suit the model better?); uniform: random batch augmentation (the controller "
        "never trains); none: one copy under `policy` (a baseline in the same pipeline)")  # fmt: skip
    copies: int = Field(8, ge=1, le=64, description="M: copies of every image per step, one per sampled policy")
    sub_policies: int = Field(5, ge=1, le=50, description="sub-policies per policy (each 2 ops)")
    controller_lr: float = Field(3.5e-4, gt=0, description="Adam learning rate of the controller")
    entropy_weight: float = Field(1e-5, ge=0, description="entropy bonus of the controller's loss")
    hidden: int = Field(100, ge=1, description="LSTM hidden units of the controller")
    cutout: int = Field(16, ge=0, description="Cutout square side in pixels after the policy (0: none)")
    probe: int = Field(256, ge=0, description="training images whose clean and augmented loss is logged per epoch")
    out_dir: str = Field("runs/augsearch", description="where metrics, checkpoints, policy and report go")

    @model_validator(mode="after")
    def _consistent(self) -> AugSearchConfig:
        if self.controller == "none" and self.copies != 1:
            raise ValueError("controller none trains one copy per image under `policy`: set copies: 1")
        if self.controller != "none" and self.policy is not None:
            raise ValueError(f"`policy` is the fixed policy of controller: none; the {self.controller} controller "
                             "samples its own: drop policy")  # fmt: skip
        if self.controller in TRAINED and self.copies < 2:
            raise ValueError(f"the {self.controller} controller compares the losses of its policies: set copies >= 2")
        return self


@dataclass
class AugSearchResult:
    """What an augsearch run wrote and measured."""

    out_dir: Path
    policy_file: Path | None  # the learned policy (the final controller's M policies as one); None without controller
    report: Path  # report.html (report.md beside it)
    test_acc: float | None
    best_val_acc: float | None
    epochs_trained: int  # by this call
    history: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl: losses, entropy, op counts per epoch

    def summary(self) -> str:
        """One line for a person."""
        if self.epochs_trained == 0:
            return f"the run in {self.out_dir} already finished; its policy and report are in {self.out_dir}"
        last = self.history[-1] if self.history else {}
        ent = f", controller entropy {last['controller_entropy']:.2f}" if "controller_entropy" in last else ""
        pol = f"{self.policy_file.name}, " if self.policy_file else ""
        return (f"test acc {100 * (self.test_acc or 0):.2f}%, augmented train loss {last.get('train_loss', 0):.3f}"
                f"{ent}; {pol}{self.report.name}, metrics and checkpoints in {self.out_dir}")  # fmt: skip


def run(config: AugSearchConfig | dict[str, Any] | str | Path, *, resume: bool = False,
        progress: bool = True) -> AugSearchResult:  # fmt: skip
    """Train ``config.model`` with batch augmentation under controller-sampled policies; write the policy and report.

    Every epoch samples M policies, trains on M copies of each batch and (adversarial) updates the controller by
    REINFORCE on the per-policy losses; ``resume`` continues the run in out_dir, controller included.
    """
    from leanvision.augment.adversarial import BatchAugmentStep, PolicyController
    from leanvision.augment.policy import batch_transform
    from leanvision.data import make_loader
    from leanvision.engine import make_optimizer, make_scheduler
    from leanvision.engine.fit import fit
    from leanvision.engine.training import _datasets, _resumed_config, _test_report
    from leanvision.models import create_model

    cfg = load_config(AugSearchConfig, config, source="augsearch config")
    out = Path(cfg.out_dir)
    last = out / "last.pt"
    cfg, ckpt = _resumed_config(cfg, out, resume=resume)
    check_device(cfg.device)
    fixed = batch_transform(cfg.policy) if cfg.policy else (lambda x, g: x)
    previous = torch.get_num_threads()
    if check_threads(cfg.threads):
        torch.set_num_threads(cfg.threads)
    try:
        train_ds, val, test = _datasets(cfg)
        torch.manual_seed(cfg.seed)
        model = create_model(cfg.model, num_classes=train_ds.num_classes, in_chans=train_ds.input_size[0],
                             **cfg.model_kwargs)  # fmt: skip
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        loader = make_loader(train_ds, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed, normalized=False)
        controller = None
        if cfg.controller != "none":
            controller = PolicyController(sub_policies=cfg.sub_policies, hidden=cfg.hidden)
        mean, std = train_ds.mean_std_tensors()
        spread = torch.linspace(0, len(train_ds) - 1, min(cfg.probe, len(train_ds))).round().long()  # all classes
        probe = (train_ds.images[spread], train_ds.targets[spread]) if cfg.probe else None
        step = BatchAugmentStep(mean=mean, std=std, steps_per_epoch=len(loader), controller=controller,
                                copies=cfg.copies, train_controller=cfg.controller in TRAINED,
                                maximise=cfg.controller == "adversarial",
                                lr=cfg.controller_lr, entropy_weight=cfg.entropy_weight,
                                fixed=None if controller else fixed, cutout=cfg.cutout, probe=probe)  # fmt: skip
        opt = make_optimizer(model, cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        sched = make_scheduler(opt, cfg.scheduler, total_steps=cfg.epochs * len(loader),
                               warmup_steps=cfg.warmup_epochs * len(loader))  # fmt: skip
        if ckpt is not None and ckpt.get("epoch", 0) >= cfg.epochs:  # finished: rewrite its files only
            step.load_state_dict(ckpt.get("train_step") or {})
            history = ckpt["history"]
            report = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}
            return _finish(cfg, out, step, train_ds, history, report, ckpt.get("best_val_acc"), 0)
        writable_dir(out)
        val_loader = make_loader(val, batch_size=max(cfg.batch_size, 256), shuffle=False) if val is not None else None
        meta = {"dataset": cfg.dataset, "classes": train_ds.classes, "mean": list(train_ds.mean),
                "std": list(train_ds.std)}  # fmt: skip
        resume_cmd = f"leanvision augsearch --out-dir {out} --resume"
        with interruptible("augmentation search", lambda: resume_cmd if last.is_file() else None):
            result = fit(model, loader, epochs=cfg.epochs, optimizer=opt, scheduler=sched, train_step=step,
                         val_data=val_loader, out_dir=out, resume=last if ckpt is not None else None, seed=cfg.seed,
                         progress=progress, config=cfg.model_dump(), meta=meta, device=cfg.device,
                         precision=cfg.precision)  # fmt: skip
        report = _test_report(model, result, test, cfg, out, progress)
        return _finish(cfg, out, step, train_ds, result.history, report, result.best_val_acc, result.epochs_trained)
    finally:
        torch.set_num_threads(previous)


def _finish(cfg: AugSearchConfig, out: Path, step: Any, train_ds: Any, history: list[dict[str, Any]],
            report: dict[str, Any], best: float | None, trained: int) -> AugSearchResult:  # fmt: skip
    """Save the learned policy (the final controller's M policies, all sub-policies in one) and the report."""
    from leanvision.augment.policy import Policy
    from leanvision.augment.report import write_report

    policy_file = None
    if step.controller is not None:
        if step.actions is None:
            raise ConfigError(f"{out}: the checkpoint holds no controller state; start the run again")
        policies = step.controller.policies(step.actions)
        policy_file = Policy(tuple(s for p in policies for s in p.sub_policies)).save(out / POLICY_FILE)
    html = write_report(cfg, out, step, train_ds, history, report)
    return AugSearchResult(out, policy_file, html, report.get("test_acc"), best, trained, history)
