"""Narrow + dynamic vs wide static on CIFAR-10 (DyNet arXiv 2004.10694; CondConv 1904.04971; DY-CNN 1912.03458).

    python benchmarks/dynet_cifar.py --data-dir DIR                        # seeded 25k subset x 15 epochs, 2 seeds
    python benchmarks/dynet_cifar.py --data-dir DIR --subset 0             # all 45k training images
    python benchmarks/dynet_cifar.py --out OUT --resume                    # continue a stopped run in OUT
    python benchmarks/dynet_cifar.py --summarize OUT/dynet_cifar.json      # recompute the verdict, no training

DIR holds cifar10/ (or set $LEANVISION_DATA and omit --data-dir). A 6-conv VGG-style net (BN+ReLU, max-pool after
each pair, GAP + linear; the first conv always static) in five versions: A static widths w = 32,32,64,64,128,128;
B static w/2; C DyNet w/2 (g=4, one coefficient FC per layer); D CondConv w/2 (4 experts); E DY-CNN w/2 (4
experts, softmax temperature annealed 30 -> 1 over the first --anneal-epochs through a train step).
SGD (nesterov, lr 0.05, cosine, wd 5e-4), batch 128, crop + flip. 5,000 training images are held out as a
validation split (reported; never used for the verdict); accuracy is on the 10,000-image test set.
Verdict (means over seeds): DyNet recovers >= 40% of the A-B gap, acc(C) - acc(B) >= 0.4 (acc(A) - acc(B)),
with MACs(C) <= 1.1 MACs(B); only meaningful when acc(A) - acc(B) >= 1.5 points (the precondition).
MACs are inference MACs (fused conv + kernel fusion + coefficient FCs), params beside them.
Writes JSON + PNG into --out; every finished (model, seed) run is saved at once to dynet_cifar.partial.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import _runs
import torch
from torch import nn

from leanvision.data import load_dataset, make_loader
from leanvision.engine import evaluate, fit, make_optimizer, make_scheduler, standard_step
from leanvision.ops import ConvBnAct, DynamicConvBnAct, anneal_temperature
from leanvision.profile import profile
from leanvision.report import bar_panels

WIDTHS = (32, 32, 64, 64, 128, 128)
# name -> (width divisor, dynamic mode or None)
MODELS = {
    "A static w": (1, None),
    "B static w/2": (2, None),
    "C DyNet w/2": (2, "dynet"),
    "D CondConv w/2": (2, "condconv"),
    "E DY-CNN w/2": (2, "dycnn"),
}
G = 4
SAME_ON_RESUME = ("subset", "epochs", "val_size", "anneal_epochs", "lr")


def vgg6(name: str, num_classes: int = 10) -> nn.Sequential:
    """The 6-conv net of this benchmark: conv pairs with max-pool, GAP, linear; dynamic convs after the first."""
    div, mode = MODELS[name]
    layers: list[nn.Module] = []
    prev = 3
    for i, w in enumerate(WIDTHS):
        w //= div
        if mode is None or i == 0:
            layers.append(ConvBnAct(prev, w, 3))
        else:
            layers.append(DynamicConvBnAct(prev, w, 3, g=G, mode=mode))
        if i % 2 == 1 and i < len(WIDTHS) - 1:
            layers.append(nn.MaxPool2d(2))
        prev = w
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(prev, num_classes))


def train_one(name: str, train, val, test, *, seed: int, args: argparse.Namespace) -> dict:
    torch.manual_seed(seed)
    model = vgg6(name)
    loader = make_loader(train, batch_size=128, shuffle=True, seed=seed)  # crop+flip: CIFAR's train default
    opt = make_optimizer(model, "sgd", lr=args.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = make_scheduler(opt, "cosine", total_steps=args.epochs * len(loader))
    anneal_steps = max(1, args.anneal_epochs * len(loader))

    def dycnn_step(model, inputs, targets, ctx):
        anneal_temperature(model, ctx.step, anneal_steps, start=30.0, end=1.0)
        return standard_step(model, inputs, targets, ctx)

    step = dycnn_step if MODELS[name][1] == "dycnn" else standard_step
    t0 = time.perf_counter()
    fit(model, loader, epochs=args.epochs, optimizer=opt, scheduler=sched, train_step=step, seed=seed, progress=True)
    train_s = time.perf_counter() - t0
    val_acc = evaluate(model, make_loader(val, batch_size=500, shuffle=False))["acc"] if val is not None else None
    test_acc = evaluate(model, make_loader(test, batch_size=500, shuffle=False))["acc"]
    prof = profile(model, torch.zeros(1, 3, 32, 32))
    return {
        "model": name,
        "seed": seed,
        "acc": 100 * test_acc,
        "val_acc": None if val_acc is None else 100 * val_acc,
        "params": prof.params,
        "macs": prof.macs,
        "unsupported": dict(prof.unsupported),
        "train_s": train_s,
    }


VERDICT = ("A static w", "B static w/2", "C DyNet w/2")  # the models the verdict reads


def summarize(runs: list[dict]) -> dict:
    """Means over the seeds each model finished; the verdict uses the seeds on which A, B and C all finished."""
    by, _, missing = _runs.complete_seeds(runs, MODELS)
    _, seeds, _ = _runs.complete_seeds(runs, VERDICT)
    if not seeds:
        return {"verdict_seeds": [], "pass": False, "note": "no seed with A, B and C finished"}
    done = {n: sorted(s for (m, s) in by if m == n) for n in MODELS}
    mean = {n: statistics.mean(by[(n, s)]["acc"] for s in done[n]) for n in MODELS if done[n]}
    verdict_mean = {n: statistics.mean(by[(n, s)]["acc"] for s in seeds) for n in VERDICT}
    macs = {n: by[(n, done[n][0])]["macs"] for n in mean}
    params = {n: by[(n, done[n][0])]["params"] for n in mean}
    a, b = verdict_mean["A static w"], verdict_mean["B static w/2"]
    gap = a - b
    recovered = {n: (mean[n] - b) / gap if gap else None for n in mean if n[0] in "CDE"}
    recovered["C DyNet w/2"] = (verdict_mean["C DyNet w/2"] - b) / gap if gap else None
    macs_ok = macs["C DyNet w/2"] <= 1.1 * macs["B static w/2"]
    precondition = gap >= 1.5
    dynet_ok = recovered["C DyNet w/2"] is not None and recovered["C DyNet w/2"] >= 0.4
    return {
        "verdict_seeds": seeds,
        "seeds_per_model": done,
        "missing_runs": missing,
        "acc_mean": mean,
        "acc_per_seed": {n: [by[(n, s)]["acc"] for s in done[n]] for n in mean},
        "macs": macs,
        "params": params,
        "macs_vs_B": {n: macs[n] / macs["B static w/2"] for n in mean},
        "gap_A_minus_B": gap,
        "precondition_gap_ge_1_5": precondition,
        "fraction_of_gap_recovered": recovered,
        "criterion": "acc(C) - acc(B) >= 0.4 (acc(A) - acc(B)) with MACs(C) <= 1.1 MACs(B), means over the seeds "
        "on which A, B and C finished (at least 2); precondition acc(A) - acc(B) >= 1.5. D and E are reported "
        "against the same A and B means",
        "macs_C_le_1_1_B": macs_ok,
        "pass": bool(precondition and dynet_ok and macs_ok and len(seeds) >= 2),
    }


def print_table(runs: list[dict], summary: dict) -> None:
    print("\n| model | seed | test acc (%) | val acc (%) | params | MACs | train s |\n|---|---|---|---|---|---|---|")
    for r in runs:
        val = "-" if r["val_acc"] is None else f"{r['val_acc']:.2f}"
        print(
            f"| {r['model']} | {r['seed']} | {r['acc']:.2f} | {val} | {r['params']:,} | {r['macs']:,} "
            f"| {r['train_s']:.0f} |"
        )
    print(json.dumps(summary, indent=2))


def parse_args() -> argparse.Namespace:
    ap = _runs.make_parser(__doc__)
    ap.add_argument("--subset", type=int, default=25_000, help="seeded class-balanced training subset; 0 = all")
    ap.add_argument("--val-size", type=int, default=5_000, help="training images held out for validation")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--anneal-epochs", type=int, default=5, help="DY-CNN: epochs to anneal the temperature 30 -> 1")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS), metavar="MODEL")
    ap.add_argument("--threads", type=int, default=2)
    _runs.add_run_args(ap, "dynet_cifar", rewrite=False)
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    if args.summarize:
        _runs.summarize_file(args.summarize, summarize, print_table, rewrite=False)
        return
    partial, saved_args, runs = _runs.prepare(args, "dynet_cifar", SAME_ON_RESUME)
    done = {(r["model"], r["seed"]) for r in runs}
    if done:
        print(f"--resume: {len(done)} finished run(s) in {partial}")
    test = val = None
    split = {"root": args.data_dir, "val_size": args.val_size, "val_seed": 0}
    for seed in args.seeds:
        todo = [n for n in args.models if (n, seed) not in done]
        if not todo:
            continue
        if test is None:
            test = load_dataset("cifar10", root=args.data_dir, split="test")
            val = load_dataset("cifar10", split="val", **split) if args.val_size else None
        train = load_dataset("cifar10", split="train", subset=args.subset or None, seed=seed, **split)
        for name in todo:
            runs.append(train_one(name, train, val, test, seed=seed, args=args))
            print(json.dumps(runs[-1]), flush=True)
            _runs.save_partial(partial, saved_args, runs)

    summary = summarize(runs)
    _runs.save_result(args.out / "dynet_cifar.json", saved_args, runs, summary)
    rows = [{**r, "model": f"{r['model']} s{r['seed']}"} for r in runs]
    bar_panels(
        rows,
        [("acc", "CIFAR-10 test acc (%)"), ("macs", "MACs"), ("params", "params"), ("train_s", "train time (s)")],
        args.out / "dynet_cifar.png",
        title=f"static vs dynamic VGG-6, {args.subset or 'all'} imgs x {args.epochs} ep",
    )
    print_table(runs, summary)


if __name__ == "__main__":
    main()
