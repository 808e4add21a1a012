"""Spec §1d E2 (GhostNet, arXiv 1911.11907): ResNet-20 vs Ghost-ResNet-20 on CIFAR-10, same recipe, two seeds.

    python benchmarks/ghost_cifar.py --data-dir ../shared/data            # seeded 10k subset x 8 epochs
    python benchmarks/ghost_cifar.py --data-dir ../shared/data --subset 0 --epochs 5   # full 50k x 5 epochs

Pass (spec): the Ghost model has 0.50-0.58x the params and MACs and is within 2.0 points of the baseline.
Writes JSON + PNG into --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from leanvision.data import load_dataset, make_loader
from leanvision.engine import evaluate, fit, make_optimizer, make_scheduler
from leanvision.models import create_model
from leanvision.profile import profile
from leanvision.report import bar_panels

PAIR = ("resnet20", "ghost_resnet20")


def train_one(name: str, train, test, *, seed: int, epochs: int, shortcut: str) -> dict:
    torch.manual_seed(seed)
    model = create_model(name, num_classes=10, shortcut=shortcut)
    loader = make_loader(train, batch_size=128, shuffle=True, seed=seed)  # crop+flip: CIFAR's train default
    opt = make_optimizer(model, "sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = make_scheduler(opt, "cosine", total_steps=epochs * len(loader))
    t0 = time.perf_counter()
    fit(model, loader, epochs=epochs, optimizer=opt, scheduler=sched, seed=seed, progress=True)
    train_s = time.perf_counter() - t0
    metrics = evaluate(model, make_loader(test, batch_size=500, shuffle=False))
    prof = profile(model, torch.zeros(1, 3, 32, 32))
    return {
        "model": name,
        "seed": seed,
        "acc": 100 * metrics["acc"],
        "params": prof.params,
        "macs": prof.macs,
        "train_s": train_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="root holding cifar10/ (else $LEANVISION_DATA)")
    ap.add_argument("--subset", type=int, default=10_000, help="class-balanced training subset; 0 = all 50k")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--shortcut", choices=["A", "B"], default="B", help="B = 1x1 projection, as the spec's counts")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/ghost_cifar"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    test = load_dataset("cifar10", root=args.data_dir, split="test")
    runs = []
    for seed in args.seeds:
        train = load_dataset("cifar10", root=args.data_dir, split="train", subset=args.subset or None, seed=seed)
        for name in PAIR:  # baseline and candidate interleaved per seed
            runs.append(train_one(name, train, test, seed=seed, epochs=args.epochs, shortcut=args.shortcut))
            print(json.dumps(runs[-1]), flush=True)
            # Saved after every model so a long run that is stopped still leaves what it measured.
            (args.out / "ghost_cifar.partial.json").write_text(json.dumps(runs, indent=2) + "\n")

    by = {n: [r for r in runs if r["model"] == n] for n in PAIR}
    base, ghost = by[PAIR[0]][0], by[PAIR[1]][0]
    gaps = [b["acc"] - g["acc"] for b, g in zip(by[PAIR[0]], by[PAIR[1]], strict=True)]
    summary = {
        "params_ratio": ghost["params"] / base["params"],
        "macs_ratio": ghost["macs"] / base["macs"],
        "acc_mean": {n: statistics.mean(r["acc"] for r in rs) for n, rs in by.items()},
        "acc_gap_per_seed": gaps,
        "pass": 0.50 <= ghost["macs"] / base["macs"] <= 0.58
        and 0.50 <= ghost["params"] / base["params"] <= 0.58
        and min(gaps) <= 2.0,
    }
    result = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "torch": torch.__version__,
        "runs": runs,
        "summary": summary,
    }
    (args.out / "ghost_cifar.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = [{"model": f"{r['model']} s{r['seed']}", **r} for r in runs]
    bar_panels(
        rows,
        [("acc", "CIFAR-10 test acc (%)"), ("params", "params"), ("macs", "MACs"), ("train_s", "train time (s)")],
        args.out / "ghost_cifar.png",
        title=f"ResNet-20 vs Ghost-ResNet-20, {args.subset or 50000} imgs x {args.epochs} ep",
    )
    print("\n| model | seed | test acc (%) | params | MACs | train s |\n|---|---|---|---|---|---|")
    for r in runs:
        print(f"| {r['model']} | {r['seed']} | {r['acc']:.2f} | {r['params']:,} | {r['macs']:,} | {r['train_s']:.0f} |")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
