"""Weight-sharing search on NAS-Bench-201 with real CIFAR-10 training: SPOS vs BETANAS vs CARS, judged by truth.

    python benchmarks/supernet_nb201.py --data-dir DIR                  # SPOS, BETANAS, CARS x seeds 0-2
    python benchmarks/supernet_nb201.py --data-dir DIR --proxy-scores ZC/proxies_nb201.json   # + synflow's tau
    python benchmarks/supernet_nb201.py --data-dir DIR --methods SPOS BETANAS CARS GREEDY     # + the reference
    python benchmarks/supernet_nb201.py --data-dir DIR --methods BETANAS --betanas-R 10 --out OUT2   # cheaper drops
    python benchmarks/supernet_nb201.py --data-dir DIR --resume         # continue a stopped benchmark
    python benchmarks/supernet_nb201.py --summarize OUT/supernet_nb201.json

Methods: SPOS (arXiv 1904.00420), BETANAS (arXiv 1912.11191) and CARS (arXiv 1909.04977) on the NAS-Bench-201
(arXiv 2001.00326) cell space. DIR holds cifar10/ and nasbench201/ (or set $LEANVISION_DATA). Every run goes
through the library's resumable one-shot driver (`run_oneshot`, journal and state in OUT/runs/<method>-s<seed>/),
so a run stopped mid-way continues from its last finished round with --resume.

Protocol (each run 24-33 CPU minutes at one thread, 22-28 of them training, depending on the machine; see DEFAULTS
below for the measurements): supernet C = 16, N = 1 cell per stage, CIFAR-10 resized to 16x16, every training image
but the 5,000 held out for scoring (45,000), SGD lr 0.05 cosine, batch 128, 50 epochs of path passes for every method
(BETANAS and CARS spend the same forward/backward passes as SPOS). Candidates are connected canonical cells (one per
isomorphism class, `create_space("nasbench201", canonical=True)`); training paths stay uniform over every edge's ops.
SPOS: uniform single paths, then scores the ranking set below; pick = its best score. BETANAS: three balanced stages,
one op per edge dropped after the first two, the first drop after >= 50% of the passes (R = 40 balanced super-steps
of paths score the ops, --betanas-R; at R = 10 they missed the weak ops more often), then at most 50 remaining cells
scored; pick = the best. CARS: uniform warm-up (26 epochs, one resumable round), then 4 evolution rounds over about
the other half (6 epochs each) on the population (16, pNSGA-III); pick = its best uniform-Pareto pick. GREEDY
(optional, --methods ... GREEDY): the unbalanced reference, paths drawn from softmax(alpha), alpha raised for
well-scoring ops, pick = argmax alpha, 8 update rounds.

Ranking set: 200 connected canonical cells drawn once with a fixed seed (the same for every method and seed).
After training, each run's final supernet scores all 200 on the same held-out images (the first 1,000 of the 5,000
held-out training images, BatchNorm re-estimated per cell on 500 training images). Per run: Kendall tau of these
scores vs the cells' 200-epoch CIFAR-10 test accuracy in the table (which no method sees); the mean score per op
(for op o: the mean over the 6 edges of the mean score of the ranking cells with o on that edge); the pick's true
accuracy. Baselines on the same 200 cells, in the same table: the parameter count of the NAS-Bench-201 network
(C = 16, N = 5), whose pick is the cell with the most parameters (mean truth over ties), and with --proxy-scores
(a benchmarks/proxies_nb201.py result) synflow on the ranking cells whose isomorphism class that run scored
(`proxies_nb201.py --cells 200 --seed 201` scores exactly the ranking set).

Verdicts (a narrow miss is a miss), for each of SPOS, BETANAS and CARS over seeds 0-2: (1) median tau >= 0.30;
(2) op order: conv_3x3 > conv_1x1 > each of skip_connect, avg_pool_3x3, none, by the median over seeds of each op's
mean score; (3) median pick (its true accuracy) >= the parameter-count pick. And BETANAS drops none or
avg_pool_3x3 first on >= 4 of 6 edges in >= 2 seeds. PASS = all of them. Reported, not required: supernet median
tau >= synflow's tau (both on synflow's cells), BETANAS's balance (every remaining op of an edge trained equally
often per stage), the tau over every cell a search scored, GREEDY's training skew, and how often the op order
holds in 500 bootstrap resamples of the 200 cells, by each run's scores and by the truth (a ranker that inverts an
order the cells resolve, or a tie on these cells), and the same for NB201's own 12-epoch validation accuracies of
the 200 cells (what a short, weight-independent training budget can see).
Writes OUT/supernet_nb201.json (every run holds its ranking scores, so --summarize needs no rerun) + a PNG.
"""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path

import _runs
from proxies_nb201 import class_scores

from leanvision.errors import DataError
from leanvision.report import bar_panels
from leanvision.search import Journal, create_space
from leanvision.search.evaluators.tabular import load_nb201
from leanvision.search.oneshot import create_oneshot, run_oneshot
from leanvision.search.report import kendall_tau, latest_scores
from leanvision.search.spaces.nasbench201 import EDGES, OPS, canonical_archs, format_arch, params_macs, parse_arch

METHODS = ("SPOS", "BETANAS", "CARS", "GREEDY")
JUDGED = ("SPOS", "BETANAS", "CARS")  # the verdicts apply to these; GREEDY is the unbalanced reference
SAME_ON_RESUME = ("epochs", "subset", "resolution", "C", "N", "betanas_R")
TRUE = "cifar10_test_200ep"
SHORT = "cifar10_val_12ep"  # NB201's own short-budget training: how much of the op order 12 epochs can see
RANK_N, RANK_SEED = 200, 201  # the ranking set: the same 200 canonical cells for every method and seed
MIN_TAU = 0.30
TOP_K = 10  # the head of a ranking, reported beside its pick
# Defaults from measurements on 2-core machines (other jobs running), one thread, C = 16, N = 1, 16x16, batch 128,
# 45,000 training images. First machine: one epoch of single-path steps (351) took 41.9 CPU s, a BETANAS pass (K = 5
# paths per step) 0.109 s, scoring one cell (500 BatchNorm + 1,000 scoring images) 0.60-0.84 s. A later one was
# faster: a 40-epoch SPOS run trained in 1,304 CPU s (32.6 s per epoch, 21.7 min, under the 25 minutes the protocol
# asks for) and scored 200 cells in 117 s; at 50 epochs it trained in 1,553 CPU s (25.9 min) and scored in 111 s.
# Measured at 50 epochs (the other core busy): SPOS and CARS trained in 22.8-25.9 min, BETANAS in 22.5-27.7; scoring
# (SPOS 200 cells, CARS 16 + 4 x 32 + 200, BETANAS 2 drops of 200 + 160 paths at R = 40 + 50 final + 200) took
# 1.4-2.4 min, BETANAS at R = 40 4.8-5.6 (2.1-2.2 at R = 10). (C = 8: 0.062 s per step; C = 8, N = 2: 0.087; 32x32 at
# C = 16: 0.43 s per step and 4.3 s per scored cell, too slow to score 200 cells.)
DEFAULTS = {"epochs": 50, "subset": 0, "resolution": 16, "C": 16, "N": 1}
OP_ORDER = ("nor_conv_3x3", "nor_conv_1x1")  # each above the next; conv_1x1 above every parameter-free op
WEAK = ("skip_connect", "avg_pool_3x3", "none")
DROP_FIRST = ("avg_pool_3x3", "none")  # the ops BETANAS's first drop should take (its rule: on >= 4 of 6 edges)


def rank_cells(n: int = RANK_N, seed: int = RANK_SEED) -> list[str]:
    """The ranking set: ``n`` connected canonical cells drawn with ``seed`` from the 6,461 of the space."""
    return random.Random(seed).sample(create_space("nasbench201", canonical=True).cells(), n)


def cars_schedule(epochs: int, rounds: int = 4) -> dict:
    """CARS's split of ``epochs``: up to ``rounds`` evolution rounds over about the second half, the rest warm-up."""
    rounds = min(rounds, max(epochs - 1, 0))
    per = max(1, epochs // (2 * rounds)) if rounds else 1
    return {"warmup_epochs": epochs - rounds * per, "evolution_rounds": rounds, "epochs_per_round": per}


def method_options(method: str, epochs: int, cells: list[str], betanas_R: int) -> tuple[str, dict]:
    if method == "SPOS":
        return "spos", {"epochs": epochs, "eval_cells": cells}  # scores exactly the ranking set
    if method == "BETANAS":
        return "betanas", {"epochs": epochs, "stages": 3, "d": 1, "R": betanas_R, "max_final": 50, "first_drop": 0.5}
    if method == "GREEDY":
        return "greedy", {"epochs": epochs, "rounds": min(epochs, 8)}
    return "cars", {**cars_schedule(epochs), "population": 16, "selection": "pnsga3"}


def truth_of(table: dict, sample: dict | str) -> float:
    return table[sample if isinstance(sample, str) else format_arch(sample)][TRUE]


def proxy_of(path: Path, cells: list[str], proxy: str = "synflow") -> list[float | None]:
    """A proxies_nb201 run's ``proxy`` score of each cell, via its isomorphism class (None where it scored none)."""
    by_class, classes = class_scores(path, proxy), canonical_archs()
    return [by_class.get(classes[c]) for c in cells]


def one_run(method: str, seed: int, args, table: dict, cells: list[str]) -> dict:
    name, options = method_options(method, args.epochs, cells, args.betanas_R)
    space = create_space("nasbench201", canonical=True)
    supernet = {"C": args.C, "N": args.N, "resolution": args.resolution, "subset": args.subset or None,
                "val_size": 5_000, "data_dir": args.data_dir, "threads": args.threads}  # fmt: skip
    run_dir = args.out / "runs" / f"{name}-s{seed}"
    config = {"method": name, "seed": seed, "options": options, "supernet": {**supernet, "data_dir": None}}
    journal_path = run_dir / "journal.jsonl"
    resume = journal_path.is_file()
    journal = Journal.open(journal_path, config) if resume else Journal.create(journal_path, config)
    method_obj = create_oneshot(name, space, seed=seed, supernet=supernet, **options)
    t0, c0 = time.perf_counter(), time.process_time()
    result = run_oneshot(method_obj, journal, run_dir, ground_truth=lambda s: {"test_200ep": truth_of(table, s)},
                         progress=True)  # fmt: skip
    searched = latest_scores([t for t in journal.trials() if t["status"] == "ok"], space)
    if name == "spos":  # SPOS scored the ranking set itself, with its final supernet
        own = {format_arch(c["sample"]): c["objective"] for c in method_obj.scored}
        rank_scores = [own[c] for c in cells]
    else:
        rank_scores = method_obj.trainer.score(cells)
    rank_true = [truth_of(table, c) for c in cells]
    pick = result["picks"][0]
    run = {"model": method, "seed": seed, "pick": format_arch(pick), "pick_true_acc": truth_of(table, pick),
           "picks_true_acc": [truth_of(table, s) for s in result["picks"]], "tau": kendall_tau(rank_scores, rank_true),
           "tau_search": kendall_tau([t["objective"] for t in searched], [t["report"]["test_200ep"] for t in searched]),
           "cells_scored": len(searched), "rank_cells": cells, "rank_scores": rank_scores, "rank_true": rank_true,
           "train_cpu_s": method_obj.trainer.cpu_s["train"], "score_cpu_s": method_obj.trainer.cpu_s["score"],
           "wall_s_this_call": time.perf_counter() - t0, "cpu_s_this_call": time.process_time() - c0}  # fmt: skip
    run["op_scores"] = op_means(cells, rank_scores)
    if args.proxy_scores is not None:
        run["rank_synflow"] = proxy_of(args.proxy_scores, cells)
    if name == "betanas":
        run["dropped"] = result["dropped"]
        run["stage_op_counts"] = result["stage_op_counts"]
        run["stage_steps"] = result["stage_steps"]
    if name == "greedy":
        run["op_counts"] = result["op_counts"]
    return run


def edge_op_means(cells: list[str], scores: list[float]) -> dict[str, dict[str, float]]:
    """Per edge and op: the mean score of the cells with that op on that edge (ops no cell has there are left out)."""
    per: dict[str, dict[str, list[float]]] = {e: {o: [] for o in OPS} for e in EDGES}
    for cell, s in zip(cells, scores, strict=True):
        for e, o in parse_arch(cell).items():
            per[e][o].append(s)
    return {e: {o: statistics.fmean(v) for o, v in ops.items() if v} for e, ops in per.items()}


def op_means(cells: list[str], scores: list[float]) -> dict[str, float | None]:
    """Per op: the mean over edges of the mean score of the cells with that op on the edge (edges without one skip)."""
    per = edge_op_means(cells, scores)
    means = {o: [m[o] for m in per.values() if o in m] for o in OPS}
    return {o: statistics.fmean(v) if v else None for o, v in means.items()}


def weak_lowest(cells: list[str], scores: list[float]) -> int:
    """On how many edges the cells' scores put none or avg_pool_3x3 lowest: what BETANAS's first drop would do if it
    scored ops on these cells (its rule asks for >= 4 of 6)."""
    return sum(min(m, key=m.get) in DROP_FIRST for m in edge_op_means(cells, scores).values())


def op_order_ok(scores: dict[str, float | None]) -> bool:
    """conv_3x3 > conv_1x1 > each of skip_connect, avg_pool_3x3 and none."""
    if any(scores.get(o) is None for o in (*OP_ORDER, *WEAK)):
        return False
    conv3, conv1 = scores["nor_conv_3x3"], scores["nor_conv_1x1"]
    return conv3 > conv1 and all(conv1 > scores[o] for o in WEAK)


def order_support(cells: list[str], values: list[float], *, resamples: int = 500, seed: int = 0) -> dict[str, float]:
    """Share of bootstrap resamples of the cells in which the op order (and conv_1x1 above skip) holds.

    Tells a ranker that inverts an order the cells resolve (the truth's support is high) from a tie on these cells.
    """
    rng, n = random.Random(seed), len(cells)
    hits = {"op_order": 0, "conv1_above_skip": 0}
    for _ in range(resamples):
        idx = [rng.randrange(n) for _ in range(n)]
        means = op_means([cells[i] for i in idx], [values[i] for i in idx])
        hits["op_order"] += op_order_ok(means)
        hits["conv1_above_skip"] += (means["nor_conv_1x1"] or 0) > (means["skip_connect"] or 0)
    return {k: v / resamples for k, v in hits.items()}


def skew(op_counts: dict[str, dict[str, int]]) -> float:
    """Mean over edges of (most-trained op's count) / (least-trained op's count): 1.0 is perfectly balanced."""
    return statistics.fmean(max(c.values()) / max(min(c.values()), 1) for c in op_counts.values())


def marginals(table: dict) -> dict[str, dict[str, float]]:
    """Median 200-epoch CIFAR-10 accuracy of all cells with op o on edge e (the ground-truth op quality)."""
    per: dict[str, dict[str, list[float]]] = {e: {o: [] for o in OPS} for e in EDGES}
    for arch, row in table.items():
        for e, o in parse_arch(arch).items():
            per[e][o].append(row[TRUE])
    return {e: {o: statistics.median(v) for o, v in ops.items()} for e, ops in per.items()}


def drop_check(run: dict) -> dict:
    """On how many edges BETANAS's first drop was avg_pool_3x3 or none; whether every stage was balanced."""
    first = run["dropped"][0]
    bad_first = sum(any(o in DROP_FIRST for o in first.get(e, [])) for e in EDGES)
    # dropped ops count 0 in later stages; the remaining ones must all count the same
    flat = all(len({c for c in per.values() if c}) == 1 for stage in run["stage_op_counts"] for per in stage.values())
    return {"edges_dropping_pool_or_none_first": bad_first, "balanced": flat}


def baselines(run: dict) -> dict:
    """The free rankers on a run's ranking set: parameter count (NAS-Bench-201's C = 16, N = 5) and synflow."""
    cells, true = run["rank_cells"], run["rank_true"]
    params = [params_macs(c, C=16, N=5)[0] for c in cells]
    top = [t for p, t in zip(params, true, strict=True) if p == max(params)]
    out = {"params": {"tau": kendall_tau(params, true), "cells": len(cells), "pick_true_acc": statistics.fmean(top),
                      "top_true_acc": top_true(params, true)}}  # fmt: skip
    proxy = run.get("rank_synflow")
    if proxy:
        have = [k for k, v in enumerate(proxy) if v is not None]
        if have:
            best = max(have, key=lambda k: proxy[k])
            out["synflow"] = {"tau": kendall_tau([proxy[k] for k in have], [true[k] for k in have]),
                              "cells": len(have), "pick_true_acc": true[best], "indices": have}  # fmt: skip
    return out


def top_true(scores: list[float], true: list[float], k: int = TOP_K) -> float:
    """Mean true accuracy of the ``k`` best-scored cells: how good the head of a ranking is, beyond its top-1."""
    best = sorted(range(len(scores)), key=lambda i: -scores[i])[:k]
    return statistics.fmean(true[i] for i in best)


def short_budget(table: dict, cells: list[str], true: list[float]) -> dict:
    """NB201's 12-epoch validation accuracies of the ranking cells: tau vs the truth, op means, op-order support."""
    short = [table[c][SHORT] for c in cells]
    return {"tau": kendall_tau(short, true), "op_means": op_means(cells, short), "op_order_support":
            order_support(cells, short), "weak_lowest_edges": weak_lowest(cells, short)}  # fmt: skip


def summarize(runs: list[dict], table: dict | None = None) -> dict:
    if any("rank_scores" not in r for r in runs):
        raise SystemExit("these runs hold no ranking-set scores: they were written by an older protocol of this "
                         "benchmark (C = 8, per-method cell sets); rerun it to get this summary")  # fmt: skip
    names = [m for m in METHODS if any(r["model"] == m for r in runs)]
    by, seeds, missing = _runs.complete_seeds(runs, names)
    out: dict = {"seeds": seeds, "missing_runs": missing, "min_tau": MIN_TAU, "methods": {}}
    if not seeds:
        out["pass"] = False
        return out
    first = by[(names[0], seeds[0])]  # every run holds the same ranking cells and truths
    base = baselines(first)
    out["baselines"] = {k: {kk: vv for kk, vv in v.items() if kk != "indices"} for k, v in base.items()}
    out["true_op_means"] = op_means(first["rank_cells"], first["rank_true"])
    out["true_op_order_support"] = order_support(first["rank_cells"], first["rank_true"])
    out["true_weak_lowest_edges"] = weak_lowest(first["rank_cells"], first["rank_true"])
    if table:
        out["nb201_12ep"] = short_budget(table, first["rank_cells"], first["rank_true"])
    for m in names:
        mine = [by[(m, s)] for s in seeds]
        accs = [r["pick_true_acc"] for r in mine]
        taus = [r["tau"] for r in mine if r["tau"] is not None]
        ops = {o: statistics.median(r["op_scores"][o] for r in mine if r["op_scores"][o] is not None) for o in OPS}
        v = {"pick_true_acc": accs, "median_pick_true_acc": statistics.median(accs),
             "tau": [r["tau"] for r in mine], "median_tau": statistics.median(taus) if len(taus) == len(mine) else None,
             "median_op_scores": ops, "cpu_min": [(r["train_cpu_s"] + r["score_cpu_s"]) / 60 for r in mine],
             "train_cpu_min": [r["train_cpu_s"] / 60 for r in mine]}  # fmt: skip
        v["op_order_support"] = [order_support(r["rank_cells"], r["rank_scores"]) for r in mine]
        v["weak_lowest_edges"] = [weak_lowest(r["rank_cells"], r["rank_scores"]) for r in mine]
        v["top_true_acc"] = [top_true(r["rank_scores"], r["rank_true"]) for r in mine]
        v["tau_ok"] = v["median_tau"] is not None and v["median_tau"] >= MIN_TAU
        v["op_order_ok"] = op_order_ok(ops)
        v["pick_ge_params"] = v["median_pick_true_acc"] >= base["params"]["pick_true_acc"]
        if "synflow" in base:  # the stretch goal: supernet tau >= synflow tau on synflow's cells
            have = base["synflow"]["indices"]
            sub = [kendall_tau([r["rank_scores"][k] for k in have], [r["rank_true"][k] for k in have]) for r in mine]
            v["median_tau_on_synflow_cells"] = None if None in sub else statistics.median(sub)
            v["tau_ge_synflow"] = (v["median_tau_on_synflow_cells"] is not None and base["synflow"]["tau"] is not None
                                   and v["median_tau_on_synflow_cells"] >= base["synflow"]["tau"])  # fmt: skip
        out["methods"][m] = v
    verdicts = {f"{m} {k}": out["methods"][m][k] for m in JUDGED if m in out["methods"]
                for k in ("tau_ok", "op_order_ok", "pick_ge_params")}  # fmt: skip
    betanas = [drop_check(by[("BETANAS", s)]) for s in seeds if ("BETANAS", s) in by]
    if betanas:
        out["betanas_drop"] = betanas
        verdicts["BETANAS drops none/avg_pool first"] = sum(d["edges_dropping_pool_or_none_first"] >= 4
                                                            for d in betanas) >= 2  # fmt: skip
        out["betanas_balanced"] = all(d["balanced"] for d in betanas)
    greedy = [by[("GREEDY", s)] for s in seeds if ("GREEDY", s) in by]
    if greedy:
        out["greedy_op_count_skew"] = [skew(r["op_counts"]) for r in greedy]
    out["verdicts"] = verdicts
    out["pass"] = bool(verdicts) and all(verdicts.values())
    return out


def _f(x: float | None, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def print_table(runs: list[dict], summary: dict) -> None:
    short = {"nor_conv_3x3": "conv3", "nor_conv_1x1": "conv1", "skip_connect": "skip", "avg_pool_3x3": "pool",
             "none": "none"}  # fmt: skip
    ops = (*OP_ORDER, *WEAK)
    print(f"\nRuns (tau and op scores on the {RANK_N} ranking cells; CPU minutes training + scoring):")
    print("| method | seed | tau | pick acc | " + " | ".join(short[o] for o in ops) + " | tau (searched) | CPU min |")
    print("|---|---:|---:|---:|" + "---:|" * len(ops) + "---:|---:|")
    for r in runs:
        cpu = f"{r['train_cpu_s'] / 60:.1f} + {r['score_cpu_s'] / 60:.1f}"
        cols = [_f(r["tau"]), f"{r['pick_true_acc']:.2f}", *(_f(r["op_scores"][o], ".1f") for o in ops)]
        print(f"| {r['model']} | {r['seed']} | " + " | ".join(cols) + f" | {_f(r['tau_search'])} | {cpu} |")
    if not summary.get("methods"):
        print("no seed finished by every method" + (f"; missing: {summary['missing_runs']}" if runs else ""))
        print("FAIL")
        return
    print(f"\nMedians over seeds {summary['seeds']} and the free baselines on the same cells (verdicts: tau >= "
          f"{MIN_TAU}; conv3 > conv1 > skip, pool, none; pick >= the parameter-count pick):")  # fmt: skip
    heads = ["ranker", "tau", "pick acc", *(short[o] for o in ops), "tau ok", "op order", "pick >= params"]
    print("| " + " | ".join(heads) + " |")
    print("|---|---:|---:|" + "---:|" * len(ops) + "---|---|---|")
    yes = {True: "met", False: "MISSED"}
    for m, v in summary["methods"].items():
        judged = m in JUDGED
        verdict = [yes[v[k]] if judged else "(ref)" for k in ("tau_ok", "op_order_ok", "pick_ge_params")]
        scores = [_f(v["median_op_scores"][o], ".1f") for o in ops]
        cols = [_f(v["median_tau"]), f"{v['median_pick_true_acc']:.2f}", *scores, *verdict]
        print(f"| {m} | " + " | ".join(cols) + " |")
    for k, b in summary["baselines"].items():
        print(f"| {k} ({b['cells']} cells) | {_f(b['tau'])} | {b['pick_true_acc']:.2f} |" + " |" * len(ops) + " | | |")
    true_ops = summary["true_op_means"]
    print(f"| NB201 truth (best of the cells) | 1 | {max(runs[0]['rank_true']):.2f} | "
          + " | ".join(_f(true_ops[o], ".1f") for o in ops) + " | | | |")  # fmt: skip
    if "synflow" not in summary["baselines"] and runs and runs[0].get("rank_synflow") is not None:
        print("synflow: the --proxy-scores file scored none of the ranking cells")
    if "synflow" in summary["baselines"]:
        print("stretch, median tau on synflow's cells >= synflow's: "
              + ", ".join(f"{m} {_f(v.get('median_tau_on_synflow_cells'))} ({yes[v['tau_ge_synflow']]})"
                          for m, v in summary["methods"].items()))  # fmt: skip
    support = summary.get("true_op_order_support")
    if support:
        line = ", ".join(f"{m} " + "/".join(f"{x['op_order']:.0%}" for x in v["op_order_support"])
                         for m, v in summary["methods"].items())  # fmt: skip
        print(f"op order in bootstrap resamples of the cells: NB201 truth {support['op_order']:.0%}; {line} (per seed)")
    if "true_weak_lowest_edges" in summary:
        line = ", ".join(f"{m} " + "/".join(map(str, v["weak_lowest_edges"])) for m, v in summary["methods"].items())
        print(f"edges whose lowest op on the ranking cells is none or pool: NB201 truth "
              f"{summary['true_weak_lowest_edges']}; {line} (per seed, of 6)")  # fmt: skip
    params_top = summary["baselines"]["params"].get("top_true_acc")
    if params_top is not None:
        tops = {m: "/".join(f"{x:.2f}" for x in v["top_true_acc"]) for m, v in summary["methods"].items()}
        line = ", ".join(f"{m} {t}" for m, t in tops.items())
        print(f"mean true acc of the {TOP_K} best-scored cells: params {params_top:.2f}; {line} (per seed)")
    nb12 = summary.get("nb201_12ep")
    if nb12:
        means = ", ".join(f"{short[o]} {nb12['op_means'][o]:.2f}" for o in ops)
        print(f"NB201's own 12-epoch training of these cells: tau {nb12['tau']:.3f} vs the truth; op means {means}; "
              f"op order in {nb12['op_order_support']['op_order']:.0%} of resamples, conv1 above skip in "
              f"{nb12['op_order_support']['conv1_above_skip']:.0%}; none or pool lowest on {nb12['weak_lowest_edges']} "
              "of 6 edges")  # fmt: skip
    for key in ("betanas_drop", "betanas_balanced", "greedy_op_count_skew", "missing_runs"):
        if key in summary:
            print(f"{key}: {summary[key]}")
    print("verdicts: " + ", ".join(f"{k} {yes[v]}" for k, v in summary["verdicts"].items()))
    print("PASS" if summary["pass"] else "FAIL")


def plot(summary: dict, path: Path) -> None:
    rows = [{"model": m, "median tau": v["median_tau"], "median pick acc": v["median_pick_true_acc"]}
            for m, v in summary.get("methods", {}).items()]  # fmt: skip
    rows += [{"model": k, "median tau": b["tau"], "median pick acc": b["pick_true_acc"]}
             for k, b in summary.get("baselines", {}).items()]  # fmt: skip
    if rows:
        bar_panels(rows, [("median tau", f"Kendall tau on {RANK_N} canonical cells"),
                          ("median pick acc", "pick's 200-epoch test acc (%)")], path,
                   title="weight-sharing search on NAS-Bench-201 (CPU scale)")  # fmt: skip


def main() -> None:
    ap = _runs.make_parser(__doc__, data_help="root holding cifar10/ and nasbench201/ (else $LEANVISION_DATA)")
    ap.add_argument("--methods", nargs="+", default=list(JUDGED), choices=METHODS)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=DEFAULTS["epochs"],
                    help="path passes in SPOS epochs, the same for every method")  # fmt: skip
    ap.add_argument("--subset", type=int, default=DEFAULTS["subset"], help="training images (0 = all 45,000)")
    ap.add_argument("--resolution", type=int, default=DEFAULTS["resolution"])
    ap.add_argument("--C", type=int, default=DEFAULTS["C"], help="supernet width (channels of the first stage)")
    ap.add_argument("--N", type=int, default=DEFAULTS["N"], help="cells per stage")
    ap.add_argument("--betanas-R", type=int, default=40,
                    help="BETANAS: balanced super-steps of paths that score the ops before each drop")  # fmt: skip
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--proxy-scores", type=Path, default=None,
                    help="a proxies_nb201.py result: synflow's tau on the ranking cells it scored")  # fmt: skip
    _runs.add_run_args(ap, "supernet_nb201", rewrite=False)  # the saved summary also holds the op marginals
    args = ap.parse_args()
    if args.betanas_R < 1:
        ap.error(f"--betanas-R must be at least 1, got {args.betanas_R}")
    if args.proxy_scores is not None and not args.proxy_scores.is_file():
        ap.error(f"--proxy-scores: {args.proxy_scores} is not a file; run benchmarks/proxies_nb201.py first")
    table: dict = {}

    def run(runs: _runs.Runs) -> None:
        # Saved before the first run ends, so a run killed mid-way is held by OUT and continues under --resume.
        _runs.write_json(runs.partial, {"args": runs.saved_args, "runs": runs.runs})
        table.update(load_nb201(args.data_dir))
        cells = rank_cells()
        done = {(r["model"], r["seed"]) for r in runs.runs}
        for seed in args.seeds:
            for m in args.methods:
                if (m, seed) not in done:
                    r = runs.add(one_run(m, seed, args, table, cells), echo=False)
                    print(f"{m} seed {seed}: pick {r['pick_true_acc']:.2f}%, tau {_f(r['tau'])}, CPU "
                          f"{r['train_cpu_s'] / 60:.1f} min training + {r['score_cpu_s'] / 60:.1f} scoring",
                          flush=True)  # fmt: skip
        runs.runs = _runs.in_order(
            runs.runs, args.seeds, [m for m in METHODS if any(r["model"] == m for r in runs.runs)]
        )

    def summary_of(runs: list[dict]) -> dict:
        if args.proxy_scores is not None:  # (re)attach synflow's scores, e.g. to a saved result under --summarize
            for r in runs:
                r["rank_synflow"] = proxy_of(args.proxy_scores, r["rank_cells"])
        # A saved summary also holds what needs the table (op marginals, the 12-epoch reference): --summarize
        # rewrites it only where the table is there to load.
        return {**summarize(runs, table), "marginals": marginals(table)} if table else summarize(runs)

    if args.summarize:
        try:
            table.update(load_nb201(args.data_dir))
        except DataError as e:
            print(f"{e}: summarizing without the table's 12-epoch reference, the saved file unchanged")
    _runs.main(args, "supernet_nb201", SAME_ON_RESUME, run, summary_of, print_table,
               lambda runs, summary: plot(summary, args.out / "supernet_nb201.png"), rewrite=bool(table))  # fmt: skip


if __name__ == "__main__":
    main()
