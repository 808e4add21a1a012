"""GPU latency of the efficient operators beside their static baselines (DyNet arXiv 2004.10694, GhostNet 1911.11907).

    python benchmarks/latency_gpu.py                     # on a CUDA machine: batch 1, 32, 256; eager + CUDA graph
    python benchmarks/latency_gpu.py --device cpu --size 64 --batches 2 --rounds 1   # smoke test without a GPU

The same pairs as benchmarks/latency_dynamic.py, timed on a GPU in ONE interleaved run per (batch, mode) cell,
medians reported:
  leanvision dy_resnet18 (deploy form: BN folded; per-sample fusion at batch 1, groups=B fusion above)
      vs torchvision resnet18, plus dy_resnet18 in the feature-fusion form (what a dynamic batch needs);
  timm efficientnet_cc_b0_4e (CondConv, 4 experts) vs timm efficientnet_b0;
  leanvision ghostnet_100 (deploy form) vs torchvision mobilenet_v3_large.
Modes: "eager" (fp32, every call synchronised) and "graph" (the forward captured once in a CUDA graph and
replayed: what is left when the per-kernel launch cost is gone). A model whose graph capture fails is
reported as such, not dropped silently. Writes JSON + PNG into --out.
"""

from __future__ import annotations

import argparse
import json
import platform

import _runs
import timm
import torch
from latency_dynamic import B0, CC, DY, GHOST, MNV3, RN, build_models
from torch import nn

from leanvision._io import atomic_write_text
from leanvision.models import create_model
from leanvision.ops import set_form
from leanvision.profile import compare_latency, profile
from leanvision.report import bar_panels

DY_FEATURES = "lv dy_resnet18 (feature fusion)"
PAIRS = {  # ratio name -> (candidate, baseline)
    "dy_resnet18_vs_resnet18": (DY, RN),
    "dy_resnet18_features_vs_resnet18": (DY_FEATURES, RN),
    "cc_b0_4e_vs_b0": (CC, B0),
    "ghostnet_vs_mobilenet_v3": (GHOST, MNV3),
}


class GraphModel(nn.Module):
    """A model's forward captured in a CUDA graph for one input shape; a call copies the input in and replays."""

    def __init__(self, model: nn.Module, x: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("static_in", x.clone())  # also tells compare_latency which device to use
        self.model = model.eval()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.inference_mode(), torch.cuda.stream(stream):
            for _ in range(3):  # warm up cuDNN's algorithm choice outside the capture
                self.model(self.static_in)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(self.graph):
            self.static_out = self.model(self.static_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.static_in.copy_(x)
        self.graph.replay()
        return self.static_out


def models_on(device: torch.device) -> dict[str, nn.Module]:
    models = build_models()
    models[DY_FEATURES] = set_form(create_model("dy_resnet18").fuse(), "features")
    return {name: m.to(device).eval() for name, m in models.items()}


def parse_args() -> argparse.Namespace:
    ap = _runs.make_parser(__doc__, data_help=None)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32, 256])
    ap.add_argument("--modes", nargs="+", default=["eager", "graph"], choices=["eager", "graph"])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds; the median is over all timed runs")
    ap.add_argument("--iters", type=int, default=20, help="timed calls per round")
    _runs.add_out_arg(ap, "latency_gpu")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run this on a GPU machine, or pass --device cpu for a smoke test")
    torch.backends.cudnn.benchmark = True  # cuDNN picks its fastest algorithm per shape, as deployments do
    args.out.mkdir(parents=True, exist_ok=True)
    x1 = torch.randn(1, 3, args.size, args.size)
    costs = {n: profile(m, x1) for n, m in models_on(torch.device("cpu")).items()}
    cells, failures = {}, {}
    for bs in args.batches:
        x = torch.randn(bs, 3, args.size, args.size, device=device)
        for mode in args.modes:
            if mode == "graph" and device.type != "cuda":
                continue
            key = f"{mode}_bs{bs}"
            models = models_on(device)
            if mode == "graph":
                wrapped = {}
                for name, m in models.items():
                    try:
                        wrapped[name] = GraphModel(m, x)
                    except RuntimeError as e:  # e.g. a host synchronisation inside the forward
                        failures[f"{key} {name}"] = str(e).splitlines()[0]
                models = wrapped
            stats = compare_latency(models, x, rounds=args.rounds, iters=args.iters)
            cells[key] = {n: {"median_ms": s.median_ms, "p90_ms": s.p90_ms} for n, s in stats.items()}
            print(f"batch {bs} {mode}: " + ", ".join(f"{n} {s.median_ms:.3f} ms" for n, s in stats.items()), flush=True)
            del models
            if device.type == "cuda":
                torch.cuda.empty_cache()
    ratios = {
        k: {r: c[a]["median_ms"] / c[b]["median_ms"] for r, (a, b) in PAIRS.items() if a in c and b in c}
        for k, c in cells.items()
    }
    rows = []
    for name, prof in costs.items():
        row = {"model": name, "params": prof.params, "macs": prof.macs}
        for k, c in cells.items():
            if name in c:
                row[f"{k}_ms"], row[f"{k}_p90_ms"] = c[name]["median_ms"], c[name]["p90_ms"]
        rows.append(row)
    result = {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "size": args.size,
        "rounds": args.rounds,
        "iters": args.iters,
        "rows": rows,
        "ratios": ratios,
        "graph_capture_failures": failures,
    }
    atomic_write_text(args.out / "latency_gpu.json", json.dumps(result, indent=2) + "\n")
    bar_panels(
        rows,
        [(f"{k}_ms", k.replace("_", " ") + " (ms)") for k in cells],
        args.out / "latency_gpu.png",
        title=f"{args.size}x{args.size} latency on {result['gpu'] or device} (median ms)",
    )
    print(_runs.markdown(rows, {**_runs.SIZE_COLUMNS, **{k: (f"{k}_ms", ".3f") for k in cells}}))
    for k, rk in ratios.items():
        print(f"{k}: " + ", ".join(f"{n} {v:.2f}x" for n, v in rk.items()))
    for k, e in failures.items():
        print(f"graph capture failed: {k}: {e}")


if __name__ == "__main__":
    main()
