"""The cost ledger of Adversarial AutoAugment (arXiv 1912.11188) on a quiet machine: seconds per epoch of each row.

    python benchmarks/aaa_cost.py --copies 4 --precision bf16 --threads 1,all   # quiet machine
    python benchmarks/aaa_cost.py --images 256 --rounds 1 --allow-busy --out /tmp/cost   # smoke test

aaa_cifar.py's training runs share the machine with other jobs, so their seconds per epoch rank nothing. Here each
round trains every search row of aaa_cifar.py (its recipe, --copies and --precision; the probe, a diagnostic that
AAA does not need, off) for 2 epochs on --images class-balanced CIFAR-10 images, the rows in a rotating order; a
row's cost is the median over rounds of its 2nd epoch (the 1st warms up): training seconds per 20,000 images (the
verdict protocol's epoch; AAA's controller update, once per epoch, is inside it). Writes OUT/aaa_cost.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import _runs
from _machine import add_load_args, check_quiet, other_cpu
from aaa_cifar import ROWS, parser, search_config

from leanvision.augment import run as augsearch
from leanvision.names import PRECISIONS

EPOCH_IMAGES = 20_000  # the verdict protocol's training images per epoch


def time_rows(args: argparse.Namespace, threads: int) -> dict[str, list[float]]:
    """Training seconds per EPOCH_IMAGES images of every row, one value per round."""
    seconds: dict[str, list[float]] = {name: [] for name in ROWS}
    names = list(ROWS)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            with tempfile.TemporaryDirectory(prefix="leanvision-aaa-cost-") as tmp:
                cfg = {**search_config(name, args, r, Path(tmp)), "threads": threads, "probe": 0}
                last = augsearch(cfg, progress=False).history[-1]
            seconds[name].append(EPOCH_IMAGES / last["images_per_s"])
            print(f"{threads} thread(s), round {r + 1}/{args.rounds}: {name} {seconds[name][-1]:.1f} s per epoch")
    return seconds


def main() -> None:
    ap = _runs.make_parser(__doc__)
    ap.add_argument("--images", type=int, default=2560, help="training images per timed epoch")
    ap.add_argument("--rounds", type=int, default=3, help="rounds over the rows (medians)")
    ap.add_argument("--copies", type=int, default=4, help="M of random_ba and aaa (aaa_cifar.py's --copies)")
    ap.add_argument("--precision", default="bf16", choices=list(PRECISIONS))
    ap.add_argument("--threads", default="1,all", help=_runs.THREADS_HELP)
    add_load_args(ap)
    _runs.add_out_arg(ap, "aaa_cifar")
    args = ap.parse_args()
    thread_counts = _runs.threads_of(args)
    load_before = check_quiet(args.max_load, args.allow_busy)
    # aaa_cifar.py's recipe and defaults, on --images images with no validation split and a token test set
    recipe = vars(parser().parse_args([]))
    run_args = argparse.Namespace(**{**recipe, **vars(args), "subset": args.images, "val_size": 0, "test_subset": 100,
                                     "epochs": 2})  # fmt: skip
    ledger = {}
    with other_cpu({}) as load:  # the CPU cores other processes used meanwhile: a quiet run shows ~0
        for threads in thread_counts:
            seconds = time_rows(run_args, threads)
            median = {k: statistics.median(v) for k, v in seconds.items()}
            ledger[str(threads)] = {
                "train_epoch_s": median,
                "train_epoch_s_by_round": seconds,
                "vs_crop_flip_cutout": {k: v / median["crop_flip_cutout"] for k, v in median.items()},
            }
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "epoch_images": EPOCH_IMAGES,
              "load_avg_1m": load_before, "other_cores": load.get("other_cores"), "allow_busy": args.allow_busy,
              "by_threads": ledger}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    _runs.write_json(args.out / "aaa_cost.json", result)
    print(f"training s per {EPOCH_IMAGES:,}-image epoch (median of {args.rounds}), and the ratio to crop+flip+Cutout:")
    for threads, cell in ledger.items():
        print(f"{threads} thread(s): " + ", ".join(f"{k} {v:.1f} s ({cell['vs_crop_flip_cutout'][k]:.2f}x)"
                                                 for k, v in cell["train_epoch_s"].items()))  # fmt: skip


if __name__ == "__main__":
    main()
