"""Batch-1 latency of instance-wise pruning's gathered path vs the dense net (arXiv 1907.11840), per theta.

    python benchmarks/latency_instance.py --data-dir DIR                       # quiet machine, 50 test images
    python benchmarks/latency_instance.py --data-dir DIR --allow-busy --images 8 --rounds 2 --out /tmp/smoke

Loads the B net of benchmarks/instance_sparsity.py (--result: its JSON; the lambda chosen there on validation,
or --lam; seed 0) with the layers its CV selected and its threshold rule. For each theta, ``fast_module()`` (each
pruned conv gathers the image's kept input channels and the same channels of its weight) is timed beside the dense
net on the same fixed test images (a seeded class-balanced subset): interleaved rounds, the order of the models
rotating from round to round, each model running every image once per round after a warm-up pass; reported: the
median ms per image over all (image, round) calls. MACs per image: ``macs_per_instance`` of the same images.
Target, per theta > 0: latency reduction >= 0.5 x mean MAC reduction, i.e.
1 - median(fast) / median(dense) >= 0.5 (1 - mean MACs / dense MACs). theta = 0 saves no MACs; its row shows the
cost of computing the channel norms. The outputs of the fast path are checked against the masked dense forward.
Run it on a quiet machine: it refuses to start when the 1-minute load average exceeds --max-load (default 0.5;
--allow-busy runs anyway) and records the CPU cores used by OTHER processes while timing (busy above --max-load).
Writes JSON + PNG into --out.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from _machine import add_load_args, check_quiet, cores_text, other_cpu
from instance_sparsity import THETAS, build_model, summarize
from torch import nn

from leanvision._io import atomic_write_text
from leanvision.compress.instance import InstanceSparsity
from leanvision.data import load_dataset, make_loader
from leanvision.report import bar_panels

TARGET = 0.5  # latency reduction >= TARGET x mean MAC reduction
DENSE = "dense"


def load_b(result: Path, lam: float | None) -> tuple[nn.Module, list[str], str, float]:
    """B's seed-0 weights, its CV-selected layers, the threshold rule and lambda, from instance_sparsity's JSON."""
    data = json.loads(result.read_text())
    runs = data["runs"]
    if lam is None:
        lam = (data.get("summary") or summarize(runs))["lambda_choice_on_val"]["selected_lam"]
    run = next((r for r in runs if r["lam"] == lam and r["seed"] == 0 and r.get("weights")), None)
    if run is None:
        sys.exit(f"{result} holds no finished seed-0 B run with lambda {lam:g}")
    model = build_model()
    model.load_state_dict(torch.load(result.parent / run["weights"], weights_only=True))
    return model.eval(), run["selections"]["cv"], data["args"].get("rule", "mean"), lam


def test_images(data_dir: str | None, n: int) -> list[torch.Tensor]:
    """A fixed, seeded class-balanced set of n normalised test images, each (1, 3, 32, 32)."""
    test = load_dataset("cifar10", root=data_dir, split="test", subset=n, seed=0)
    return [x for x, _ in make_loader(test, batch_size=1, shuffle=False)]


def fast_models(sp: InstanceSparsity) -> dict[str, nn.Module]:
    """The dense net and one gathered (fast) module per theta, all sharing the same weights."""
    models: dict[str, nn.Module] = {DENSE: sp.model}
    for theta in THETAS:
        sp.theta = theta
        models[f"theta {theta:g}"] = sp.fast_module()
    return models


def check_outputs(sp: InstanceSparsity, models: dict[str, nn.Module], xs: list[torch.Tensor]) -> dict[str, float]:
    """Max |fast - masked dense| over the images, per theta (float32 rounding only)."""
    batch, diffs = torch.cat(xs), {}
    with torch.no_grad():
        for theta in THETAS:
            sp.theta = theta
            with sp.active():
                ref = sp.model(batch)
            fast = torch.cat([models[f"theta {theta:g}"](x) for x in xs])
            diffs[f"{theta:g}"] = (fast - ref).abs().max().item()
    return diffs


def mac_reductions(sp: InstanceSparsity, xs: list[torch.Tensor]) -> dict[str, dict]:
    """Mean MACs per image of the timed images, per theta (masks do not depend on the batch)."""
    out = {}
    for theta in THETAS:
        sp.theta = theta
        m = sp.macs_per_instance([torch.cat(xs)])
        out[f"{theta:g}"] = {"dense": m.dense, "mean": m.mean, "min": m.min, "max": m.max, "reduction": m.reduction}
    return out


@contextlib.contextmanager
def gc_paused():
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def time_interleaved(models: dict[str, nn.Module], xs: list[torch.Tensor], rounds: int) -> dict[str, list[float]]:
    """Per-image ms of every model: each round runs every image once through each model, the order rotating."""
    names = list(models)
    times: dict[str, list[float]] = {n: [] for n in names}
    with torch.inference_mode(), gc_paused():
        for name in names:  # warm-up pass
            for x in xs:
                models[name](x)
        for r in range(rounds):
            k = r % len(names)
            for name in names[k:] + names[:k]:
                model, out = models[name], times[name]
                for x in xs:
                    t0 = time.perf_counter()
                    model(x)
                    out.append(1e3 * (time.perf_counter() - t0))
    return times


def rows_and_targets(times: dict[str, list[float]], macs: dict[str, dict]) -> tuple[list[dict], dict]:
    dense_ms = statistics.median(times[DENSE])
    rows = [{"model": DENSE, "median_ms": dense_ms, "mean_macs_M": macs["0"]["dense"] / 1e6}]
    targets = {}
    for theta in THETAS:
        key, m = f"{theta:g}", macs[f"{theta:g}"]
        ms = statistics.median(times[f"theta {key}"])
        lat_red = 1 - ms / dense_ms
        rows.append({"model": f"theta {key}", "median_ms": ms, "mean_macs_M": m["mean"] / 1e6})
        targets[key] = {
            "median_ms": ms,
            "latency_reduction": lat_red,
            "mac_reduction": m["reduction"],
            "needed": TARGET * m["reduction"],
            "met": None if theta == 0 else lat_red >= TARGET * m["reduction"],
        }
    return rows, targets


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--data-dir", default=None, help="root holding cifar10/ (else $LEANVISION_DATA)")
    ap.add_argument("--result", type=Path, default=Path("benchmarks/results/instance_sparsity/instance_sparsity.json"))
    ap.add_argument("--lam", type=float, default=None, help="B's lambda (default: the one chosen on validation)")
    ap.add_argument("--images", type=int, default=50, help="fixed test images, each timed once per round")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/latency_instance"))
    add_load_args(ap)
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    load_before = check_quiet(args.max_load, args.allow_busy)
    torch.set_num_threads(args.threads)
    model, layers, rule, lam = load_b(args.result, args.lam)
    sp = InstanceSparsity(model, layers, theta=0.0, rule=rule)
    xs = test_images(args.data_dir, args.images)
    models = fast_models(sp)
    diffs = check_outputs(sp, models, xs)
    macs = mac_reductions(sp, xs)
    record: dict = {}
    with other_cpu(record):
        times = time_interleaved(models, xs, args.rounds)
    rows, targets = rows_and_targets(times, macs)
    busy = load_before > args.max_load or (record["other_cores"] or 0.0) > args.max_load
    result = {
        "lam": lam,
        "layers": layers,
        "rule": rule,
        "images": args.images,
        "rounds": args.rounds,
        "threads": args.threads,
        "load_avg_1m": load_before,
        "other_cores": record["other_cores"],
        "allow_busy": args.allow_busy,
        "busy": busy,
        "torch": torch.__version__,
        "max_abs_diff_fast_vs_masked": diffs,
        "macs": macs,
        "rows": rows,
        "targets": targets,
        "all_met": all(t["met"] for t in targets.values() if t["met"] is not None),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "latency_instance.json", json.dumps(result, indent=2) + "\n")
    bar_panels(
        rows,
        [("median_ms", "median ms per image"), ("mean_macs_M", "mean MACs per image (M)")],
        args.out / "latency_instance.png",
        title=f"batch-1 latency, {args.threads} threads, {args.images} test images" + (" (BUSY)" if busy else ""),
    )
    print(f"lambda {lam:g}, layers {', '.join(layers)}, other processes {cores_text(record)} cores")
    print("| theta | median ms | latency reduction | MAC reduction | needed | met |\n|---|---|---|---|---|---|")
    print(f"| dense | {rows[0]['median_ms']:.3f} | - | - | - | - |")
    for key, t in targets.items():
        print(
            f"| {key} | {t['median_ms']:.3f} | {t['latency_reduction']:.3f} | {t['mac_reduction']:.3f} "
            f"| {t['needed']:.3f} | {'-' if t['met'] is None else t['met']} |"
        )
    print("max |fast - masked dense|:", diffs, "- BUSY machine" if busy else "- quiet machine")


if __name__ == "__main__":
    main()
