"""bf16 mixed-precision training against float32: the same CIFAR-10 runs, accuracy and training time side by side.

    python benchmarks/precision_cifar.py --data-dir DIR                 # ResNet-20, 10k images, 15 epochs, 2 seeds
    python benchmarks/precision_cifar.py --out OUT --resume              # continue a stopped run (mid-run too)
    python benchmarks/precision_cifar.py --summarize OUT/precision_cifar.json

DIR holds cifar10/ (or set $LEANVISION_DATA). Every run is `leanvision train` (leanvision.engine.train) with one
recipe (SGD lr 0.1 cosine, wd 5e-4, batch 128, crop + flip, channels-last) and only `precision` changed; the two
precisions alternate (fp32 then bf16 for each seed), so both meet the same machine load. Training time is the
median over epochs of (training images / images per second): validation excluded.
Verdict, decided before the run: bf16 is a free speed-up here when |mean acc(bf16) - mean acc(fp32)| is at most the
larger seed-to-seed spread of the two precisions, and training is >= 1.3x faster (median epoch time ratio).
Writes JSON + PNG into --out; every finished run is saved at once to precision_cifar.partial.json.
"""

from __future__ import annotations

import argparse
import statistics

import _runs

from leanvision.engine import train
from leanvision.names import PRECISIONS  # fp32 first: the baseline of each seed

MIN_SPEEDUP = 1.3
SAME_ON_RESUME = ("model", "subset", "val_size", "epochs", "batch_size", "lr", "threads", "test_subset")


def run_one(precision: str, seed: int, runs: _runs.Runs, args: argparse.Namespace) -> dict:
    folder, last = runs.fit_dir(f"{precision}_s{seed}")
    cfg = {"model": args.model, "dataset": "cifar10", "data_dir": args.data_dir, "subset": args.subset or None,
           "val_size": args.val_size, "test_subset": args.test_subset or None, "epochs": args.epochs,
           "batch_size": args.batch_size, "lr": args.lr, "weight_decay": 5e-4, "seed": seed, "threads": args.threads,
           "channels_last": True, "precision": precision, "out_dir": str(folder)}  # fmt: skip
    res = train(cfg, resume=last is not None, progress=not args.quiet)
    n_train = args.subset or 50_000 - args.val_size
    epoch_s = [n_train / h["images_per_s"] for h in res.history]
    return {"precision": precision, "seed": seed, "test_acc": 100 * res.test_acc,
            "best_val_acc": 100 * (res.best_val_acc or 0.0), "train_epoch_s": statistics.median(epoch_s),
            "train_epoch_s_by_epoch": epoch_s}  # fmt: skip


def summarize(runs: list[dict]) -> dict:
    """Mean accuracy and seed spread per precision, their difference, and the training speed-up of bf16."""
    by, seeds, missing = _runs.complete_seeds(runs, PRECISIONS, key="precision")
    if not seeds:
        return {"complete_seeds": [], "missing": missing, "pass": False}
    acc = {p: [by[(p, s)]["test_acc"] for s in seeds] for p in PRECISIONS}
    mean = {p: statistics.mean(v) for p, v in acc.items()}
    spread = {p: max(v) - min(v) for p, v in acc.items()}
    epoch_s = {p: statistics.median(by[(p, s)]["train_epoch_s"] for s in seeds) for p in PRECISIONS}
    diff, speedup = mean["bf16"] - mean["fp32"], epoch_s["fp32"] / epoch_s["bf16"]
    checks = {
        "accuracy_within_seed_spread": len(seeds) >= 2 and abs(diff) <= max(spread.values()),
        f"speedup_ge_{MIN_SPEEDUP}": speedup >= MIN_SPEEDUP,
    }
    return {"complete_seeds": seeds, "missing": missing, "test_acc_per_seed": acc, "test_acc_mean": mean,
            "seed_spread": spread, "bf16_minus_fp32": diff, "train_epoch_s": epoch_s, "bf16_speedup": speedup,
            "checks": checks, "pass": all(checks.values()) and not missing}  # fmt: skip


print_table = _runs.run_table({
    "precision": "precision",
    "seed": "seed",
    "test acc (%)": ("test_acc", ".2f"),
    "best val acc (%)": ("best_val_acc", ".2f"),
    "train s / epoch": ("train_epoch_s", ".1f"),
})  # fmt: skip


def parse_args() -> argparse.Namespace:
    ap = _runs.make_parser(__doc__)
    _runs.add_split_args(ap, 10_000)
    ap.add_argument("--test-subset", type=int, default=0, help="class-balanced test subset (smoke runs); 0 = all")
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    _runs.add_run_args(ap, "precision_cifar")
    return ap.parse_args()


def main() -> None:
    args = parse_args()

    def run(runs: _runs.Runs) -> None:
        done = {(r["precision"], r["seed"]) for r in runs.runs}
        for seed in args.seeds:
            for p in PRECISIONS:  # alternate, so both precisions meet the same machine load
                if (p, seed) not in done:
                    runs.add(run_one(p, seed, runs, args))

    def plot(runs: list[dict], summary: dict) -> None:
        _runs.plot_runs(runs, [("test_acc", "CIFAR-10 test acc (%)"), ("train_epoch_s", "training s / epoch")],
                        args.out / "precision_cifar.png",
                        f"{args.model}: fp32 vs bf16, {args.subset or 'all'} imgs x {args.epochs} ep",
                        key="precision")  # fmt: skip

    _runs.main(args, "precision_cifar", SAME_ON_RESUME, run, summarize, print_table, plot)


if __name__ == "__main__":
    main()
