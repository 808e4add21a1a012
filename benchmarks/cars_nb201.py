"""CARS on a NAS-Bench-201 supernet (arXiv 1909.04977): pNSGA-III vs NSGA-III vs random, judged by the true table.

    python benchmarks/cars_nb201.py --data-dir DIR                      # 3 seeds x (A, B, C), one shared warm-up each
    python benchmarks/cars_nb201.py --data-dir DIR --seeds 0            # one seed
    python benchmarks/cars_nb201.py --data-dir DIR --out OUT --resume   # continue a stopped run in OUT
    python benchmarks/cars_nb201.py --summarize OUT/cars_nb201.json     # recompute the verdicts, nothing run

DIR holds cifar10/ and nasbench201/nasbench201.csv (or set $LEANVISION_DATA and omit --data-dir). Supernet: the
NAS-Bench-201 macro skeleton with C = --channels (8), N = 1 cell per stage, on CIFAR-10 resized to 16x16; a seeded
class-balanced --subset (10,000) of the training split to train the weights, --val-size (5,000) held-out training
images to score cells (BatchNorm re-estimated per path on 500 training images, accuracy on the first
--eval-images 2,000 held-out images; never the test split); SGD 0.05 (Nesterov momentum 0.9, wd 5e-4), batch
128, cosine over the 15 epochs. Schedule: --warmup (3) epochs with a uniformly random path per step, then
--rounds (12) evolution rounds of one epoch each, population N_P = --population (16).

Per seed one warm-up (round 0: warm-up + the initial random population) is forked into three runs that differ
only from round 1 on: A pNSGA-III (CARS's rule: union of the k-th fronts of (1/acc, params) and (1/acc, 1/params)),
B plain NSGA-III on (1/acc, params) (pymoo's reference-direction survival), C random search (16 fresh random
cells every round, trained on and scored with the same supernet schedule, no selection). Measured: per round the
median params of the population (the standalone child of the supernet, C=8, N=1); at the end the true
NAS-Bench-201 CIFAR-10 200-epoch test accuracy (the table, reported only, never seen by a method) of the four
uniform-Pareto picks and of the final population; the hypervolume of the final population in (true error,
NB201 params at C=16, N=5) normalised over the whole space, reference point (1.1, 1.1)
(`leanvision.search.oneshot.nsga.acc_size_hypervolume`); Kendall tau of supernet scores vs the table over the
cells scored in the last round (32 for A and B, 16 for C).

PASS (all three; medians over seeds for the curves): B's median params fall monotonically (never rising) from
round 1 to round 12 with a drop >= 30%, while A's stay within +-15% of round 1 at every round; A's hypervolume is
>= B's and >= C's in >= 2/3 of the seeds; the best true accuracy among A's picks >= the best among C's picks
(mean over seeds). A narrow miss is a miss.

Writes OUT/cars_nb201.json + .png; each finished (method, seed) run is saved at once to OUT/cars_nb201.partial.json
(--resume redoes a seed's warm-up, which is deterministic, when some of its runs are missing).
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import _runs

METHODS = {"A pNSGA-III": "pnsga3", "B NSGA-III": "nsga3", "C random": "random"}
A, B, C = METHODS
SAME_ON_RESUME = ("rounds", "warmup", "population", "subset", "val_size", "resolution", "channels", "eval_images",
                  "bn_images", "batch_size", "lr")  # fmt: skip
TRUE = "cifar10_test_200ep"


def size_range() -> tuple[int, int]:
    """Params of the cheapest and the costliest NAS-Bench-201 network (C=16, N=5): the HV's fixed size frame."""
    from leanvision.search.spaces.nasbench201 import EDGES, params_macs

    return (params_macs(dict.fromkeys(EDGES, "none"))[0], params_macs(dict.fromkeys(EDGES, "nor_conv_3x3"))[0])


def supernet_opts(args: argparse.Namespace) -> dict:
    return {"data_dir": args.data_dir, "subset": args.subset or None, "val_size": args.val_size,
            "resolution": args.resolution, "C": args.channels, "N": 1, "batch_size": args.batch_size, "lr": args.lr,
            "bn_images": args.bn_images, "eval_images": args.eval_images, "threads": args.threads}  # fmt: skip


def finish_run(name: str, seed: int, method, records: list[dict], seconds: float, table: dict) -> dict:
    """What a finished run reports: the median-params curve, the picks and the final population against the table."""
    from scipy.stats import kendalltau

    from leanvision.search.oneshot.nsga import acc_size_hypervolume
    from leanvision.search.spaces.nasbench201 import format_arch, params_macs

    def cell(sample: dict, score: float, params: int) -> dict:
        arch = format_arch(sample)
        return {"arch": arch, "score": score, "params": params, "nb201_params": params_macs(sample)[0],
                "true": table[arch][TRUE]}  # fmt: skip

    res = method.result()
    pop = [cell(p["sample"], p["score"], p["params"]) for p in res["population"]]
    picks = [cell(p["sample"], p["score"], p["params"]) for p in res["picks_detail"]]
    last = [cell(r["sample"], r["objective"], r["params"]) for r in records]
    tau = kendalltau([c["score"] for c in last], [c["true"] for c in last]).statistic
    hv = acc_size_hypervolume([c["true"] for c in pop], [c["nb201_params"] for c in pop], size_range())
    return {
        "model": name,
        "seed": seed,
        "median_params": [h["median_params"] for h in res["population_history"]],
        "median_score": [h["median_score"] for h in res["population_history"]],
        "picks": picks,
        "population": pop,
        "best_pick_true": max(c["true"] for c in picks),
        "hypervolume": hv,
        "kendall_tau": None if math.isnan(tau) else float(tau),
        "seconds": seconds,
    }


def run_seed(seed: int, args: argparse.Namespace, todo: list[str], table: dict) -> Iterator[dict]:
    from leanvision.search.oneshot import cars as _cars  # noqa: F401  (registration)
    from leanvision.search.oneshot import create_oneshot

    opts = {"seed": seed, "supernet": supernet_opts(args), "warmup_epochs": args.warmup,
            "evolution_rounds": args.rounds, "population": args.population}  # fmt: skip
    t0 = time.perf_counter()
    warm = create_oneshot("cars", "nasbench201", selection=METHODS[todo[0]], **opts)
    warm.run_round(0)
    state = warm.state_dict()
    warm_s = time.perf_counter() - t0
    print(f"seed {seed}: warm-up + initial population {warm_s:.0f} s", flush=True)
    for name in todo:
        t0 = time.perf_counter()
        m = create_oneshot("cars", "nasbench201", selection=METHODS[name], **opts)
        m.load_state_dict(state)  # the fork: the same supernet, population and streams after round 0
        for r in range(1, m.rounds()):
            records = m.run_round(r)
        run = finish_run(name, seed, m, records, time.perf_counter() - t0, table)
        run["warmup_seconds"] = warm_s
        print(f"seed {seed} {name}: {run['seconds']:.0f} s, median params {run['median_params'][1]:.0f} -> "
              f"{run['median_params'][-1]:.0f}, HV {run['hypervolume']:.4f}, best pick {run['best_pick_true']:.2f}%",
              flush=True)  # fmt: skip
        yield run


def _curve(by: dict, name: str, seeds: list[int]) -> list[float]:
    """The median over seeds of the per-round median params."""
    return [statistics.median(by[(name, s)]["median_params"][r] for s in seeds)
            for r in range(len(by[(name, seeds[0])]["median_params"]))]  # fmt: skip


def summarize(runs: list[dict]) -> dict:
    by, seeds, missing = _runs.complete_seeds(runs, METHODS)
    if not seeds:
        return {"pass": False, "note": "no seed with A, B and C finished", "missing": missing}
    curves = {n: _curve(by, n, seeds) for n in METHODS}
    b, a = curves[B][1:], curves[A][1:]  # rounds 1..R
    b_monotone = all(y <= x for x, y in itertools.pairwise(b))
    b_drop = 1 - b[-1] / b[0]
    a_band = max(abs(y / a[0] - 1) for y in a)
    trap = b_monotone and b_drop >= 0.30 and a_band <= 0.15
    hv_wins = sum(by[(A, s)]["hypervolume"] >= max(by[(B, s)]["hypervolume"], by[(C, s)]["hypervolume"])
                  for s in seeds)  # fmt: skip
    hv_pass = 3 * hv_wins >= 2 * len(seeds)
    best = {n: statistics.mean(by[(n, s)]["best_pick_true"] for s in seeds) for n in METHODS}
    pop_true = {n: [statistics.mean(c["true"] for c in by[(n, s)]["population"]) for s in seeds] for n in METHODS}
    per = {
        n: {
            "median_params_curve": curves[n],
            "hypervolume_mean": statistics.mean(by[(n, s)]["hypervolume"] for s in seeds),
            "best_pick_true_mean": best[n],
            "kendall_tau_mean": statistics.mean(by[(n, s)]["kendall_tau"] or 0.0 for s in seeds),
            "population_true_mean": statistics.mean(pop_true[n]),
            "seconds_mean": statistics.mean(by[(n, s)]["seconds"] for s in seeds),
        }
        for n in METHODS
    }
    return {
        "seeds": seeds,
        "missing": missing,
        "methods": per,
        "trap": {"nsga3_monotone": b_monotone, "nsga3_drop": b_drop, "pnsga3_max_dev": a_band, "pass": trap},
        "hypervolume": {"pnsga3_wins": hv_wins, "seeds": len(seeds), "pass": hv_pass},
        "best_pick": {"pnsga3": best[A], "random": best[C], "pass": best[A] >= best[C]},
        "pass": trap and hv_pass and best[A] >= best[C],
    }


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def print_table(runs: list[dict], summary: dict) -> None:
    if "methods" not in summary:
        print(summary.get("note", "nothing to summarise"))
        return
    seeds = summary["seeds"]
    last = len(next(iter(summary["methods"].values()))["median_params_curve"]) - 1
    print(f"\nCARS on NAS-Bench-201, seeds {seeds}\n")
    print(f"| method | median params r1 | r{last} | change | HV (true err, params) | best pick true acc | "
          "final pop true acc | Kendall tau (last round) | s/run |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, m in summary["methods"].items():
        c = m["median_params_curve"]
        print(f"| {n} | {c[1]:.0f} | {c[-1]:.0f} | {100 * (c[-1] / c[1] - 1):+.1f}% | {m['hypervolume_mean']:.4f} | "
              f"{m['best_pick_true_mean']:.2f}% | {m['population_true_mean']:.2f}% | {m['kendall_tau_mean']:+.3f} | "
              f"{m['seconds_mean']:.0f} |")  # fmt: skip
    by, _, _ = _runs.complete_seeds(runs, METHODS)
    print("\nper seed: HV A / B / C, best pick true acc A / B / C")
    for s in seeds:
        hv = " / ".join(f"{by[(n, s)]['hypervolume']:.4f}" for n in METHODS)
        bp = " / ".join(f"{by[(n, s)]['best_pick_true']:.2f}" for n in METHODS)
        print(f"  seed {s}: {hv};  {bp}")
    t, h, bp = summary["trap"], summary["hypervolume"], summary["best_pick"]
    print(f"\nsmall-model trap: NSGA-III median params monotone down {t['nsga3_monotone']}, drop r1->r{last} "
          f"{100 * t['nsga3_drop']:.1f}% (need >= 30%); pNSGA-III max deviation from r1 "
          f"{100 * t['pnsga3_max_dev']:.1f}% (need <= 15%): {verdict(t['pass'])}")  # fmt: skip
    print(f"hypervolume: pNSGA-III >= NSGA-III and >= random in {h['pnsga3_wins']}/{h['seeds']} seeds "
          f"(need >= 2/3): {verdict(h['pass'])}")  # fmt: skip
    print(f"best true acc of picks: pNSGA-III {bp['pnsga3']:.2f}% vs random {bp['random']:.2f}% (mean over seeds): "
          f"{verdict(bp['pass'])}")  # fmt: skip
    print(f"overall: {verdict(summary['pass'])}")


def plot(runs: list[dict], summary: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    import leanvision.report  # noqa: F401  (picks the Agg backend)

    by, seeds, _ = _runs.complete_seeds(runs, METHODS)
    if not seeds:
        return
    colors = dict(zip(METHODS, ("tab:blue", "tab:red", "tab:gray"), strict=True))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for n in METHODS:
        for s in seeds:
            axes[0].plot(by[(n, s)]["median_params"], color=colors[n], alpha=0.3, lw=0.8)
        axes[0].plot(summary["methods"][n]["median_params_curve"], color=colors[n], lw=2, label=n)
        pop = by[(n, seeds[0])]["population"]
        axes[1].scatter([c["nb201_params"] / 1e6 for c in pop], [c["true"] for c in pop], s=16, color=colors[n],
                        alpha=0.7, label=n)  # fmt: skip
    axes[0].set_xlabel("round (0 = warm-up)")
    axes[0].set_ylabel("median params of the population")
    axes[0].legend(fontsize=8)
    axes[1].set_xlabel("NAS-Bench-201 params (M, C=16 N=5)")
    axes[1].set_ylabel("true CIFAR-10 acc (%)")
    axes[1].set_title(f"final population, seed {seeds[0]}", fontsize=9)
    fig.suptitle("CARS on NAS-Bench-201: small-model trap and final populations")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args() -> argparse.Namespace:
    ap = _runs.make_parser(__doc__, data_help="root holding cifar10/ and nasbench201/ (else $LEANVISION_DATA)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, default=12, help="evolution rounds (one epoch each)")
    ap.add_argument("--warmup", type=int, default=3, help="warm-up epochs with uniform paths")
    ap.add_argument("--population", type=int, default=16, help="N_P (children per round: as many)")
    _runs.add_split_args(ap, 10_000)
    ap.add_argument("--eval-images", type=int, default=2_000, help="held-out images per cell score")
    ap.add_argument("--bn-images", type=int, default=500, help="training images to re-estimate BatchNorm per cell")
    ap.add_argument("--resolution", type=int, default=16)
    ap.add_argument("--channels", type=int, default=8, help="C: width of the first stage")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    _runs.add_run_args(ap, "cars_nb201")
    return ap.parse_args()


def main() -> None:
    args = parse_args()

    def run(runs: _runs.Runs) -> None:
        from leanvision.search.evaluators.tabular import load_nb201

        table = load_nb201(args.data_dir)
        for seed in args.seeds:
            todo = [n for n in METHODS if not any(r["model"] == n and r["seed"] == seed for r in runs.runs)]
            if todo:
                for one in run_seed(seed, args, todo, table):
                    runs.add(one, echo=False)  # run_seed prints its own line
        runs.runs = _runs.in_order(runs.runs, args.seeds, METHODS)

    _runs.main(args, "cars_nb201", SAME_ON_RESUME, run, summarize, print_table,
               lambda runs, summary: plot(runs, summary, args.out / "cars_nb201.png"))  # fmt: skip


if __name__ == "__main__":
    main()
