"""Scale-out of the search executors: throughput with 2 workers vs 1, and the driver's overhead per trial.

    python benchmarks/scaleout.py --data-dir DIR                 # Ray and the local process pool, 12 trials/round
    python benchmarks/scaleout.py --data-dir DIR --executors ray --trials 16 --rounds 3

DIR holds cifar10/ (or set $LEANVISION_DATA). Throughput: the same fixed list of seeded random BlockQNN blocks,
each trained by the short-training evaluator (1 epoch on a seeded 1,000-image CIFAR-10 subset, 1 torch thread),
run through `map_unordered` with 1 worker and with 2 workers, interleaved round by round after a warm-up round
(data loaded in every worker); the ratio of medians of trials per second. Target: >= 1.7x with 2 workers on 2
cores. Driver overhead: a search of --overhead-trials trials of a no-op objective through the in-process
executor with the journal (fsync per record, in --out), (wall time - time inside the evaluator) per trial; and the same
search on each executor, wall time per trial (scheduling and transport included). Target: < 50 ms.
Run on a quiet machine (the 1-minute load average is checked; --allow-busy runs anyway, labelled).
Writes JSON + PNG into --out.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import _runs
from _machine import add_load_args, check_quiet, load1

from leanvision._io import atomic_write_text
from leanvision.dist import make_executor, map_unordered
from leanvision.report import bar_panels
from leanvision.search import Journal, create_evaluator, create_space, create_strategy, search


def throughput(kind: str, workers: int, evaluator, samples) -> float:
    with make_executor(kind, workers=workers, threads=1) as ex:
        list(map_unordered(ex, evaluator, samples[:workers]))  # warm-up: every worker loads its data once
        t0 = time.perf_counter()
        out = list(map_unordered(ex, evaluator, samples))
        wall = time.perf_counter() - t0
    failed = [r for _, r in out if not isinstance(r, dict)]
    if failed:
        raise SystemExit(f"{kind}: {len(failed)} trial(s) failed: {failed[0]}")
    return len(samples) / wall


def overhead(kind: str, trials: int, out: Path) -> dict:
    space = create_space("synthetic")
    ev = create_evaluator("synthetic")
    with tempfile.TemporaryDirectory(dir=out) as tmp, make_executor(kind, workers=2 if kind != "inprocess" else None,
                                                            threads=1) as ex:  # fmt: skip
        search(space, create_strategy("random", space, seed=0), ev, budget=4, executor=ex)  # warm-up
        journal = Journal.create(Path(tmp) / "j.jsonl", {"kind": kind})
        t0 = time.perf_counter()
        h = search(space, create_strategy("evolution", space, seed=0), ev, budget=trials, executor=ex, journal=journal)
        wall = time.perf_counter() - t0
    inside = sum(t.seconds for t in h.trials) if kind == "inprocess" else 0.0
    return {"executor": kind, "trials": trials, "wall_s": wall, "ms_per_trial": 1e3 * (wall - inside) / trials}


def main() -> None:
    ap = _runs.make_parser(__doc__)
    ap.add_argument("--executors", nargs="+", default=["ray", "process"], choices=["ray", "process"])
    ap.add_argument("--trials", type=int, default=12, help="trials per throughput round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of 1 and 2 workers")
    ap.add_argument("--subset", type=int, default=1000)
    ap.add_argument("--overhead-trials", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/scaleout"))
    add_load_args(ap)
    args = ap.parse_args()
    busy = check_quiet(args.max_load, args.allow_busy) > args.max_load
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    space = create_space("nsc")
    rng = random.Random(0)
    samples = [space.sample(rng) for _ in range(args.trials)]
    ev = create_evaluator("train_cifar", data_dir=args.data_dir, subset=args.subset, val_size=500, epochs=1,
                          channels=8, flops_ref=1.0, threads=1)  # fmt: skip
    result: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "load_1m_start": load1(),
                    "busy": busy, "throughput": {}, "overhead": []}  # fmt: skip
    for kind in args.executors:
        rates: dict[int, list[float]] = {1: [], 2: []}
        for r in range(args.rounds):
            for w in (1, 2) if r % 2 == 0 else (2, 1):
                rates[w].append(throughput(kind, w, ev, samples))
                print(f"{kind} round {r} workers {w}: {rates[w][-1]:.3f} trials/s", flush=True)
        m1, m2 = statistics.median(rates[1]), statistics.median(rates[2])
        result["throughput"][kind] = {"trials_per_s_1": rates[1], "trials_per_s_2": rates[2], "speedup": m2 / m1,
                                      "target_met": m2 / m1 >= 1.7}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)  # the overhead journals are written here: a real disk, not tmpfs
    for kind in ["inprocess", *args.executors]:
        result["overhead"].append(overhead(kind, args.overhead_trials, args.out))
        print(json.dumps(result["overhead"][-1]), flush=True)
    result["load_1m_end"] = load1()
    atomic_write_text(args.out / "scaleout.json", json.dumps(result, indent=2) + "\n")
    rows = [{"model": f"{k} speed-up", "speedup": v["speedup"]} for k, v in result["throughput"].items()]
    rows += [{"model": f"{o['executor']} overhead", "ms": o["ms_per_trial"]} for o in result["overhead"]]
    bar_panels(rows, [("speedup", "2 workers / 1 worker (trials/s)"), ("ms", "driver ms per trial")],
               args.out / "scaleout.png", title="search executors on 2 cores")  # fmt: skip
    print(
        "\n| executor | 1 worker trials/s | 2 workers trials/s | speed-up | target >= 1.7x |\n|---|---:|---:|---:|---|"
    )
    for k, v in result["throughput"].items():
        print(f"| {k} | {statistics.median(v['trials_per_s_1']):.3f} | {statistics.median(v['trials_per_s_2']):.3f} "
              f"| {v['speedup']:.2f}x | {'met' if v['target_met'] else 'MISSED'} |")  # fmt: skip
    print("\n| executor | ms per trial (driver) |\n|---|---:|")
    for o in result["overhead"]:
        print(f"| {o['executor']} | {o['ms_per_trial']:.2f} |")


if __name__ == "__main__":
    main()
