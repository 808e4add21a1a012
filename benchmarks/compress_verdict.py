"""Verdict of `leanvision compress` runs (Synaptic Strength, arXiv 1811.02454) against dense and the thin control.

    python benchmarks/compress_verdict.py runs/compress_tv_resnet18_thin runs/compress_tv_resnet18_thin_s1 \\
        --out benchmarks/results/compress_tv_resnet18

Reads each run's results.json (one run per seed, each with `thin: true` and `latency: true`), copies it with the
run's config, plan and report to OUT/seedN/ (runs/ is scratch), and writes OUT/compress_verdict.json and two PNGs.
The rules are those of benchmarks/synaptic_cifar.py and benchmarks/latency_pruned.py, per seed: the pruned net is
>= 2x faster than dense in every latency cell (eager and onnxruntime, batch 1 and 32) at the largest thread count
the run timed (1 thread reported beside it), its test accuracy is within 1.5 points of dense and >= the thin
control's + 1.0; the verdict passes when every seed does, over at least 2 seeds. Dense, pruned and thin were timed
in one interleaved run by the compress command itself, the load of other processes recorded beside each cell. A
run resumed on another machine may have matched the thin control's latency on another CPU than the table's: each
seed lists the CPU of every timing, and whether the thin control is within 10% of the pruned net's latency in the
table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from latency_pruned import EQUAL_LATENCY, SPEEDUP
from synaptic_cifar import DENSE_MARGIN, THIN_MARGIN

from leanvision._io import atomic_write_text
from leanvision.profile import busiest
from leanvision.report import bar_panels

NAME = "compress_verdict"
COPIED = ("results.json", "config.json", "plan.json", "report.md")
CELLS = ("eager_bs1", "eager_bs32", "onnxruntime_bs1", "onnxruntime_bs32")


def seed_verdict(result: dict) -> dict:
    """One run's numbers and its verdict by the rules above."""
    thin, lat = result.get("thin") or {}, result.get("latency")
    if "acc" not in thin or not lat:
        raise SystemExit(f"{result['out_dir']}: no thin control or latency table (run with thin and latency true)")
    speed = {n: {c: lat[f"{c}_{n}t"]["dense"] / lat[f"{c}_{n}t"]["pruned"] for c in CELLS} for n in lat["threads"]}
    headline = max(lat["threads"])
    thin_ratio = {c: lat[f"{c}_{headline}t"]["thin"] / lat[f"{c}_{headline}t"]["pruned"] for c in CELLS}
    dense, pruned = result["before"]["acc"], result["after"]["acc"]
    out = {
        "dense_acc": dense,
        "pruned_acc": pruned,
        "thin_acc": thin["acc"],
        "thin_width": thin["width"],
        "thin_epochs": thin["epochs"],
        "macs_pruned_over_dense": result["after"]["macs"] / result["before"]["macs"],
        "macs_thin_over_dense": thin["macs"] / result["before"]["macs"],
        "speedup_vs_dense": speed,
        "thin_over_pruned_latency": thin_ratio,
        "thin_equal_latency_within_10pct": all(abs(r - 1) <= EQUAL_LATENCY for r in thin_ratio.values()),
        "other_cores_busiest": busiest(lat["other_cores"].values()),
        "cpus": {
            k: v["cpu"]
            for k, v in (("multiple", result.get("multiple")), ("thin_match", thin), ("latency_table", lat))
            if v and v.get("cpu")
        },
        f"speedup_ge_{SPEEDUP:g}_every_cell_at_{headline}_threads": all(s >= SPEEDUP for s in speed[headline].values()),
        "acc_minus_dense": pruned - dense,
        "acc_minus_thin": pruned - thin["acc"],
        f"within_{DENSE_MARGIN:g}_of_dense": dense - pruned <= DENSE_MARGIN,
        f"beats_thin_by_{THIN_MARGIN:g}": pruned >= thin["acc"] + THIN_MARGIN,
    }
    out["pass"] = all(v for k, v in out.items() if k.startswith(("speedup_ge", "within_", "beats_thin")))
    return out


def verdict(results: list[dict]) -> dict:
    """Per seed and overall: every seed passes, over at least 2 seeds."""
    per_seed = {}
    for r in results:
        seed = r["config"]["seed"]
        if seed in per_seed:
            raise SystemExit(f"two runs of seed {seed}: give one run per seed")
        per_seed[seed] = seed_verdict(r)
    return {
        "rules": f"per seed: >= {SPEEDUP:g}x faster than dense in every cell ({', '.join(CELLS)}) at the largest "
        f"thread count, test acc >= dense - {DENSE_MARGIN:g} and >= thin + {THIN_MARGIN:g}; every seed, at least 2",
        "per_seed": per_seed,
        "pass": len(per_seed) >= 2 and all(v["pass"] for v in per_seed.values()),
    }


def plot(summary: dict, out: Path) -> list[Path]:
    """Test accuracy of dense / pruned / thin per seed, and the speed-up over dense in every latency cell."""
    per = summary["per_seed"]
    acc = [{"model": f"{m} s{s}", "acc": v[f"{m}_acc"]} for s, v in per.items() for m in ("dense", "pruned", "thin")]
    threads = next(iter(per.values()))["speedup_vs_dense"]
    speed = [{"model": f"{c.replace('_bs', ' bs')} {n}t", **{f"s{s}": v["speedup_vs_dense"][n][c]
                                                             for s, v in per.items()}}
             for n in threads for c in CELLS]  # fmt: skip
    return [
        bar_panels(acc, [("acc", "test acc (%)")], out / f"{NAME}_acc.png", title="dense, pruned and thin control"),
        bar_panels(speed, [(f"s{s}", f"seed {s}: speed-up over dense (x)") for s in per], out / f"{NAME}_speedup.png",
                   title=f"pruned net's speed-up (goal >= {SPEEDUP:g}x at all cores)"),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", type=Path, nargs="+", help="compress run folders (their out_dir), one per seed")
    ap.add_argument("--out", type=Path, required=True, help="where the verdict, plots and copied results go")
    args = ap.parse_args(argv)
    results = []
    for run in args.runs:
        if not (run / "results.json").is_file():
            raise SystemExit(f"{run}: no results.json (a finished `leanvision compress` run's out_dir)")
        results.append({**json.loads((run / "results.json").read_text()),
                        "config": json.loads((run / "config.json").read_text()), "out_dir": str(run)})  # fmt: skip
    summary = {"runs": [str(r) for r in args.runs], **verdict(results)}
    for run, r in zip(args.runs, results, strict=True):
        dst = args.out / f"seed{r['config']['seed']}"
        dst.mkdir(parents=True, exist_ok=True)
        for name in COPIED:
            if (run / name).is_file():
                shutil.copy(run / name, dst / name)
    atomic_write_text(args.out / f"{NAME}.json", json.dumps(summary, indent=2) + "\n")
    plot(summary, args.out)
    json.dump(summary, sys.stdout, indent=2)
    print()
    return summary


if __name__ == "__main__":
    main()
