"""Where the batch-1 time of Synaptic Strength-pruned nets (arXiv 1811.02454) goes: convolutions vs everything else.

    python benchmarks/latency_by_op.py --results OUT/synaptic_cifar.json --threads 2      # quiet machine; and 1
    python benchmarks/latency_by_op.py --results ... --allow-busy --iters 20 --out /tmp/op   # smoke test

Loads the same nets as latency_pruned.py (dense, the chosen grid point's pruned nets, the thin controls; BatchNorm
folded) and times, per net, eager batch 1 at --threads: the median ms of a forward, and of each conv called alone
on its own input shape. Their difference ("rest") is what the convs do not explain: the other ops (ReLU, the
residual adds, pooling, the classifier) and the cost of calling their modules, which barely shrinks with the MACs.
Writes OUT/latency_by_op_t<threads>.json (OUT: --out, default the folder of --results).
"""

from __future__ import annotations

import json
from pathlib import Path

import _runs
import torch
from _machine import add_load_args, check_quiet
from latency_pruned import load_models, pick_runs

from leanvision.profile import latency, other_cpu, profile


def by_op(model: torch.nn.Module, x: torch.Tensor, iters: int) -> dict:
    """Median ms of a forward, and of each conv alone on its input shape (the rest: every other op and call)."""
    inputs: dict[str, tuple] = {}

    def keep(name: str):  # a hook that returns None, so the forward's outputs are left as they are
        return lambda mod, args, out: inputs.__setitem__(name, (args[0].shape, out.shape))

    hooks = [m.register_forward_hook(keep(n)) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        model(x)
    for h in hooks:
        h.remove()
    wall = latency(model, x, warmup=10, iters=iters).median_ms  # at torch's current thread count
    macs = profile(model, x).by_module
    convs = {}
    for name, (shape, out) in inputs.items():
        convs[name] = {"in": list(shape), "out": list(out), "macs": macs[name],
                       "ms": latency(model.get_submodule(name), torch.zeros(shape), warmup=10,
                                     iters=iters).median_ms}  # fmt: skip
    conv_ms = sum(c["ms"] for c in convs.values())
    return {"wall_ms": wall, "conv_ms": conv_ms, "rest_ms": wall - conv_ms, "convs": convs}


def main() -> None:
    ap = _runs.make_parser(__doc__, data_help=None)
    ap.add_argument("--results", type=Path, required=True, help="synaptic_cifar.py's JSON")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=200, help="calls timed per net and per conv (medians)")
    _runs.add_out_arg(ap, "")
    add_load_args(ap)
    args = ap.parse_args()
    out = args.results.parent if args.out == Path("benchmarks/results") else args.out
    load_before = check_quiet(args.max_load, args.allow_busy)
    data = json.loads(args.results.read_text())
    models, info = load_models(args.results, data, pick_runs(data, chosen_only=True))
    torch.set_num_threads(args.threads)
    x = torch.zeros(1, 3, 32, 32)
    with other_cpu({}) as load:  # the CPU cores other processes used meanwhile: a quiet run shows ~0
        rows = {k: {**info[k], **by_op(m, x, args.iters)} for k, m in models.items()}
    result = {"results": str(args.results), "threads": args.threads, "iters": args.iters, "torch": torch.__version__,
              "load_avg_1m": load_before, "other_cores": load.get("other_cores"), "allow_busy": args.allow_busy,
              "rows": rows}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    _runs.write_json(out / f"latency_by_op_t{args.threads}.json", result)
    print(f"eager batch 1, {args.threads} threads, median ms per forward; convs: each conv alone, summed:")
    for k, r in rows.items():
        print(f"{k:55s} MACs {r['macs'] / 1e6:6.2f} M  wall {r['wall_ms']:.3f}  convs {r['conv_ms']:.3f}  "
              f"rest {r['rest_ms']:.3f}  ({len(r['convs'])} convs)")  # fmt: skip


if __name__ == "__main__":
    main()
