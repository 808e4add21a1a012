"""Ship a finished baseline: its best-on-validation weights as a small checkpoint beside its config.

    python benchmarks/baselines/ship.py benchmarks/baselines/resnet20_cifar10.yaml --data-dir DIR

Reads the run the config trained (its out_dir must hold results.json: the run finished), writes
benchmarks/baselines/<config name>.pt without optimizer / scheduler / RNG state (float32 weights, or float16 when
float32 would exceed 2 MiB; none when float16 would too: the config retrains it) and <config name>.json with the
run's results and the test accuracy of the shipped file measured again beside the original's, so a precision
change that moved accuracy shows, and the run's per-epoch history; <config name>.png plots that history (training
vs validation accuracy, validation loss). The compression benchmarks start from the .pt (their --baseline).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import yaml

from leanvision._io import atomic_write_text
from leanvision.engine import evaluate_checkpoint, slim_checkpoint
from leanvision.report import line_panels

MAX_BYTES = 2 * 2**20  # the repository's limit for a tracked file
HISTORY_KEYS = ("epoch", "train_acc", "val_acc", "train_loss", "val_loss", "lr", "epoch_time_s")


def ship(config: Path, data_dir: str | None) -> dict:
    """Slim the run's best.pt next to ``config``; re-measure test accuracy of both files; write the JSON and plot."""
    cfg = yaml.safe_load(config.read_text())
    run = Path(cfg["out_dir"])
    results = run / "results.json"
    if not results.is_file():
        raise SystemExit(f"{run} has no results.json: the run has not finished; continue it with leanvision train "
                         f"{config} --resume")  # fmt: skip
    dst = config.with_suffix(".pt")
    dtype = None
    slim_checkpoint(run / "best.pt", dst)
    if dst.stat().st_size > MAX_BYTES:
        dtype = torch.float16
        slim_checkpoint(run / "best.pt", dst, dtype=dtype)
    size = dst.stat().st_size
    shipped = size <= MAX_BYTES
    if not shipped:  # too large for the repository even in float16: record the run, and the config retrains it
        dst.unlink()
    metrics = (run / "metrics.jsonl").read_text().splitlines()
    history = [{k: h[k] for k in HISTORY_KEYS} for h in map(json.loads, metrics)]
    acc = {name: 100 * evaluate_checkpoint(path, data_dir=data_dir, progress=False).acc
           for name, path in (("original", run / "best.pt"), ("shipped", dst)) if path.is_file()}  # fmt: skip
    record = {
        "config": config.name,
        "checkpoint": dst.name if shipped else None,
        "bytes": size,
        "weights_dtype": "float16" if dtype else "float32 (as trained)",
        "test_acc_original": acc["original"],
        "test_acc_shipped": acc.get("shipped"),
        "run_results": json.loads(results.read_text()),
        "history": history,
    }
    if not shipped:
        record["not_shipped"] = f"{size:,} bytes in {record['weights_dtype']} exceed the {MAX_BYTES:,}-byte limit"
    atomic_write_text(config.with_suffix(".json"), json.dumps(record, indent=2) + "\n")
    # one line per split: the augmented training batches (running means over each epoch) and the held-out images
    curves = {name: [{"epoch": h["epoch"], "acc": 100 * h[f"{split}_acc"], "loss": h[f"{split}_loss"]} for h in history]
              for name, split in (("training batches (augmented)", "train"), ("validation", "val"))}  # fmt: skip
    line_panels(
        curves,
        [("acc", "accuracy (%)"), ("loss", "loss")],
        config.with_suffix(".png"),
        title=f"{config.stem}: test acc {acc['original']:.2f}%",
    )
    return record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("configs", type=Path, nargs="+", help="baseline training configs (their runs have finished)")
    ap.add_argument("--data-dir", default=os.environ.get("LEANVISION_DATA"), help="holds cifar10/")
    args = ap.parse_args()
    for config in args.configs:
        rec = ship(config, args.data_dir)
        if rec["checkpoint"] is None:
            print(f"{config.stem}: weights not shipped ({rec['not_shipped']}); test acc {rec['test_acc_original']:.2f} "
                  f"(run); history in {config.with_suffix('.json')}")  # fmt: skip
        else:
            print(f"{rec['checkpoint']}: {rec['bytes']:,} bytes, {rec['weights_dtype']}, test acc "
                  f"{rec['test_acc_original']:.2f} (run) / {rec['test_acc_shipped']:.2f} (shipped)")  # fmt: skip


if __name__ == "__main__":
    main()
