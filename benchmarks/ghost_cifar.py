"""ResNet-20 vs Ghost-ResNet-20 vs a thin ResNet-20 at Ghost's MACs on CIFAR-10 (GhostNet, arXiv 1911.11907).

    python benchmarks/ghost_cifar.py --data-dir DIR                        # 45k train / 5k val, 15 epochs, 2 seeds
    python benchmarks/ghost_cifar.py --data-dir DIR --seeds 0 1 2 --resume # add a 3rd seed to a finished run
    python benchmarks/ghost_cifar.py --out OUT --resume                    # continue a stopped run in OUT (mid-run too)
    python benchmarks/ghost_cifar.py --summarize OUT/ghost_cifar.json      # recompute the verdict, no training
    python benchmarks/ghost_cifar.py --epochs 30 --seeds 0 --models ghost_resnet20 thin_resnet20 --out OUT2  # a pair

DIR holds cifar10/ (or set $LEANVISION_DATA and omit --data-dir). Three nets, one recipe (SGD nesterov lr 0.1, cosine,
wd 5e-4, batch 128, crop + flip) and one init rule (leanvision.ops.init_convs): ResNet-20; Ghost-ResNet-20 (every
block conv a GhostModule, s=2, d=3); and the control a user could pick instead, a thin ResNet-20 whose stage widths
are scaled by the multiplier whose MACs come nearest to Ghost-ResNet-20's (leanvision.models.match_width).
--val-size training images are held out (reported per epoch in OUT/runs/<run>/metrics.jsonl); accuracy is on the
10,000-image test set.
Verdict: Ghost's params and MACs are 0.50-0.58x ResNet-20's; in every seed acc(Ghost) >= acc(thin) + 0.5 and
acc(ResNet-20) - acc(Ghost) <= 1.0. Where a compared gap is under 1 point with fewer than 3 seeds the summary says
so: run a third (--seeds 0 1 2 --resume).
Writes JSON + PNG into --out; every finished (model, seed) run is saved at once to ghost_cifar.partial.json, and
fit's checkpoints in OUT/runs/ let --resume continue a run stopped mid-way.
"""

from __future__ import annotations

import argparse
import statistics

import _runs
import torch
from torch import nn

from leanvision.data import make_loader
from leanvision.engine import evaluate, fit, make_optimizer, make_scheduler
from leanvision.models import create_model, match_width
from leanvision.profile import profile

BASE, GHOST, THIN = "resnet20", "ghost_resnet20", "thin_resnet20"
MODELS = (BASE, GHOST, THIN)
RATIO_BAND = (0.50, 0.58)
MIN_OVER_THIN = 0.5  # points, every seed
MAX_BELOW_BASE = 1.0  # points, every seed
# Arguments that change what a run measures: a resumed run must use the same values.
SAME_ON_RESUME = ("subset", "val_size", "epochs", "shortcut", "test_subset")


def thin_resnet20(width: float, shortcut: str) -> nn.Module:
    return create_model(BASE, num_classes=10, shortcut=shortcut, widths=tuple(max(1, round(c * width)) for c in
                                                                               (16, 32, 64)))  # fmt: skip


def thin_width(shortcut: str) -> float:
    """The width multiplier at which ResNet-20's MACs come nearest to Ghost-ResNet-20's."""
    ghost = profile(create_model(GHOST, num_classes=10, shortcut=shortcut), torch.zeros(1, 3, 32, 32)).macs
    return match_width(lambda w: thin_resnet20(w, shortcut), ghost, low=0.25).width


def build(name: str, *, shortcut: str, thin: float) -> nn.Module:
    return thin_resnet20(thin, shortcut) if name == THIN else create_model(name, num_classes=10, shortcut=shortcut)


def train_one(name: str, data: dict, runs: _runs.Runs, *, seed: int, thin: float, args: argparse.Namespace) -> dict:
    torch.manual_seed(seed)
    model = build(name, shortcut=args.shortcut, thin=thin)
    loader = make_loader(data["train"], batch_size=128, shuffle=True, seed=seed)  # crop+flip: CIFAR's train default
    opt = make_optimizer(model, "sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = make_scheduler(opt, "cosine", total_steps=args.epochs * len(loader))
    out, last = runs.fit_dir(f"{name}_s{seed}")
    val = make_loader(data["val"], batch_size=500, shuffle=False)
    res = fit(model, loader, epochs=args.epochs, optimizer=opt, scheduler=sched, val_data=val, out_dir=out,
              resume=last, seed=seed, progress=not args.quiet)  # fmt: skip
    prof = profile(model, torch.zeros(1, 3, 32, 32))
    return {
        "model": name,
        "seed": seed,
        "acc": 100 * evaluate(model, make_loader(data["test"], batch_size=500, shuffle=False))["acc"],
        "val_acc": 100 * evaluate(model, val)["acc"],
        "width": thin if name == THIN else 1.0,
        "params": prof.params,
        "macs": prof.macs,
        "val_acc_by_epoch": [100 * h["val_acc"] for h in res.history],
        # running accuracy on the augmented training batches: tells under-fitting from over-fitting beside val
        "train_acc_by_epoch": [100 * h["train_acc"] for h in res.history],
        "train_s": sum(h["epoch_time_s"] for h in res.history),
    }


def summarize(runs: list[dict]) -> dict:
    """The verdict from a list of runs: seeds are paired by their seed value; only complete triples count."""
    acc, seeds, missing = _runs.complete_seeds(runs, MODELS)
    if not seeds:
        return {"complete_seeds": [], "missing": missing, "pass": False}
    first = {n: acc[(n, seeds[0])] for n in MODELS}
    params_ratio, macs_ratio = (first[GHOST][k] / first[BASE][k] for k in ("params", "macs"))
    # Accuracies are percentages of a test set (steps of 0.01): round off float noise before comparing.
    below_base = [round(acc[(BASE, s)]["acc"] - acc[(GHOST, s)]["acc"], 6) for s in seeds]
    over_thin = [round(acc[(GHOST, s)]["acc"] - acc[(THIN, s)]["acc"], 6) for s in seeds]
    in_band = all(RATIO_BAND[0] <= r <= RATIO_BAND[1] for r in (params_ratio, macs_ratio))
    mean = {n: statistics.mean(acc[(n, s)]["acc"] for s in seeds) for n in MODELS}
    close = {k: v for k, v in {"vs resnet20": mean[GHOST] - mean[BASE], "vs thin": mean[GHOST] - mean[THIN]}.items()
             if abs(v) < 1.0}  # fmt: skip
    checks = {
        "ratios_in_band": in_band,
        "ge_thin_plus_0_5_every_seed": min(over_thin) >= MIN_OVER_THIN,
        "within_1_0_of_resnet20_every_seed": max(below_base) <= MAX_BELOW_BASE,
    }
    return {
        "params_ratio": params_ratio,
        "macs_ratio": macs_ratio,
        "thin_width": first[THIN]["width"],
        "thin_macs_vs_ghost": first[THIN]["macs"] / first[GHOST]["macs"],
        "acc_mean": mean,
        "val_acc_mean": {n: statistics.mean(acc[(n, s)]["val_acc"] for s in seeds) for n in MODELS},
        "complete_seeds": seeds,
        "missing": missing,
        "resnet20_minus_ghost_per_seed": below_base,
        "ghost_minus_thin_per_seed": over_thin,
        "criterion": f"params and MACs ratios in [{RATIO_BAND[0]}, {RATIO_BAND[1]}]; in every seed {GHOST} acc >= "
        f"{THIN} acc + {MIN_OVER_THIN} and {BASE} acc - {GHOST} acc <= {MAX_BELOW_BASE} points",
        "checks": checks,
        "third_seed_advised": sorted(close) if close and len(seeds) < 3 else [],
        "pass": all(checks.values()) and not missing and len(seeds) >= 2,
    }


COLUMNS = {"model": "model", "seed": "seed", "test acc (%)": ("acc", ".2f"), "val acc (%)": ("val_acc", ".2f"),
           "width": ("width", ".3f"), "params": ("params", ","), "MACs": ("macs", ","),
           "train s": ("train_s", ".0f")}  # fmt: skip

print_table = _runs.run_table(COLUMNS)


def main() -> None:
    ap = _runs.make_parser(__doc__)
    _runs.add_protocol_args(ap)
    ap.add_argument(
        "--shortcut", choices=["A", "B"], default="B", help="B = 1x1 conv+BN projection (ResNet-20: 272,474 params)"
    )
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS), metavar="MODEL",
                    help="train only these (a verdict needs all three per seed)")  # fmt: skip
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    _runs.add_run_args(ap, "ghost_cifar")
    args = ap.parse_args()

    def run(runs: _runs.Runs) -> None:
        done = {(r["model"], r["seed"]) for r in runs.runs}
        thin = thin_width(args.shortcut)
        data: dict = {}
        for seed in args.seeds:
            todo = [n for n in args.models if (n, seed) not in done]
            if not todo:
                continue
            _runs.protocol_data(args, seed, data)
            for name in todo:  # baseline, candidate and control interleaved per seed
                runs.add(train_one(name, data, runs, seed=seed, thin=thin, args=args))
        runs.runs = _runs.in_order(runs.runs, sorted({r["seed"] for r in runs.runs}), MODELS)

    panels = [("acc", "CIFAR-10 test acc (%)"), ("params", "params"), ("macs", "MACs"), ("train_s", "train time (s)")]
    title = f"ResNet-20 vs Ghost-ResNet-20 vs thin ResNet-20, {args.subset or 'all'} imgs x {args.epochs} ep"
    _runs.main(args, "ghost_cifar", SAME_ON_RESUME, run, summarize, print_table,
               lambda runs, _: _runs.plot_runs(runs, panels, args.out / "ghost_cifar.png", title))  # fmt: skip


if __name__ == "__main__":
    main()
