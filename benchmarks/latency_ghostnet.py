"""Latency of GhostNet-1.0x (arXiv 1911.11907) deploy forms vs timm and MobileNetV3-L, at 1 thread and all cores.

    python benchmarks/latency_ghostnet.py             # 224x224, batch 1 and 32, eager + onnxruntime, 1 thread + all
    python benchmarks/latency_ghostnet.py --resume    # continue a stopped run: skip the cells already measured
    python benchmarks/latency_ghostnet.py --onnx-ops  # no timing: ONNX node types of every model's export

All models are timed in the same run, interleaved round by round, medians reported, each in its deploy form:
BatchNorm folded by leanvision.ops.fuse_bn (leanvision's and torchvision's nets) or by
torch.fx.experimental.optimization.fuse (timm's, after folding its BatchNormAct2d, which fx would inline); the run
refuses to start if any timed model still computes a BatchNorm. Targets: leanvision's deploy form no slower than
timm's ghostnet_100 and than torchvision's mobilenet_v3_large, in every (batch, backend) cell, at 1 thread and at all
cores (verdicts name the thread count: all cores is the headline). The deploy form is per backend: `model.fuse()` in
eager, `onnxruntime_form(model)` (BN folded, Ghost halves padded to 16 channels, no concatenation; same outputs) for
onnxruntime; both rows are timed in both. Where a cell misses, where the time goes is profiled and saved
(OUT/where_time_goes/<cell>.json: time per op type of our deploy form and of both baselines; torch.profiler in
eager, onnxruntime's profiler otherwise).
Writes JSON + PNG into --out; each finished cell is saved at once to latency_ghostnet.partial.json.
Run it on a quiet machine: any other busy process oversubscribes the cores and distorts the timings. The script
refuses to start when the 1-minute load average exceeds --max-load (default 0.5); --allow-busy runs anyway. While
each cell is timed it measures the CPU cores used by OTHER processes (all busy CPU time minus its own; the load
average would count its own threads) and labels the run busy, in the JSON and beside the table, above --max-load.
"""

from __future__ import annotations

import json
from pathlib import Path

import _runs
import timm
import torch
import torchvision
from _machine import cores_text, load1
from latency_dynamic import timm_deploy
from torch.fx.experimental.optimization import fuse as fx_fuse

from leanvision._io import atomic_write_text
from leanvision.models import create_model
from leanvision.models.ghostnet import onnxruntime_form
from leanvision.ops import fuse_bn
from leanvision.profile import compare_latency, profile

# What a resumed run must share with the saved cells for them to be comparable.
SAME_ON_RESUME = ("threads", "rounds", "torch", "timm")
TRAINING_FORM = "leanvision ghostnet_100"
ORT_FORM = "leanvision ghostnet_100 (onnxruntime form)"
DEPLOY = {"eager": "leanvision ghostnet_100 (deploy)", "onnxruntime": ORT_FORM}  # the deploy form per backend
TIMM = "timm ghostnet_100 (deploy)"
MNV3 = "torchvision mobilenet_v3_large (deploy)"


def build_models(*, training_form: bool = False) -> dict[str, torch.nn.Module]:
    """Every timed model in its deploy form (``training_form`` adds ours unfolded, for --onnx-ops only)."""
    torch.manual_seed(0)
    ours = create_model("ghostnet_100").eval()
    return {
        **({TRAINING_FORM: ours} if training_form else {}),
        "leanvision ghostnet_100 (deploy)": fuse_bn(ours).eval(),
        ORT_FORM: onnxruntime_form(ours).eval(),
        # fx's fuse folds conv -> nn.BatchNorm2d; timm's BatchNormAct2d (its last 1x1 conv) is folded first.
        TIMM: fx_fuse(timm_deploy(timm.create_model("ghostnet_100", pretrained=False))),
        MNV3: fuse_bn(torchvision.models.mobilenet_v3_large()),
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

    models = build_models(training_form=True)
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
    a, b = TRAINING_FORM, "leanvision ghostnet_100 (deploy)"
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
    ap = _runs.make_parser(__doc__, data_help=None)
    _runs.add_timing_args(ap, "latency_ghostnet")
    ap.add_argument(
        "--onnx-ops",
        action="store_true",
        help="no timing: count the ONNX node types of every model's export (and of onnxruntime's optimised graph) "
        "into OUT/onnx_ops.json",
    )
    args = ap.parse_args()
    if args.onnx_ops:
        onnx_ops(args.out, max(_runs.threads_of(args)))
        return
    config = {"rounds": args.rounds, "torch": torch.__version__, "timm": timm.__version__}
    models = build_models()
    x1 = torch.randn(1, 3, 224, 224)
    _runs.check_deploy(models, x1)

    def measure(backend: str, x: torch.Tensor, iters: int, threads: int) -> dict:
        return compare_latency(models, x, backend=backend, threads=threads, rounds=args.rounds, iters=iters)

    cells, load_before = _runs.time_cells(
        args, "latency_ghostnet", config, SAME_ON_RESUME, measure, size=224, iters=(10, 3)
    )
    load_after = load1()
    costs = {n: {"params": (p := profile(m, x1)).params, "macs": p.macs} for n, m in models.items()}
    keys = _runs.cell_keys(args, cells)
    rows = _runs.cell_rows(costs, cells, keys)
    timm_row = next(r for r in rows if r["model"].startswith("timm"))
    for row in rows:
        for k in keys:
            row[f"{k}_vs_timm"] = row[f"{k}_ms"] / timm_row[f"{k}_ms"]
    by_name = {r["model"]: r for r in rows}
    at = _runs.judged_at(args)
    headline = f"{at['headline_threads']}_threads"
    by_threads: dict[str, dict] = {}
    for k in keys:
        backend, ms = k.split("_bs")[0], f"{k}_ms"
        deploy = by_name[DEPLOY[backend]]
        cell = {"vs_timm": deploy[ms] <= timm_row[ms], "vs_mobilenet_v3_large": deploy[ms] <= by_name[MNV3][ms]}
        by_threads.setdefault(f"{cells[k]['threads']}_threads", {})[ms] = cell
        if not all(cell.values()):  # a miss: save where the time goes
            bs = int(k.split("_bs")[1].split("_t")[0])
            compared = {n: models[n] for n in (DEPLOY[backend], TIMM, MNV3)}
            _runs.where_time_goes(compared, backend, torch.randn(bs, 3, 224, 224), cells[k]["threads"],
                            args.out / "where_time_goes" / f"{k}.json")  # fmt: skip
    verdict = {
        **at,
        "by_threads": by_threads,
        "met_at_headline": all(all(c.values()) for c in by_threads.get(headline, {}).values()),
        "met_at_1_thread": all(all(c.values()) for c in by_threads.get("1_threads", {}).values()),
    }
    machine = _runs.machine_record(args, cells, keys, load_before)
    result = {
        "threads": _runs.threads_of(args),
        "rounds": args.rounds,
        **machine,
        "load_avg_1m_after": load_after,  # includes this benchmark's own threads
        "torch": torch.__version__,
        "timm": timm.__version__,
        "rows": rows,
        "deploy_forms": DEPLOY,
        "deploy_no_slower": verdict,
    }
    short = [{**r, "model": r["model"].replace("leanvision ", "lv ").replace("torchvision ", "tv ")} for r in rows]
    title = "224x224 latency, deploy forms (median ms)"
    _runs.save_latency(args.out / "latency_ghostnet.json", result, short, keys, title)
    cell = {k: (lambda r, k=k: f"{r[k + '_ms']:.2f} ({r[k + '_vs_timm']:.2f}x)") for k in keys}
    print(_runs.markdown(rows, {**_runs.SIZE_COLUMNS, **cell}))
    print(
        f"1-minute load average {load_before:.2f} at the start; other processes used at most "
        f"{cores_text(machine['other_cores_max_over_cells'])} CPU cores while cells were timed (limit {args.max_load})"
        + (" - measured on a BUSY machine" if machine["busy"] else " - quiet machine")
    )
    print(
        f"deploy form (per backend) no slower than timm and mobilenet_v3_large in every cell at "
        f"{at['headline_threads']} threads (headline): {verdict['met_at_headline']}; at 1 thread: "
        f"{verdict['met_at_1_thread']}" + (f"; where the time goes: {args.out / 'where_time_goes'}" if any(
            not all(c.values()) for t in by_threads.values() for c in t.values()) else "")
    )  # fmt: skip


if __name__ == "__main__":
    main()
