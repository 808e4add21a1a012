"""Latency of a Synaptic Strength-pruned CIFAR VGG (arXiv 1811.02454) beside its dense net and its masked twin.

    python benchmarks/latency_pruned.py             # 32x32, batch 1 and 32, eager + onnxruntime, 2 threads
    python benchmarks/latency_pruned.py --resume    # continue a stopped run: skip the cells already measured
    python benchmarks/latency_pruned.py --allow-busy --rounds 1 --out /tmp/latency_pruned   # smoke test

Loads the nets benchmarks/synaptic_cifar.py saved in --models (its OUT/deploy/: seed 0, the lambda chosen on
validation, 90% of connections pruned and fine-tuned) and times, in ONE interleaved run per (batch, backend) cell
(leanvision.profile.compare_latency, medians):
  dense          the lambda = 0 net;
  pruned         the pruned net after channel surgery (apply_plan: channels without connections removed);
  dense w/ zeros the same pruned net at full width, its pruned kernels stored as zeros (masked, no surgery):
                 whether kernel-level sparsity by itself becomes speed.
All three in the deploy form (BatchNorm folded into the convs); onnxruntime sessions are exported by
compare_latency (dynamic batch axis). Target: pruned >= 2x faster than dense (latency ratio <= 0.5) in every cell.
Writes JSON + PNG into --out; every finished cell is saved at once to latency_pruned.partial.json.
Run it on a quiet machine: the script refuses to start when the 1-minute load average exceeds --max-load
(default 0.5; --allow-busy runs anyway) and measures the CPU cores used by OTHER processes while each cell is
timed, labelling the run busy above --max-load.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import onnxruntime
import torch
from _machine import add_load_args, check_quiet, cores_text, load1, load_cells, other_cpu
from synaptic_cifar import build_net
from torch import nn

from leanvision._io import atomic_write_text
from leanvision.compress import apply_plan
from leanvision.profile import compare_latency, profile
from leanvision.report import bar_panels

DENSE, PRUNED, ZEROS = "dense (lam=0)", "pruned (surgery)", "dense w/ zeros (masked)"
TARGET = 0.5  # pruned / dense latency in every cell (>= 2x faster)
SAME_ON_RESUME = ("threads", "rounds", "torch", "onnxruntime", "models_meta")


def load_models(folder: Path) -> tuple[dict[str, nn.Module], dict]:
    """The three nets of ``folder`` (synaptic_cifar's OUT/deploy/) in their deploy form, and its meta.json."""
    meta = json.loads((folder / "meta.json").read_text())
    widths = meta["widths"]

    def load(model: nn.Module, name: str) -> nn.Module:
        model.load_state_dict(torch.load(folder / name, weights_only=True))
        return model.fuse()  # eval mode, BatchNorm folded

    plan = json.loads((folder / "plan.json").read_text())
    models = {
        DENSE: load(build_net(widths), "dense.pt"),
        PRUNED: load(apply_plan(build_net(widths), plan), "pruned.pt"),
        ZEROS: load(build_net(widths), "masked.pt"),
    }
    return models, meta


def check_same(models: dict[str, nn.Module], x: torch.Tensor) -> float:
    """max |pruned - masked| on ``x``: surgery must not change what the masked net computes."""
    with torch.no_grad():
        return float((models[PRUNED](x) - models[ZEROS](x)).abs().max())


def costs(models: dict[str, nn.Module], x1: torch.Tensor) -> dict[str, dict]:
    out = {}
    for name, m in models.items():
        prof = profile(m, x1)
        nonzero = sum(int(p.count_nonzero()) for p in m.parameters())
        out[name] = {"params": prof.params, "params_nonzero": nonzero, "macs": prof.macs}
    return out


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--models", type=Path, default=Path("benchmarks/results/synaptic_cifar/deploy"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--backends", nargs="+", default=["eager", "onnxruntime"], choices=["eager", "onnxruntime"])
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds; the median is over all timed runs")
    ap.add_argument("--iters", type=int, default=None, help="timed calls per round (default 50 at batch 1, else 10)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/latency_pruned"))
    add_load_args(ap)
    ap.add_argument("--resume", action="store_true", help="reuse the cells saved in OUT/latency_pruned.partial.json")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    load_before = check_quiet(args.max_load, args.allow_busy)
    models, meta = load_models(args.models)
    args.out.mkdir(parents=True, exist_ok=True)
    partial = args.out / "latency_pruned.partial.json"
    config = {
        "threads": args.threads,
        "rounds": args.rounds,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "models_meta": meta,
    }
    cells: dict[str, dict] = load_cells(partial, config, SAME_ON_RESUME) if args.resume else {}
    if cells:
        print(f"--resume: reusing cells {', '.join(cells)} from {partial}")
    x1 = torch.randn(1, 3, 32, 32)
    for bs in args.batches:
        x = torch.randn(bs, 3, 32, 32)
        for backend in args.backends:
            key = f"{backend}_bs{bs}"
            if key in cells:
                continue
            iters = args.iters or (50 if bs == 1 else 10)
            cell = {"iters": iters, "load_avg_1m_before": load1(), "allow_busy": args.allow_busy}
            with other_cpu(cell):
                stats = compare_latency(
                    models, x, backend=backend, threads=args.threads, rounds=args.rounds, iters=iters
                )
            cell["models"] = {n: {"median_ms": s.median_ms, "p90_ms": s.p90_ms} for n, s in stats.items()}
            cells[key] = cell
            atomic_write_text(partial, json.dumps({"config": config, "cells": cells}, indent=2) + "\n")
            print(
                f"batch {bs} {backend}: "
                + ", ".join(f"{n} {s['median_ms']:.3f} ms" for n, s in cell["models"].items())
                + f" (other processes {cores_text(cell)} cores)"
            )
    report(args, cells, costs(models, x1), meta, check_same(models, torch.randn(8, 3, 32, 32)), load_before)


def report(args: argparse.Namespace, cells: dict, cost: dict, meta: dict, diff: float, load_before: float) -> None:
    keys = [f"{b}_bs{bs}" for bs in args.batches for b in args.backends if f"{b}_bs{bs}" in cells]
    rows = []
    for name, c in cost.items():
        row = {"model": name, **c}
        for k in keys:
            s = cells[k]["models"][name]
            row[f"{k}_ms"], row[f"{k}_p90_ms"] = s["median_ms"], s["p90_ms"]
        rows.append(row)
    ratios = {
        k: {
            "pruned_vs_dense": cells[k]["models"][PRUNED]["median_ms"] / cells[k]["models"][DENSE]["median_ms"],
            "zeros_vs_dense": cells[k]["models"][ZEROS]["median_ms"] / cells[k]["models"][DENSE]["median_ms"],
        }
        for k in keys
    }
    targets = {k: {"target": TARGET, "met": r["pruned_vs_dense"] <= TARGET} for k, r in ratios.items()}
    others = [cells[k].get("other_cores") for k in keys]
    worst = max((o for o in others if o is not None), default=None)
    busy = load_before > args.max_load or (worst is not None and worst > args.max_load)
    result = {
        "threads": args.threads,
        "rounds": args.rounds,
        "size": 32,
        "models": meta,
        "pruned_vs_masked_max_abs_diff": diff,
        "max_load": args.max_load,
        "allow_busy": args.allow_busy or any(cells[k]["allow_busy"] for k in keys),
        "load_avg_1m": load_before,
        "other_cores_max_over_cells": worst,
        "busy": busy,
        "cells": {
            k: {"iters": cells[k]["iters"], "load_avg_1m_before": cells[k]["load_avg_1m_before"], "other_cores": o}
            for k, o in zip(keys, others, strict=True)
        },
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "rows": rows,
        "ratios": ratios,
        "targets": targets,
        "all_targets_met": bool(targets) and all(t["met"] for t in targets.values()),
    }
    atomic_write_text(args.out / "latency_pruned.json", json.dumps(result, indent=2) + "\n")
    bar_panels(
        rows,
        [(f"{k}_ms", k.replace("_", " ") + " (ms)") for k in keys],
        args.out / "latency_pruned.png",
        title=f"32x32 latency, {args.threads} threads (median ms)" + (" (BUSY)" if busy else ""),
    )
    print("\n| model | params | nonzero params | MACs | " + " | ".join(keys) + " |")
    print("|---|---|---|---|" + "---|" * len(keys))
    for r in rows:
        txt = " | ".join(f"{r[k + '_ms']:.3f}" for k in keys)
        print(f"| {r['model']} | {r['params']:,} | {r['params_nonzero']:,} | {r['macs']:,} | {txt} |")
    for k, rk in ratios.items():
        print(f"{k}: pruned/dense {rk['pruned_vs_dense']:.2f}x, dense-with-zeros/dense {rk['zeros_vs_dense']:.2f}x")
    print(f"pruned vs masked max |diff| {diff:.2e}")
    print("targets (pruned/dense <= 0.5):", targets, "- BUSY machine" if busy else "- quiet machine")


if __name__ == "__main__":
    main()
