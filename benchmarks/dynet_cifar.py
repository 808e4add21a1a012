"""Narrow + dynamic vs wide static vs thin static on CIFAR-10 (DyNet arXiv 2004.10694; CondConv 1904.04971; DY-CNN
1912.03458).

    python benchmarks/dynet_cifar.py --data-dir DIR                        # 45k train / 5k val, 15 epochs, 2 seeds
    python benchmarks/dynet_cifar.py --data-dir DIR --seeds 0 1 2 --resume # add a 3rd seed to a finished run
    python benchmarks/dynet_cifar.py --out OUT --resume                    # continue a stopped run in OUT (mid-run too)
    python benchmarks/dynet_cifar.py --summarize OUT/dynet_cifar.json      # recompute the verdict, no training

DIR holds cifar10/ (or set $LEANVISION_DATA and omit --data-dir). A 6-conv VGG-style net (BN+ReLU, max-pool after
each pair, GAP + linear; the first conv always static) in six versions: A static widths w = 32,32,64,64,128,128;
B static w/2; C DyNet w/2 (g=4, one coefficient FC per layer); D CondConv w/2 (4 experts); E DY-CNN w/2 (4
experts, softmax temperature annealed 30 -> 1 over the first --anneal-frac of the steps); F thin static: the width
multiplier bisected so its MACs match C's (leanvision.models.match_width), the control a user could pick instead.
Every conv starts by one rule (leanvision.ops.init_convs: a dynamic conv's combined kernel at a static conv's
scale); an SGD step moves a dynamic conv's combined kernel as far as a static one's (DY-CNN's experts get g times
the gradient); the coefficient layers are not weight-decayed and their logits layer trains at --coef-lr-mult times
the learning rate (DY-CNN's ReLU bottleneck at 1x: faster, its units died).
SGD (nesterov, lr 0.05, cosine, wd 5e-4), batch 128, crop + flip, identical for every model. --val-size training
images are held out (reported per epoch in OUT/runs/<run>/metrics.jsonl, with the coefficient spread: std/mean of
each coefficient across a batch's images, per layer); accuracy is on the 10,000-image test set, where each DY-CNN
run also counts the hidden units of every attention still active (leanvision.ops.attention_active_units).
Verdicts, per dynamic model X (C, D, E; means over the seeds on which A, B, F and X finished, >= 2):
acc(X) >= acc(B) + 1.0 in every seed; acc(X) >= acc(F) + 1.0; X recovers >= 40% of the A-B gap; MACs(X) <= 1.1
MACs(B); coefficient spread (test images, after training) >= 5% in some layer. Only meaningful when
acc(A) - acc(B) >= 1.5 points (the precondition). Where a compared gap is under 1 point with fewer than 3 seeds the
summary says so: run a third (--seeds 0 1 2 --resume). Diagnostic, run only when named in --models and judged
beside the verdict, not in it: D8 CondConv w/2 with 8 experts (does CondConv need more than 4?).
MACs are inference MACs (fused conv + kernel fusion + coefficient FCs), params beside them. Writes JSON + PNG into
--out; every finished (model, seed) run is saved at once to dynet_cifar.partial.json, and fit's checkpoints in
OUT/runs/ let --resume continue a run stopped mid-way.
"""

from __future__ import annotations

import argparse
import statistics

import _runs
import torch
from torch import nn

from leanvision.data import make_loader
from leanvision.engine import evaluate, fit, make_optimizer, make_scheduler, standard_step
from leanvision.models import match_width
from leanvision.ops import (
    ConvBnAct,
    DynamicCoefficients,
    DynamicConvBnAct,
    DynamicStep,
    attention_active_units,
    coefficient_spread,
    init_convs,
)
from leanvision.profile import profile

WIDTHS = (32, 32, 64, 64, 128, 128)
G = 4
DYNAMIC = {"C DyNet w/2": ("dynet", G), "D CondConv w/2": ("condconv", G), "E DY-CNN w/2": ("dycnn", G)}
# Run only when named in --models; judged by the same rule, reported beside the verdict, never part of it: CondConv
# with 8 experts, its paper's other main setting, tells whether CondConv's miss at 4 is the expert count.
DIAGNOSTIC = {"D8 CondConv w/2, 8 experts": ("condconv", 8)}
KERNELS = {**DYNAMIC, **DIAGNOSTIC}  # dynamic model -> (mode, kernels per conv)
THIN = "F thin static (MACs of C)"
STATIC = {"A static w": 1.0, "B static w/2": 0.5}  # name -> width multiplier (F's is bisected)
MODELS = (*STATIC, *DYNAMIC, THIN)
ALL_MODELS = (*MODELS, *DIAGNOSTIC)
MIN_GAIN = 1.0  # points over B (every seed) and over the thin net (mean)
MIN_RECOVERED = 0.4  # of the A - B gap
MIN_SPREAD = 0.05  # coefficient std/mean across images, in some layer
SAME_ON_RESUME = ("subset", "epochs", "val_size", "anneal_frac", "lr", "coef_lr_mult", "test_subset")


def vgg6(width: float, mode: str | None = None, num_classes: int = 10, g: int = G) -> nn.Sequential:
    """The 6-conv net at ``width`` x WIDTHS, dynamic convs (``mode``, ``g`` kernels) after the first, one init rule."""
    layers: list[nn.Module] = []
    prev = 3
    for i, w in enumerate(WIDTHS):
        w = max(1, round(w * width))
        layers.append(ConvBnAct(prev, w, 3) if mode is None or i == 0 else DynamicConvBnAct(prev, w, 3, g=g, mode=mode))
        if i % 2 == 1 and i < len(WIDTHS) - 1:
            layers.append(nn.MaxPool2d(2))
        prev = w
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(prev, num_classes))
    return init_convs(model)


def macs(model: nn.Module) -> int:
    return profile(model, torch.zeros(1, 3, 32, 32)).macs


def thin_width() -> float:
    """The width at which the static net's MACs come nearest to DyNet w/2's (C)."""
    return match_width(vgg6, macs(vgg6(0.5, "dynet")), low=0.25, high=1.0).width


def width_of(name: str, thin: float) -> float:
    return 0.5 if name in KERNELS else STATIC.get(name, thin)


def run_name(name: str, seed: int) -> str:
    """The run folder of model ``name`` and ``seed`` under OUT/runs/, e.g. C_s1."""
    return f"{name.split()[0]}_s{seed}"


def train_one(name: str, data: dict, runs: _runs.Runs, *, seed: int, thin: float, args: argparse.Namespace) -> dict:
    torch.manual_seed(seed)
    mode, g = KERNELS.get(name, (None, G))
    model = vgg6(width_of(name, thin), mode, g=g)
    for m in model.modules():
        if isinstance(m, DynamicCoefficients):
            m.lr_mult = args.coef_lr_mult
    loader = make_loader(data["train"], batch_size=128, shuffle=True, seed=seed)  # crop+flip: CIFAR's train default
    opt = make_optimizer(model, "sgd", lr=args.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    total = args.epochs * len(loader)
    sched = make_scheduler(opt, "cosine", total_steps=total)
    step = standard_step if mode is None else DynamicStep(anneal_steps=max(1, round(args.anneal_frac * total)) if
                                                          mode == "dycnn" else 0)  # fmt: skip
    out, last = runs.fit_dir(run_name(name, seed))
    val = make_loader(data["val"], batch_size=500, shuffle=False)
    res = fit(model, loader, epochs=args.epochs, optimizer=opt, scheduler=sched, train_step=step, val_data=val,
              out_dir=out, resume=last, seed=seed, progress=not args.quiet)  # fmt: skip
    test = make_loader(data["test"], batch_size=500, shuffle=False)
    spread = coefficient_spread(model, test) if mode else {}
    prof = profile(model, torch.zeros(1, 3, 32, 32))
    return {
        "model": name,
        "seed": seed,
        "acc": 100 * evaluate(model, test)["acc"],
        "val_acc": 100 * evaluate(model, val)["acc"],
        "width": width_of(name, thin),
        "params": prof.params,
        "macs": prof.macs,
        "unsupported": dict(prof.unsupported),
        "coefficient_spread": spread,
        "coefficient_spread_max": max(spread.values(), default=None),
        # DY-CNN: (hidden units of each attention active on >= 1% of the test images, all); none left = static
        "attention_active_units": attention_active_units(model, test) if mode == "dycnn" else None,
        "coefficient_spread_by_epoch": [h.get("coefficient_spread") for h in res.history] if mode else None,
        "val_acc_by_epoch": [100 * h["val_acc"] for h in res.history],
        # running accuracy on the augmented training batches: tells under-fitting from over-fitting beside val
        "train_acc_by_epoch": [100 * h["train_acc"] for h in res.history],
        "train_s": sum(h["epoch_time_s"] for h in res.history),
    }


def _mean(by: dict, name: str, seeds: list[int], key: str = "acc") -> float:
    return statistics.mean(by[(name, s)][key] for s in seeds)


def verdict(by: dict, runs: list[dict], x: str) -> dict:
    """The verdict of dynamic model ``x`` against A, B and the thin net F, on the seeds all four finished."""
    _, seeds, _ = _runs.complete_seeds(runs, ("A static w", "B static w/2", THIN, x))
    if not seeds:
        return {"seeds": [], "pass": False, "note": "no seed with A, B, F and this model finished"}
    acc = {n: _mean(by, n, seeds) for n in ("A static w", "B static w/2", THIN, x)}
    a, b, f = acc["A static w"], acc["B static w/2"], acc[THIN]
    gap = a - b
    over_b = [round(by[(x, s)]["acc"] - by[("B static w/2", s)]["acc"], 6) for s in seeds]
    recovered = (acc[x] - b) / gap if gap else None
    spread = _mean(by, x, seeds, "coefficient_spread_max")
    checks = {
        "precondition_gap_A_minus_B_ge_1_5": round(gap, 6) >= 1.5,
        "ge_B_plus_1_every_seed": min(over_b) >= MIN_GAIN,
        "ge_thin_plus_1": round(acc[x] - f, 6) >= MIN_GAIN,
        "recovers_ge_40pct_of_gap": recovered is not None and recovered >= MIN_RECOVERED,
        "macs_le_1_1_B": by[(x, seeds[0])]["macs"] <= 1.1 * by[("B static w/2", seeds[0])]["macs"],
        "coefficient_spread_ge_5pct_in_some_layer": spread >= MIN_SPREAD,
    }
    close = {k: v for k, v in {"vs B": acc[x] - b, "vs thin": acc[x] - f}.items() if abs(v) < 1.0}
    return {
        "seeds": seeds,
        "acc_mean": acc[x],
        "minus_B_per_seed": over_b,
        "minus_thin": acc[x] - f,
        "gap_A_minus_B": gap,
        "fraction_of_gap_recovered": recovered,
        "coefficient_spread_max_mean": spread,
        "checks": checks,
        "third_seed_advised": sorted(close) if close and len(seeds) < 3 else [],
        "pass": all(checks.values()) and len(seeds) >= 2,
    }


def summarize(runs: list[dict]) -> dict:
    """Per-model means and costs, and a verdict per dynamic model against B, A and the thin net F."""
    by, _, missing = _runs.complete_seeds(runs, MODELS)
    done = {n: sorted(s for (m, s) in by if m == n) for n in ALL_MODELS}
    present = [n for n in ALL_MODELS if done[n]]
    if "B static w/2" not in present:
        return {"missing_runs": missing, "pass": False, "note": "B has no finished run yet"}
    first = {n: by[(n, done[n][0])] for n in present}
    b_macs = first["B static w/2"]["macs"]
    verdicts = {x: verdict(by, runs, x) for x in DYNAMIC if x in present}
    diagnostic = {x: verdict(by, runs, x) for x in DIAGNOSTIC if x in present}
    return {
        "seeds_per_model": done,
        "missing_runs": missing,
        "acc_mean": {n: _mean(by, n, done[n]) for n in present},
        "acc_per_seed": {n: [by[(n, s)]["acc"] for s in done[n]] for n in present},
        "val_acc_mean": {n: _mean(by, n, done[n], "val_acc") for n in present},
        "width": {n: first[n]["width"] for n in present},
        "macs": {n: first[n]["macs"] for n in present},
        "params": {n: first[n]["params"] for n in present},
        "macs_vs_B": {n: first[n]["macs"] / b_macs for n in present},
        "coefficient_spread_test": {n: first[n]["coefficient_spread"] for n in present if n in KERNELS},
        "attention_active_units": {n: first[n].get("attention_active_units") for n in present if n in DYNAMIC},
        "verdicts": verdicts,
        "diagnostic_verdicts": diagnostic,
        "criterion": "per dynamic model X: acc(X) >= acc(B) + 1.0 in every seed, acc(X) >= acc(F thin, MACs of C) + "
        "1.0, X recovers >= 40% of acc(A) - acc(B), MACs(X) <= 1.1 MACs(B), coefficient spread >= 5% in some layer; "
        "precondition acc(A) - acc(B) >= 1.5; means over the seeds on which A, B, F and X finished (>= 2)",
        "pass": bool(verdicts) and all(v["pass"] for v in verdicts.values()),
    }


COLUMNS = {"model": "model", "seed": "seed", "test acc (%)": ("acc", ".2f"), "val acc (%)": ("val_acc", ".2f"),
           "width": ("width", ".3f"), "params": ("params", ","), "MACs": ("macs", ","),
           "coef spread max": ("coefficient_spread_max", ".3f"), "train s": ("train_s", ".0f")}  # fmt: skip

print_table = _runs.run_table(COLUMNS)


def parse_args() -> argparse.Namespace:
    ap = _runs.make_parser(__doc__)
    _runs.add_protocol_args(ap)
    ap.add_argument("--anneal-frac", type=float, default=0.1,
                    help="DY-CNN: fraction of the steps over which the temperature falls 30 -> 1")  # fmt: skip
    ap.add_argument("--lr", type=float, default=0.05)
    # At 1x the coefficients barely depend on the image (spread < 1% after 3 epochs on 5k images); at 10x 4-6%.
    ap.add_argument("--coef-lr-mult", type=float, default=10.0, help="learning rate of the logits layers / lr")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(ALL_MODELS), metavar="MODEL")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    _runs.add_run_args(ap, "dynet_cifar", rewrite=False)
    args = ap.parse_args()
    if not 0 < args.anneal_frac <= 1:
        ap.error(f"--anneal-frac must be in (0, 1] (DY-CNN anneals over about 0.03-0.1), got {args.anneal_frac}")
    return args


def main() -> None:
    args = parse_args()

    def run(runs: _runs.Runs) -> None:
        done = {(r["model"], r["seed"]) for r in runs.runs}
        data: dict = {}
        thin = thin_width()
        for seed in args.seeds:
            todo = [n for n in args.models if (n, seed) not in done]
            if not todo:
                continue
            _runs.protocol_data(args, seed, data)
            for name in todo:
                runs.add(train_one(name, data, runs, seed=seed, thin=thin, args=args))
        runs.runs = _runs.in_order(runs.runs, sorted({r["seed"] for r in runs.runs}), ALL_MODELS)

    panels = [("acc", "CIFAR-10 test acc (%)"), ("minus_B", "test acc - B's, same seed (points)"), ("macs", "MACs"),
              ("coefficient_spread_max", "coefficient spread (max)"), ("train_s", "train time (s)")]  # fmt: skip
    title = f"static vs dynamic vs thin VGG-6, {args.subset or 'all'} imgs x {args.epochs} ep"

    def plot(runs: list[dict], summary: dict) -> None:
        # the rule's margins are 1 point on an 82% scale: the gap to B of the same seed is what a reader compares
        b_acc = {r["seed"]: r["acc"] for r in runs if r["model"] == "B static w/2"}
        rows = [
            {**r, "coefficient_spread_max": r["coefficient_spread_max"] or 0.0,
             "minus_B": r["acc"] - b_acc[r["seed"]] if r["seed"] in b_acc else None}
            for r in runs
        ]  # fmt: skip
        _runs.plot_runs(rows, panels, args.out / "dynet_cifar.png", title)

    _runs.main(args, "dynet_cifar", SAME_ON_RESUME, run, summarize, print_table, plot, rewrite=False)


if __name__ == "__main__":
    main()
