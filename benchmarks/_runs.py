"""The plumbing every benchmark shares: its arguments, resumable runs (OUT/<name>.partial.json), saved results, tables.

A training benchmark hands its own loop, summary, table and plots to :func:`main`; a latency benchmark times its
(batch, backend, threads) cells through :func:`time_cells`. Both resume by leanvision's one rule (``leanvision.runs``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import torch
from _machine import add_load_args, check_quiet, cores_text, load1, other_cpu

from leanvision._io import atomic_write_text
from leanvision.engine import fit, make_optimizer, make_scheduler
from leanvision.engine.fit import LAST_FILE
from leanvision.errors import ConfigError
from leanvision.profile import check_deploy_form, thread_counts
from leanvision.report import bar_panels
from leanvision.runs import changed_settings, check_run_dir

# ---------------------------------------------------------------------------------------------------- arguments


def make_parser(
    doc: str, data_help: str | None = "root holding cifar10/ (else $LEANVISION_DATA)"
) -> argparse.ArgumentParser:
    """A parser described by the script's docstring; --data-dir its first option unless ``data_help`` is None."""
    ap = argparse.ArgumentParser(
        description=doc.splitlines()[0],
        epilog=doc.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if data_help is not None:
        ap.add_argument("--data-dir", default=None, help=data_help)
    return ap


def add_out_arg(ap: argparse.ArgumentParser, folder: str) -> None:
    """--out (alias --out-dir, the word leanvision's messages use): the results folder, benchmarks/results/<folder>."""
    ap.add_argument("--out", "--out-dir", dest="out", type=Path, default=Path("benchmarks/results") / folder)


def add_run_args(ap: argparse.ArgumentParser, name: str, *, rewrite: bool = True, folder: str | None = None) -> None:
    """Add --out, --resume and --summarize for OUT/<name>.json and OUT/<name>.partial.json."""
    add_out_arg(ap, folder or name)
    ap.add_argument("--resume", action="store_true", help=f"skip the runs finished in OUT/{name}.partial.json")
    ap.add_argument(
        "--summarize",
        type=Path,
        metavar="JSON",
        help=f"recompute the summary and verdict of a saved {name}.json (or .partial.json) without running anything"
        + (f"; rewrites the summary of a {name}.json in place, its runs untouched" if rewrite else ""),
    )
    ap.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=[],
        metavar="DIR",
        help=f"first add the finished runs of other folders' {name}.partial.json: seeds run in parallel elsewhere "
        "(same settings, no seed held twice)",
    )


def add_split_args(ap: argparse.ArgumentParser, subset: int, val_size: int = 5_000, *, scope: str = "") -> None:
    """--subset and --val-size, the training images used and held out; ``scope`` names the parts that train."""
    ap.add_argument("--subset", type=int, default=subset, help=f"{scope}seeded class-balanced training subset; 0 = all")
    ap.add_argument("--val-size", type=int, default=val_size, help=f"{scope}training images held out for validation")


THREADS_HELP = "thread counts to time at, comma-separated; 'all' = every core (verdicts: all cores, 1 beside)"


def add_timing_args(ap: argparse.ArgumentParser, name: str, *, iters: tuple[int, int] | None = None) -> None:
    """The flags of a latency benchmark timed in (batch, backend, threads) cells; --iters only with ``iters``."""
    ap.add_argument("--threads", default="1,all", help=THREADS_HELP)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--backends", nargs="+", default=["eager", "onnxruntime"], choices=["eager", "onnxruntime"])
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds; the median is over all timed runs")
    if iters:
        ap.add_argument(
            "--iters",
            type=int,
            default=None,
            help=f"timed calls per round (default {iters[0]} at batch 1, else {iters[1]})",
        )
    add_out_arg(ap, name)
    add_load_args(ap)
    ap.add_argument("--resume", action="store_true", help=f"reuse the cells saved in OUT/{name}.partial.json")


def saved_args(path: Path) -> dict[str, str]:
    """The arguments a saved result (or .partial.json) was written with; empty for files that did not record them."""
    data = json.loads(path.read_text())
    return data.get("args", {}) if isinstance(data, dict) else {}


# ------------------------------------------------------------------------------------------------ resuming a run


def _exit_on_error(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(...)``; a ConfigError becomes one line on stderr and exit status 2, as in the CLI."""
    try:
        return fn(*args, **kwargs)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def _check_resume(out: Path, name: str, *, held: bool, resume: bool, changed: list[str]) -> None:
    """leanvision's resume rule, worded as the CLI words it; a refusal is one line on stderr and exit status 2."""
    _exit_on_error(check_run_dir, out, what=f"run of {name}.py", held=held, resume=resume, changed=changed)


def sgd_stage(model: torch.nn.Module, loader, out: Path, *, epochs: int, lr: float, step=None, seed: int) -> float:
    """One training stage (SGD nesterov, momentum 0.9, cosine, weight decay 5e-4) keeping its last epoch in ``out``:
    a stopped run continues inside it (a stateful step's record too). Returns the seconds this call trained."""
    opt = make_optimizer(model, "sgd", lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = make_scheduler(opt, "cosine", total_steps=epochs * len(loader))
    last = out / LAST_FILE
    t0 = time.perf_counter()
    fit(model, loader, epochs=epochs, optimizer=opt, scheduler=sched, train_step=step, out_dir=out,
        resume=last if last.is_file() else None, seed=seed, progress=False)  # fmt: skip
    return time.perf_counter() - t0


def write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


class Runs:
    """One invocation's runs: those --resume keeps from OUT/<name>.partial.json, then each new one saved at once."""

    def __init__(self, args: argparse.Namespace, name: str, same: tuple[str, ...]) -> None:
        self.name, self.out = name, args.out
        self.partial = args.out / f"{name}.partial.json"
        # Saved as text, all but the arguments that only steer this invocation.
        self.saved_args = {
            k: str(v) for k, v in vars(args).items() if k not in ("resume", "summarize", "quiet", "merge")
        }
        data = json.loads(self.partial.read_text()) if self.partial.is_file() else None
        saved = data.get("args", {}) if isinstance(data, dict) else {}  # older ghost_cifar files: a bare list of runs
        # An argument missing from the file was not recorded by the version that wrote it: nothing to compare.
        keys = [k for k in same if k in saved]
        changed = changed_settings(saved, self.saved_args, keys=keys, resumable=()) if args.resume else []
        # A run stopped before its first model finished holds only fit's checkpoint under OUT/runs/ (or stages/).
        held = data is not None or any(any((args.out / d).glob("*/last.pt")) for d in ("runs", "stages"))
        _check_resume(args.out, name, held=held, resume=args.resume, changed=changed)
        torch.set_num_threads(args.threads)
        args.out.mkdir(parents=True, exist_ok=True)
        self.runs: list[dict] = [] if data is None else data if isinstance(data, list) else data["runs"]
        if self.runs:
            print(f"--resume: {len(self.runs)} finished run(s) in {self.partial}")
        for other in getattr(args, "merge", []):
            _exit_on_error(self._merge, other / self.partial.name, same)

    def _merge(self, path: Path, same: tuple[str, ...]) -> None:
        """Add the runs of another folder's partial file, started with the same ``same`` settings, of other seeds."""
        if not path.is_file():
            raise ConfigError(f"--merge: no {path}; point it at the folder of a run of this benchmark")
        data = json.loads(path.read_text())
        theirs, saved = data["runs"], data.get("args", {})
        changed = changed_settings(saved, self.saved_args, keys=[k for k in same if k in saved], resumable=())
        if changed:
            raise ConfigError(f"--merge: {path} was run with other settings ({', '.join(changed)}); merge only runs "
                              "of the same protocol")  # fmt: skip
        if any("seed" not in r for r in theirs):
            raise ConfigError(f"--merge: the runs in {path} have no seed, so they cannot be told apart from these")
        both = sorted({r["seed"] for r in theirs} & {r.get("seed") for r in self.runs})
        if both:
            raise ConfigError(f"--merge: seed(s) {both} are in both {path} and {self.partial}; merge folders that "
                              "ran different seeds")  # fmt: skip
        self.runs += theirs
        write_json(self.partial, {"args": self.saved_args, "runs": self.runs})
        print(f"--merge: {len(theirs)} run(s) of seed(s) {sorted({r['seed'] for r in theirs})} from {path}")

    def add(self, run: dict, *, echo: bool = True) -> dict:
        """Keep a finished run and save all so far at once (``echo``: print its scalar fields)."""
        self.runs.append(run)
        if echo:
            print(json.dumps({k: v for k, v in run.items() if not isinstance(v, (list, dict))}), flush=True)
        write_json(self.partial, {"args": self.saved_args, "runs": self.runs})
        return run

    def fit_dir(self, run: str) -> tuple[Path, Path | None]:
        """OUT/runs/<run>/ for fit's metrics.jsonl and checkpoints, and its last.pt to resume from when there is one.

        There is one only under --resume (a start over a stopped run is refused), so a long run continues mid-way.
        """
        folder = self.out / "runs" / run
        last = folder / "last.pt"
        return folder, last if last.is_file() else None

    def save(self, summary: dict) -> None:
        """Write the full result, OUT/<name>.json: arguments, torch version, runs and summary."""
        result = {"args": self.saved_args, "torch": torch.__version__, "runs": self.runs, "summary": summary}
        write_json(self.out / f"{self.name}.json", result)


def summarize_file(
    path: Path,
    summarize: Callable[[list[dict]], dict],
    print_table: Callable[[list[dict], dict], None],
    *,
    rewrite: bool = True,
) -> None:
    """Recompute the summary of a saved result (or .partial.json) and print it; with ``rewrite``, save a full one's."""
    data = json.loads(path.read_text())
    # Older ghost_cifar partial files held only the list of runs.
    runs = data if isinstance(data, list) else data["runs"]
    summary = summarize(runs)
    if rewrite and isinstance(data, dict) and "summary" in data:
        data["summary"] = summary  # runs, args and versions are kept as they were
        write_json(path, data)
        print(f"rewrote the summary of {path}")
    print_table(runs, summary)


def main(
    args: argparse.Namespace,
    name: str,
    same: tuple[str, ...],
    run: Callable[[Runs], None],
    summarize: Callable[[list[dict]], dict],
    print_table: Callable[[list[dict], dict], None],
    plot: Callable[[list[dict], dict], None] | None = None,
    *,
    rewrite: bool = True,
) -> None:
    """--summarize a saved file, or resume (``same``: the settings it must keep), ``run``, save, ``plot`` and print."""
    if args.summarize:
        summarize_file(args.summarize, summarize, print_table, rewrite=rewrite)
        return
    runs = Runs(args, name, same)
    run(runs)
    summary = summarize(runs.runs)
    runs.save(summary)
    if plot is not None:
        plot(runs.runs, summary)
    print_table(runs.runs, summary)


def main_by_part(
    args: argparse.Namespace, stem: str, parts: dict[int, tuple], same: dict[int, tuple[str, ...]]
) -> None:
    """:func:`main` of OUT/<stem>_part<N>: ``parts[N]`` = (run(args, runs), summarize, print_table, plot(runs, png))."""
    part = int(saved_args(args.summarize).get("part", args.part)) if args.summarize else args.part
    run, summarize, table, plot = parts[part]
    name = f"{stem}_part{part}"
    main(args, name, same[part], lambda runs: run(args, runs), summarize, table,
         lambda runs, _: plot(runs, args.out / f"{name}.png"))  # fmt: skip


def complete_seeds(
    runs: list[dict], names: Collection[str], key: str = "model"
) -> tuple[dict[tuple[str, int], dict], list[int], list[str]]:
    """Runs by (name, seed), the seeds every name finished, and the runs still missing from the other seeds."""
    by = {(r[key], r["seed"]): r for r in runs}
    seeds = sorted({s for (_, s) in by if all((n, s) in by for n in names)})
    missing = sorted({f"{n} seed {s}" for (_, s) in by for n in names if (n, s) not in by})
    return by, seeds, missing


def in_order(runs: list[dict], seeds: list[int], names: Collection[str], key: str = "model") -> list[dict]:
    """The runs of these seeds and names, seed by seed, each seed's in the order of ``names``."""
    order = {(n, s): i for i, (s, n) in enumerate(itertools.product(seeds, names))}
    return sorted((r for r in runs if (r[key], r["seed"]) in order), key=lambda r: order[(r[key], r["seed"])])


# -------------------------------------------------------------------------------------------------------- tables

# A column: the key of a row's value, (key, format spec), or a function of the row giving the cell's text.
Column = str | tuple[str, str] | Callable[[dict], Any]
# model, params and MACs in millions: the first columns of the latency tables.
SIZE_COLUMNS: dict[str, Column] = {
    "model": "model",
    "params": lambda r: f"{r['params'] / 1e6:.2f}M",
    "MACs": lambda r: f"{r['macs'] / 1e6:.1f}M",
}


def _cell(row: dict, column: Column) -> str:
    if callable(column):
        return str(column(row))
    key, spec = (column, "") if isinstance(column, str) else column
    value = row.get(key)
    return "-" if value is None else format(value, spec)


def markdown(rows: list[dict], columns: dict[str, Column]) -> str:
    """A markdown table, a blank line before it: a row per dict, a column per header; missing values print "-"."""
    lines = ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r, c) for c in columns.values()) + " |" for r in rows]
    return "\n".join(lines)


def run_table(columns: dict[str, Column]) -> Callable[[list[dict], dict], None]:
    """A ``print_table(runs, summary)``: the runs as a markdown table of these columns, then the summary as JSON."""

    def print_table(runs: list[dict], summary: dict) -> None:
        print(markdown(runs, columns))
        print(json.dumps(summary, indent=2))

    return print_table


def plot_runs(runs: list[dict], panels: list[tuple[str, str]], path: Path, title: str, *, key: str = "model") -> None:
    """Bar panels (value key, label) with a bar per run, named "<run[key]> s<seed>"."""
    bar_panels([{**r, "model": f"{r[key]} s{r['seed']}"} for r in runs], panels, path, title=title)


# ------------------------------------------------------------------------------------------------ latency cells


def check_deploy(models: dict[str, torch.nn.Module], x: torch.Tensor) -> None:
    """Exit (one line, status 2) when a model still computes BatchNorms beside one folded into its deploy form."""
    _exit_on_error(check_deploy_form, models, x)


def threads_of(args: argparse.Namespace) -> list[int]:
    """The thread counts of --threads ("1,all" -> [1, cores]); exits with one line on a bad value."""
    return _exit_on_error(thread_counts, args.threads)


def time_cells(
    args: argparse.Namespace,
    name: str,
    config: dict,
    same: tuple[str, ...],
    measure: Callable[[str, torch.Tensor, int, int], dict],
    *,
    size: int,
    iters: tuple[int, int],
    digits: int = 2,
) -> tuple[dict, float]:
    """Time and save each (threads, batch, backend) cell not saved yet; return all cells and the load at the start."""
    # measure(backend, x, iters, threads) -> {model: LatencyStats}; iters: calls per round at batch 1 and above
    load_before = check_quiet(args.max_load, args.allow_busy)
    threads = threads_of(args)
    config = {**config, "threads": threads}
    partial = args.out / f"{name}.partial.json"
    saved = json.loads(partial.read_text()) if partial.is_file() else None
    changed = changed_settings(saved["config"], config, keys=same, resumable=()) if saved and args.resume else []
    _check_resume(args.out, name, held=saved is not None, resume=args.resume, changed=changed)
    args.out.mkdir(parents=True, exist_ok=True)
    cells: dict[str, dict] = saved["cells"] if args.resume else {}
    if cells:
        print(f"--resume: reusing cells {', '.join(cells)} from {partial}")
    for n_threads in threads:
        for bs in args.batches:
            x = torch.randn(bs, 3, size, size)
            for backend in args.backends:
                key = cell_key(backend, bs, n_threads)
                if key in cells:
                    continue
                n = getattr(args, "iters", None) or iters[bs != 1]
                cell = {"iters": n, "threads": n_threads, "load_avg_1m_before": load1(), "allow_busy": args.allow_busy}
                with other_cpu(cell):
                    stats = measure(backend, x, n, n_threads)
                cell["models"] = {m: {"median_ms": s.median_ms, "p90_ms": s.p90_ms} for m, s in stats.items()}
                cells[key] = cell
                write_json(partial, {"config": config, "cells": cells})
                print(f"{key}: " + ", ".join(f"{m} {s['median_ms']:.{digits}f} ms" for m, s in cell["models"].items())
                      + f" (other processes {cores_text(cell)} cores)", flush=True)  # fmt: skip
    return cells, load_before


def cell_key(backend: str, batch: int, threads: int) -> str:
    """``eager_bs1_t2``: a cell's key, its thread count last."""
    return f"{backend}_bs{batch}_t{threads}"


def cell_keys(args: argparse.Namespace, cells: dict) -> list[str]:
    """The keys of the measured cells: thread count by thread count, then in the order of --batches and --backends."""
    keys = [cell_key(b, bs, t) for t in threads_of(args) for bs in args.batches for b in args.backends]
    return [k for k in keys if k in cells]


def judged_at(args: argparse.Namespace) -> dict[str, int]:
    """The thread counts verdicts are judged at: all cores (the headline) and 1 thread reported beside it."""
    counts = threads_of(args)
    return {"headline_threads": max(counts), "beside_threads": min(counts)}


def cell_rows(costs: dict[str, dict], cells: dict, keys: list[str]) -> list[dict]:
    """A row per model: its costs, then the median and p90 ms of each cell it was timed in (<key>_ms, <key>_p90_ms)."""
    rows = []
    for model, cost in costs.items():
        row = {"model": model, **cost}
        for k in keys:
            s = cells[k]["models"].get(model)
            if s is not None:
                row[f"{k}_ms"], row[f"{k}_p90_ms"] = s["median_ms"], s["p90_ms"]
        rows.append(row)
    return rows


def machine_record(args: argparse.Namespace, cells: dict, keys: list[str], load_before: float) -> dict:
    """The load at the start and the cores OTHER processes used per cell; busy above --max-load."""
    # Not the load average during the run: it counts this benchmark's own threads.
    others = [cells[k].get("other_cores") for k in keys]
    worst = max((o for o in others if o is not None), default=None)
    return {
        "max_load": args.max_load,
        "allow_busy": args.allow_busy or any(cells[k]["allow_busy"] for k in keys),
        "load_avg_1m": load_before,
        "other_cores_max_over_cells": worst,
        "busy": load_before > args.max_load or (worst is not None and worst > args.max_load),
        "cells": {
            k: {"iters": cells[k]["iters"], "load_avg_1m_before": cells[k]["load_avg_1m_before"], "other_cores": o}
            for k, o in zip(keys, others, strict=True)
        },
    }


def save_latency(path: Path, result: dict, rows: list[dict], keys: list[str], title: str) -> None:
    """Write the JSON and a PNG of the medians per cell beside it, the title marked when the machine was busy."""
    write_json(path, result)
    bar_panels(
        rows,
        [(f"{k}_ms", k.replace("_", " ") + " (ms)") for k in keys],
        path.with_suffix(".png"),
        title=title + (" (BUSY)" if result["busy"] else ""),
    )


def add_protocol_args(ap: argparse.ArgumentParser, *, epochs: int = 15, seeds: tuple[int, ...] = (0, 1)) -> None:
    """The comparison protocol's flags: training subset / validation split, test subset, epochs and seeds."""
    add_split_args(ap, 0)
    ap.add_argument("--test-subset", type=int, default=0, help="class-balanced test subset (smoke runs); 0 = all")
    ap.add_argument("--epochs", type=int, default=epochs)
    ap.add_argument("--seeds", type=int, nargs="+", default=list(seeds))


def protocol_data(args: argparse.Namespace, seed: int, data: dict, dataset: str = "cifar10") -> dict:
    """``data`` with test and val loaded once and the seed's training split (its subset depends on the seed)."""
    from leanvision.data import load_dataset

    split = {"root": args.data_dir, "val_size": args.val_size, "val_seed": 0}
    if not data:
        data["test"] = load_dataset(dataset, root=args.data_dir, split="test", subset=args.test_subset or None)
        data["val"] = load_dataset(dataset, split="val", **split)
    data["train"] = load_dataset(dataset, split="train", subset=args.subset or None, seed=seed, **split)
    return data


def where_time_goes(models: dict[str, torch.nn.Module], backend: str, x: torch.Tensor, threads: int, path: Path,
                    *, calls: int = 10) -> None:  # fmt: skip
    """Milliseconds per call by op type (torch ops in eager, ONNX node types in onnxruntime), saved to ``path``."""
    import tempfile
    from collections import Counter

    import onnxruntime as ort

    from leanvision.export import export_onnx, onnx_feed

    out = {}
    for name, model in models.items():
        per_op: Counter[str] = Counter()
        if backend == "eager":
            torch.set_num_threads(threads)
            with torch.inference_mode(), torch.profiler.profile() as prof:
                for _ in range(calls):
                    model(x)
            for e in prof.key_averages():
                per_op[e.key] += e.self_cpu_time_total / 1e3 / calls
        else:
            with tempfile.TemporaryDirectory(prefix="leanvision-ort-profile-") as tmp:
                opts = ort.SessionOptions()
                opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
                opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                opts.enable_profiling, opts.profile_file_prefix = True, str(Path(tmp) / "ort")
                path_onnx = export_onnx(model, x, Path(tmp) / "m.onnx")
                session = ort.InferenceSession(str(path_onnx), sess_options=opts, providers=["CPUExecutionProvider"])
                feed = onnx_feed(session, x)
                for _ in range(calls + 1):  # the first run is a warm-up, dropped below by its larger count
                    session.run(None, feed)
                events = json.loads(Path(session.end_profiling()).read_text())
            for e in events:
                if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                    per_op[e["args"]["op_name"]] += e["dur"] / 1e3 / (calls + 1)
        top = dict(sorted(per_op.items(), key=lambda kv: -kv[1])[:25])
        out[name] = {"ms_per_call_by_op": {k: round(v, 4) for k, v in top.items()}, "total_ms": sum(per_op.values())}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"backend": backend, "threads": threads, "batch": x.shape[0], **out}, indent=2))
