"""ReNAS (arXiv 1910.01523) on NAS-Bench-201 (arXiv 2001.00326): ranking quality and predictor-guided search.

    python benchmarks/renas.py --data-dir DIR                    # part A seeds 0-9, part B seeds 0-49
    python benchmarks/renas.py --data-dir DIR --proxy-scores ZC/proxies_nb201.json   # + synflow on the same cells
    python benchmarks/renas.py --data-dir DIR --parts A          # Kendall tau vs training-set size only
    python benchmarks/renas.py --data-dir DIR --parts B --search-seeds 100 101 102 103 104 --budget 100 \\
        --n-init 5 10 20 --out /tmp/renas_tune                   # how n_init was chosen (seeds never reported)
    python benchmarks/renas.py --data-dir DIR --out OUT --resume # continue a stopped run in OUT
    python benchmarks/renas.py --data-dir DIR --summarize OUT/renas.json   # recompute tables and verdicts only

DIR holds nasbench201/nasbench201.csv (or set $LEANVISION_DATA). Every cell is encoded (--encoding) as its ops
one-hot + live-edge flags scored by an MLP (onehot, the default), or as ReNAS's (7, 8, 8) tensor (type matrix,
per-stage MACs and parameters) scored by ReNAS's LeNet (paper); leanvision.search.predictors.renas. Both train
with Adam 1e-3, no weight decay, full batch, --epochs (200) epochs, last epoch kept. The type-only ablation always
uses the paper's tensor.

Part A, ranking (the paper's setting: labels are the cells' CIFAR-10 200-epoch test accuracies): per training-set
size n in --ns and seed, n cells drawn uniformly (the same cells for every variant of that n and seed), Kendall
tau-b of the scores against the 200-epoch test accuracy on ALL the other cells, and the best test accuracy among
the 10 best-scored other cells. Variants: pairwise ranking loss, MSE on min-max scaled labels, and the pairwise
loss on the type matrix only (n <= --type-only-max-n). The free rankers sit beside every row, on the same test
cells: the parameter count, and, with --proxy-scores (a proxies_nb201.json or .partial.json), synflow on the test
cells whose isomorphism class that run scored (the predictor and the parameter count are re-scored on that subset).

Part B, search under the proxy protocol: every strategy sees only the CIFAR-10 12-epoch validation accuracy of the
cells it queries; after each query the pick is the queried cell with the best proxy, judged by its 200-epoch test
accuracy (benchmarks/nb201_strategies.py's pick_curve). ReNAS: --n-init random cells, then rounds of --batch
cells (a share --explore of them unqueried neighbours of the best cell so far, drawn at random or, with --neighbours
predicted, the best-scored of them; the rest best-scored over all cells), the predictor
retrained each round for --search-epochs epochs; local search (10 random cells, then the best cell's unqueried
neighbours), regularised evolution (population 20, tournament 5) and random search run with the same --search-seeds
and --budget queries.

Verdicts (a narrow miss is a miss): A1 mean tau >= 0.75 with 424 training cells (pairwise); A2 pairwise >= MSE in
mean tau at every n; A3 pairwise beats MSE in >= 70% of the paired seeds (7/10) at every n <= 50; A4 mean tau >=
0.55 at n = 156 (pairwise); A5 at n = 156 the mean best test accuracy among the 10 best-scored cells >= 93.77%
(the top 1% threshold) and beats the best of 166 uniformly random cells in >= half the seeds; A6 at every
n >= 50 the pairwise mean tau is >= 0.15 above the parameter count's tau on the same test cells; B1 ReNAS's pick is
the optimum (94.37%) after a median of <= 60 queries over >= 50 seeds (a seed that never gets there counts as
infinite); B2 ReNAS's median pick is never below local search's at any number of queries.
Writes OUT/renas.json + renas_tau.png + renas_search.png; each finished (part, variant or strategy, n,
seed) run is saved at once to OUT/renas.partial.json (--resume continues).
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from pathlib import Path

import _runs
import numpy as np
from nb201_strategies import pick_curve
from nb201_strategies import summarize as summarize_curves
from proxies_nb201 import class_scores

from leanvision.report import line_panels
from leanvision.search import create_space, create_strategy, search
from leanvision.search.evaluators.tabular import NB201Tabular, arch_code, load_nb201, optimum
from leanvision.search.predictors.renas import fit_predictor, kendall_tau, nb201_encodings, nb201_onehot
from leanvision.search.spaces.nasbench201 import EDGES, OPS, canonical_archs, cell_ops, params_macs

TRUE = "cifar10_test_200ep"
VARIANTS = {"pairwise": ("pairwise", "full"), "MSE": ("mse", "full"), "pairwise, type only": ("pairwise", "type")}
BASELINES = {
    "local search": ("local", {"n_init": 10}),
    "regularised evolution": ("evolution", {"population": 20, "tournament": 5}),
    "random": ("random", {}),
}
LOCAL = "local search"
MAX_QUERIES = 60  # B1: median queries to the optimum
MIN_SEARCH_SEEDS = 50
SAME_ON_RESUME = ("epochs", "budget", "batch", "search_epochs", "encoding", "explore", "neighbours")
TOP1_PERCENT = 93.77  # the 200-epoch test accuracy of the 1% best cells (156th of 15,625)


def true_accuracy(data_dir) -> np.ndarray:
    """The 200-epoch CIFAR-10 test accuracy of every cell, indexed like ``nb201_encodings`` (by arch_code)."""
    table = load_nb201(data_dir)
    y = np.full(len(table), np.nan)
    for arch, row in table.items():
        y[arch_code(cell_ops(arch))] = row[TRUE]
    return y


@functools.lru_cache(maxsize=1)
def all_params() -> np.ndarray:
    """The parameter count of every cell's network, indexed like ``nb201_encodings`` (the free baseline)."""
    codes = np.arange(len(OPS) ** len(EDGES))[:, None] // len(OPS) ** np.arange(len(EDGES)) % len(OPS)
    return np.array([params_macs({e: OPS[d] for e, d in zip(EDGES, row, strict=True)})[0] for row in codes], float)


def proxy_scores(path, proxy: str = "synflow") -> np.ndarray:
    """A proxies_nb201 run's ``proxy`` score of every cell, via its isomorphism class, indexed like ``nb201_encodings``
    (NaN where that run scored no cell of the class)."""
    by_class = class_scores(path, proxy)
    out = np.full(len(OPS) ** len(EDGES), np.nan)
    for arch, rep_ in canonical_archs().items():
        if rep_ in by_class:
            out[arch_code(cell_ops(arch))] = by_class[rep_]
    return out


def run_ranking(
    variant: str,
    n: int,
    seed: int,
    y: np.ndarray,
    epochs: int,
    encoding: str = "onehot",
    proxy: np.ndarray | None = None,
) -> dict:
    """Part A: train on n random cells, rank all the others (and the subset ``proxy`` scores, beside it)."""
    t0 = time.perf_counter()
    X = nb201_onehot() if encoding == "onehot" and variant != "pairwise, type only" else nb201_encodings()
    train = np.random.default_rng([seed, n]).choice(len(y), n, replace=False)  # shared by the variants
    test = np.setdiff1d(np.arange(len(y)), train)
    loss, features = VARIANTS[variant]
    model = fit_predictor(X[train], y[train], loss=loss, features=features, epochs=epochs, seed=seed)
    scores = model.predict(X[test])
    top10 = test[np.argsort(-scores, kind="stable")[:10]]
    random166 = np.random.default_rng([seed, 166]).choice(len(y), 166, replace=False)
    out = {"part": "A", "name": variant, "n": n, "seed": seed, "tau": kendall_tau(scores, y[test]),
            "top10_best": float(y[top10].max()), "random166_best": float(y[random166].max()),
            "params_tau": kendall_tau(all_params()[test], y[test]), "seconds": time.perf_counter() - t0}  # fmt: skip
    if proxy is not None:  # the same subset for the three rankers
        sub = np.isfinite(proxy[test])
        out.update(proxy_cells=int(sub.sum()), proxy_tau=kendall_tau(proxy[test][sub], y[test][sub]),
                   sub_tau=kendall_tau(scores[sub], y[test][sub]),
                   sub_params_tau=kendall_tau(all_params()[test][sub], y[test][sub]))  # fmt: skip
    return out


def run_search(name: str, registered: str, kwargs: dict, seed: int, evaluator, budget: int) -> dict:
    """Part B: one search of ``budget`` queries on the 12-epoch proxy."""
    t0 = time.perf_counter()
    space = create_space("nasbench201")
    strategy = create_strategy(registered, space, seed=seed, **kwargs)
    h = search(space, strategy, evaluator, budget=budget)
    return {"part": "B", "strategy": name, "seed": seed, "curve": pick_curve(h), "failed": len(h.failed()),
            "fits": getattr(strategy, "fits", None), "seconds": time.perf_counter() - t0}  # fmt: skip


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def summarize_ranking(runs: list[dict]) -> dict:
    by = {(r["name"], r["n"], r["seed"]): r for r in runs if r["part"] == "A"}
    ns = sorted({n for (_, n, _) in by})
    rows = {}
    for variant in VARIANTS:
        for n in ns:
            rs = [r for (v, m, _), r in sorted(by.items()) if v == variant and m == n]
            if rs:
                taus = [r["tau"] for r in rs]
                rows[f"{variant} @ {n}"] = {
                    "variant": variant, "n": n, "seeds": len(rs), "tau_mean": _mean(taus),
                    "tau_std": statistics.stdev(taus) if len(taus) > 1 else 0.0,
                    "top10_best_mean": _mean([r["top10_best"] for r in rs]),
                    "random166_best_mean": _mean([r["random166_best"] for r in rs]),
                    "top10_beats_random166": sum(r["top10_best"] > r["random166_best"] for r in rs),
                    "params_tau_mean": _mean([r["params_tau"] for r in rs if "params_tau" in r]),
                    "seconds_mean": _mean([r["seconds"] for r in rs]),
                }  # fmt: skip
                for k in ("proxy_cells", "sub_tau", "sub_params_tau", "proxy_tau"):  # on the proxy-scored subset
                    rows[f"{variant} @ {n}"][f"{k}_mean"] = _mean([r[k] for r in rs if k in r])
    paired = {}
    for n in ns:
        seeds = sorted(s for (v, m, s) in by if v == "pairwise" and m == n and ("MSE", n, s) in by)
        if seeds:
            wins = sum(by[("pairwise", n, s)]["tau"] > by[("MSE", n, s)]["tau"] for s in seeds)
            paired[str(n)] = {"seeds": len(seeds), "pairwise_wins": wins}
    out: dict = {"rows": rows, "paired": paired, "verdicts": {}}

    def row(variant: str, n: int) -> dict | None:
        return rows.get(f"{variant} @ {n}")

    v = out["verdicts"]
    if row("pairwise", 424):
        v["A1 mean tau >= 0.75 at n=424 (pairwise)"] = row("pairwise", 424)["tau_mean"] >= 0.75
    if paired:
        v["A2 pairwise >= MSE in mean tau at every n"] = all(
            row("pairwise", int(n))["tau_mean"] >= row("MSE", int(n))["tau_mean"] for n in paired
        )
        small = [p for n, p in paired.items() if int(n) <= 50]
        if small:
            v["A3 pairwise wins >= 70% of paired seeds at every n <= 50"] = all(
                p["pairwise_wins"] >= math.ceil(0.7 * p["seeds"]) for p in small
            )
    big = [row("pairwise", n) for n in ns if n >= 50 and row("pairwise", n)]
    if big and all(math.isfinite(r["params_tau_mean"]) for r in big):
        v["A6 pairwise mean tau >= parameter count's tau + 0.15 at every n >= 50"] = all(
            r["tau_mean"] >= r["params_tau_mean"] + 0.15 for r in big
        )
    r156 = row("pairwise", 156)
    if r156:
        v["A4 mean tau >= 0.55 at n=156 (pairwise)"] = r156["tau_mean"] >= 0.55
        v["A5 top-10 at n=156: mean best >= 93.77 and beats random-166 in >= half the seeds"] = (
            r156["top10_best_mean"] >= TOP1_PERCENT and r156["top10_beats_random166"] >= r156["seeds"] / 2
        )
    return out


def summarize_search(runs: list[dict], opt: float, budget: int) -> dict:
    search_runs = [r for r in runs if r["part"] == "B"]
    if not search_runs:
        return {"strategies": {}, "verdicts": {}}
    out = summarize_curves(search_runs, opt, budget)  # medians, quartiles, queries to the optimum
    out.pop("pass", None)
    out["verdicts"] = {}
    local = out["strategies"].get(LOCAL)
    for name, s in out["strategies"].items():
        rs = [r for r in search_runs if r["strategy"] == name]
        s["seconds_mean"] = _mean([r["seconds"] for r in rs])
        if name not in BASELINES:
            q = s["queries_to_optimum_median"]
            b1 = f"B1 {name}: optimum in a median of <= {MAX_QUERIES} queries over >= {MIN_SEARCH_SEEDS} seeds"
            out["verdicts"][b1] = q is not None and q <= MAX_QUERIES and s["seeds"] >= MIN_SEARCH_SEEDS
            if local is not None:
                pairs = enumerate(zip(s["median"], local["median"], strict=True), 1)
                below = [k for k, (a, b) in pairs if a < b - 1e-9]
                s["queries_below_local_search"] = below
                out["verdicts"][f"B2 {name}: median pick never below local search's"] = not below
    return out


def summarize(runs: list[dict], opt: float, budget: int) -> dict:
    out = {"ranking": summarize_ranking(runs), "search": summarize_search(runs, opt, budget)}
    verdicts = {**out["ranking"]["verdicts"], **out["search"]["verdicts"]}
    out["pass"] = bool(verdicts) and all(verdicts.values())
    return out


def _sub(row: dict) -> str:
    """The proxy-subset cell of a ranking row: n, then the predictor's, the parameter count's and synflow's tau."""
    if not math.isfinite(row.get("proxy_tau_mean", math.nan)):
        return "-"
    taus = " / ".join(f"{row[k]:.3f}" for k in ("sub_tau_mean", "sub_params_tau_mean", "proxy_tau_mean"))
    return f"{row['proxy_cells_mean']:.0f}: {taus}"


def print_tables(summary: dict) -> None:
    rank = summary["ranking"]
    if rank["rows"]:
        print("\n| features, loss | n train | seeds | Kendall tau (mean ± std) | best of top-10 (mean %) | "
              "pairwise beats MSE (seeds) | params tau, same cells | on the proxy-scored cells: n, tau of predictor / "
              "params / synflow | s/run |")  # fmt: skip
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rank["rows"].values():
            p = rank["paired"].get(str(r["n"])) if r["variant"] == "pairwise" else None
            wins = f"{p['pairwise_wins']}/{p['seeds']}" if p else ""
            print(f"| {r['variant']} | {r['n']} | {r['seeds']} | {r['tau_mean']:.3f} ± {r['tau_std']:.3f} | "
                  f"{r['top10_best_mean']:.2f} | {wins} | {r.get('params_tau_mean', math.nan):.3f} | {_sub(r)} | "
                  f"{r['seconds_mean']:.0f} |")  # fmt: skip
    strategies = summary["search"]["strategies"]
    if strategies:
        cps = list(next(iter(strategies.values()))["at"])
        print("\n| strategy | seeds | " + " | ".join(f"median @ {n}" for n in cps)
              + " | queries to optimum (median) | s/run |")  # fmt: skip
        print("|---|---:|" + "---:|" * (len(cps) + 2))
        for name, s in strategies.items():
            q = s["queries_to_optimum_median"]
            cells = " | ".join(f"{s['at'][n]:.2f}" for n in cps)
            print(f"| {name} | {s['seeds']} | {cells} | {'never' if q is None else f'{q:g}'} "
                  f"({s['reached_optimum']}/{s['seeds']} reach it) | {s['seconds_mean']:.0f} |")  # fmt: skip
    verdicts = {**summary["ranking"]["verdicts"], **summary["search"]["verdicts"]}
    print("\n" + "\n".join(f"- {k}: {'PASS' if v else 'FAIL'}" for k, v in verdicts.items()))
    print("pass:", summary["pass"])


def plot(summary: dict, out) -> None:
    rows = summary["ranking"]["rows"].values()
    if rows:
        series = {v: [{"n": r["n"], "tau": r["tau_mean"], "top10": r["top10_best_mean"]} for r in rows
                      if r["variant"] == v] for v in VARIANTS}  # fmt: skip
        line_panels({k: s for k, s in series.items() if s}, [("tau", "Kendall tau on the other cells (mean)"),
                    ("top10", "best test acc among the top-10 (mean %)")], out / "renas_tau.png", x_key="n",
                    title="ReNAS predictor on NAS-Bench-201, labels = 200-epoch test acc, "
                    f"{max(r['seeds'] for r in rows)} seeds")  # fmt: skip
    strategies = summary["search"]["strategies"]
    if strategies:
        series = {n: [{"queries": i + 1, "median": m, "q1": a} for i, (m, a) in
                      enumerate(zip(s["median"], s["q1"], strict=True))] for n, s in strategies.items()}  # fmt: skip
        line_panels(series, [("median", "test acc (200 ep) of the pick, median (%)"), ("q1", "lower quartile (%)")],
                    out / "renas_search.png", x_key="queries",
                    title="NAS-Bench-201 CIFAR-10, search on 12-epoch val acc, "
                    f"{max(s['seeds'] for s in strategies.values())} seeds")  # fmt: skip


def main() -> None:
    ap = _runs.make_parser(__doc__, "root holding nasbench201/nasbench201.csv (else $LEANVISION_DATA)")
    ap.add_argument("--parts", nargs="+", choices=("A", "B"), default=["A", "B"])
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(10)), help="part A seeds")
    ap.add_argument("--search-seeds", type=int, nargs="+", default=list(range(MIN_SEARCH_SEEDS)), help="part B seeds")
    ap.add_argument(
        "--proxy-scores",
        type=Path,
        default=None,
        metavar="JSON",
        help="part A: a proxies_nb201 run; its synflow tau is reported on the same test cells",
    )
    ap.add_argument("--ns", type=int, nargs="+", default=[16, 50, 156, 424, 1000], help="part A: training cells")
    ap.add_argument("--type-only-max-n", type=int, default=156, help="part A: type-only ablation at n <= this")
    ap.add_argument("--epochs", type=int, default=200, help="part A: predictor epochs")
    ap.add_argument("--budget", type=int, default=200, help="part B: queries per search")
    ap.add_argument("--n-init", type=int, nargs="+", default=[10], help="part B: ReNAS's random cells (one run each)")
    ap.add_argument("--batch", type=int, default=10, help="part B: cells asked per predictor round")
    ap.add_argument("--search-epochs", type=int, default=200, help="part B: predictor epochs per round")
    ap.add_argument(
        "--encoding",
        choices=("onehot", "paper"),
        default="onehot",
        help="ops one-hot + live edges with an MLP, or the paper's tensor with the LeNet",
    )
    ap.add_argument("--explore", type=float, default=0.5, help="part B: share of each round spent on neighbours")
    ap.add_argument("--neighbours", choices=("random", "predicted"), default="random",
                    help="part B: the incumbent's neighbours asked: drawn at random, or the best-scored")  # fmt: skip
    ap.add_argument("--threads", type=int, default=1)
    _runs.add_run_args(ap, "renas")
    args = ap.parse_args()
    if args.proxy_scores is not None and not args.proxy_scores.is_file():
        ap.error(f"--proxy-scores: {args.proxy_scores} is not a file; run benchmarks/proxies_nb201.py first")
    opt = optimum(data_dir=args.data_dir)
    budget = int(_runs.saved_args(args.summarize).get("budget", args.budget)) if args.summarize else args.budget

    def run(runs: _runs.Runs) -> None:
        done = {(r["part"], r.get("name", r.get("strategy")), r.get("n"), r["seed"]) for r in runs.runs}
        if "A" in args.parts:
            y = true_accuracy(args.data_dir)
            proxy = None if args.proxy_scores is None else proxy_scores(args.proxy_scores)
            for n in args.ns:
                variants = [v for v in VARIANTS if v != "pairwise, type only" or n <= args.type_only_max_n]
                for seed in args.seeds:
                    for v in variants:
                        if ("A", v, n, seed) not in done:
                            runs.add(run_ranking(v, n, seed, y, args.epochs, args.encoding, proxy), echo=False)
                print(f"part A: n={n} done", flush=True)
        if "B" in args.parts:
            evaluator = NB201Tabular(data_dir=args.data_dir)
            renas = {f"ReNAS (n_init={k})": ("renas", {"n_init": k, "batch": args.batch, "epochs": args.search_epochs,
                                                       "encoding": args.encoding, "explore": args.explore,
                                                       "neighbours": args.neighbours})
                     for k in args.n_init}  # fmt: skip
            for name, (registered, kwargs) in {**renas, **BASELINES}.items():
                for seed in args.search_seeds:
                    if ("B", name, None, seed) not in done:
                        runs.add(run_search(name, registered, kwargs, seed, evaluator, args.budget), echo=False)
                print(f"part B: {name} done", flush=True)

    _runs.main(args, "renas", SAME_ON_RESUME, run, lambda runs: summarize(runs, opt, budget),
               lambda _, s: print_tables(s), lambda _, s: plot(s, args.out))  # fmt: skip


if __name__ == "__main__":
    main()
