"""Latency of Synaptic Strength-pruned nets (arXiv 1811.02454) beside their dense net and their thin controls.

    python benchmarks/latency_pruned.py --results OUT/synaptic_cifar.json --threads 1,2  # verdict at 2, 1 beside
    python benchmarks/latency_pruned.py --results ... --threads 1,2 --resume             # skip the measured cells
    python benchmarks/latency_pruned.py --results ... --allow-busy --rounds 1 --out /tmp/lat   # smoke test

Loads what benchmarks/synaptic_cifar.py wrote (its JSON and OUT/deploy/ checkpoints): the dense --baseline, every
pruned net of the grid point chosen on validation (every ranking x rounding, target and seed; --chosen-only: the
net chosen on validation per seed and target and its twin with the other rounding) and the thin controls. All in
their deploy form (BatchNorm folded), timed in ONE interleaved run per (batch, backend) cell
(leanvision.profile.compare_latency, medians; onnxruntime sessions exported by it, dynamic batch axis).
Verdict per seed and target (2 seeds): the net chosen on validation is >= 2x faster than dense in every cell at
the largest --threads count (1 thread reported beside it), and synaptic_cifar's accuracy rules hold (within 1.5
points of dense, >= thin + 1.0 point).
Reported: the thin control's latency over the pruned net's (equal latency: within 10%), and what rounding the
widths won (rounded / unrounded latency of the same ranking) beside what it cost in accuracy.
Writes OUT/latency_pruned.json + PNG (OUT: --out, default the folder of --results); every finished cell is saved
at once (--resume reuses them).
Run it on a quiet machine: it refuses to start above --max-load (1-minute load average; --allow-busy runs anyway)
and records the CPU cores used by OTHER processes while each cell is timed (busy above --max-load).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import _runs
import onnxruntime
import torch
from synaptic_cifar import choose, config_of, summarize
from torch import nn

from leanvision.engine import model_from_checkpoint
from leanvision.ops import fuse_bn
from leanvision.profile import compare_latency, profile

SPEEDUP, EQUAL_LATENCY = 2.0, 0.10
SAME_ON_RESUME = ("rounds", "torch", "onnxruntime", "models")


def pick_runs(data: dict, chosen_only: bool) -> list[dict]:
    """The pruned and thin runs to time: the chosen grid point's (all, or the val-chosen net, its twin, thin)."""
    runs = data["runs"]
    lam, epochs = choose(runs)["chosen"]
    pruned = [r for r in runs if r["kind"] == "prune" and "acc" in r and (r["lam"], r["epochs"]) == (lam, epochs)]
    thin = [r for r in runs if r["kind"] == "thin"]
    if not chosen_only:
        return pruned + thin
    keep = []
    for target, seed in sorted({(r["target"], r["seed"]) for r in pruned}):
        at = [r for r in pruned if (r["target"], r["seed"]) == (target, seed)]
        best = max(at, key=lambda r: r["val_acc"])
        keep += [r for r in at if config_of(r)[:2] == config_of(best)[:2]]  # the chosen one and its other rounding
    return keep + thin


def load_models(results: Path, data: dict, runs: list[dict]) -> tuple[dict[str, nn.Module], dict[str, dict]]:
    """Dense and every picked run in deploy form (BN folded), and their size and accuracy."""
    models, info = {}, {}
    dense, _ = model_from_checkpoint(data["args"]["baseline"])
    dense_rec = next(r for r in data["runs"] if r["kind"] == "dense")
    models["dense"], info["dense"] = dense, {"acc": dense_rec["acc"]}
    for r in runs:
        model, _ = model_from_checkpoint(results.parent / r["checkpoint"])
        models[r["key"]], info[r["key"]] = model, {"acc": r["acc"]}
    deploy = {k: fuse_bn(m).eval() for k, m in models.items()}
    x = torch.zeros(1, 3, 32, 32)
    for k, m in deploy.items():
        prof = profile(m, x)
        info[k].update(params=prof.params, macs=prof.macs)
    return deploy, info


def verdicts(data: dict, runs: list[dict], cells: dict, keys: list[str]) -> dict:
    """Per target and seed: speed-up of the val-chosen net in every cell of ``keys`` (one thread count), thin's
    latency ratio, the accuracy rules."""
    summary = data.get("summary") or summarize(data["runs"])
    out = {}
    for target, per in (summary.get("verdicts") or {}).items():
        for seed, v in per["per_seed"].items():
            name, thin = v["chosen_on_val"], f"thin_t{target}_s{seed}"
            ms = {k: cells[k]["models"] for k in keys}
            speed = {k: ms[k]["dense"]["median_ms"] / ms[k][name]["median_ms"] for k in keys if name in ms[k]}
            thin_ratio = {k: ms[k][thin]["median_ms"] / ms[k][name]["median_ms"] for k in keys if thin in ms[k]}
            fast = bool(speed) and all(s >= SPEEDUP for s in speed.values())
            acc_ok = bool(v["within_1_5_of_dense"] and v["beats_thin_by_1"])
            out[f"target {target} seed {seed}"] = {
                "pruned": name,
                "speedup_vs_dense": speed,
                "speedup_ge_2_every_cell": fast,
                "thin_over_pruned_latency": thin_ratio,
                "thin_equal_latency_within_10pct": bool(thin_ratio)
                and all(abs(r - 1) <= EQUAL_LATENCY for r in thin_ratio.values()),
                "acc_minus_dense": -v["dense_minus_pruned"],
                "acc_minus_thin": v["pruned_minus_thin"],
                "accuracy_rules": acc_ok,
                "pass": fast and acc_ok,
            }
    seeds = {k.rsplit(" seed ", 1)[0] for k in out}
    per_target = {t: [v["pass"] for k, v in out.items() if k.startswith(t + " ")] for t in seeds}
    return {"per_seed": out, "pass": bool(per_target) and all(len(p) >= 2 and all(p) for p in per_target.values())}


def rounding_won(runs: list[dict], cells: dict, keys: list[str]) -> dict:
    """Latency rounded / unrounded for the same granularity, ranking, target and seed, beside the accuracy change."""
    by = {(*config_of(r), r["target"], r["seed"]): r for r in runs if r["kind"] == "prune"}
    out = {}
    for (granularity, rank, rnd, scope, target, seed), r in by.items():
        twin = by.get((granularity, rank, 0, scope, target, seed))
        if rnd == 0 or twin is None:
            continue
        lat = {k: cells[k]["models"][r["key"]]["median_ms"] / cells[k]["models"][twin["key"]]["median_ms"]
               for k in keys if r["key"] in cells[k]["models"] and twin["key"] in cells[k]["models"]}  # fmt: skip
        out[r["key"]] = {"latency_rounded_over_unrounded": lat, "acc_rounded_minus_unrounded": r["acc"] - twin["acc"],
                         "macs_rounded_over_unrounded": r["macs"] / twin["macs"]}  # fmt: skip
    return out


def parse_args() -> argparse.Namespace:
    ap = _runs.make_parser(__doc__, data_help=None)
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results/synaptic_vgg/synaptic_cifar.json"),
                    help="synaptic_cifar.py's JSON (its .partial.json works too)")  # fmt: skip
    ap.add_argument("--chosen-only", action="store_true", help="time only the val-chosen nets, their twins, thin")
    _runs.add_timing_args(ap, "latency_pruned", iters=(50, 10))
    args = ap.parse_args()
    if args.out == Path("benchmarks/results/latency_pruned"):
        args.out = args.results.parent
    return args


def main() -> None:
    args = parse_args()
    data = json.loads(args.results.read_text())
    runs = pick_runs(data, args.chosen_only)
    models, info = load_models(args.results, data, runs)
    name = "latency_pruned"
    config = {"rounds": args.rounds, "torch": torch.__version__,
              "onnxruntime": onnxruntime.__version__, "models": sorted(models)}  # fmt: skip

    def measure(backend: str, x: torch.Tensor, iters: int, threads: int) -> dict:
        return compare_latency(models, x, backend=backend, threads=threads, rounds=args.rounds, iters=iters)

    cells, load_before = _runs.time_cells(args, name, config, SAME_ON_RESUME, measure, size=32, iters=(50, 10),
                                          digits=3)  # fmt: skip
    keys = _runs.cell_keys(args, cells)
    rows = _runs.cell_rows(info, cells, keys)
    at = _runs.judged_at(args)
    by_threads = {t: [k for k in keys if k.endswith(f"_t{t}")] for t in _runs.threads_of(args)}
    judged = {f"{t}_threads": verdicts(data, runs, cells, ks) for t, ks in by_threads.items()}
    result = {
        "threads": _runs.threads_of(args),
        **at,
        "rounds": args.rounds,
        "results": str(args.results),
        **_runs.machine_record(args, cells, keys, load_before),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "rows": rows,
        "verdicts": judged,
        "rounding": rounding_won(runs, cells, keys),
        "pass": judged[f"{at['headline_threads']}_threads"]["pass"],
    }
    title = "32x32 latency (median ms)"
    _runs.save_latency(args.out / f"{name}.json", result, rows, keys, title)
    columns = {"model": "model", "test acc": ("acc", ".2f"), "params": ("params", ","), "MACs": ("macs", ","),
               **{k: (f"{k}_ms", ".3f") for k in keys}}  # fmt: skip
    print(_runs.markdown(rows, columns))
    print(json.dumps({k: result[k] for k in ("verdicts", "rounding", "busy", "pass")}, indent=2))


if __name__ == "__main__":
    main()
