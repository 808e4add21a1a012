"""The quickstart: train a small CNN and its Ghost twin on several seeds, profile and time both, write a report."""

from __future__ import annotations

import json
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

import leanvision
from leanvision._io import atomic_write_text
from leanvision.config import check_threads, writable_dir
from leanvision.data import load_dataset, make_loader
from leanvision.engine.evaluate import evaluate
from leanvision.engine.fit import fit
from leanvision.engine.optim import make_optimizer, make_scheduler
from leanvision.errors import ConfigError

BASELINE, CANDIDATE = "quickstart_cnn", "quickstart_ghost_cnn"
# Per dataset: (training subset, epochs, learning rate); sized so the whole run stays around a minute.
RECIPES: dict[str, tuple[int | None, int, float]] = {
    "digits": (None, 30, 0.05),
    "mnist": (10_000, 3, 0.05),
    "fashion_mnist": (10_000, 3, 0.05),
}
LATENCIES = [(b, bs) for bs in (1, 32) for b in ("eager", "onnxruntime")]
VAL_FRACTION = 0.1


@dataclass
class QuickstartResult:
    """Where the report went and the measured rows (one per model)."""

    html: Path
    markdown: Path
    rows: list[dict[str, Any]]


def _train(name: str, train, val, test, *, epochs: int, lr: float, seed: int):
    from leanvision.models import create_model

    torch.manual_seed(seed)
    model = create_model(name, num_classes=train.num_classes, in_chans=train.input_size[0])
    loader = make_loader(train, batch_size=64, shuffle=True, seed=seed)
    opt = make_optimizer(model, "sgd", lr=lr, momentum=0.9, weight_decay=5e-4)
    sched = make_scheduler(opt, "cosine", total_steps=epochs * len(loader))
    val_loader = make_loader(val, batch_size=256, shuffle=False)
    result = fit(model, loader, epochs=epochs, optimizer=opt, scheduler=sched, val_data=val_loader, seed=seed,
                 progress=False)  # fmt: skip
    return model, result.history, evaluate(model, make_loader(test, batch_size=256, shuffle=False))


def _ms(v: float) -> str:
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def _thread_note(rows: list[dict[str, Any]], n: int) -> str:
    """The latencies at ``n`` threads (not the table's count), with their ratios to the baseline's."""

    def cells(row: dict[str, Any]) -> str:
        keys = [(f"{'ORT' if b == 'onnxruntime' else 'eager'} bs{bs}", f"{b}_bs{bs}_ms_{n}t") for b, bs in LATENCIES]
        return ", ".join(f"{label} {_ms(row[k])} ({row[k] / rows[0][k]:.2f}×)" for label, k in keys)

    per_model = "; ".join(f"{r['model']} {cells(r)}" for r in rows)
    return f"At {n} thread{'s' * (n > 1)} (ms, × {BASELINE}): {per_model}."


def quickstart(
    *,
    dataset: str = "digits",
    data_dir: str | Path | None = None,
    out_dir: str | Path = "runs/quickstart",
    epochs: int | None = None,
    subset: int | None = None,
    seed: int = 0,
    seeds: int = 3,
    threads: int | None = None,
    progress: bool = True,
) -> QuickstartResult:
    """Train both models with ``seeds`` seeds on ``dataset`` (digits, mnist or fashion_mnist), profile and time them,
    and write ``report.html`` / ``report.md`` (accuracy as mean ± sd over seeds) into ``out_dir``."""
    # Imported here: plotting and timing are heavy, and `import leanvision.engine` should stay light.
    from leanvision.ops import fuse_bn
    from leanvision.profile import busiest, busy_text, compare_latency, format_count, profile, thread_counts
    from leanvision.report import Column, bar_panels, line_panels, write_report

    if dataset not in RECIPES:
        raise ConfigError(f"quickstart --dataset must be digits, mnist or fashion_mnist, not '{dataset}'")
    check_threads(threads)
    out = Path(out_dir)
    say = Console(stderr=True, highlight=False).print
    default_subset, default_epochs, lr = RECIPES[dataset]
    epochs = epochs or default_epochs
    fixed_threads = threads is not None
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    started = time.perf_counter()

    common = {"root": data_dir, "val_size": VAL_FRACTION}
    val = load_dataset(dataset, split="val", **common)
    test = load_dataset(dataset, split="test", root=data_dir)
    writable_dir(out)
    size = "×".join(map(str, val.input_size))

    models, histories, rows = {}, {}, []
    for name in (BASELINE, CANDIDATE):
        accs = []
        for s in range(seed, seed + seeds):
            train = load_dataset(dataset, split="train", subset=subset or default_subset, seed=s, **common)
            t0 = time.perf_counter()
            model, history, metrics = _train(name, train, val, test, epochs=epochs, lr=lr, seed=s)
            accs.append(100 * metrics["acc"])
            if progress:
                say(f"trained {name} seed {s}: test acc {accs[-1]:.2f}% ({time.perf_counter() - t0:.0f} s)")
            if s == seed:  # the first seed's model is the one profiled and timed; its curves are drawn
                histories[name] = history
                # Time the deploy form (BatchNorm folded into convs, outputs unchanged): what one would ship.
                models[name] = fuse_bn(model.eval())
        prof = profile(model, torch.zeros(1, *val.input_size))
        rows.append({"model": name, "acc": statistics.mean(accs), "acc_sd": statistics.stdev(accs) if len(accs) > 1
                     else 0.0, "acc_seeds": accs, "params": prof.params, "macs": prof.macs})  # fmt: skip

    # At 1 thread and at all cores (unless --threads): small layers gain little from more threads, so the two can
    # rank the models differently. The table shows all cores, the headline; 1 thread is in a note and the JSON.
    counts = [threads] if fixed_threads else thread_counts("1,all")
    if progress:
        say(f"timing the deploy forms (eager and onnxruntime, batch 1 and 32, at {' and '.join(map(str, counts))} "
            "threads)")  # fmt: skip
    others: list[float | None] = []
    for n in counts:
        for b, bs in LATENCIES:
            stats = compare_latency(models, torch.randn(bs, *val.input_size), backend=b, threads=n)
            others.append(next(iter(stats.values())).other_cores)
            for row in rows:
                row[f"{b}_bs{bs}_ms_{n}t"] = stats[row["model"]].median_ms
    headline = max(counts)
    for row in rows:
        row.update({f"{b}_bs{bs}_ms": row[f"{b}_bs{bs}_ms_{headline}t"] for b, bs in LATENCIES})

    base = rows[0]
    ratio_keys = ["params", "macs", *(f"{b}_bs{bs}_ms" for b, bs in LATENCIES)]
    for row in rows:
        for key in ratio_keys:
            row[f"{key}_ratio"] = row[key] / base[key]

    figures = [
        bar_panels(
            rows,
            [
                ("acc", f"test accuracy (%), mean ± sd of {seeds} seeds"),
                ("params", "parameters"),
                ("macs", f"MACs per {size} image"),
                *((f"{b}_bs{bs}_ms", f"{b} latency, batch {bs} (ms)") for b, bs in LATENCIES),
            ],
            out / "comparison.png",
            title=f"{BASELINE} vs {CANDIDATE} on {dataset}",
            errors={"acc": "acc_sd"},
        ),
        line_panels(
            histories, [("train_loss", "training loss"), ("val_acc", "validation accuracy")], out / "curves.png"
        ),
    ]
    elapsed = time.perf_counter() - started
    other_cores = busiest(others)
    env = (
        f"torch {torch.__version__}, {headline} threads, {platform.processor() or platform.machine()}; "
        f"{busy_text(other_cores)}"
    )
    gap = rows[1]["acc"] - base["acc"]
    spread = max(r["acc_sd"] for r in rows)
    ratio = "{:.2f}".format
    columns = [Column("model", "model"), Column("acc", "test acc (%)"), Column("params", "params", format_count),
               Column("params_ratio", "params ×", ratio), Column("macs", f"MACs ({size} input)", format_count),
               Column("macs_ratio", "MACs ×", ratio)]  # fmt: skip
    for b, bs in LATENCIES:
        label = f"{'ORT' if b == 'onnxruntime' else 'eager'} bs{bs}"
        columns += [Column(f"{b}_bs{bs}_ms", f"{label} (ms)", _ms), Column(f"{b}_bs{bs}_ms_ratio", f"{label} ×", ratio)]
    table_rows = [{**r, "acc": f"{r['acc']:.2f} ± {r['acc_sd']:.2f}"} for r in rows]
    html, md = write_report(
        out,
        title=f"leanvision quickstart: Ghost modules on {dataset}",
        intro=(
            f"{BASELINE} and its Ghost twin (GhostNet, arXiv 1911.11907) trained with the same recipe "
            f"({epochs} epochs, {len(train)} training images, seeds {seed}–{seed + seeds - 1}; "
            f"{len(val)} held-out validation images for the curves), tested on {len(test)} images: accuracy is "
            f"the mean ± sd over the {seeds} seeds. MACs and params are counted at batch 1 on a {size} input. "
            f"Latency: deploy form (BatchNorm folded) of the first seed's model, median of interleaved runs, {env}. "
            f"Ratios (×) are against {BASELINE} in this same run."
        ),
        rows=table_rows,
        columns=columns,
        figures=figures,
        notes=[
            f"Accuracy difference (Ghost − baseline): {gap:+.2f} points; the seed-to-seed sd is up to {spread:.2f} "
            f"points and one test image is {100 / len(test):.2f} points"
            + (", so this difference is within the noise." if abs(gap) <= 2 * spread else "."),
            "Per-seed test accuracy: "
            + "; ".join(f"{r['model']} " + ", ".join(f"{a:.2f}" for a in r["acc_seeds"]) for r in rows)
            + ".",
            "MACs count conv/linear/matmul multiply-accumulates (the papers' 'FLOPs'); BN and activations excluded.",
            "A MAC cut is not a latency cut: small models at batch 1 are dominated by per-operator overhead.",
            *(_thread_note(rows, n) for n in counts if n != headline),
            f"Total wall time {elapsed:.0f} s; leanvision {leanvision.__version__}.",
        ],
    )
    payload = {"dataset": dataset, "epochs": epochs, "seeds": list(range(seed, seed + seeds)), "threads": threads,
               "latency_threads": counts, "other_cores": other_cores}  # fmt: skip
    atomic_write_text(out / "results.json", json.dumps({**payload, "rows": rows}, indent=2) + "\n")
    return QuickstartResult(html=html, markdown=md, rows=rows)
