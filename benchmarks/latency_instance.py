"""Batch-1 latency of instance-wise pruning (arXiv 1907.11840): a per-layer cost model decides where the gather pays.

    python benchmarks/latency_instance.py --data-dir DIR --threads 1,2     # quiet machine, 50 test images
    python benchmarks/latency_instance.py --data-dir DIR --allow-busy --images 8 --rounds 2 --out /tmp/smoke

Loads one seed's net of benchmarks/instance_sparsity.py (--seed, default 0; --result: its JSON): the net
fine-tuned with the pruning active at its theta when there is one, else B (the lambda chosen there on validation,
or --lam) with the theta sweep; the layers its CV selected and its threshold rule. At every --threads count:
  1. the cost model: ``gather_costs`` times each selected conv dense vs gathered (norms + mask + index_select) on the
     features of --cost-images test images; ``layers_that_pay`` enables only the layers whose gathered path is
     faster by more than --margin (the decision rule, testable with any cost table);
  2. the timing: the dense net, the gathered net on all selected layers at each theta, and on the enabled layers
     only at the fine-tuned theta, on the same fixed test images (seeded class-balanced), interleaved rounds, the
     order rotating, every image once per round after a warm-up; median ms per image over all (image, round) calls.
MACs per image: ``macs_per_instance`` on the same images; test accuracy of the enabled-only net on --acc-images.
Verdict (per thread count, the enabled-only net): latency gain >= 5% vs dense, >= 30% of the enabled layers' MACs
saved, test accuracy <= 1 point below the unpruned net; otherwise the per-layer cost numbers state the limit.
Also reported, per theta: latency reduction >= 0.5 x mean MAC reduction (the old target). theta = 0 saves no MACs;
its row shows what computing the channel norms costs. Outputs of the gathered path are checked against the masked
dense forward. Run it on a quiet machine: it refuses to start when the 1-minute load average exceeds --max-load
(default 0.5; --allow-busy runs anyway) and records the CPU cores used by OTHER processes while timing.
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

import _runs
import torch
from _machine import add_load_args, check_quiet, cores_text, other_cpu
from instance_sparsity import THETAS, load_trained, summarize
from torch import nn

from leanvision._io import atomic_write_text
from leanvision.compress.instance import InstanceSparsity, gather_costs, layers_that_pay
from leanvision.data import load_dataset, make_loader
from leanvision.report import bar_panels

TARGET = 0.5  # latency reduction >= TARGET x mean MAC reduction
MIN_GAIN, MIN_LAYERS_REDUCTION, MAX_DROP = 0.05, 0.30, 1.0
DENSE = "dense"


def load_net(result: Path, lam: float | None, seed: int = 0) -> dict:
    """One seed's fine-tuned net (or B), its CV-selected layers, rule, lambda and theta (instance_sparsity's JSON)."""
    data = json.loads(result.read_text())
    runs, args = data["runs"], data["args"]
    if lam is None:
        lam = (data.get("summary") or summarize(runs))["lambda_choice_on_val"]["selected_lam"]
    baseline = args.get("baseline")
    ft = next((r for r in runs if r.get("kind") == "ft" and r["lam"] == lam and r["seed"] == seed), None)
    run = next((r for r in runs if r.get("kind") != "ft" and r["lam"] == lam and r["seed"] == seed), None)
    if run is None:
        sys.exit(f"{result} holds no finished seed-{seed} B run with lambda {lam:g}")
    weights = result.parent / (ft or run)["weights"]
    if not weights.is_file():
        sys.exit(f"{weights} is missing (the weights of seed {seed}'s net); time another seed with --seed")
    model = load_trained(None if baseline in (None, "None") else baseline, weights)
    return {"model": model.eval(), "layers": run["selections"]["cv"], "rule": args.get("rule", "mean"), "lam": lam,
            "theta": ft["theta"] if ft else None, "fine_tuned": ft is not None, "seed": seed}  # fmt: skip


def test_images(data_dir: str | None, n: int) -> list[torch.Tensor]:
    """A fixed, seeded class-balanced set of n normalised test images, each (1, 3, 32, 32)."""
    test = load_dataset("cifar10", root=data_dir, split="test", subset=n, seed=0)
    return [x for x, _ in make_loader(test, batch_size=1, shuffle=False)]


def fast_models(sp: InstanceSparsity, enabled: InstanceSparsity | None) -> dict[str, nn.Module]:
    """The dense net, one gathered module per theta (all selected layers) and the enabled-only one; shared weights."""
    models: dict[str, nn.Module] = {DENSE: sp.model}
    for theta in THETAS:
        sp.theta = theta
        models[f"theta {theta:g}"] = sp.fast_module()
    if enabled is not None:
        models["enabled"] = enabled.fast_module()
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


def mac_record(sp: InstanceSparsity, xs: list[torch.Tensor]) -> dict:
    m = sp.macs_per_instance([torch.cat(xs)])
    return {"dense": m.dense, "mean": m.mean, "min": m.min, "max": m.max, "reduction": m.reduction,
            "layers_reduction": m.layers_reduction}  # fmt: skip


def mac_reductions(sp: InstanceSparsity, xs: list[torch.Tensor]) -> dict[str, dict]:
    """Mean MACs per image of the timed images, per theta (masks do not depend on the batch)."""
    out = {}
    for theta in THETAS:
        sp.theta = theta
        out[f"{theta:g}"] = mac_record(sp, xs)
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


def enabled_accuracy(net: dict, enabled: list[str], theta: float, data_dir: str | None, n: int) -> dict:
    """Test accuracy of the unpruned net and of the enabled-only pruned net (masked forward, any batch size)."""
    test = load_dataset("cifar10", root=data_dir, split="test", subset=n or None, seed=0)
    loader = make_loader(test, batch_size=500, shuffle=False)
    model, hits, hits_pruned, total = net["model"], 0, 0, 0
    sp = InstanceSparsity(model, enabled, theta=theta, rule=net["rule"]) if enabled else None
    with torch.no_grad():
        for x, y in loader:
            hits += int((model(x).argmax(1) == y).sum())
            if sp is not None:
                with sp.active():
                    hits_pruned += int((model(x).argmax(1) == y).sum())
            total += len(y)
    acc = 100 * hits / total
    return {"images": total, "acc_unpruned": acc, "acc_enabled": 100 * hits_pruned / total if sp else acc}


def parse_args() -> argparse.Namespace:
    ap = _runs.make_parser(__doc__)
    ap.add_argument("--result", type=Path, default=Path("benchmarks/results/instance_sparsity/instance_sparsity.json"))
    ap.add_argument("--lam", type=float, default=None, help="B's lambda (default: the one chosen on validation)")
    ap.add_argument("--seed", type=int, default=0, help="which seed's net of --result to time")
    ap.add_argument("--theta", type=float, default=None, help="theta of the enabled-only net (default: fine-tuned's)")
    ap.add_argument("--images", type=int, default=50, help="fixed test images, each timed once per round")
    ap.add_argument("--cost-images", type=int, default=10, help="test images the per-layer cost model times")
    ap.add_argument("--cost-iters", type=int, default=20, help="timed calls per image and path in the cost model")
    ap.add_argument("--margin", type=float, default=0.0, help="enable a layer if gathered < (1 - margin) x dense")
    ap.add_argument("--acc-images", type=int, default=0, help="test images for accuracy; 0 = all 10,000")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--threads", default="1,all", help=_runs.THREADS_HELP)
    _runs.add_out_arg(ap, "latency_instance")
    add_load_args(ap)
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    load_before = check_quiet(args.max_load, args.allow_busy)
    net = load_net(args.result, args.lam, args.seed)
    theta = args.theta if args.theta is not None else net["theta"] if net["theta"] is not None else 0.5
    sp = InstanceSparsity(net["model"], net["layers"], theta=0.0, rule=net["rule"])
    xs = test_images(args.data_dir, args.images)
    diffs = check_outputs(sp, fast_models(sp, None), xs)
    macs = mac_reductions(sp, xs)
    per_threads, rows_all, verdict = {}, [], {}
    for threads in _runs.threads_of(args):
        torch.set_num_threads(threads)
        costs = gather_costs(net["model"], net["layers"], xs[: args.cost_images], theta=theta, rule=net["rule"],
                             iters=args.cost_iters)  # fmt: skip
        enabled = layers_that_pay(costs, margin=args.margin)
        en_sp = InstanceSparsity(net["model"], enabled, theta=theta, rule=net["rule"]) if enabled else None
        models = fast_models(sp, en_sp)
        record: dict = {}
        with other_cpu(record):
            times = time_interleaved(models, xs, args.rounds)
        rows, targets = rows_and_targets(times, macs)
        dense_ms = statistics.median(times[DENSE])
        en = {"layers": enabled, "theta": theta}
        if en_sp is not None:
            en |= {"median_ms": statistics.median(times["enabled"]), **mac_record(en_sp, xs)}
            en["latency_gain"] = 1 - en["median_ms"] / dense_ms
            rows.append({"model": "enabled", "median_ms": en["median_ms"], "mean_macs_M": en["mean"] / 1e6})
        en |= enabled_accuracy(net, enabled, theta, args.data_dir, args.acc_images)
        ok = en_sp is not None and en["latency_gain"] >= MIN_GAIN and en["layers_reduction"] >= MIN_LAYERS_REDUCTION
        ok = ok and en["acc_unpruned"] - en["acc_enabled"] <= MAX_DROP
        per_threads[f"{threads}_threads"] = {"other_cores": record["other_cores"], "per_layer_costs": costs,
                                             "enabled": en, "targets": targets, "rows": rows, "pass": ok}  # fmt: skip
        verdict[f"{threads}_threads"] = ok
        rows_all += [{**r, "model": f"{r['model']} t{threads}"} for r in rows]
        print(f"{threads} thread(s): enabled {enabled or 'none'} at theta {theta:g}; other processes "
              f"{cores_text(record)} cores")  # fmt: skip
        table = [{"layer": n, **c, "enabled": n in enabled} for n, c in costs.items()]
        cols = {"layer": "layer", "dense ms": ("dense_ms", ".4f"), "gathered ms": ("gathered_ms", ".4f"),
                "kept": ("kept_fraction", ".2f"), "enabled": "enabled"}  # fmt: skip
        print(_runs.markdown(table, cols))
        print(json.dumps({k: v for k, v in en.items() if k != "layers"}, indent=1))
    others = [p["other_cores"] for p in per_threads.values() if p["other_cores"] is not None]
    busy = load_before > args.max_load or any(o > args.max_load for o in others)
    result = {
        "lam": net["lam"],
        "fine_tuned": net["fine_tuned"],
        "seed": net["seed"],
        "layers": net["layers"],
        "rule": net["rule"],
        "images": args.images,
        "rounds": args.rounds,
        "load_avg_1m": load_before,
        "allow_busy": args.allow_busy,
        "busy": busy,
        "torch": torch.__version__,
        "max_abs_diff_fast_vs_masked": diffs,
        "macs": macs,
        "by_threads": per_threads,
        "rule_of_verdict": f"enabled-only net: latency gain >= {MIN_GAIN:.0%}, enabled layers' MACs -"
        f"{MIN_LAYERS_REDUCTION:.0%}, test acc <= {MAX_DROP} point below unpruned; at every thread count",
        "verdict": verdict,
        "pass": bool(verdict) and all(verdict.values()),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "latency_instance.json", json.dumps(result, indent=2) + "\n")
    bar_panels(
        rows_all,
        [("median_ms", "median ms per image"), ("mean_macs_M", "mean MACs per image (M)")],
        args.out / "latency_instance.png",
        title=f"batch-1 latency, {args.images} test images" + (" (BUSY)" if busy else ""),
    )
    print("max |fast - masked dense|:", diffs, "- BUSY machine" if busy else "- quiet machine")
    print("verdict:", verdict)


if __name__ == "__main__":
    main()
