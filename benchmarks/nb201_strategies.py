"""Search strategies on NAS-Bench-201 (arXiv 2001.00326), tabular, under the proxy protocol.

    python benchmarks/nb201_strategies.py --data-dir DIR                 # 50 seeds x 200 queries, all strategies
    python benchmarks/nb201_strategies.py --data-dir DIR --seeds 20      # fewer seeds (noisier medians)
    python benchmarks/nb201_strategies.py --first-seed 150 --budget 400  # other seeds, a longer search (diagnosis)
    python benchmarks/nb201_strategies.py --summarize OUT/nb201_strategies.json

DIR holds nasbench201/nasbench201.csv (or set $LEANVISION_DATA). Every strategy searches on the CIFAR-10
12-epoch validation accuracy (the cheap proxy); after each query the pick is the queried cell with the best
proxy, and it is judged by its 200-epoch test accuracy, which no strategy ever sees. A query is one cell looked
up (repeats count). Reported per strategy: median and quartiles over seeds of the pick's test accuracy after
each query, and the queries until the pick is the optimum (94.37%; "never" within the budget counts as
infinite in the median). BlockQNN and IRLAS plan their ε schedule over the budget, BlockQNN's shape shrunk so
60% of the decisions exploit (`exploit_share`), learn a repeated cell from its stored result instead of asking it
again, and use the Q learning rate 0.5 (chosen on seeds 100-115 among 0.01, 0.1, 0.5 and 1; the paper's 0.01, sized
for ~11,000 blocks, is a row of its own).
Verdict (a narrow miss is a miss): BlockQNN's and IRLAS's median pick each >= regularised evolution's (population
20, tournament 5) at 100 and at 200 queries. Reported beside it for every strategy of ours (local search too): no
worse than evolution at every budget, a median >= 94.3% after 100 queries, the optimum in a median of <= 80 queries.
Writes JSON + PNG into --out; each finished (strategy, seed) run is saved at once (--resume continues).
"""

from __future__ import annotations

import json
import math
import statistics

import _runs

from leanvision.report import line_panels
from leanvision.search import create_space, create_strategy, search
from leanvision.search.evaluators.tabular import NB201Tabular, optimum

# name -> (registered strategy, options); the first is the reference baseline.
STRATEGIES = {
    "regularised evolution": ("evolution", {"population": 20, "tournament": 5}),
    "random": ("random", {}),
    "TPE (optuna)": ("tpe", {}),
    "local search": ("local", {"n_init": 10}),
    # Q-learning rewards are fractions of 1 (Q starts at 0.5, IRLAS adds an MSF in [0, 1]): accuracies in % x 0.01.
    # The paper's Q learning rate 0.01 is sized for ~11,000 blocks; over 200 queries it leaves Q near its initial
    # 0.5, so the judged runs use 0.5, chosen on seeds 100-115 (never on the reported seeds) among 0.01/0.1/0.5/1.
    "BlockQNN Q-learning": ("blockqnn", {"objective_scale": 0.01, "alpha": 0.5}),
    "IRLAS": ("irlas", {"objective_scale": 0.01, "alpha": 0.5}),
    "BlockQNN, the paper's alpha 0.01": ("blockqnn", {"objective_scale": 0.01}),
}
OURS = [n for n in STRATEGIES if n not in ("regularised evolution", "random", "TPE (optuna)")]  # verdicts reported
JUDGED = ("BlockQNN Q-learning", "IRLAS")  # the verdict's strategies
JUDGED_AT = (100, 200)  # queries at which their median pick must match evolution's
SAME_ON_RESUME = ("budget", "first_seed")
CHECKPOINTS = (25, 50, 100, 150, 200, 300, 400)


def pick_curve(history) -> list[float]:
    """After each query: the 200-epoch test accuracy of the best-by-proxy cell queried so far."""
    best, out = None, []
    for t in history.trials:
        if t.status == "ok" and (best is None or t.objective > best.objective):
            best = t
        out.append(math.nan if best is None else best.report["test_200ep"])
    return out


def run_one(name: str, seed: int, evaluator, budget: int) -> dict:
    space = create_space("nasbench201")
    registered, kwargs = STRATEGIES[name]
    kwargs = dict(kwargs, budget=budget) if registered in ("blockqnn", "irlas") else kwargs
    h = search(space, create_strategy(registered, space, seed=seed, **kwargs), evaluator, budget=budget)
    return {"strategy": name, "seed": seed, "curve": pick_curve(h), "failed": len(h.failed())}


def _q(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=4, method="inclusive")[int(q * 4) - 1] if len(values) > 1 else values[0]


def summarize(runs: list[dict], opt: float, budget: int) -> dict:
    out: dict = {"optimum": opt, "strategies": {}}
    for name in dict.fromkeys(r["strategy"] for r in runs):
        curves = [r["curve"] for r in runs if r["strategy"] == name]
        med = [statistics.median(c[n] for c in curves) for n in range(budget)]
        hits = [next((i + 1 for i, v in enumerate(c) if v >= opt - 1e-6), math.inf) for c in curves]
        out["strategies"][name] = {
            "seeds": len(curves),
            "median": med,
            "q1": [_q([c[n] for c in curves], 0.25) for n in range(budget)],
            "q3": [_q([c[n] for c in curves], 0.75) for n in range(budget)],
            "at": {str(n): med[n - 1] for n in CHECKPOINTS if n <= budget},
            "queries_to_optimum_median": None if statistics.median(hits) == math.inf else statistics.median(hits),
            "reached_optimum": sum(h < math.inf for h in hits),
        }
    ref = out["strategies"].get("regularised evolution")
    verdicts = {}
    for name in OURS:
        s = out["strategies"].get(name)
        if s is None or ref is None:
            continue
        worse = [n + 1 for n in range(budget) if s["median"][n] < ref["median"][n] - 1e-9]
        verdicts[name] = {
            "median_ge_evolution_at_100_and_200": all(
                s["median"][n - 1] >= ref["median"][n - 1] - 1e-9 for n in JUDGED_AT if n <= budget
            ),
            "no_worse_than_evolution_at_every_budget": not worse,
            "budgets_worse_than_evolution": worse[:20],
            "median_at_100_ge_94.3": s["median"][99] >= 94.3 if budget >= 100 else None,
            "optimum_median_le_80_queries": (s["queries_to_optimum_median"] or math.inf) <= 80,
        }
    out["verdicts"] = verdicts
    judged = [verdicts[n]["median_ge_evolution_at_100_and_200"] for n in JUDGED if n in verdicts]
    out["pass"] = bool(judged) and all(judged)
    return out


def print_table(runs: list[dict], summary: dict) -> None:
    cps = [n for n in CHECKPOINTS if str(n) in next(iter(summary["strategies"].values()))["at"]]
    print("\n| strategy | seeds | " + " | ".join(f"median @ {n}" for n in cps) + " | queries to optimum (median) |")
    print("|---|---:|" + "---:|" * (len(cps) + 1))
    for name, s in summary["strategies"].items():
        q = s["queries_to_optimum_median"]
        cells = " | ".join(f"{s['at'][str(n)]:.2f}" for n in cps)
        print(f"| {name} | {s['seeds']} | {cells} | {'never' if q is None else f'{q:g}'} "
              f"({s['reached_optimum']}/{s['seeds']} reach it) |")  # fmt: skip
    print(json.dumps(summary["verdicts"], indent=2), "\npass:", summary["pass"])


def main() -> None:
    ap = _runs.make_parser(__doc__, "root holding nasbench201/nasbench201.csv (else $LEANVISION_DATA)")
    ap.add_argument("--seeds", type=int, default=50, help="N seeds (the reference values used 50)")
    ap.add_argument("--first-seed", type=int, default=0, help="seeds FIRST..FIRST+N-1 (reported: 0; others diagnose)")
    ap.add_argument("--budget", type=int, default=200)
    ap.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES), metavar="NAME")
    ap.add_argument("--threads", type=int, default=1)
    _runs.add_run_args(ap, "nb201_strategies", rewrite=False)
    args = ap.parse_args()
    opt = optimum(data_dir=args.data_dir)
    budget = int(_runs.saved_args(args.summarize)["budget"]) if args.summarize else args.budget

    def run(runs: _runs.Runs) -> None:
        evaluator = NB201Tabular(data_dir=args.data_dir)
        done = {(r["strategy"], r["seed"]) for r in runs.runs}
        for name in args.strategies:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                if (name, seed) not in done:
                    runs.add(run_one(name, seed, evaluator, args.budget), echo=False)
            print(f"{name}: {args.seeds} seeds done", flush=True)

    def plot(runs: list[dict], summary: dict) -> None:
        series = {n: [{"queries": i + 1, "median": m, "q1": a, "q3": b} for i, (m, a, b) in
                      enumerate(zip(s["median"], s["q1"], s["q3"], strict=True))]
                  for n, s in summary["strategies"].items()}  # fmt: skip
        line_panels(series, [("median", "test acc (200 ep) of the pick, median (%)"), ("q1", "lower quartile (%)")],
                    args.out / "nb201_strategies.png", x_key="queries",
                    title=f"NAS-Bench-201 CIFAR-10, search on 12-epoch val acc, {args.seeds} seeds")  # fmt: skip

    _runs.main(args, "nb201_strategies", SAME_ON_RESUME, run, lambda runs: summarize(runs, opt, budget), print_table,
               plot, rewrite=False)  # fmt: skip


if __name__ == "__main__":
    main()
