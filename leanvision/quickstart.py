"""`leanvision quickstart`: train a small CNN and its Ghost twin, profile both, time both, write a report."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import leanvision
from leanvision.data import load_dataset, make_loader
from leanvision.engine import evaluate, fit, make_optimizer, make_scheduler
from leanvision.models import create_model
from leanvision.ops import fuse_bn
from leanvision.profile import compare_latency, format_count, profile
from leanvision.report import Column, bar_panels, line_panels, write_report

BASELINE, CANDIDATE = "quickstart_cnn", "quickstart_ghost_cnn"
# Per dataset: (training subset, epochs, learning rate); sized so the whole run stays well under 3 minutes.
_RECIPES: dict[str, tuple[int | None, int, float]] = {
    "digits": (None, 30, 0.05),
    "mnist": (10_000, 3, 0.05),
    "fashion_mnist": (10_000, 3, 0.05),
}


@dataclass
class QuickstartResult:
    """Where the report went and the measured rows (one per model)."""

    html: Path
    markdown: Path
    rows: list[dict[str, Any]]


def _train(name: str, train, test, *, epochs: int, lr: float, seed: int, progress: bool):
    torch.manual_seed(seed)
    model = create_model(name, num_classes=train.num_classes, in_chans=train.input_size[0])
    loader = make_loader(train, batch_size=64, shuffle=True, seed=seed)
    test_loader = make_loader(test, batch_size=256, shuffle=False)
    opt = make_optimizer(model, "sgd", lr=lr, momentum=0.9, weight_decay=5e-4)
    sched = make_scheduler(opt, "cosine", total_steps=epochs * len(loader))
    result = fit(
        model, loader, epochs=epochs, optimizer=opt, scheduler=sched, val_data=test_loader, seed=seed, progress=progress
    )
    return model, result.history, evaluate(model, test_loader)


def run_quickstart(
    *,
    dataset: str = "digits",
    data_dir: str | Path | None = None,
    out_dir: str | Path = "runs/quickstart",
    epochs: int | None = None,
    subset: int | None = None,
    seed: int = 0,
    threads: int | None = None,
    progress: bool = True,
) -> QuickstartResult:
    """Run the quickstart comparison end to end and write ``report.html`` / ``report.md`` into ``out_dir``."""
    out = Path(out_dir)
    default_subset, default_epochs, lr = _RECIPES.get(dataset, (10_000, 3, 0.05))
    epochs = epochs or default_epochs
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    started = time.perf_counter()

    train = load_dataset(dataset, root=data_dir, split="train", subset=subset or default_subset, seed=seed)
    test = load_dataset(dataset, root=data_dir, split="test")
    out.mkdir(parents=True, exist_ok=True)

    models, histories, rows = {}, {}, []
    for name in (BASELINE, CANDIDATE):
        model, history, metrics = _train(name, train, test, epochs=epochs, lr=lr, seed=seed, progress=progress)
        prof = profile(model, torch.zeros(1, *train.input_size))
        # Time the deploy form (BatchNorm folded into convs, outputs unchanged): what one would ship.
        models[name], histories[name] = fuse_bn(model.eval()), history
        rows.append({"model": name, "acc": 100 * metrics["acc"], "params": prof.params, "macs": prof.macs})

    for bs in (1, 32):
        x = torch.randn(bs, *train.input_size)
        for backend in ("eager", "onnxruntime"):
            stats = compare_latency(models, x, backend=backend, threads=threads)
            for row in rows:
                row[f"{backend}_bs{bs}_ms"] = stats[row["model"]].median_ms

    base = rows[0]
    for row in rows:
        for key in ("params", "macs", "eager_bs1_ms", "onnxruntime_bs1_ms", "eager_bs32_ms", "onnxruntime_bs32_ms"):
            row[f"{key}_ratio"] = row[key] / base[key]

    figures = [
        bar_panels(
            rows,
            [
                ("acc", "test accuracy (%)"),
                ("params", "parameters"),
                ("macs", "MACs per image"),
                ("eager_bs1_ms", "eager latency, batch 1 (ms)"),
                ("onnxruntime_bs1_ms", "onnxruntime latency, batch 1 (ms)"),
                ("onnxruntime_bs32_ms", "onnxruntime latency, batch 32 (ms)"),
            ],
            out / "comparison.png",
            title=f"{BASELINE} vs {CANDIDATE} on {dataset}",
        ),
        line_panels(histories, [("train_loss", "train loss"), ("val_acc", "test accuracy")], out / "curves.png"),
    ]
    elapsed = time.perf_counter() - started
    env = f"torch {torch.__version__}, {threads} threads, {platform.processor() or platform.machine()}"
    columns = [
        Column("model", "model"),
        Column("acc", "test acc (%)", lambda v: f"{v:.2f}"),
        Column("params", "params", format_count),
        Column("macs", "MACs", format_count),
        Column("params_ratio", "params ×", lambda v: f"{v:.2f}"),
        Column("macs_ratio", "MACs ×", lambda v: f"{v:.2f}"),
        Column("eager_bs1_ms", "eager bs1 (ms)", lambda v: f"{v:.3f}"),
        Column("onnxruntime_bs1_ms", "ORT bs1 (ms)", lambda v: f"{v:.3f}"),
        Column("eager_bs32_ms", "eager bs32 (ms)", lambda v: f"{v:.2f}"),
        Column("onnxruntime_bs32_ms", "ORT bs32 (ms)", lambda v: f"{v:.2f}"),
        Column("onnxruntime_bs1_ms_ratio", "ORT bs1 ×", lambda v: f"{v:.2f}"),
    ]
    html, md = write_report(
        out,
        title=f"leanvision quickstart: Ghost modules on {dataset}",
        intro=(
            f"{BASELINE} and its Ghost twin (GhostNet, arXiv 1911.11907) trained with the same recipe "
            f"({epochs} epochs, {len(train)} training images, seed {seed}), tested on {len(test)} images. "
            f"Latency: deploy form (BatchNorm folded), median of interleaved runs, {env}. "
            f"Ratios (×) are against {BASELINE} in this same run."
        ),
        rows=rows,
        columns=columns,
        figures=figures,
        notes=[
            "MACs count conv/linear/matmul multiply-accumulates (the papers' 'FLOPs'); BN and activations excluded.",
            "A MAC cut is not a latency cut: small models at batch 1 are dominated by per-operator overhead.",
            f"Total wall time {elapsed:.0f} s; leanvision {leanvision.__version__}.",
        ],
    )
    payload = {"dataset": dataset, "epochs": epochs, "seed": seed, "threads": threads, "rows": rows}
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return QuickstartResult(html=html, markdown=md, rows=rows)
