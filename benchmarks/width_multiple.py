"""Which channel multiple should pruned widths be rounded to on this machine? The measured rule, on the baselines.

    python benchmarks/width_multiple.py                       # the shipped VGG and ResNet-20, 1 and 2 threads
    python benchmarks/width_multiple.py --allow-busy --rounds 1 --out /tmp/wm   # smoke test
    python benchmarks/width_multiple.py --replot benchmarks/results/width_multiple/width_multiple.json

For each shipped baseline (benchmarks/baselines/*.pt), leanvision.compress.widths.choose_multiple times 3x3 conv
pairs at the net's three most expensive conv shapes, six pruned widths each, as they are and rounded up to 8, 16 and
32 channels (eager and onnxruntime, batch 1), at every --threads count, and picks the multiple whose rounded widths
run fastest on average (1: rounding does not pay). `leanvision compress` does the same with `round_to: auto` (at all
cores). Run it on a quiet machine: it refuses above --max-load and records the cores other processes used.
Writes OUT/width_multiple.json + PNG (candidate scores per net and thread count).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from _machine import add_load_args, check_quiet

from leanvision._io import atomic_write_text
from leanvision.compress.widths import CANDIDATES, choose_multiple, conv_shapes
from leanvision.engine import model_from_checkpoint
from leanvision.profile import thread_counts
from leanvision.report import bar_panels

BASELINES = Path(__file__).resolve().parent / "baselines"


def plot(rows: list[dict], path: Path) -> None:
    """One panel per candidate multiple, one bar per net, thread count and backend: latency rounded / as is."""
    bars = [{"model": f"{r['net'].split('_')[0]} {r['threads']}t {'ORT' if b == 'onnxruntime' else b}",
             **{f"x{k}": v for k, v in scores.items()}}
            for r in rows for b, scores in r["by_backend"].items()]  # fmt: skip
    bar_panels(bars, [(f"x{m}", f"latency rounded to x{m} / as is") for m in CANDIDATES if m > 1], path,
               title="pruned widths rounded up: mean latency ratio (< 1: rounding pays)")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", nargs="+", default=["vgg_cifar10", "resnet20_cifar10"], help="shipped baselines")
    ap.add_argument("--threads", default="1,all", help="thread counts, e.g. 1,all")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds per timing")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/width_multiple"))
    ap.add_argument("--replot", type=Path, help="redraw the PNG of a saved width_multiple.json, no timing")
    add_load_args(ap)
    args = ap.parse_args()
    if args.replot:
        plot(json.loads(args.replot.read_text())["rows"], args.replot.with_suffix(".png"))
        return
    load = check_quiet(args.max_load, args.allow_busy)
    rows = []
    for net in args.nets:
        model, ckpt = model_from_checkpoint(BASELINES / f"{net}.pt")
        shapes = conv_shapes(model, ckpt["arch"]["input_size"])
        for n in thread_counts(args.threads):
            choice = choose_multiple(shapes, threads=n, rounds=args.rounds).to_dict()
            rows.append({"net": net, **choice})
            print(f"{net}, {n} threads: multiple {choice['multiple']}, scores {choice['by_backend']}, other cores "
                  f"{choice['other_cores']}", flush=True)  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"command": "python benchmarks/width_multiple.py", "torch": torch.__version__, "load_avg_1m": load,
              "allow_busy": args.allow_busy, "candidates": list(CANDIDATES), "rows": rows}  # fmt: skip
    atomic_write_text(args.out / "width_multiple.json", json.dumps(result, indent=2) + "\n")
    plot(rows, args.out / "width_multiple.png")
    print(f"wrote {args.out / 'width_multiple.json'}")


if __name__ == "__main__":
    main()
