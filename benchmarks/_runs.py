"""Resumable-run plumbing shared by the training benchmarks: OUT/<name>.partial.json, --resume and --summarize."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Callable, Collection
from pathlib import Path

import torch

from leanvision._io import atomic_write_text


def make_parser(doc: str, data_help: str = "root holding cifar10/ (else $LEANVISION_DATA)") -> argparse.ArgumentParser:
    """A parser described by the script's docstring, with --data-dir as its first option."""
    ap = argparse.ArgumentParser(
        description=doc.splitlines()[0],
        epilog=doc.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--data-dir", default=None, help=data_help)
    return ap


def add_run_args(ap: argparse.ArgumentParser, name: str, *, rewrite: bool = True) -> None:
    """Add --out, --resume and --summarize for OUT/<name>.json and OUT/<name>.partial.json."""
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results") / name)
    ap.add_argument("--resume", action="store_true", help=f"skip the runs finished in OUT/{name}.partial.json")
    ap.add_argument(
        "--summarize",
        type=Path,
        metavar="JSON",
        help=f"recompute the summary and verdict of a saved {name}.json (or .partial.json) without training"
        + (f"; rewrites the summary of a {name}.json in place, its runs untouched" if rewrite else ""),
    )


def load_partial(path: Path, saved_args: dict[str, str], same: tuple[str, ...]) -> list[dict]:
    """The finished runs saved in ``path``; exits when it was written with other values of the ``same`` arguments."""
    if not path.is_file():
        print(f"--resume: {path} not found; starting from scratch")
        return []
    data = json.loads(path.read_text())
    if isinstance(data, list):  # older ghost_cifar partial files held only the list of runs
        return data
    saved = data.get("args", {})
    # An argument missing from the file was not recorded by the version that wrote it: nothing to compare.
    differ = [k for k in same if k in saved and saved[k] != saved_args[k]]
    if differ:
        sys.exit(
            f"--resume: {path} was written with different "
            + ", ".join(f"--{k.replace('_', '-')} {saved[k]}" for k in differ)
            + "; pass the same values or a new --out"
        )
    return data["runs"]


def prepare(args: argparse.Namespace, name: str, same: tuple[str, ...]) -> tuple[Path, dict[str, str], list[dict]]:
    """Set --threads and make OUT; return OUT/<name>.partial.json, the arguments to save and the runs --resume keeps."""
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    partial = args.out / f"{name}.partial.json"
    # Saved as text, all but the arguments that only steer this invocation.
    saved_args = {k: str(v) for k, v in vars(args).items() if k not in ("resume", "summarize", "quiet")}
    runs = load_partial(partial, saved_args, same) if args.resume else []
    return partial, saved_args, runs


def _write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def save_partial(path: Path, saved_args: dict[str, str], runs: list[dict]) -> None:
    """Write the runs so far; called after every run so that a stopped benchmark keeps what it measured."""
    _write_json(path, {"args": saved_args, "runs": runs})


def save_result(path: Path, saved_args: dict[str, str], runs: list[dict], summary: dict) -> None:
    """Write the full result: arguments, torch version, runs and summary."""
    _write_json(path, {"args": saved_args, "torch": torch.__version__, "runs": runs, "summary": summary})


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
        _write_json(path, data)
        print(f"rewrote the summary of {path}")
    print_table(runs, summary)


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
