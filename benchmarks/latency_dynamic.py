"""Latency of dynamic convolution nets (DyNet arXiv 2004.10694, CondConv 1904.04971) beside their static baselines.

    python benchmarks/latency_dynamic.py            # 224x224, batch 1 and 32, eager + onnxruntime, 1 thread + all cores
    python benchmarks/latency_dynamic.py --resume   # continue a stopped run: skip the cells already measured
    python benchmarks/latency_dynamic.py --allow-busy --size 64 --rounds 1 --out /tmp/latency_dynamic   # smoke test

Pairs, timed in ONE interleaved run per (threads, batch, backend) cell, medians reported, every model in its deploy
form (BatchNorm folded: leanvision's .fuse(), leanvision.ops.fuse_bn for torchvision's nets, the conv -> BN pairs of
timm's EfficientNets folded here; the run refuses to start if any timed model still computes a BatchNorm):
  leanvision dy_resnet18 (per-sample fusion at batch 1, groups=B fusion above) vs torchvision resnet18;
  timm efficientnet_cc_b0_4e (CondConv, 4 experts; BN scale folded into the experts, its shift kept as an add:
      sigmoid routing weights do not sum to 1) vs timm efficientnet_b0;
  leanvision ghostnet_100 vs torchvision mobilenet_v3_large (target <= 1.0x); the onnxruntime cells export its
      onnxruntime_form (Ghost halves padded to 16 channels, no Concat; same outputs).
Where a Dy-ResNet-18 cell misses, the time per op of it and of ResNet-18 is saved to OUT/where_time_goes/<cell>.json.
onnxruntime cells export every model with a FIXED batch (the cell's): timm's CondConv and the fast dynamic forms
bake the batch size into the graph. Dy-ResNet18 is exported in the per-sample (batch 1) or batched (groups=B)
form, its kernel mixing a batched MatMul; the extra row "dynamic-batch ONNX" is the feature-fusion form a dynamic
batch axis needs (g x the conv MACs). The sessions (leanvision.export.onnx_session) are timed interleaved.
Targets (judged at all cores, the headline; 1 thread reported beside): dy_resnet18 at <= 0.35x resnet18's MACs
runs at <= 0.6x its latency at batch 1 and <= 1.0x at batch 32, in both backends; ghostnet <= mobilenet_v3_large.
Writes JSON + PNG into --out; every finished cell is saved at once to latency_dynamic.partial.json.
Run it on a quiet machine: the script refuses to start when the 1-minute load average exceeds --max-load
(default 0.5; --allow-busy runs anyway) and measures the CPU cores used by OTHER processes while each cell is
timed, labelling the run busy above --max-load.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

import _runs
import timm
import torch
import torchvision
from timm.layers import BatchNormAct2d, CondConv2d
from torch import nn

from leanvision.export import export_onnx, onnx_feed, onnx_session
from leanvision.models import create_model
from leanvision.models.ghostnet import onnxruntime_form
from leanvision.ops import fuse_bn, set_form
from leanvision.ops.fuse import bn_affine
from leanvision.profile import compare_latency, profile

SAME_ON_RESUME = ("threads", "rounds", "torch", "timm", "size")
DY, RN = "lv dy_resnet18 (deploy)", "tv resnet18 (deploy)"
DY_DYNAMIC_ONNX = "lv dy_resnet18 (dynamic-batch ONNX)"
CC, B0 = "timm efficientnet_cc_b0_4e (deploy)", "timm efficientnet_b0 (deploy)"
GHOST, MNV3 = "lv ghostnet_100 (deploy)", "tv mobilenet_v3_large (deploy)"  # GhostNet's target: <= 1.0x MobileNetV3-L
TARGETS = {1: 0.6, 32: 1.0}  # dy_resnet18 / resnet18 latency, per batch size
MAX_MACS = 0.35  # dy_resnet18 / resnet18 MACs


class OrtModel(nn.Module):
    """An onnxruntime session behind nn.Module's call, so compare_latency interleaves fixed-batch exports."""

    def __init__(self, model: nn.Module, x: torch.Tensor, path: Path, *, threads: int, dynamic: bool) -> None:
        super().__init__()
        self.session = onnx_session(export_onnx(model, x, path, dynamic_batch=dynamic), threads=threads)

    def forward(self, x: torch.Tensor) -> list:
        return self.session.run(None, onnx_feed(self.session, x))


class _Shift(nn.Module):
    """A per-channel add: the part of a BatchNorm that cannot go into CondConv's experts."""

    def __init__(self, shift: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("shift", shift.view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.shift


@torch.no_grad()
def timm_deploy(model: nn.Module) -> nn.Module:
    """timm's EfficientNet with each conv -> BatchNormAct2d pair folded (the activation kept); outputs checked."""
    model = model.eval()
    x = torch.randn(2, 3, 64, 64)
    before = model(x)
    for parent in list(model.modules()):
        kids = list(parent.named_children())
        for (_, conv), (bn_name, bn) in itertools.pairwise(kids):
            if not isinstance(bn, BatchNormAct2d) or not isinstance(conv, (nn.Conv2d, CondConv2d)):
                continue
            scale, shift = (t.float() for t in bn_affine(bn))
            tail = [bn.drop, bn.act]
            if isinstance(conv, CondConv2d):  # experts (E, C_out * rest): scale each expert's output channel
                conv.weight.copy_((conv.weight.view(conv.weight.shape[0], conv.out_channels, -1) * scale[:, None])
                                  .flatten(1))  # fmt: skip
                tail.insert(0, _Shift(shift))
            else:
                conv.weight.mul_(scale.view(-1, 1, 1, 1))
                conv.bias = nn.Parameter(shift if conv.bias is None else conv.bias * scale + shift)
            setattr(parent, bn_name, nn.Sequential(*tail))
    err = float((model(x) - before).abs().max())
    if err > 1e-3 * float(before.abs().max()):
        raise SystemExit(f"folding timm's BatchNorms changed the outputs by {err:.3g}: timm's layout changed")
    return model


def build_models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        RN: fuse_bn(torchvision.models.resnet18()),
        # Per-sample fusion at batch 1 and groups=B fusion above ("auto").
        DY: create_model("dy_resnet18").fuse(),
        B0: timm_deploy(timm.create_model("efficientnet_b0", pretrained=False)),
        CC: timm_deploy(timm.create_model("efficientnet_cc_b0_4e", pretrained=False)),
        GHOST: create_model("ghostnet_100").fuse(),
        MNV3: fuse_bn(torchvision.models.mobilenet_v3_large()),
    }


def ort_models(models: dict[str, nn.Module], x: torch.Tensor, tmp: Path, threads: int) -> dict[str, nn.Module]:
    out = {}
    for i, (name, model) in enumerate(models.items()):
        if name == DY:
            set_form(model, "per_sample" if x.shape[0] == 1 else "batched")
        if name == GHOST:  # its onnxruntime deploy form: halves padded to 16 channels, no Concat (same outputs)
            model = onnxruntime_form(model)
        out[name] = OrtModel(model, x, tmp / f"m{i}.onnx", threads=threads, dynamic=False)
    features = set_form(create_model("dy_resnet18").fuse(), "features")
    out[DY_DYNAMIC_ONNX] = OrtModel(features, x, tmp / "features.onnx", threads=threads, dynamic=True)
    return out


def parse_args() -> argparse.Namespace:
    ap = _runs.make_parser(__doc__, data_help=None)
    ap.add_argument(
        "--size", type=int, default=224, help="input resolution (224 for the targets; smaller = smoke test)"
    )
    _runs.add_timing_args(ap, "latency_dynamic", iters=(10, 3))
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    config = {"rounds": args.rounds, "torch": torch.__version__, "timm": timm.__version__, "size": args.size}
    x1 = torch.randn(1, 3, args.size, args.size)
    models = build_models()
    _runs.check_deploy(models, x1)
    costs = {n: {"params": (p := profile(m, x1)).params, "macs": p.macs} for n, m in models.items()}
    costs[DY_DYNAMIC_ONNX] = costs[DY]  # same model, another execution form

    def measure(backend: str, x: torch.Tensor, iters: int, threads: int) -> dict:
        with tempfile.TemporaryDirectory(prefix="latency-dynamic-") as tmp:
            models = build_models()
            if backend == "onnxruntime":
                models = ort_models(models, x, Path(tmp), threads)
            return compare_latency(models, x, threads=threads, rounds=args.rounds, iters=iters)

    cells, load_before = _runs.time_cells(
        args, "latency_dynamic", config, SAME_ON_RESUME, measure, size=args.size, iters=(10, 3)
    )
    report(args, cells, costs, load_before)


def report(args: argparse.Namespace, cells: dict, costs: dict, load_before: float) -> None:
    keys = _runs.cell_keys(args, cells)
    rows = _runs.cell_rows(costs, cells, keys)
    at = _runs.judged_at(args)
    macs_ratio = costs[DY]["macs"] / costs[RN]["macs"]
    ratios, targets, built = {}, {}, None
    for k in keys:
        ms = cells[k]["models"]
        bs, threads = int(k.split("_bs")[1].split("_t")[0]), cells[k]["threads"]
        ratios[k] = {
            "dy_resnet18_vs_resnet18": ms[DY]["median_ms"] / ms[RN]["median_ms"],
            "cc_b0_4e_vs_b0": ms[CC]["median_ms"] / ms[B0]["median_ms"],
            "ghostnet_vs_mobilenet_v3": ms[GHOST]["median_ms"] / ms[MNV3]["median_ms"],
        }
        cell = targets.setdefault(f"{threads}_threads", {})
        if bs in TARGETS:
            met = ratios[k]["dy_resnet18_vs_resnet18"] <= TARGETS[bs]
            cell[f"dy_resnet18_{k}"] = {"target": TARGETS[bs], "met": met}
        cell[f"ghostnet_{k}"] = {"target": 1.0, "met": ratios[k]["ghostnet_vs_mobilenet_v3"] <= 1.0}
        if bs in TARGETS and not cell[f"dy_resnet18_{k}"]["met"]:  # a miss: save where the time goes
            built = built or build_models()  # once; the form is set per cell below
            compared = {DY: set_form(built[DY], "per_sample" if bs == 1 else "batched"), RN: built[RN]}
            x = torch.randn(bs, 3, args.size, args.size)
            _runs.where_time_goes(compared, k.split("_bs")[0], x, threads, args.out / "where_time_goes" / f"{k}.json")
    verdict = {
        **at,
        "dy_resnet18_macs_vs_resnet18": macs_ratio,
        "dy_resnet18_macs_ok": macs_ratio <= MAX_MACS,
        "by_threads": targets,
        "met_at_headline": all(t["met"] for t in targets.get(f"{at['headline_threads']}_threads", {}).values())
        and macs_ratio <= MAX_MACS,
        "met_at_1_thread": all(t["met"] for t in targets.get("1_threads", {}).values()) and macs_ratio <= MAX_MACS,
    }
    result = {
        "threads": _runs.threads_of(args),
        "rounds": args.rounds,
        "size": args.size,
        **_runs.machine_record(args, cells, keys, load_before),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "rows": rows,
        "ratios": ratios,
        "verdict": verdict,
    }
    title = f"{args.size}x{args.size} latency, deploy forms (median ms)"
    _runs.save_latency(args.out / "latency_dynamic.json", result, rows, keys, title)
    print(_runs.markdown(rows, {**_runs.SIZE_COLUMNS, **{k: (f"{k}_ms", ".2f") for k in keys}}))
    for k, rk in ratios.items():
        print(
            f"{k}: dy_resnet18/resnet18 {rk['dy_resnet18_vs_resnet18']:.2f}x, cc_b0_4e/b0 {rk['cc_b0_4e_vs_b0']:.2f}x, "
            f"ghostnet/mobilenet_v3_large {rk['ghostnet_vs_mobilenet_v3']:.2f}x"
        )
    print(
        f"verdict at {at['headline_threads']} threads (headline): {'met' if verdict['met_at_headline'] else 'missed'}; "
        f"at 1 thread: {'met' if verdict['met_at_1_thread'] else 'missed'}; dy_resnet18 MACs {macs_ratio:.3f}x resnet18"
        + (" - BUSY machine" if result["busy"] else " - quiet machine")
    )


if __name__ == "__main__":
    main()
