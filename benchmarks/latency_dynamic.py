"""Latency of dynamic convolution nets (DyNet arXiv 2004.10694, CondConv 1904.04971) beside their static baselines.

    python benchmarks/latency_dynamic.py            # 224x224, batch 1 and 32, eager + onnxruntime, 2 threads
    python benchmarks/latency_dynamic.py --resume   # continue a stopped run: skip the cells already measured

Pairs, timed in ONE interleaved run per (batch, backend) cell, medians reported:
  leanvision dy_resnet18 (deploy form: BN folded; per-sample fusion at batch 1, groups=B fusion above)
      vs torchvision resnet18;
  timm efficientnet_cc_b0_4e (CondConv, 4 experts) vs timm efficientnet_b0;
  leanvision ghostnet_100 (deploy form) vs torchvision mobilenet_v3_large (target <= 1.0x); the onnxruntime
      cells export its onnxruntime_form (Ghost halves padded to 16 channels, no Concat; same outputs).
onnxruntime cells export every model with a FIXED batch (the cell's): timm's CondConv and the fast dynamic forms
bake the batch size into the graph. Dy-ResNet18 is exported in the per-sample (batch 1) or batched (groups=B)
form; the extra row "dynamic-batch ONNX" is the feature-fusion form a dynamic batch axis needs (g x the conv
MACs). The sessions (leanvision.export.onnx_session) are timed interleaved through compare_latency.
Targets: dy_resnet18 (deploy) <= 0.6x resnet18 at batch 1 and <= 1.0x at batch 32, per backend.
Writes JSON + PNG into --out; every finished cell is saved at once to latency_dynamic.partial.json.
Run it on a quiet machine: the script refuses to start when the 1-minute load average exceeds --max-load
(default 0.5; --allow-busy runs anyway) and measures the CPU cores used by OTHER processes while each cell is
timed, labelling the run busy above --max-load.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import timm
import torch
import torchvision
from _machine import add_load_args, check_quiet, cores_text, load1, load_cells, other_cpu
from torch import nn

from leanvision._io import atomic_write_text
from leanvision.export import export_onnx, onnx_feed, onnx_session
from leanvision.models import create_model
from leanvision.models.ghostnet import onnxruntime_form
from leanvision.ops import set_form
from leanvision.profile import compare_latency, profile
from leanvision.report import bar_panels

SAME_ON_RESUME = ("threads", "rounds", "torch", "timm", "size")
DY, RN = "lv dy_resnet18 (deploy)", "tv resnet18"
DY_DYNAMIC_ONNX = "lv dy_resnet18 (dynamic-batch ONNX)"
GHOST, MNV3 = "lv ghostnet_100 (deploy)", "tv mobilenet_v3_large"  # GhostNet's target: <= 1.0x MobileNetV3-L
TARGETS = {1: 0.6, 32: 1.0}  # dy_resnet18 / resnet18 latency, per batch size


class OrtModel(nn.Module):
    """An onnxruntime session behind nn.Module's call, so compare_latency interleaves fixed-batch exports."""

    def __init__(self, model: nn.Module, x: torch.Tensor, path: Path, *, threads: int, dynamic: bool) -> None:
        super().__init__()
        self.session = onnx_session(export_onnx(model, x, path, dynamic_batch=dynamic), threads=threads)

    def forward(self, x: torch.Tensor) -> list:
        return self.session.run(None, onnx_feed(self.session, x))


def build_models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        RN: torchvision.models.resnet18().eval(),
        # Deploy form: BN folded; in eager, per-sample fusion at batch 1 and groups=B fusion above ("auto").
        DY: create_model("dy_resnet18").fuse(),
        "timm efficientnet_b0": timm.create_model("efficientnet_b0", pretrained=False).eval(),
        "timm efficientnet_cc_b0_4e": timm.create_model("efficientnet_cc_b0_4e", pretrained=False).eval(),
        GHOST: create_model("ghostnet_100").fuse(),
        MNV3: torchvision.models.mobilenet_v3_large().eval(),
    }


def ort_models(models: dict[str, nn.Module], x: torch.Tensor, tmp: Path, threads: int) -> dict[str, nn.Module]:
    out = {}
    for i, (name, model) in enumerate(models.items()):
        if name == DY:
            set_form(model, "per_sample" if x.shape[0] == 1 else "batched")
        if name == GHOST:  # its onnxruntime deploy form: halves padded to 16 channels, no Concat (same outputs)
            model = onnxruntime_form(model)
        out[name] = OrtModel(model, x, tmp / f"m{i}.onnx", threads=threads, dynamic=False)
    features = set_form(create_model("dy_resnet18").fuse(), "features")
    out[DY_DYNAMIC_ONNX] = OrtModel(features, x, tmp / "features.onnx", threads=threads, dynamic=True)
    return out


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--backends", nargs="+", default=["eager", "onnxruntime"], choices=["eager", "onnxruntime"])
    ap.add_argument(
        "--size", type=int, default=224, help="input resolution (224 for the targets; smaller = smoke test)"
    )
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds; the median is over all timed runs")
    ap.add_argument("--iters", type=int, default=None, help="timed calls per round (default 10 at batch 1, else 3)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/latency_dynamic"))
    add_load_args(ap)
    ap.add_argument("--resume", action="store_true", help="reuse the cells saved in OUT/latency_dynamic.partial.json")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    load_before = check_quiet(args.max_load, args.allow_busy)
    args.out.mkdir(parents=True, exist_ok=True)
    partial = args.out / "latency_dynamic.partial.json"
    config = {
        "threads": args.threads,
        "rounds": args.rounds,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "size": args.size,
    }
    cells: dict[str, dict] = load_cells(partial, config, SAME_ON_RESUME) if args.resume else {}
    if cells:
        print(f"--resume: reusing cells {', '.join(cells)} from {partial}")

    x1 = torch.randn(1, 3, args.size, args.size)
    costs = {n: profile(m, x1) for n, m in build_models().items()}
    costs[DY_DYNAMIC_ONNX] = costs[DY]  # same model, another execution form
    for bs in args.batches:
        x = torch.randn(bs, 3, args.size, args.size)
        for backend in args.backends:
            key = f"{backend}_bs{bs}"
            if key in cells:
                continue
            iters = args.iters or (10 if bs == 1 else 3)
            cell = {"iters": iters, "load_avg_1m_before": load1(), "allow_busy": args.allow_busy}
            with tempfile.TemporaryDirectory(prefix="latency-dynamic-") as tmp:
                models = build_models()
                if backend == "onnxruntime":
                    models = ort_models(models, x, Path(tmp), args.threads)
                with other_cpu(cell):
                    stats = compare_latency(models, x, threads=args.threads, rounds=args.rounds, iters=iters)
            cell["models"] = {n: {"median_ms": s.median_ms, "p90_ms": s.p90_ms} for n, s in stats.items()}
            cells[key] = cell
            atomic_write_text(partial, json.dumps({"config": config, "cells": cells}, indent=2) + "\n")
            print(
                f"batch {bs} {backend}: "
                + ", ".join(f"{n} {s['median_ms']:.2f} ms" for n, s in cell["models"].items())
                + f" (other processes {cores_text(cell)} cores)"
            )
    report(args, cells, costs, load_before)


def report(args: argparse.Namespace, cells: dict, costs: dict, load_before: float) -> None:
    keys = [f"{b}_bs{bs}" for bs in args.batches for b in args.backends if f"{b}_bs{bs}" in cells]
    rows = []
    for name, prof in costs.items():
        row = {"model": name, "params": prof.params, "macs": prof.macs}
        for k in keys:
            s = cells[k]["models"].get(name)
            if s is not None:
                row[f"{k}_ms"], row[f"{k}_p90_ms"] = s["median_ms"], s["p90_ms"]
        rows.append(row)
    ratios, verdict = {}, {}
    for k in keys:
        ms = cells[k]["models"]
        bs = int(k.rsplit("bs", 1)[1])
        ratios[k] = {
            "dy_resnet18_vs_resnet18": ms[DY]["median_ms"] / ms[RN]["median_ms"],
            "cc_b0_4e_vs_b0": ms["timm efficientnet_cc_b0_4e"]["median_ms"] / ms["timm efficientnet_b0"]["median_ms"],
            "ghostnet_vs_mobilenet_v3": ms[GHOST]["median_ms"] / ms[MNV3]["median_ms"],
        }
        if bs in TARGETS:
            verdict[k] = {"target": TARGETS[bs], "met": ratios[k]["dy_resnet18_vs_resnet18"] <= TARGETS[bs]}
        verdict[f"ghostnet_{k}"] = {"target": 1.0, "met": ratios[k]["ghostnet_vs_mobilenet_v3"] <= 1.0}
    others = [cells[k].get("other_cores") for k in keys]
    worst = max((o for o in others if o is not None), default=None)
    busy = load_before > args.max_load or (worst is not None and worst > args.max_load)
    result = {
        "threads": args.threads,
        "rounds": args.rounds,
        "size": args.size,
        "max_load": args.max_load,
        "allow_busy": args.allow_busy or any(cells[k]["allow_busy"] for k in keys),
        "load_avg_1m": load_before,
        "other_cores_max_over_cells": worst,
        "busy": busy,
        "cells": {
            k: {"load_avg_1m_before": cells[k]["load_avg_1m_before"], "other_cores": cells[k].get("other_cores")}
            for k in keys
        },
        "torch": torch.__version__,
        "timm": timm.__version__,
        "rows": rows,
        "ratios": ratios,
        "targets": verdict,
    }
    atomic_write_text(args.out / "latency_dynamic.json", json.dumps(result, indent=2) + "\n")
    bar_panels(
        rows,
        [(f"{k}_ms", k.replace("_", " ") + " (ms)") for k in keys],
        args.out / "latency_dynamic.png",
        title=f"{args.size}x{args.size} latency, {args.threads} threads (median ms)" + (" (BUSY)" if busy else ""),
    )
    print("\n| model | params | MACs | " + " | ".join(keys) + " |")
    print("|---|---|---|" + "---|" * len(keys))
    for r in rows:
        txt = " | ".join(f"{r[k + '_ms']:.2f}" if k + "_ms" in r else "-" for k in keys)
        print(f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['macs'] / 1e6:.1f}M | {txt} |")
    for k, rk in ratios.items():
        print(
            f"{k}: dy_resnet18/resnet18 {rk['dy_resnet18_vs_resnet18']:.2f}x, cc_b0_4e/b0 {rk['cc_b0_4e_vs_b0']:.2f}x, "
            f"ghostnet/mobilenet_v3_large {rk['ghostnet_vs_mobilenet_v3']:.2f}x"
        )
    print("targets:", verdict, "- BUSY machine" if busy else "- quiet machine")


if __name__ == "__main__":
    main()
