"""Latency of GhostNet-1.0x (arXiv 1911.11907): leanvision (training and deploy form) vs timm vs MobileNetV3-L.

    python benchmarks/latency_ghostnet.py            # 224x224, batch 1 and 32, eager + onnxruntime, 2 threads

All models are timed in the same run, interleaved round by round, medians reported. Target: leanvision's
deploy form no slower than timm's ghostnet_100 in both backends. Writes JSON + PNG into --out.
Run it on a quiet machine: any other busy process oversubscribes the cores and distorts eager latency.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import timm
import torch
import torchvision

from leanvision.models import create_model
from leanvision.ops import fuse_bn
from leanvision.profile import compare_latency, profile
from leanvision.report import bar_panels


def build_models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    ours = create_model("ghostnet_100").eval()
    return {
        "leanvision ghostnet_100": ours,
        "leanvision ghostnet_100 (deploy)": fuse_bn(ours).eval(),
        "timm ghostnet_100": timm.create_model("ghostnet_100", pretrained=False).eval(),
        "torchvision mobilenet_v3_large": torchvision.models.mobilenet_v3_large().eval(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--backends", nargs="+", default=["eager", "onnxruntime"])
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds; the median is over all timed runs")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/latency_ghostnet"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    load1 = os.getloadavg()[0]
    if load1 > 0.5:
        print(f"warning: 1-minute load average is {load1:.2f}; timings will be noisy (run on a quiet machine)")

    models = build_models()
    x1 = torch.randn(1, 3, 224, 224)
    rows = [{"model": n, "params": (p := profile(m, x1)).params, "macs": p.macs} for n, m in models.items()]
    for bs in args.batches:
        x = torch.randn(bs, 3, 224, 224)
        for backend in args.backends:
            iters = 10 if bs == 1 else 3
            stats = compare_latency(models, x, backend=backend, threads=args.threads, rounds=args.rounds, iters=iters)
            for row in rows:
                s = stats[row["model"]]
                row[f"{backend}_bs{bs}_ms"], row[f"{backend}_bs{bs}_p90_ms"] = s.median_ms, s.p90_ms
            print(f"batch {bs} {backend}: " + ", ".join(f"{n} {s.median_ms:.2f} ms" for n, s in stats.items()))

    timm_row = next(r for r in rows if r["model"].startswith("timm"))
    keys = [f"{b}_bs{bs}_ms" for bs in args.batches for b in args.backends]
    for row in rows:
        for k in keys:
            row[k.replace("_ms", "_vs_timm")] = row[k] / timm_row[k]
    deploy = next(r for r in rows if "deploy" in r["model"])
    verdict = {k: deploy[k] <= timm_row[k] for k in keys}
    result = {
        "threads": args.threads,
        "rounds": args.rounds,
        "load_avg_1m": load1,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "rows": rows,
        "deploy_no_slower_than_timm": verdict,
    }
    (args.out / "latency_ghostnet.json").write_text(json.dumps(result, indent=2) + "\n")
    short = [{**r, "model": r["model"].replace("leanvision ", "lv ").replace("torchvision ", "tv ")} for r in rows]
    bar_panels(
        short,
        [(k, k.replace("_", " ")) for k in keys],
        args.out / "latency_ghostnet.png",
        title=f"224x224 latency, {args.threads} threads (median ms)",
    )

    print("\n| model | params | MACs | " + " | ".join(keys) + " |")
    print("|---|---|---|" + "---|" * len(keys))
    for r in rows:
        cells = " | ".join(f"{r[k]:.2f} ({r[k.replace('_ms', '_vs_timm')]:.2f}x)" for k in keys)
        print(f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['macs'] / 1e6:.1f}M | {cells} |")
    print("deploy form no slower than timm:", verdict)


if __name__ == "__main__":
    main()
