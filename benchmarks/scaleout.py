"""Scale-out of the search executors: throughput with 2 workers vs 1, and the driver's overhead per trial.

    python benchmarks/scaleout.py --data-dir DIR                 # Ray and the process pool, 7 rounds of 24 trials
    python benchmarks/scaleout.py --data-dir DIR --executors process --trials 2 --rounds 1 --overhead-trials 4 \
        --out /tmp/scaleout_smoke --allow-busy                   # a smoke run (seconds of work; not a measurement)

DIR holds cifar10/ (or set $LEANVISION_DATA). Throughput: the same fixed list of --trials (24) seeded random BlockQNN
blocks, each trained by the short-training evaluator (1 epoch on a seeded 1,000-image CIFAR-10 subset, 1 torch
thread). Per round (--rounds, 7) every configuration runs the whole list once, in an order rotated round by round:
1 and 2 "bare" processes (plain spawned processes pulling trial indices from a shared queue: list scheduling with
no executor, the ceiling) and each executor through `map_unordered` with 1 and with 2 workers; every worker first
trains one block untimed (data loaded). Every trial's own time (inside the worker) and process id are recorded.
Speed-up = wall(1) / wall(2) per round; the ceiling is the bare processes' speed-up, and each executor's speed-up is
reported as a fraction of the ceiling of the same round (median over rounds, with min and max). Targets: process
pool >= 0.93 and Ray >= 0.90 of the ceiling. Driver overhead: a search of --overhead-trials trials of a no-op
objective through the in-process executor with the journal (fsync per record, in --out), (wall time - time inside
the evaluator) per trial; and the same search on each executor, wall time per trial (scheduling and transport
included). Target: < 50 ms.
Run on a quiet machine (the 1-minute load average is checked; --allow-busy runs anyway, labelled).
Writes JSON + PNG into --out.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import _runs
from _machine import add_load_args, check_quiet, load1

from leanvision._io import atomic_write_text
from leanvision.executors import make_executor, map_unordered
from leanvision.report import bar_panels
from leanvision.search import Journal, create_evaluator, create_space, create_strategy, search


class Timed:
    """The evaluator, plus the trial's own time and the worker's process id (picklable)."""

    def __init__(self, evaluator) -> None:
        self.evaluator = evaluator

    def __call__(self, sample) -> dict:
        t0 = time.perf_counter()
        out = self.evaluator(sample)
        return {"trial_s": time.perf_counter() - t0, "pid": os.getpid(), "objective": out["objective"]}


def _bare_worker(fn, samples, tasks, results, go) -> None:
    import torch

    torch.set_num_threads(1)
    fn(samples[0])  # untimed: load the data
    results.put(("ready", None))
    go.wait()
    while (i := tasks.get()) is not None:
        results.put((i, fn(samples[i])))


def run_bare(workers: int, fn: Timed, samples) -> dict:
    """The trials on ``workers`` plain processes pulling indices from one queue: the ceiling, no executor."""
    ctx = multiprocessing.get_context("spawn")  # as the process pool: a fork after torch threads can hang
    tasks, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    for i in range(len(samples)):
        tasks.put(i)
    for _ in range(workers):
        tasks.put(None)
    procs = [ctx.Process(target=_bare_worker, args=(fn, samples, tasks, results, go)) for _ in range(workers)]
    for p in procs:
        p.start()
    for _ in range(workers):
        results.get()
    t0 = time.perf_counter()
    go.set()
    trials = [results.get() for _ in samples]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
    return {"wall_s": wall, "trials": [{"trial": i, **r} for i, r in sorted(trials, key=lambda t: t[0])]}


def run_executor(kind: str, workers: int, fn: Timed, samples) -> dict:
    """The trials through ``kind``'s executor with ``workers`` workers, after one untimed trial per worker."""
    with make_executor(kind, workers=workers, threads=1) as ex:
        list(map_unordered(ex, fn, samples[:1] * workers))  # warm-up: every worker loads its data once
        t0 = time.perf_counter()
        out = list(map_unordered(ex, fn, samples))
        wall = time.perf_counter() - t0
    failed = [r for _, r in out if not isinstance(r, dict)]
    if failed:
        raise SystemExit(f"{kind}: {len(failed)} trial(s) failed: {failed[0]}")
    index = {json.dumps(s, sort_keys=True): i for i, s in enumerate(samples)}
    trials = sorted(({"trial": index[json.dumps(s, sort_keys=True)], **r} for s, r in out), key=lambda t: t["trial"])
    return {"wall_s": wall, "trials": trials}


def summarize(rounds: list[dict], kinds: list[str]) -> dict:
    """Per executor: speed-up wall(1)/wall(2) per round, the bare ceiling of that round, and their ratio."""
    ceiling = [r["bare"][1]["wall_s"] / r["bare"][2]["wall_s"] for r in rounds]
    out = {"ceiling_speedup": ceiling, "ceiling_median": statistics.median(ceiling)}
    targets = {"process": 0.93, "ray": 0.90}
    for kind in kinds:
        speed = [r[kind][1]["wall_s"] / r[kind][2]["wall_s"] for r in rounds]
        frac = [s / c for s, c in zip(speed, ceiling, strict=True)]
        med = statistics.median(frac)
        out[kind] = {"speedup": speed, "speedup_median": statistics.median(speed), "fraction_of_ceiling": frac,
                     "fraction_median": med, "fraction_min": min(frac), "fraction_max": max(frac),
                     "target": targets[kind], "target_met": med >= targets[kind]}  # fmt: skip
    return out


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
    ap.add_argument("--trials", type=int, default=24, help="trials per configuration and round (>= 24 to measure)")
    ap.add_argument("--rounds", type=int, default=7, help="rounds, each running every configuration once (>= 7)")
    ap.add_argument("--subset", type=int, default=1000)
    ap.add_argument("--overhead-trials", type=int, default=200)
    _runs.add_out_arg(ap, "scaleout")
    add_load_args(ap)
    args = ap.parse_args()
    busy = check_quiet(args.max_load, args.allow_busy) > args.max_load
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    space = create_space("nsc")
    rng = random.Random(0)
    samples = []
    while len(samples) < args.trials:  # distinct blocks: trials are told apart by their block
        s = space.sample(rng)
        if s not in samples:
            samples.append(s)
    ev = create_evaluator("train_cifar", data_dir=args.data_dir, subset=args.subset, val_size=500, epochs=1,
                          channels=8, flops_ref=1.0, threads=1)  # fmt: skip
    result: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "load_1m_start": load1(),
                    "busy": busy, "samples": samples, "rounds": [], "overhead": []}  # fmt: skip
    fn = Timed(ev)
    configs = [(kind, w) for kind in ["bare", *args.executors] for w in (1, 2)]
    for r in range(args.rounds):
        rec: dict = {k: {} for k in ["bare", *args.executors]}
        for kind, w in configs[r % len(configs) :] + configs[: r % len(configs)]:  # rotated: no fixed position
            run = run_bare(w, fn, samples) if kind == "bare" else run_executor(kind, w, fn, samples)
            rec[kind][w] = run
            print(f"round {r} {kind} x{w}: {run['wall_s']:.2f} s", flush=True)
        result["rounds"].append(rec)
    result["throughput"] = summarize(result["rounds"], args.executors)
    args.out.mkdir(parents=True, exist_ok=True)  # the overhead journals are written here: a real disk, not tmpfs
    for kind in ["inprocess", *args.executors]:
        result["overhead"].append(overhead(kind, args.overhead_trials, args.out))
        print(json.dumps(result["overhead"][-1]), flush=True)
    result["load_1m_end"] = load1()
    atomic_write_text(args.out / "scaleout.json", json.dumps(result, indent=2) + "\n")
    tp = result["throughput"]
    rows = [{"model": "bare ceiling", "speedup": tp["ceiling_median"]}]
    rows += [{"model": f"{k} speed-up", "speedup": tp[k]["speedup_median"]} for k in args.executors]
    rows += [{"model": f"{o['executor']} overhead", "ms": o["ms_per_trial"]} for o in result["overhead"]]
    bar_panels(rows, [("speedup", "2 workers / 1 worker (trials/s)"), ("ms", "driver ms per trial")],
               args.out / "scaleout.png", title="search executors on 2 cores")  # fmt: skip
    print(f"\nbare 2-process ceiling: {tp['ceiling_median']:.3f}x (median over {args.rounds} rounds)")
    print("| executor | speed-up | fraction of ceiling (min-max) | target |\n|---|---:|---:|---|")
    for k in args.executors:
        v = tp[k]
        print(f"| {k} | {v['speedup_median']:.3f}x | {v['fraction_median']:.3f} ({v['fraction_min']:.3f}-"
              f"{v['fraction_max']:.3f}) | >= {v['target']} {'met' if v['target_met'] else 'MISSED'} |")  # fmt: skip
    print("\n| executor | ms per trial (driver) |\n|---|---:|")
    for o in result["overhead"]:
        print(f"| {o['executor']} | {o['ms_per_trial']:.2f} |")


if __name__ == "__main__":
    main()
