"""BBG ablation on a deep no-skip binary net: XNOR vs balanced weights vs gated residual (arXiv 1909.12117).

    python benchmarks/bbg_binary.py --data-dir DIR                       # Fashion-MNIST, 4 variants x 2 seeds x 3 ep
    python benchmarks/bbg_binary.py --dataset cifar10 --subset 10000     # CIFAR-10 10k subset instead
    python benchmarks/bbg_binary.py --out OUT --resume                   # continue a stopped run in OUT
    python benchmarks/bbg_binary.py --summarize OUT/bbg_binary.json      # recompute the verdict, no training

DIR holds FashionMNIST/ (or cifar10/); or set $LEANVISION_DATA and omit --data-dir.
Net: float stem conv (16) + 6 binary 3x3 convs 16-16-M-32-32-M-64-64, no skip connections, GAP, float FC.
Variants: A = XNOR sign(W)*mean|W|, no gate; B = A + balanced (per-filter centred) weights; C = A + gated
residual; D = BBG (B + C). Latent weights start N(0.01, 0.05) (a slight bias so balance matters) and are clipped
to [-1, 1] after every step; Adam 2e-3, cosine, batch 128. A validation split is held out of the training data
(reported per epoch, never used to pick anything); accuracy is the test split's after the last epoch.
Pass: acc(D) >= acc(A) + 1.0 (mean over seeds), and the balance metric (mean over binary filters of |p+ - 0.5|,
after training) of B and of D is <= 0.02 and below A's. Binary OPs and float MACs (gate overhead) are reported.
Writes JSON + PNG into --out; every finished (variant, seed) run is saved at once to bbg_binary.partial.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import _runs
import torch

from leanvision.data import load_dataset, make_loader
from leanvision.engine import evaluate, fit, make_optimizer, make_scheduler, standard_step
from leanvision.models import BinaryVGG
from leanvision.ops.binary import BinaryConv2d, balance_error, clip_latent_weights, sign_balance
from leanvision.profile import latency, profile
from leanvision.report import bar_panels, line_panels

VARIANTS = {  # name -> (balanced, residual)
    "A_xnor": (False, "none"),
    "B_balanced": (True, "none"),
    "C_gated": (False, "gate"),
    "D_bbg": (True, "gate"),
}
WIDTHS = (16, 16, "M", 32, 32, "M", 64, 64)
MIN_GAIN = 1.0  # points of test accuracy, D over A, mean over seeds
MAX_BALANCE = 0.02
SAME_ON_RESUME = ("dataset", "subset", "test_subset", "epochs", "lr", "batch_size", "val_size", "init_mean", "init_std")
DATASETS = {"fashion_mnist": 1, "cifar10": 3}  # name -> input channels


def build(variant: str, in_chans: int, *, init_mean: float, init_std: float) -> BinaryVGG:
    balanced, residual = VARIANTS[variant]
    model = BinaryVGG(in_chans=in_chans, stem_chs=16, widths=WIDTHS, balanced=balanced, residual=residual)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, BinaryConv2d):
                m.weight.normal_(init_mean, init_std).clamp_(-1, 1)
    return model


def max_imbalance(model: torch.nn.Module) -> float:
    """The worst filter's |p+ - 0.5| (the spec asks B/D to stay within 0.5 +- 0.05)."""
    return max(float((sign_balance(m) - 0.5).abs().max()) for m in model.modules() if isinstance(m, BinaryConv2d))


def train_one(variant: str, train, val, test, *, seed: int, args: argparse.Namespace, in_chans: int) -> dict:
    torch.manual_seed(seed)
    model = build(variant, in_chans, init_mean=args.init_mean, init_std=args.init_std)
    loader = make_loader(train, batch_size=args.batch_size, shuffle=True, seed=seed)
    opt = make_optimizer(model, "adam", lr=args.lr, weight_decay=0.0)  # no decay on latent binary weights
    sched = make_scheduler(opt, "cosine", total_steps=args.epochs * len(loader))
    balance = [{"epoch": 0, "balance": balance_error(model), "max_imbalance": max_imbalance(model)}]

    def step(model, inputs, targets, ctx):
        if ctx.epoch + 1 > len(balance):  # first batch of a new epoch: p+ after the previous one
            balance.append({"epoch": ctx.epoch, "balance": balance_error(model), "max_imbalance": max_imbalance(model)})
        loss, outputs = standard_step(model, inputs, targets, ctx)
        clip_latent_weights(model)  # latent weights stay in [-1, 1], inside the clip-STE window
        return loss, outputs

    t0 = time.perf_counter()
    res = fit(
        model,
        loader,
        epochs=args.epochs,
        optimizer=opt,
        scheduler=sched,
        train_step=step,
        val_data=make_loader(val, batch_size=500, shuffle=False),
        seed=seed,
        progress=not args.quiet,
    )
    history = res.history
    balance.append({"epoch": args.epochs, "balance": balance_error(model), "max_imbalance": max_imbalance(model)})
    train_s = time.perf_counter() - t0
    metrics = evaluate(model, make_loader(test, batch_size=500, shuffle=False))
    x = torch.zeros(1, *test[0][0].shape)
    prof = profile(model, x)
    lat = latency(model, x, warmup=3, iters=args.latency_iters)
    return {
        "variant": variant,
        "seed": seed,
        "acc": 100 * metrics["acc"],
        "val_acc": [100 * h["val_acc"] for h in history],
        "train_loss": [h["train_loss"] for h in history],
        "balance_per_epoch": balance,
        "balance": balance[-1]["balance"],
        "max_imbalance": max(b["max_imbalance"] for b in balance[1:]),
        "params": prof.params,
        "macs": prof.macs,
        "bops": prof.bops,
        "ops": prof.ops,
        "latency_ms_bs1_eager_float_sim": lat.median_ms,
        "train_s": train_s,
    }


def summarize(runs: list[dict]) -> dict:
    """The verdict from a list of runs; only seeds with all four variants count."""
    by, seeds, missing = _runs.complete_seeds(runs, VARIANTS, key="variant")
    if not seeds:
        return {"complete_seeds": [], "missing": missing, "pass": False}
    acc = {v: statistics.mean(by[(v, s)]["acc"] for s in seeds) for v in VARIANTS}
    bal = {v: statistics.mean(by[(v, s)]["balance"] for s in seeds) for v in VARIANTS}
    gain = round(acc["D_bbg"] - acc["A_xnor"], 6)
    balanced_ok = all(bal[v] <= MAX_BALANCE and bal[v] < bal["A_xnor"] for v in ("B_balanced", "D_bbg"))
    first = {v: by[(v, seeds[0])] for v in VARIANTS}
    return {
        "complete_seeds": seeds,
        "missing": missing,
        "acc_mean": acc,
        "acc_per_seed": {v: [by[(v, s)]["acc"] for s in seeds] for v in VARIANTS},
        "balance_mean": bal,
        "max_imbalance": {v: max(by[(v, s)]["max_imbalance"] for s in seeds) for v in VARIANTS},
        "gain_D_over_A": gain,
        "gain_C_over_A": round(acc["C_gated"] - acc["A_xnor"], 6),
        "gain_B_over_A": round(acc["B_balanced"] - acc["A_xnor"], 6),
        "cost": {v: {k: first[v][k] for k in ("params", "macs", "bops", "ops")} for v in VARIANTS},
        "gate_float_macs": first["D_bbg"]["macs"] - first["A_xnor"]["macs"],
        "criterion": f"acc(D) - acc(A) >= {MIN_GAIN} (mean over seeds); balance of B and D <= {MAX_BALANCE} and "
        "< balance of A (mean over filters of |p+ - 0.5| after training, mean over seeds)",
        "gain_ok": gain >= MIN_GAIN,
        "balance_ok": balanced_ok,
        "pass": gain >= MIN_GAIN and balanced_ok and not missing,
    }


def print_table(runs: list[dict], summary: dict) -> None:
    print(
        "\n| variant | seed | test acc (%) | balance abs(p+ - 0.5) | float MACs | BOPs | OPs | train s |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    for r in runs:
        print(
            f"| {r['variant']} | {r['seed']} | {r['acc']:.2f} | {r['balance']:.4f} | {r['macs']:,} | {r['bops']:,} "
            f"| {r['ops']:,.0f} | {r['train_s']:.0f} |"
        )
    print(json.dumps(summary, indent=2))


def plot(runs: list[dict], out: Path, title: str) -> None:
    rows = [{**r, "model": f"{r['variant']} s{r['seed']}"} for r in runs]
    bar_panels(
        rows,
        [("acc", "test acc (%)"), ("balance", "mean abs(p+ - 0.5)"), ("macs", "float MACs"), ("bops", "binary OPs")],
        out / "bbg_binary.png",
        title=title,
    )
    series = {f"{r['variant']} s{r['seed']}": r["balance_per_epoch"] for r in runs}
    line_panels(
        series,
        [("balance", "mean abs(p+ - 0.5)"), ("max_imbalance", "worst filter abs(p+ - 0.5)")],
        out / "bbg_binary_balance.png",
        title="weight sign balance during training",
    )


def main() -> None:
    ap = _runs.make_parser(__doc__, "root holding FashionMNIST/ or cifar10/ (else $LEANVISION_DATA)")
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="fashion_mnist")
    ap.add_argument("--subset", type=int, default=0, help="class-balanced training subset (seeded); 0 = all")
    ap.add_argument("--val-size", type=int, default=5000, help="held out of the training split, class-balanced")
    ap.add_argument("--test-subset", type=int, default=0, help="evaluate on a seeded test subset (smoke runs); 0 = all")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--init-mean", type=float, default=0.01)
    ap.add_argument("--init-std", type=float, default=0.05)
    ap.add_argument("--latency-iters", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quiet", action="store_true")
    _runs.add_run_args(ap, "bbg_binary")
    args = ap.parse_args()
    if args.summarize:
        _runs.summarize_file(args.summarize, summarize, print_table)
        return
    partial, saved_args, runs = _runs.prepare(args, "bbg_binary", SAME_ON_RESUME)
    done = {(r["variant"], r["seed"]) for r in runs}
    if done:
        print(f"--resume: {len(done)} finished run(s) in {partial}")

    in_chans = DATASETS[args.dataset]
    common = {"root": args.data_dir, "val_size": args.val_size}
    test = load_dataset(args.dataset, root=args.data_dir, split="test", subset=args.test_subset or None)
    val = load_dataset(args.dataset, split="val", **common)
    for seed in args.seeds:
        todo = [v for v in args.variants if (v, seed) not in done]
        if not todo:
            continue
        train = load_dataset(args.dataset, split="train", subset=args.subset or None, seed=seed, **common)
        for variant in todo:
            runs.append(train_one(variant, train, val, test, seed=seed, args=args, in_chans=in_chans))
            print(json.dumps({k: v for k, v in runs[-1].items() if k != "balance_per_epoch"}), flush=True)
            _runs.save_partial(partial, saved_args, runs)

    runs = _runs.in_order(runs, args.seeds, args.variants, key="variant")
    summary = summarize(runs)
    _runs.save_result(args.out / "bbg_binary.json", saved_args, runs, summary)
    n_train = args.subset or "all"
    plot(runs, args.out, f"BBG ablation, {args.dataset} ({n_train} train imgs) x {args.epochs} ep")
    print_table(runs, summary)


if __name__ == "__main__":
    main()
