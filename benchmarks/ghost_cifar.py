"""ResNet-20 vs Ghost-ResNet-20 on CIFAR-10, two seeds: the GhostNet paper's CIFAR-10 setting (arXiv 1911.11907).

    python benchmarks/ghost_cifar.py --data-dir DIR                        # seeded 10k subset x 8 epochs
    python benchmarks/ghost_cifar.py --data-dir DIR --subset 0 --epochs 5  # full 50k x 5 epochs
    python benchmarks/ghost_cifar.py --out OUT --resume                    # continue a stopped run in OUT
    python benchmarks/ghost_cifar.py --summarize OUT/ghost_cifar.json      # recompute the verdict, no training

DIR holds cifar10/ (or set $LEANVISION_DATA and omit --data-dir).
Pass criterion: the Ghost model has 0.50-0.58x the params and the MACs of ResNet-20, and its test accuracy is
within 2.0 points of ResNet-20's in every seed (baseline acc - Ghost acc <= 2.0 for each seed).
Writes JSON + PNG into --out; every finished (model, seed) run is saved at once to ghost_cifar.partial.json.
"""

from __future__ import annotations

import json
import statistics
import time

import _runs
import torch

from leanvision.data import load_dataset, make_loader
from leanvision.engine import evaluate, fit, make_optimizer, make_scheduler
from leanvision.models import create_model
from leanvision.profile import profile
from leanvision.report import bar_panels

PAIR = ("resnet20", "ghost_resnet20")
RATIO_BAND = (0.50, 0.58)
MAX_GAP = 2.0  # points of test accuracy, per seed
# Arguments that change what a run measures: a resumed run must use the same values.
SAME_ON_RESUME = ("subset", "epochs", "shortcut")


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


def summarize(runs: list[dict]) -> dict:
    """The verdict from a list of runs: seeds are paired by their seed value; only complete pairs count."""
    acc, seeds, missing = _runs.complete_seeds(runs, PAIR)
    if not seeds:
        return {"complete_seeds": [], "missing": missing, "pass": False}
    base, ghost = acc[(PAIR[0], seeds[0])], acc[(PAIR[1], seeds[0])]
    params_ratio, macs_ratio = ghost["params"] / base["params"], ghost["macs"] / base["macs"]
    # Accuracies are percentages of a 10,000-image test set (steps of 0.01): round off float noise before comparing.
    gaps = [round(acc[(PAIR[0], s)]["acc"] - acc[(PAIR[1], s)]["acc"], 6) for s in seeds]
    in_band = all(RATIO_BAND[0] <= r <= RATIO_BAND[1] for r in (params_ratio, macs_ratio))
    return {
        "params_ratio": params_ratio,
        "macs_ratio": macs_ratio,
        "acc_mean": {n: statistics.mean(acc[(n, s)]["acc"] for s in seeds) for n in PAIR},
        "complete_seeds": seeds,
        "missing": missing,
        "acc_gap_per_seed": gaps,
        "max_gap": max(gaps),
        "criterion": f"params and MACs ratios in [{RATIO_BAND[0]}, {RATIO_BAND[1]}] and "
        f"{PAIR[0]} acc - {PAIR[1]} acc <= {MAX_GAP} points in every seed",
        "ratios_in_band": in_band,
        "gap_within_limit_every_seed": max(gaps) <= MAX_GAP,
        "pass": in_band and max(gaps) <= MAX_GAP and not missing,
    }


def print_table(runs: list[dict], summary: dict) -> None:
    print("\n| model | seed | test acc (%) | params | MACs | train s |\n|---|---|---|---|---|---|")
    for r in runs:
        print(f"| {r['model']} | {r['seed']} | {r['acc']:.2f} | {r['params']:,} | {r['macs']:,} | {r['train_s']:.0f} |")
    print(json.dumps(summary, indent=2))


def main() -> None:
    ap = _runs.make_parser(__doc__)
    ap.add_argument("--subset", type=int, default=10_000, help="class-balanced training subset; 0 = all 50k")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument(
        "--shortcut", choices=["A", "B"], default="B", help="B = 1x1 conv+BN projection (ResNet-20: 272,474 params)"
    )
    ap.add_argument("--threads", type=int, default=2)
    _runs.add_run_args(ap, "ghost_cifar")
    args = ap.parse_args()
    if args.summarize:
        _runs.summarize_file(args.summarize, summarize, print_table)
        return
    partial, saved_args, runs = _runs.prepare(args, "ghost_cifar", SAME_ON_RESUME)
    done = {(r["model"], r["seed"]) for r in runs}
    if done:
        print(f"--resume: {len(done)} finished run(s) in {partial}: " + ", ".join(f"{n} s{s}" for n, s in sorted(done)))
    test = None
    for seed in args.seeds:
        todo = [n for n in PAIR if (n, seed) not in done]
        if not todo:
            continue
        if test is None:
            test = load_dataset("cifar10", root=args.data_dir, split="test")
        train = load_dataset("cifar10", root=args.data_dir, split="train", subset=args.subset or None, seed=seed)
        for name in todo:  # baseline and candidate interleaved per seed
            runs.append(train_one(name, train, test, seed=seed, epochs=args.epochs, shortcut=args.shortcut))
            print(json.dumps(runs[-1]), flush=True)
            _runs.save_partial(partial, saved_args, runs)

    runs = _runs.in_order(runs, args.seeds, PAIR)
    summary = summarize(runs)
    _runs.save_result(args.out / "ghost_cifar.json", saved_args, runs, summary)
    rows = [{**r, "model": f"{r['model']} s{r['seed']}"} for r in runs]
    bar_panels(
        rows,
        [("acc", "CIFAR-10 test acc (%)"), ("params", "params"), ("macs", "MACs"), ("train_s", "train time (s)")],
        args.out / "ghost_cifar.png",
        title=f"ResNet-20 vs Ghost-ResNet-20, {args.subset or 50000} imgs x {args.epochs} ep",
    )
    print_table(runs, summary)


if __name__ == "__main__":
    main()
