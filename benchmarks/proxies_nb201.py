"""Zero-cost proxies (arXiv 2101.08134, 2006.04647) on NAS-Bench-201 (arXiv 2001.00326): how well each ranks cells.

    python benchmarks/proxies_nb201.py --data-dir DIR                       # 1,000 canonical cells, seed 0
    python benchmarks/proxies_nb201.py --data-dir DIR --cells 200 --out /tmp/zc   # a quick look
    python benchmarks/proxies_nb201.py --data-dir DIR --out OUT --resume    # continue a stopped run in OUT
    python benchmarks/proxies_nb201.py --data-dir DIR --summarize OUT/proxies_nb201.json   # tables only

DIR holds nasbench201/nasbench201.csv and cifar10/ (or set $LEANVISION_DATA). --cells cells are drawn (seed
--seed) from the connected canonical cells (one per isomorphism class; leanvision.models.nasbench201_arch), each
built as the NB201 network (C=--C, N=--N, CIFAR-10 classes) with the same seeded initialisation, and scored by
every proxy of leanvision.search.proxies on the same --batch-size class-balanced CIFAR-10 training images
(a fresh copy of the initial network per proxy). Reported per proxy: Kendall tau-b and Spearman rho against the
200-epoch CIFAR-10 test accuracy, the mean seconds per cell (over the cells scored while other processes kept at most
0.1 core busy, when there are any; else over all, labelled busy), and the best true accuracy among the 10 best-scored
cells; rank-sum combinations (leanvision.search.proxies.rank_aggregate) are rows too. The published rho beside
each proxy is quoted from arXiv 2101.08134, Table 1 (their network and batch differ: compare orders, not digits).

Verdict (a narrow miss is a miss): Z1 every proxy scores every cell (no NaN/inf). Each cell is saved at once to
OUT/proxies_nb201.partial.json (--resume continues); OUT/proxies_nb201.json holds runs and summary.
"""

from __future__ import annotations

import copy
import json
import math
import random
import statistics
import time
from pathlib import Path

import _runs
import numpy as np
import torch
from _machine import QUIET_CORES, other_cpu
from scipy.stats import kendalltau, spearmanr

from leanvision.models import create_model
from leanvision.search import create_evaluator, create_space
from leanvision.search.evaluators.tabular import load_nb201
from leanvision.search.proxies import PROXIES, rank_aggregate
from leanvision.search.spaces.nasbench201 import canonical_archs

TRUE = "cifar10_test_200ep"
COMBOS = {"params + naswot": ("params", "naswot"), "synflow + naswot": ("synflow", "naswot"),
          "synflow + naswot + jacov": ("synflow", "naswot", "jacov")}  # fmt: skip
# arXiv 2101.08134 (Table 1, NAS-Bench-201 CIFAR-10, all 15,625 cells; its companion notebook prints 3 digits):
# |Spearman rho| per proxy (jacob_cov is our jacov). Their "0.82" for a vote of synflow, jacob_cov and snip is the
# share of cell pairs put in the right order, not a rho: it is kept apart.
PUBLISHED_RHO = {"grad_norm": 0.594, "snip": 0.596, "synflow": 0.737, "jacov": 0.731}
PUBLISHED_VOTE_PAIRS = 0.817
SAME_ON_RESUME = ("cells", "seed", "batch_size", "C", "N")


def class_scores(path: Path, proxy: str = "synflow") -> dict[str, float]:
    """A saved run's (proxies_nb201.json or .partial.json) ``proxy`` score of each isomorphism class it scored, keyed
    by the class's representative (other benchmarks put these beside their own rankers)."""
    data = json.loads(Path(path).read_text())
    classes = canonical_archs()
    return {classes[r["arch"]]: r["scores"][proxy] for r in (data if isinstance(data, list) else data["runs"])}


def run_cell(arch: str, evaluator, proxies: list[str], args, true_acc: float) -> dict:
    """Every proxy of one cell, on copies of the same seeded network."""
    torch.manual_seed(args.seed)
    model = create_model("nasbench201", arch=arch, C=args.C, N=args.N, num_classes=10)
    batch = evaluator.batch()
    record: dict = {"arch": arch, "true": true_acc, "scores": {}, "seconds": {}}
    with other_cpu(record):  # the cores other processes kept busy: the cost of a cell on a busy machine is labelled
        for name in proxies:
            net = copy.deepcopy(model)
            t0 = time.perf_counter()
            record["scores"][name] = PROXIES[name](net, batch)
            record["seconds"][name] = time.perf_counter() - t0
    return record


def _finite(values: list[float]) -> list[float]:
    return [v if math.isfinite(v) else -1e300 for v in values]  # a -inf score ranks last


def summarize(runs: list[dict]) -> dict:
    if len(runs) < 2:
        return {"cells": len(runs), "rows": {}, "verdicts": {}, "pass": False}
    true = [r["true"] for r in runs]
    names = list(runs[0]["scores"])
    columns = {n: [r["scores"][n] for r in runs] for n in names}
    for combo, parts in COMBOS.items():
        if all(p in columns for p in parts):
            columns[combo] = rank_aggregate({p: _finite(columns[p]) for p in parts})
    # Per-cell cost from the cells timed on a quiet machine when there are any (else from all, labelled busy)
    quiet = [r for r in runs if r.get("other_cores") is not None and r["other_cores"] <= QUIET_CORES]
    costed = quiet or runs
    rows = {}
    for name, vals in columns.items():
        v = _finite(vals)
        top10 = np.argsort(-np.asarray(v), kind="stable")[:10]
        parts = COMBOS.get(name, (name,))
        cost = statistics.fmean(sum(r["seconds"][p] for p in parts) for r in costed)
        rows[name] = {"tau": float(kendalltau(v, true).statistic), "rho": float(spearmanr(v, true).statistic),
                      "top10_best": float(max(true[i] for i in top10)), "seconds_per_cell": cost}  # fmt: skip
    finite = all(math.isfinite(x) for r in runs for x in r["scores"].values())
    verdicts = {"Z1 every proxy scores every cell": finite}
    return {"cells": len(runs), "optimum_among_cells": max(true), "rows": rows, "cost_from_quiet_cells": len(quiet),
            "published_rho": PUBLISHED_RHO,
            "published_vote_pairs": PUBLISHED_VOTE_PAIRS, "verdicts": verdicts,
            "pass": all(verdicts.values())}  # fmt: skip


def print_table(_runs_: list[dict], summary: dict) -> None:
    print(f"\n{summary['cells']} canonical NAS-Bench-201 cells, CIFAR-10 200-epoch test accuracy "
          f"(best among them {summary.get('optimum_among_cells', math.nan):.2f}%)")  # fmt: skip
    published = summary.get("published_rho", {})
    n_quiet = summary.get("cost_from_quiet_cells", 0)
    print(
        f"s/cell: mean over the {n_quiet} cells scored on a quiet machine"
        if n_quiet
        else "s/cell: BUSY machine (other processes shared the CPU while cells were scored): compare rows, not digits"
    )
    print("\n| proxy | Kendall tau | Spearman rho | published abs(rho) | best of top-10 (%) | s/cell |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in sorted(summary["rows"].items(), key=lambda kv: -kv[1]["tau"]):
        pub = f"{published[name]:.3f}" if name in published else "-"
        print(f"| {name} | {r['tau']:.3f} | {r['rho']:.3f} | {pub} | {r['top10_best']:.2f} | "
              f"{r['seconds_per_cell']:.3f} |")  # fmt: skip
    if "published_vote_pairs" in summary:
        print(
            f"\npublished (arXiv 2101.08134): a vote of synflow, jacob_cov and snip orders "
            f"{summary['published_vote_pairs']:.1%} of cell pairs correctly (a pair share, not a rho)"
        )
    print("\n" + "\n".join(f"- {k}: {'PASS' if v else 'FAIL'}" for k, v in summary["verdicts"].items()))
    print("pass:", summary["pass"])


def main() -> None:
    ap = _runs.make_parser(__doc__, "root holding nasbench201/nasbench201.csv and cifar10/ (else $LEANVISION_DATA)")
    ap.add_argument("--cells", type=int, default=1000, help="canonical cells scored")
    ap.add_argument("--seed", type=int, default=0, help="cells drawn, network initialisation and batch")
    ap.add_argument("--proxies", nargs="+", choices=list(PROXIES), default=list(PROXIES))
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--C", type=int, default=16)
    ap.add_argument("--N", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    _runs.add_run_args(ap, "proxies_nb201")
    args = ap.parse_args()

    def run(runs: _runs.Runs) -> None:
        table = load_nb201(args.data_dir)
        cells = create_space("nasbench201", canonical=True).cells()
        chosen = random.Random(args.seed).sample(cells, min(args.cells, len(cells)))
        evaluator = _runs._exit_on_error(create_evaluator, "zerocost", data_dir=args.data_dir,
                                         batch_size=args.batch_size, seed=args.seed, report=())  # fmt: skip
        done = {r["arch"] for r in runs.runs}
        for k, arch in enumerate(chosen, 1):
            if arch not in done:
                runs.add(run_cell(arch, evaluator, args.proxies, args, table[arch][TRUE]), echo=False)
            if k % 100 == 0:
                print(f"{k}/{len(chosen)} cells", flush=True)

    _runs.main(args, "proxies_nb201", SAME_ON_RESUME, run, summarize, print_table)


if __name__ == "__main__":
    main()
