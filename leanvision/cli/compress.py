"""`leanvision compress`: prune a trained model (or train it first), fine-tune, and report before vs after."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from leanvision._io import atomic_write_text
from leanvision.cli._common import check_device, check_threads, writable_dir
from leanvision.cli.config import read_yaml, validate_model
from leanvision.errors import ConfigError

LATENCIES = (("eager", 1), ("eager", 32), ("onnxruntime", 1), ("onnxruntime", 32))


class CompressConfig(BaseModel):
    """One compression run; unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    method: Literal["synaptic"] = Field("synaptic", description="synaptic: Synaptic Strength (arXiv 1811.02454)")
    checkpoint: str | None = Field(None, description="a `leanvision train` checkpoint; omit to train one first")
    model: str | None = Field(None, description="registered model (needed without a checkpoint; else must match it)")
    model_kwargs: dict[str, Any] = Field(default_factory=dict, description="extra model arguments")
    dataset: str = Field("cifar10", description="digits, mnist, fashion_mnist, cifar10 or image_folder")
    data_dir: str | None = Field(None, description="dataset root (default: $LEANVISION_DATA)")
    subset: int | None = Field(None, ge=1, description="class-balanced training subset size")
    test_subset: int | None = Field(None, ge=1, description="class-balanced test subset size")
    val_size: float = Field(0.1, gt=0, description="held out of the training split: a fraction < 1 or a count")
    batch_size: int = Field(128, ge=1, le=65_536, description="images per training step")
    train_epochs: int = Field(10, ge=1, description="baseline training epochs (only without a checkpoint)")
    lr: float = Field(0.05, gt=0, le=10, description="learning rate of baseline and regularised training")
    lam: float = Field(1e-4, gt=0, description="L1 weight on the synaptic strengths")
    reg_epochs: int = Field(5, ge=1, description="epochs of training with the L1 term")
    sparsity: float = Field(0.9, gt=0, lt=1, description="connection sparsity of the model that is written")
    curve: list[float] = Field([0.5, 0.8, 0.9, 0.95], description="sparsities of the accuracy-sparsity curve")
    finetune_epochs: int = Field(2, ge=0, description="fine-tuning epochs with the pruned connections held at 0")
    finetune_lr: float = Field(0.01, gt=0, le=10, description="fine-tuning learning rate")
    latency: bool = Field(True, description="time dense vs pruned (eager and onnxruntime, batch 1 and 32)")
    seed: int = Field(0, ge=0, description="seed of initialisation, data order and subsets")
    threads: int | None = Field(None, ge=1, le=1024, description="CPU threads (default: torch's)")
    device: str = Field("cpu", description="cpu, cuda or cuda:N")
    out_dir: str = Field("runs/compress", description="where the compressed model and the report go")


def load_compress_config(path: str | Path, overrides: dict[str, Any] | None = None) -> CompressConfig:
    """Read and validate a compress YAML config (+ non-None ``overrides``); a problem is a one-line ConfigError."""
    data = read_yaml(path) | {k: v for k, v in (overrides or {}).items() if v is not None}
    cfg = validate_model(CompressConfig, data, str(path))
    if any(not 0 < s < 1 for s in cfg.curve):
        raise ConfigError(f"{path}: 'curve': every sparsity must be between 0 and 1 (exclusive), got {cfg.curve}")
    return cfg


def _data(cfg: CompressConfig) -> tuple[Any, Any, Any]:
    from leanvision.data import load_dataset, make_loader

    val_size = int(cfg.val_size) if cfg.val_size >= 1 else cfg.val_size
    common = {"root": cfg.data_dir, "val_size": val_size}
    train = load_dataset(cfg.dataset, split="train", subset=cfg.subset, seed=cfg.seed, **common)
    val = load_dataset(cfg.dataset, split="val", **common)
    test = load_dataset(cfg.dataset, split="test", subset=cfg.test_subset, seed=cfg.seed, **common)
    eval_bs = max(cfg.batch_size, 256)
    return (
        make_loader(train, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed),
        make_loader(val, batch_size=eval_bs, shuffle=False),
        make_loader(test, batch_size=eval_bs, shuffle=False),
    )


def _baseline(
    cfg: CompressConfig, train: Any, val: Any, out: Path, progress: bool
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained model to compress: the checkpoint's, or one trained here (saved in OUT/baseline)."""
    from leanvision.compress.plan import trace_model
    from leanvision.engine import fit, make_optimizer, make_scheduler, model_from_checkpoint
    from leanvision.models import create_model

    ds = train.dataset
    meta = {"dataset": cfg.dataset, "classes": ds.classes, "mean": list(ds.mean), "std": list(ds.std)}
    if cfg.checkpoint is not None:
        if not Path(cfg.checkpoint).is_file():
            raise ConfigError(f"checkpoint: no file at '{cfg.checkpoint}'; give the path of a best.pt or last.pt")
        model, ckpt = model_from_checkpoint(cfg.checkpoint)
        name = ckpt["arch"]["name"]
        if cfg.model is not None and cfg.model != name:
            raise ConfigError(f"checkpoint '{cfg.checkpoint}' holds a {name}, but the config says model: {cfg.model}")
        classes = (ckpt.get("meta") or {}).get("classes")
        if classes is not None and list(classes) != list(ds.classes):
            raise ConfigError(
                f"checkpoint '{cfg.checkpoint}' was trained on other classes than {cfg.dataset}'s; "
                "compress it on the dataset it was trained on"
            )
        return model.train(), ckpt.get("meta") or meta
    if cfg.model is None:
        raise ConfigError("give either 'checkpoint' (a trained model) or 'model' (trained here first)")
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, num_classes=ds.num_classes, in_chans=ds.input_size[0], **cfg.model_kwargs)
    trace_model(model)  # a model surgery cannot follow is refused before any training
    opt = make_optimizer(model, "sgd", lr=cfg.lr)
    sched = make_scheduler(opt, "cosine", total_steps=cfg.train_epochs * len(train))
    fit(model, train, epochs=cfg.train_epochs, optimizer=opt, scheduler=sched, val_data=val,
        out_dir=out / "baseline", seed=cfg.seed, meta=meta, device=cfg.device, progress=progress)  # fmt: skip
    return model, meta


def _train(model: torch.nn.Module, train: Any, val: Any, *, epochs: int, lr: float, step: Any, cfg: CompressConfig,
           progress: bool) -> None:  # fmt: skip
    from leanvision.engine import fit, make_optimizer, make_scheduler

    opt = make_optimizer(model, "sgd", lr=lr)
    sched = make_scheduler(opt, "cosine", total_steps=epochs * len(train))
    fit(model, train, epochs=epochs, optimizer=opt, scheduler=sched, train_step=step, val_data=val,
        seed=cfg.seed, device=cfg.device, progress=progress)  # fmt: skip


def _measure(model: torch.nn.Module, test: Any, x: torch.Tensor, device: str) -> dict[str, Any]:
    from leanvision.engine import evaluate
    from leanvision.profile import profile

    prof = profile(model.eval(), x)
    acc = evaluate(model, test, device=device)["acc"]
    return {"acc": 100 * acc, "params": prof.params, "macs": prof.macs}


def _latencies(dense: torch.nn.Module, pruned: torch.nn.Module, size: tuple[int, ...], threads: int | None) -> dict:
    from leanvision.ops import fuse_bn
    from leanvision.profile import compare_latency

    models = {"dense": fuse_bn(dense).cpu(), "pruned": fuse_bn(pruned).cpu()}
    out: dict[str, Any] = {"load_avg_1m": os.getloadavg()[0]}
    for backend, bs in LATENCIES:
        stats = compare_latency(models, torch.randn(bs, *size), backend=backend, threads=threads, rounds=5, iters=5)
        out[f"{backend}_bs{bs}"] = {name: s.median_ms for name, s in stats.items()}
    return out


def run_compress(cfg: CompressConfig, *, progress: bool = True) -> str:
    """Prune ``cfg``'s model with Synaptic Strength, fine-tune, write the pruned checkpoint and a report."""
    from leanvision.compress import SynapticStrength, apply_plan
    from leanvision.engine import save_checkpoint
    from leanvision.models import arch_of

    out = Path(cfg.out_dir)
    if (out / "compressed.pt").exists() or (out / "baseline").exists():
        raise ConfigError(f"'{out}' already holds a compress run: choose another out_dir")
    check_threads(cfg.threads)
    check_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    train, val, test = _data(cfg)
    writable_dir(out)
    model, meta = _baseline(cfg, train, val, out, progress)
    size = tuple(next(iter(test))[0].shape[1:])
    x = torch.zeros(1, *size)
    dense = copy.deepcopy(model).eval()
    before = _measure(dense, test, x, cfg.device)

    ss = SynapticStrength(model)  # re-parameterises in place; same function as before
    _train(model, train, val, epochs=cfg.reg_epochs, lr=cfg.lr, step=ss.train_step(cfg.lam), cfg=cfg, progress=progress)
    curve = [
        {"sparsity": s, **_measure(apply_plan(model, ss.plan(s)), test, x, cfg.device)}  # before fine-tuning
        for s in sorted(set(cfg.curve) | {cfg.sparsity})
    ]
    plan = ss.plan(cfg.sparsity)
    ss.prune(plan)
    if cfg.finetune_epochs:
        step = ss.train_step(0.0)
        _train(model, train, val, epochs=cfg.finetune_epochs, lr=cfg.finetune_lr, step=step, cfg=cfg, progress=progress)
    pruned = apply_plan(model, plan).eval()
    after = _measure(pruned, test, x, cfg.device)

    # The registered build + the plan rebuild this model (leanvision.engine.model_from_checkpoint).
    arch = {**arch_of(dense), "plan": plan, "input_size": list(size)}
    save_checkpoint(out / "compressed.pt", model=pruned.state_dict(), arch=arch, meta=meta, config=cfg.model_dump())
    atomic_write_text(out / "plan.json", json.dumps(plan, indent=2) + "\n")
    lat = _latencies(dense, pruned, size, cfg.threads) if cfg.latency else None
    result = {"before": before, "after": after, "curve": curve, "plan_summary": plan["summary"], "latency": lat}
    atomic_write_text(out / "results.json", json.dumps(result, indent=2) + "\n")
    report = _report(cfg, result, out)
    return (
        f"{arch['name']} at {100 * cfg.sparsity:.0f}% connection sparsity: test acc "
        f"{before['acc']:.2f}% -> {after['acc']:.2f}%, params {before['params']:,} -> {after['params']:,}, "
        f"MACs {before['macs']:,} -> {after['macs']:,}; compressed.pt, plan.json and {report.name} in {out}"
    )


def _report(cfg: CompressConfig, result: dict[str, Any], out: Path) -> Path:
    from leanvision.profile import format_count
    from leanvision.report import Column, line_panels, write_report

    rows = [{"model": "dense", **result["before"]}, {"model": f"pruned {cfg.sparsity:.0%}", **result["after"]}]
    columns = [
        Column("model", "model"),
        Column("acc", "test acc (%)", "{:.2f}".format),
        Column("params", "params", format_count),
        Column("macs", "MACs", format_count),
    ]
    lat, notes = result["latency"], []
    if lat is not None:
        for backend, bs in LATENCIES:
            key = f"{backend}_bs{bs}"
            rows[0][key], rows[1][key] = lat[key]["dense"], lat[key]["pruned"]
            label = f"{'ORT' if backend == 'onnxruntime' else 'eager'} bs{bs} (ms)"
            columns.append(Column(key, label, "{:.2f}".format))
        notes.append(
            f"Latency: medians of 5 interleaved rounds x 5 calls, BatchNorm folded in both; 1-minute load average "
            f"{lat['load_avg_1m']:.2f} at the start (on a busy machine the times are noisy)."
        )
    fig = line_panels(
        {"pruned, before fine-tuning": result["curve"]},
        [("acc", "test acc (%)")],
        out / "curve.png",
        x_key="sparsity",
        title="accuracy vs connection sparsity",
    )
    s = result["plan_summary"]
    notes.append(
        f"Plan: {s['connections_kept']:,} of {s['connections']:,} connections kept; the curve shows test accuracy "
        "right after pruning (no fine-tuning), the table the written model after fine-tuning."
    )
    _, md = write_report(
        out,
        title=f"leanvision compress: Synaptic Strength (arXiv 1811.02454) on {cfg.dataset}",
        rows=rows,
        columns=columns,
        figures=[fig],
        notes=notes,
    )
    return md
