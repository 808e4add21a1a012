"""Latency of GhostNet-1.0x (arXiv 1911.11907): leanvision (training and deploy form) vs timm vs MobileNetV3-L.

    python benchmarks/latency_ghostnet.py             # 224x224, batch 1 and 32, eager + onnxruntime, 2 threads
    python benchmarks/latency_ghostnet.py --resume    # continue a stopped run: skip the cells already measured
    python benchmarks/latency_ghostnet.py --onnx-ops  # no timing: ONNX node types of every model's export

All models are timed in the same run, interleaved round by round, medians reported. Targets: leanvision's
deploy form no slower than timm's ghostnet_100 and than torchvision's mobilenet_v3_large, in every cell. The
deploy form is per backend: `model.fuse()` (BN folded) in eager, `onnxruntime_form(model)` (BN folded, Ghost
halves padded to 16 channels, no concatenation; same outputs) for onnxruntime; both rows are timed in both.
Writes JSON + PNG into --out; each finished (batch, backend) cell is saved at once to latency_ghostnet.partial.json.
Run it on a quiet machine: any other busy process oversubscribes the cores and distorts the timings. The script
refuses to start when the 1-minute load average exceeds --max-load (default 0.5); --allow-busy runs anyway. While
each cell is timed it measures the CPU cores used by OTHER processes (all busy CPU time minus its own; the load
average would count its own threads) and labels the run busy, in the JSON and beside the table, above --max-load.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import timm
import torch
import torchvision
from _machine import add_load_args, check_quiet, load1, load_cells, other_cpu
from _machine import cores_text as _cores

from leanvision._io import atomic_write_text
from leanvision.models import create_model
from leanvision.models.ghostnet import onnxruntime_form
from leanvision.ops import fuse_bn
from leanvision.profile import compare_latency, profile
from leanvision.report import bar_panels

# What a resumed run must share with the saved cells for them to be comparable.
SAME_ON_RESUME = ("threads", "rounds", "torch", "timm")
ORT_FORM = "leanvision ghostnet_100 (onnxruntime form)"
DEPLOY = {"eager": "leanvision ghostnet_100 (deploy)", "onnxruntime": ORT_FORM}  # the deploy form per backend
MNV3 = "torchvision mobilenet_v3_large"


def build_models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    ours = create_model("ghostnet_100").eval()
    return {
        "leanvision ghostnet_100": ours,
        "leanvision ghostnet_100 (deploy)": fuse_bn(ours).eval(),
        ORT_FORM: onnxruntime_form(ours).eval(),
        "timm ghostnet_100": timm.create_model("ghostnet_100", pretrained=False).eval(),
        MNV3: torchvision.models.mobilenet_v3_large().eval(),
    }


def onnx_ops(out: Path, threads: int) -> None:
    """Export every model with leanvision.export.export_onnx and count its ONNX node types (no timing).

    Counted twice: in the exported file, and in the graph onnxruntime runs after its own optimisations
    (ORT_ENABLE_ALL, the level leanvision's latency timing uses; its layout rewrites depend on the CPU).
    """
    import collections
    import platform
    import tempfile

    import onnx
    import onnxruntime as ort

    from leanvision.export import export_onnx

    models = build_models()
    x = torch.randn(1, 3, 224, 224)
    exported, optimised, seqs, inits = {}, {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="leanvision-onnx-ops-") as tmp:
        for i, (name, model) in enumerate(models.items()):
            path = export_onnx(model, x, Path(tmp) / f"m{i}.onnx")
            graph = onnx.load(str(path)).graph
            seqs[name] = [n.op_type for n in graph.node]
            inits[name] = sorted(tuple(t.dims) for t in graph.initializer)
            exported[name] = dict(sorted(collections.Counter(seqs[name]).items()))
            opts = ort.SessionOptions()
            opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.optimized_model_filepath = str(Path(tmp) / f"m{i}.ort.onnx")
            opts.log_severity_level = 3
            ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
            ops = collections.Counter(n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node)
            optimised[name] = dict(sorted(ops.items()))
    a, b = "leanvision ghostnet_100", "leanvision ghostnet_100 (deploy)"
    result = {
        "torch": torch.__version__,
        "timm": timm.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "machine": f"{platform.machine()} {platform.system()}",
        "exported_op_counts": exported,
        "onnxruntime_optimised_op_counts": optimised,
        "deploy_export_identical_op_sequence": seqs[a] == seqs[b],
        "deploy_export_identical_initializer_shapes": inits[a] == inits[b],
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "onnx_ops.json", json.dumps(result, indent=2) + "\n")
    for title, counts in (("exported", exported), ("after onnxruntime ORT_ENABLE_ALL", optimised)):
        names = list(counts)
        print(f"\n{title}\n| op | " + " | ".join(names) + " |\n|---|" + "---:|" * len(names))
        for op in sorted(set().union(*counts.values())):
            print(f"| {op} | " + " | ".join(str(counts[n].get(op, 0)) for n in names) + " |")
        print("| total | " + " | ".join(str(sum(counts[n].values())) for n in names) + " |")
    print(
        f"\n{b} vs {a}: identical exported op sequence {result['deploy_export_identical_op_sequence']}, "
        f"identical initializer shapes {result['deploy_export_identical_initializer_shapes']}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--backends", nargs="+", default=["eager", "onnxruntime"])
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds; the median is over all timed runs")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/latency_ghostnet"))
    add_load_args(ap)
    ap.add_argument("--resume", action="store_true", help="reuse the cells saved in OUT/latency_ghostnet.partial.json")
    ap.add_argument(
        "--onnx-ops",
        action="store_true",
        help="no timing: count the ONNX node types of every model's export (and of onnxruntime's optimised graph) "
        "into OUT/onnx_ops.json",
    )
    args = ap.parse_args()
    if args.onnx_ops:
        onnx_ops(args.out, args.threads)
        return
    load_before = check_quiet(args.max_load, args.allow_busy)
    args.out.mkdir(parents=True, exist_ok=True)
    partial = args.out / "latency_ghostnet.partial.json"
    config = {"threads": args.threads, "rounds": args.rounds, "torch": torch.__version__, "timm": timm.__version__}
    cells: dict[str, dict] = load_cells(partial, config, SAME_ON_RESUME) if args.resume else {}
    if cells:
        print(f"--resume: reusing cells {', '.join(cells)} from {partial}")

    models = build_models()
    x1 = torch.randn(1, 3, 224, 224)
    rows = [{"model": n, "params": (p := profile(m, x1)).params, "macs": p.macs} for n, m in models.items()]
    for bs in args.batches:
        x = torch.randn(bs, 3, 224, 224)
        for backend in args.backends:
            key = f"{backend}_bs{bs}"
            if key not in cells:
                iters = 10 if bs == 1 else 3
                cell = {"iters": iters, "load_avg_1m_before": load1(), "allow_busy": args.allow_busy}
                with other_cpu(cell):
                    stats = compare_latency(
                        models, x, backend=backend, threads=args.threads, rounds=args.rounds, iters=iters
                    )
                cell["models"] = {n: {"median_ms": s.median_ms, "p90_ms": s.p90_ms} for n, s in stats.items()}
                cells[key] = cell
                # Saved after every cell so a stopped run keeps what it measured (see --resume).
                atomic_write_text(partial, json.dumps({"config": config, "cells": cells}, indent=2) + "\n")
            c = cells[key]
            print(
                f"batch {bs} {backend}: "
                + ", ".join(f"{n} {s['median_ms']:.2f} ms" for n, s in c["models"].items())
                + f" (load {c['load_avg_1m_before']:.2f} before; other processes {_cores(c)})"
            )
            for row in rows:
                s = c["models"][row["model"]]
                row[f"{key}_ms"], row[f"{key}_p90_ms"] = s["median_ms"], s["p90_ms"]
    load_after = load1()

    timm_row = next(r for r in rows if r["model"].startswith("timm"))
    keys = [f"{b}_bs{bs}_ms" for bs in args.batches for b in args.backends]
    for row in rows:
        for k in keys:
            row[k.replace("_ms", "_vs_timm")] = row[k] / timm_row[k]
    by_name = {r["model"]: r for r in rows}
    verdict = {}
    for k in keys:
        deploy = by_name[DEPLOY[k.split("_bs")[0]]]
        verdict[k] = {"vs_timm": deploy[k] <= timm_row[k], "vs_mobilenet_v3_large": deploy[k] <= by_name[MNV3][k]}
    used = {k.removesuffix("_ms"): cells[k.removesuffix("_ms")] for k in keys}
    others = [c.get("other_cores") for c in used.values()]
    worst = max((o for o in others if o is not None), default=None)
    # Busy: other processes used CPU while cells were timed (or the machine was loaded when this run started).
    # The load average during the run is no measure: it includes this benchmark's own threads.
    busy = load_before > args.max_load or (worst is not None and worst > args.max_load)
    result = {
        "threads": args.threads,
        "rounds": args.rounds,
        "max_load": args.max_load,
        "allow_busy": args.allow_busy or any(c["allow_busy"] for c in used.values()),
        "load_avg_1m": load_before,  # at the start of this invocation
        "load_avg_1m_after": load_after,  # includes this benchmark's own threads
        "other_cores_max_over_cells": worst,
        "busy": busy,
        "cells": {
            k: {"load_avg_1m_before": c["load_avg_1m_before"], "other_cores": c.get("other_cores")}
            for k, c in used.items()
        },
        "torch": torch.__version__,
        "timm": timm.__version__,
        "rows": rows,
        "deploy_forms": DEPLOY,
        "deploy_no_slower": verdict,
    }
    atomic_write_text(args.out / "latency_ghostnet.json", json.dumps(result, indent=2) + "\n")
    short = [{**r, "model": r["model"].replace("leanvision ", "lv ").replace("torchvision ", "tv ")} for r in rows]
    busy_note = " (BUSY machine)" if busy else ""
    bar_panels(
        short,
        [(k, k.replace("_", " ")) for k in keys],
        args.out / "latency_ghostnet.png",
        title=f"224x224 latency, {args.threads} threads (median ms){busy_note}",
    )

    print("\n| model | params | MACs | " + " | ".join(keys) + " |")
    print("|---|---|---|" + "---|" * len(keys))
    for r in rows:
        cells_txt = " | ".join(f"{r[k]:.2f} ({r[k.replace('_ms', '_vs_timm')]:.2f}x)" for k in keys)
        print(f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['macs'] / 1e6:.1f}M | {cells_txt} |")
    print(
        f"1-minute load average {load_before:.2f} at the start; other processes used at most {_cores(worst)} CPU "
        f"cores while cells were timed (limit {args.max_load})"
        + (" - measured on a BUSY machine" if busy else " - quiet machine")
    )
    print("deploy form (per backend) no slower than timm / mobilenet_v3_large:", verdict)


if __name__ == "__main__":
    main()
