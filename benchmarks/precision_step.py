"""Is bf16 training faster than float32 on THIS CPU? One training step of a model, timed both ways, interleaved.

    python benchmarks/precision_step.py                                 # ResNet-18 (CIFAR stem), batch 128, 2 threads
    python benchmarks/precision_step.py --model resnet20 --threads 1 --out /tmp/ps
    python benchmarks/precision_step.py --replot benchmarks/results/precision_step/precision_step_AMD_EPYC_AVX2.json

bf16 mixed precision (`precision: bf16`) pays only where the CPU computes bfloat16 natively (oneDNN's AVX-512 or
AMX kernels); elsewhere its convolutions fall back to generic code. This times what a `leanvision train` step does
(forward under autocast, float32 backward and SGD step; channels-last weights as the shipped configs use) at
float32 and at bf16, alternating, and records the CPU, torch's CPU capability, whether oneDNN has bf16 kernels and
which aten kernel a 3x3 convolution dispatches to at each precision (torch.profiler: mkldnn_convolution is oneDNN,
_slow_conv2d_forward the generic im2col + matmul fallback).
The step time of each precision is the median over --steps timed steps (one untimed step each first).
Run it on a quiet machine: it refuses above --max-load and records the cores other processes used.
Writes OUT/precision_step_<cpu>.json + PNG (the CPU is in the name: the answer is a property of the machine).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _machine import add_load_args, check_quiet, other_cpu

from leanvision._io import atomic_write_text
from leanvision.engine.step import autocast, full_precision
from leanvision.models import create_model
from leanvision.profile import cpu_name, native_bf16
from leanvision.report import bar_panels

PRECISIONS = ("fp32", "bf16")


def one_step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, precision: str):
    """fit's standard step: forward under the precision's autocast, loss, float32 backward and optimizer step."""
    t0 = time.perf_counter()
    with autocast(torch.device("cpu"), precision):
        loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    with full_precision(torch.device("cpu")):
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def conv_kernels(precision: str) -> list[str]:
    """The aten ops below ``aten::_convolution`` that one channels-last 3x3 convolution runs at ``precision``."""
    conv = torch.nn.Conv2d(16, 16, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.randn(2, 16, 8, 8).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), autocast(torch.device("cpu"), precision), torch.profiler.profile() as prof:
        conv(x)
    generic = {"aten::conv2d", "aten::convolution", "aten::_convolution"}
    return sorted({e.key for e in prof.key_averages() if "conv" in e.key and e.key not in generic})


def plot(res: dict, path: Path) -> None:
    """One bar per precision: seconds per training step, the CPU in the title."""
    rows = [{"model": p, "step_s": res["step_s"][p]} for p in PRECISIONS]
    title = (f"{res['model']}, batch {res['batch_size']}, {res['threads']} threads\n{res['cpu']}, "
             f"native bf16: {res['native_bf16']}")  # fmt: skip
    bar_panels(rows, [("step_s", "seconds per training step")], path, title=title)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tv_resnet18_cifar", help="registered model (CIFAR-sized input)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per precision (after one untimed)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/precision_step"))
    ap.add_argument("--replot", type=Path, help="redraw the PNG of a saved JSON, no timing")
    add_load_args(ap)
    args = ap.parse_args()
    if args.replot:
        plot(json.loads(args.replot.read_text()), args.replot.with_suffix(".png"))
        return
    load = check_quiet(args.max_load, args.allow_busy)
    torch.set_num_threads(args.threads)
    nets, opts = {}, {}
    for p in PRECISIONS:  # one model per precision, same initialisation
        torch.manual_seed(0)
        nets[p] = create_model(args.model, num_classes=10).to(memory_format=torch.channels_last).train()
        opts[p] = torch.optim.SGD(nets[p].parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(args.batch_size, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch_size,))
    times: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    with other_cpu({}) as record:
        for i in range(args.steps + 1):  # alternate, so both meet the same machine
            for p in PRECISIONS:
                t = one_step(nets[p], opts[p], x, y, p)
                if i:
                    times[p].append(t)
                print(f"step {i}/{args.steps} {p}: {t:.2f} s", flush=True)
    step_s = {p: statistics.median(ts) for p, ts in times.items()}
    cpu, kernels = cpu_name(), {p: conv_kernels(p) for p in PRECISIONS}
    res = {"model": args.model, "batch_size": args.batch_size, "threads": args.threads, "steps": args.steps,
           "layout": "channels_last", "cpu": cpu, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "native_bf16": native_bf16(), "conv_kernels": kernels, "torch": torch.__version__, "load1_before": load,
           "other_cores": record["other_cores"], "times_s": times, "step_s": step_s,
           "bf16_speedup": step_s["fp32"] / step_s["bf16"]}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"precision_step_{re.sub(r'[^A-Za-z0-9]+', '_', cpu).strip('_')}"
    atomic_write_text(stem.with_suffix(".json"), json.dumps(res, indent=2) + "\n")
    plot(res, stem.with_suffix(".png"))
    print(f"{cpu}: fp32 {step_s['fp32']:.2f} s, bf16 {step_s['bf16']:.2f} s per step; "
          f"bf16 is {res['bf16_speedup']:.2f}x fp32's speed; {stem}.json")  # fmt: skip


if __name__ == "__main__":
    main()
