"""Time data loading: CIFAR-10 from its archive (cold and warm), MNIST's IDX files, and one loader epoch.

    python benchmarks/data_loading.py --data-dir DIR                 # DIR holds cifar10/ (an archive) and MNIST/
    python benchmarks/data_loading.py --data-dir DIR --repeats 5 --threads 1 2

Cold: load_dataset("cifar10", split="train") with an empty cache (a new $LEANVISION_CACHE each time): stream the
archive, decode every image, write train.npz and test.npz. Warm: the train and the test split again, read from those
files. Unpacked files: the time to write the archive's images out as one file each, the layout leanvision does not
cache (for comparison). IDX: load_dataset("mnist", split="train"), 60,000 images read from the IDX files (on every
load). Epoch: one pass of make_loader over the CIFAR-10 train split, batch 128, with and without crop + flip, for
each torch thread count in --threads. Every time is measured --repeats times; the JSON keeps them all and the
median. Run it on a quiet machine: it refuses to start above --max-load (--allow-busy runs anyway) and records the
CPU cores used by other processes while it ran. Writes OUT/data_loading.json.
"""

from __future__ import annotations

import json
import os
import statistics
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import _runs
import torch
from _machine import add_load_args, check_quiet, other_cpu

from leanvision._io import atomic_write_text
from leanvision.data import load_dataset, make_loader


def times(fn: Callable[[], object], repeats: int) -> dict:
    """Wall seconds of ``repeats`` calls of ``fn``, and their median."""
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return {"seconds": runs, "median_s": statistics.median(runs)}


def one_epoch(loader) -> None:
    for _ in loader:
        pass


def main() -> None:
    ap = _runs.make_parser(__doc__, data_help="root holding cifar10/ and MNIST/ (else $LEANVISION_DATA)")
    ap.add_argument("--repeats", type=int, default=3, help="times each measurement is taken")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts for the epoch")
    _runs.add_out_arg(ap, "data_loading")
    add_load_args(ap)
    args = ap.parse_args()
    load = check_quiet(args.max_load, args.allow_busy)
    root = args.data_dir or os.environ.get("LEANVISION_DATA")
    archives = sorted(Path(root, "cifar10").glob("cifar10*.tar.gz")) if root else []
    result: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "torch": torch.__version__,
                    "load_avg_1m": load, "times": {}}  # fmt: skip
    timed = result["times"]
    with tempfile.TemporaryDirectory(prefix="leanvision-data-timing-") as tmp, other_cpu(result):
        caches = iter(range(args.repeats))

        def cold() -> None:
            os.environ["LEANVISION_CACHE"] = str(Path(tmp) / f"cache{next(caches)}")  # empty: nothing decoded yet
            load_dataset("cifar10", root=root, split="train")

        timed["cifar10_cold_train"] = times(cold, args.repeats)
        timed["cifar10_warm_train"] = times(lambda: load_dataset("cifar10", root=root, split="train"), args.repeats)
        timed["cifar10_warm_test"] = times(lambda: load_dataset("cifar10", root=root, split="test"), args.repeats)
        if archives:
            result["cifar10_archive"] = {"name": archives[0].name, "bytes": archives[0].stat().st_size}
            files = iter(range(args.repeats))

            def unpack() -> None:
                with tarfile.open(archives[0]) as tf:
                    tf.extractall(Path(tmp) / f"files{next(files)}", filter="data")

            timed["cifar10_archive_as_files"] = times(unpack, args.repeats)
        timed["mnist_idx_train"] = times(lambda: load_dataset("mnist", root=root, split="train"), args.repeats)
        train = load_dataset("cifar10", root=root, split="train")
        for threads in args.threads:
            torch.set_num_threads(threads)
            for augment in (True, False):
                loader = make_loader(train, batch_size=128, augment=augment, seed=0)
                key = f"cifar10_epoch_{'crop_flip' if augment else 'plain'}_{threads}_threads"
                timed[key] = times(lambda loader=loader: one_epoch(loader), args.repeats)
    result["busy"] = load > args.max_load or (result["other_cores"] or 0.0) > args.max_load
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "data_loading.json", json.dumps(result, indent=2) + "\n")
    print(
        _runs.markdown([{"what": k, **v} for k, v in timed.items()], {"what": "what", "median s": ("median_s", ".3f")})
    )
    print(f"other processes used {result['other_cores']} cores" + (" - BUSY machine" if result["busy"] else ""))


if __name__ == "__main__":
    main()
