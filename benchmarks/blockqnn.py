"""BlockQNN on CPU (arXiv 1708.05552): Q-learning on a synthetic block MDP, the early-stop reward, a search.

    python benchmarks/blockqnn.py                                  # part 1: synthetic MDP, 10 seeds (30 s)
    python benchmarks/blockqnn.py --part 2 --data-dir DIR          # early-stop reward vs final accuracy (CIFAR-10)
    python benchmarks/blockqnn.py --part 3 --data-dir DIR          # 40-block asynchronous search vs random (CIFAR-10)
    python benchmarks/blockqnn.py --part 2 --out OUT --resume      # continue a stopped run in OUT
    python benchmarks/blockqnn.py --summarize OUT/blockqnn_part1.json   # recompute a verdict, nothing run

DIR holds cifar10/ (or set $LEANVISION_DATA and omit --data-dir). NSC space with T = --max-layers (6) entries per
block counting the terminal; the Q-learner is the library's `blockqnn` strategy (Q init 0.5, alpha 0.01, gamma 1,
replay of min(|memory|, 64) episodes per result, epsilon 1.0 .. 0.1 in the shape of BlockQNN's
95:7:7:7:10:10:10:10:10:12 schedule, shrunk before the last phase so 60% of the decisions exploit). Blocks without a
convolution are invalid (never sampled) unless --allow-conv-free (the earlier runs' setting, to re-score their blocks).

Part 1, the synthetic MDP (no training): reward = `leanvision.search.spaces.nsc.synthetic_reward` (+0.3 for a 3x3
conv added back to its own input, +0.2 for a concat of two convs of different kernels, -0.05 per layer, mapped to
[0, 1]; optimum 1.0, since both bonuses need four layers and each further layer costs). --episodes (2,000) blocks
per run, 10 seeds, three searchers: A Q-learning with reward shaping r_t = r_T / T, B Q-learning without shaping,
C random search (epsilon 1 throughout). The greedy block of A and B is scored every --eval-every episodes.
PASS (the rule of the validation plan; medians over seeds): A's and B's final greedy block within 5% of the
optimum; A first reaches a greedy block with >= 90% of the optimum in fewer episodes than B (a run that never
does counts as never); A's mean reward over the last 200 episodes > C's.

Part 2, the early-stop reward: 16 random valid blocks (seed --block-seed; --allow-conv-free for the earlier runs'
blocks), network N = 1 block per stage, F = 16, a seeded class-balanced --subset of CIFAR-10 training images (5,000
held out for validation), Adam 1e-3, batch 128; each block trained 1 epoch ("early") and --final-epochs (6)
("final", lr x0.2 after epoch 5 as in BlockQNN's recipe). Early score: the 1-epoch validation accuracy, and the
redefined reward acc - mu log(FLOPs / median block FLOPs) - rho log(density). Calibration: mu and rho fitted by
least squares of the 6-epoch *validation* accuracy on the reward's terms (signs free;
`leanvision.search.evaluators.train.calibrate_reward`), reported beside the paper's 1 and 8; each block's fitted
reward comes from a fit without it (leave-one-out). PASS (per reward): Spearman rho(reward, 6-epoch test accuracy)
>= 0.8, judged for the paper's constants (either accuracy unit) and for the fitted ones; --summarize recomputes
it from a saved file.

Part 3, the search: `leanvision.search.search()` on --executor (process or ray) with 2 workers of 1 torch thread,
results told in arrival order; BlockQNN (epsilon schedule over the 40 blocks) vs random search, 40 blocks each,
seeds 0-2, the 1-epoch proxy with the redefined reward (--mu, --rho: part 2's fitted constants) as the objective
(--alpha: the Q learning rate; the paper's 0.01 is sized for ~11,000 blocks and leaves Q near its initial 0.5 over
40, so the runs use 0.5, chosen on NAS-Bench-201 seeds 100-115).
Throughput: --probe-blocks fixed random blocks trained serially in this process, then on the executor. The best
block of each search is re-trained for --final-epochs and tested. PASS: every search's best block holds a
convolution, and BlockQNN's best block re-trains above random search's best in >= 2 of 3 seeds and on the mean
(throughput and the last 16 blocks' mean objective are reported beside).

Cost of parts 2 and 3 (estimated from 500-image smoke runs on 2 busy cores, not measured at full size): roughly
30-80 s per block-epoch on 10,000 images, so part 2 (16 x 7 block-epochs) about an hour and part 3 (about 290
block-epochs) two to three hours with 2 workers; --subset 5000 halves both.

Writes OUT/blockqnn_part<N>.json + .png; each finished run is saved at once to OUT/blockqnn_part<N>.partial.json
(part 3 also journals every trial in OUT/journals/, so --resume continues inside a search).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from pathlib import Path

import _runs

from leanvision.errors import ConfigError
from leanvision.search import Journal, create_evaluator, create_space, create_strategy, search
from leanvision.search.evaluators.train import (
    PAPER_MU,
    PAPER_RHO,
    calibrate_reward,
    charged_flops,
    redefined_reward,
)
from leanvision.search.spaces.nsc import has_conv, synthetic_reward

VARIANTS = {"A shaping": {"shaping": True}, "B no shaping": {"shaping": False}, "C random": None}
PART2_RHO = 0.8  # the rank correlation a reward needs with the 6-epoch test accuracy
SAME = {
    1: ("max_layers", "episodes", "eval_every", "replay", "alpha", "q_init"),
    2: ("max_layers", "blocks", "block_seed", "subset", "final_epochs", "channels", "acc_scale", "allow_conv_free"),
    3: (
        "max_layers",
        "alpha",
        "budget",
        "subset",
        "final_epochs",
        "channels",
        "acc_scale",
        "mu",
        "rho",
        "allow_conv_free",
    ),
}


def _median(values: list[float]) -> float | None:
    """The median; None when empty or infinite (JSON has no infinity)."""
    m = statistics.median(values) if values else math.nan
    return m if math.isfinite(m) else None


# --- part 1 ------------------------------------------------------------------------------------------------------


def part1_run(variant: str, seed: int, args: argparse.Namespace) -> dict:
    space = create_space("nsc", max_layers=args.max_layers)
    opts = VARIANTS[variant]
    if opts is None:  # epsilon 1 throughout: a uniformly random layer at every index, nothing learnt
        strat = create_strategy("blockqnn", space, seed=seed, schedule=[1], epsilons=[1.0], replay=0)
    else:
        strat = create_strategy("blockqnn", space, seed=seed, budget=args.episodes, replay=args.replay,
                                alpha=args.alpha, q_init=args.q_init, **opts)  # fmt: skip
    rewards, greedy_curve, reach90 = [], [], None
    t0 = time.perf_counter()
    for episode in range(1, args.episodes + 1):
        sample = strat.ask(1)[0]
        r = synthetic_reward(sample, args.max_layers)
        rewards.append(r)
        strat.tell(sample, {"status": "ok", "objective": r})
        if opts is not None and episode % args.eval_every == 0:
            g = synthetic_reward(strat.greedy(), args.max_layers)
            greedy_curve.append([episode, g])
            if reach90 is None and g >= 0.9:
                reach90 = episode
    greedy = strat.greedy() if opts is not None else None
    window = 100
    return {
        "model": variant,
        "seed": seed,
        "greedy_block": greedy,
        "greedy_reward": None if greedy is None else synthetic_reward(greedy, args.max_layers),
        "episodes_to_90pct": reach90,
        "last200_mean_reward": statistics.mean(rewards[-200:]),
        "best_sampled_reward": max(rewards),
        "greedy_curve": greedy_curve,
        "reward_per_100": [statistics.mean(rewards[i : i + window]) for i in range(0, len(rewards), window)],
        "seconds": time.perf_counter() - t0,
    }


def part1_summary(runs: list[dict]) -> dict:
    by, seeds, missing = _runs.complete_seeds(runs, VARIANTS)
    if not seeds:
        return {"pass": False, "note": "no seed with A, B and C finished"}
    opt = 1.0

    def col(v: str, key: str) -> list:
        return [by[(v, s)][key] for s in seeds]

    greedy = {v: col(v, "greedy_reward") for v in ("A shaping", "B no shaping")}
    reach = {v: [math.inf if x is None else x for x in col(v, "episodes_to_90pct")] for v in greedy}
    last = {v: col(v, "last200_mean_reward") for v in VARIANTS}
    med = statistics.median
    within = {v: med(greedy[v]) >= 0.95 * opt for v in greedy}
    faster = med(reach["A shaping"]) < med(reach["B no shaping"])
    beats_random = med(last["A shaping"]) > med(last["C random"])
    return {
        "seeds": seeds,
        "missing_runs": missing,
        "optimum": opt,
        "greedy_reward_median": {v: _median(x) for v, x in greedy.items()},
        "greedy_reward_per_seed": greedy,
        "seeds_within_5pct": {v: sum(g >= 0.95 * opt for g in x) for v, x in greedy.items()},
        "episodes_to_90pct_median": {v: _median(x) for v, x in reach.items()},  # None: never (most seeds)
        "episodes_to_90pct_per_seed": {v: col(v, "episodes_to_90pct") for v in greedy},
        "last200_mean_reward_median": {v: _median(x) for v, x in last.items()},
        "criterion": "medians over seeds: greedy reward of A and of B >= 0.95 x optimum; episodes to a greedy block "
        ">= 0.9 x optimum A < B (never = infinity); mean reward of the last 200 episodes A > C",
        "A_B_within_5pct": within,
        "A_reaches_90pct_faster_than_B": faster,
        "A_last200_above_C": beats_random,
        "pass": bool(all(within.values()) and faster and beats_random),
    }


def part1_table(runs: list[dict], summary: dict) -> None:
    print("\n| searcher | seed | greedy reward | episodes to 90% | last-200 mean | best sampled |")
    print("|---|---|---|---|---|---|")
    for r in runs:
        g = "-" if r["greedy_reward"] is None else f"{r['greedy_reward']:.3f}"
        print(f"| {r['model']} | {r['seed']} | {g} | {r['episodes_to_90pct'] or '-'} | "
              f"{r['last200_mean_reward']:.3f} | {r['best_sampled_reward']:.3f} |")  # fmt: skip
    print(json.dumps(summary, indent=2))


def part1_plot(runs: list[dict], path: Path) -> None:
    from leanvision.report import line_panels

    series = {}
    for v in VARIANTS:
        mine = [r for r in runs if r["model"] == v]
        if not mine:
            continue
        rows = []
        for i in range(len(mine[0]["reward_per_100"])):
            row = {"episode": 100 * (i + 1), "sampled": _median([r["reward_per_100"][i] for r in mine])}
            if mine[0]["greedy_curve"]:
                at = [c for c in mine[0]["greedy_curve"] if c[0] <= 100 * (i + 1)]
                if at:
                    k = len(at) - 1
                    row["greedy"] = _median([r["greedy_curve"][k][1] for r in mine])
            rows.append(row)
        series[v] = rows
    line_panels(series, [("greedy", "greedy block reward (median)"), ("sampled", "mean sampled reward / 100 ep")],
                path, x_key="episode", title="BlockQNN on the synthetic block MDP")  # fmt: skip


def part1(args: argparse.Namespace, book: _runs.Runs) -> None:
    done = {(r["model"], r["seed"]) for r in book.runs}
    for seed in args.seeds:
        for v in VARIANTS:
            if (v, seed) in done:
                continue
            r = book.add(part1_run(v, seed, args), echo=False)
            print(f"{v} seed {seed}: greedy {r['greedy_reward']}, 90% at {r['episodes_to_90pct']}, "
                  f"last-200 {r['last200_mean_reward']:.3f} ({r['seconds']:.1f} s)", flush=True)  # fmt: skip


# --- parts 2 and 3: training -------------------------------------------------------------------------------------


def evaluator(args: argparse.Namespace, epochs: int, *, report_test: bool = False):
    return create_evaluator(
        "train_cifar", space="nsc", space_kwargs=space_kwargs(args), dataset="cifar10",
        data_dir=None if args.data_dir is None else str(args.data_dir), subset=args.subset or None,
        val_size=args.val_size, epochs=epochs, channels=args.channels, N=1, report_test=report_test,
        acc_scale=args.acc_scale, mu=args.mu, rho=args.rho, threads=args.threads,
    )  # fmt: skip


def space_kwargs(args: argparse.Namespace) -> dict:
    return {"max_layers": args.max_layers, "require_conv": not args.allow_conv_free}


def random_blocks(args: argparse.Namespace, n: int, seed: int) -> list[dict]:
    space = create_space("nsc", **space_kwargs(args))
    rng, seen, out = random.Random(seed), set(), []
    while len(out) < n:
        s = space.sample(rng)
        if space.key(s) not in seen:
            seen.add(space.key(s))
            out.append(s)
    return out


def part2(args: argparse.Namespace, book: _runs.Runs) -> None:
    from leanvision.executors import make_executor, map_unordered

    blocks = random_blocks(args, args.blocks, args.block_seed)
    done = {(r["model"], r["seed"]) for r in book.runs}
    jobs = [(i, ph) for i in range(len(blocks)) for ph in ("early", "final") if (ph, i) not in done]
    evals = {"early": evaluator(args, 1), "final": evaluator(args, args.final_epochs, report_test=True)}
    ex = make_executor(args.executor, workers=args.workers, threads=args.threads)
    try:
        for phase in ("early", "final"):
            todo = [blocks[i] for i, ph in jobs if ph == phase]
            index = {json.dumps(b): i for i, b in enumerate(blocks)}
            for block, out in map_unordered(ex, evals[phase], todo):
                i = index[json.dumps(block)]
                if not isinstance(out, dict):
                    raise SystemExit(f"block {i} ({phase}) failed: {out}")
                record = {
                    "model": phase,
                    "seed": i,
                    "block": block,
                    "acc_scale": args.acc_scale,
                    "channels": args.channels,
                }
                book.add({**record, **out}, echo=False)
                print(f"block {i} {phase}: val {out['val_acc']:.4f} objective {out['objective']:.3f} "
                      f"({out['train_s']:.0f} s)", flush=True)  # fmt: skip
    finally:
        ex.close()


def part2_summary(runs: list[dict]) -> dict:
    from scipy.stats import spearmanr

    by, blocks, missing = _runs.complete_seeds(runs, ("early", "final"))
    if len(blocks) < 3:
        return {"pass": False, "note": f"{len(blocks)} blocks with both runs finished; need >= 3"}
    early = [by[("early", b)]["val_acc"] for b in blocks]
    # as the evaluator's reward charges them (a conv-free block of an earlier run: one 1x1 conv); CIFAR-10 is 32x32
    fl = [charged_flops(by[("early", b)]["flops"], by[("early", b)].get("channels", 16), 32) for b in blocks]
    dens = [by[("early", b)]["density"] for b in blocks]
    final = [by[("final", b)]["report"]["test_acc"] for b in blocks]
    final_val = [by[("final", b)]["val_acc"] for b in blocks]

    def rho_of(scores: list[float]) -> float:
        return float(spearmanr(scores, final).statistic)

    def paper(acc_scale: float) -> list[float]:  # rankings do not depend on flops_ref: it shifts every reward alike
        return [redefined_reward(a, f, d, acc_scale=acc_scale) for a, f, d in zip(early, fl, dens, strict=True)]

    # mu and rho fitted (signs free) to the 6-epoch *validation* accuracy, never the test accuracy they are judged
    # by; each block is scored by a fit without it (leave-one-out: its predicted 6-epoch accuracy, since the rewards
    # of different fits are on different scales), so no block ranks itself.
    calib, loo = None, []
    try:
        calib = vars(calibrate_reward(early, fl, dens, final_val))
        for i in range(len(blocks)):
            rest = [j for j in range(len(blocks)) if j != i]
            f = calibrate_reward(*([v[j] for j in rest] for v in (early, fl, dens, final_val)))
            loo.append(f.predict(early[i], fl[i], dens[i]))
    except ConfigError as e:  # too few blocks, or an early accuracy that does not predict the final one
        calib = str(e)
    rhos = {
        "early_acc": rho_of(early),
        "paper_reward_acc_fraction": rho_of(paper(1.0)),
        "paper_reward_acc_percent": rho_of(paper(100.0)),
        "fitted_reward_leave_one_out": rho_of(loo) if loo else None,
        "log_flops": rho_of([math.log(f) for f in fl]),
        "final_val_acc": rho_of(final_val),
    }
    return {
        "blocks": blocks,
        "missing_runs": missing,
        "spearman_vs_final_test": rhos,
        "calibration": calib,
        "criterion": f"Spearman rho(reward, 6-epoch test acc) >= {PART2_RHO} on the same blocks, judged for the "
        "paper's reward (mu 1, rho 8; the better of the two accuracy units) and for the fitted one (leave-one-out); "
        "pass: the fitted one, which part 3 searches with (--mu, --rho)",
        "paper_reward_pass": bool(
            max(rhos["paper_reward_acc_fraction"], rhos["paper_reward_acc_percent"]) >= PART2_RHO
        ),
        "pass": bool(loo and rhos["fitted_reward_leave_one_out"] >= PART2_RHO),
    }


def part2_table(runs: list[dict], summary: dict) -> None:
    by, blocks, _ = _runs.complete_seeds(runs, ("early", "final"))
    print("\n| block | FLOPs | density | early val acc | redefined reward | final test acc |")
    print("|---|---|---|---|---|---|")
    for b in blocks:
        e, f = by[("early", b)], by[("final", b)]
        print(f"| {b} | {e['flops']:,} | {e['density']:.2f} | {e['val_acc']:.4f} | {e['objective']:.3f} | "
              f"{f['report']['test_acc']:.4f} |")  # fmt: skip
    print(json.dumps(summary, indent=2))


def part2_plot(runs: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt  # leanvision.report picked the Agg backend

    import leanvision.report  # noqa: F401

    by, blocks, _ = _runs.complete_seeds(runs, ("early", "final"))
    final = [100 * by[("final", b)]["report"]["test_acc"] for b in blocks]
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.4))
    for ax, key, label in ((axes[0], "val_acc", "1-epoch val acc"), (axes[1], "objective", "redefined reward")):
        ax.scatter([by[("early", b)][key] for b in blocks], final, s=14)
        ax.set_xlabel(label)
        ax.set_ylabel("final test acc (%)")
    fig.suptitle("BlockQNN early-stop reward vs final accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def part3(args: argparse.Namespace, book: _runs.Runs) -> None:
    from leanvision.executors import make_executor, map_unordered

    done = {(r["model"], r["seed"]) for r in book.runs}
    proxy = evaluator(args, 1)
    space = create_space("nsc", **space_kwargs(args))
    # One pool for everything: its workers load the data once and keep it.
    ex = make_executor(args.executor, workers=args.workers, threads=args.threads)
    try:
        if ("probe", -1) not in done and args.probe_blocks:
            # Both sides warm (data loaded, code imported) before timing: one untimed block here, one per worker.
            warm, *blocks = random_blocks(args, args.probe_blocks + 1, 12345)
            proxy(warm)
            t0 = time.perf_counter()
            for b in blocks:
                proxy(b)
            serial = time.perf_counter() - t0
            list(map_unordered(ex, proxy, [warm] * args.workers))
            t0 = time.perf_counter()
            list(map_unordered(ex, proxy, blocks))
            parallel = time.perf_counter() - t0
            book.add({"model": "probe", "seed": -1, "blocks": len(blocks), "serial_s": serial,
                      "parallel_s": parallel, "throughput_x": serial / parallel}, echo=False)  # fmt: skip
            print(f"throughput probe: serial {serial:.0f} s, {args.workers} workers {parallel:.0f} s", flush=True)
        (args.out / "journals").mkdir(parents=True, exist_ok=True)
        for seed in args.seeds:
            for method in ("blockqnn", "random"):
                if (method, seed) in done:
                    continue
                opts = {"budget": args.budget, "alpha": args.alpha} if method == "blockqnn" else {}
                strat = create_strategy(method, space, seed=seed, **opts)
                jpath = args.out / "journals" / f"part3_{method}_s{seed}.jsonl"
                config = {"method": method, "seed": seed, "budget": args.budget, "evaluator": proxy.config}
                if args.resume and jpath.is_file():
                    journal = Journal.open(jpath, config)
                else:
                    jpath.unlink(missing_ok=True)  # a fresh run starts a fresh journal
                    journal = Journal.create(jpath, config)
                t0 = time.perf_counter()
                hist = search(space, strat, proxy, budget=args.budget, executor=ex, journal=journal)
                wall = time.perf_counter() - t0
                trials = [{"trial": t.trial, "sample": t.sample, "status": t.status, "objective": t.objective,
                           "metrics": t.metrics, "seconds": t.seconds} for t in hist.trials]  # fmt: skip
                book.add({"model": method, "seed": seed, "trials": trials, "wall_s": wall}, echo=False)
                print(f"{method} seed {seed}: best {hist.best().objective:.3f} in {wall:.0f} s", flush=True)
        final = evaluator(args, args.final_epochs, report_test=True)
        have = {(r["model"], r["seed"]) for r in book.runs}
        todo = []
        for seed in args.seeds:
            for method in ("blockqnn", "random"):
                if (f"retrain {method}", seed) in have:
                    continue
                search_run = next(r for r in book.runs if (r["model"], r["seed"]) == (method, seed))
                ok = [t for t in search_run["trials"] if t["status"] == "ok"]
                best = max(ok, key=lambda t: (t["objective"], -t["trial"]))
                todo.append((f"retrain {method}", seed, json.loads(json.dumps(best["sample"]))))
        names = {id(sample): (name, seed) for name, seed, sample in todo}  # map_unordered hands back each item
        for sample, out in map_unordered(ex, final, [t[2] for t in todo]):
            name, seed = names[id(sample)]
            if not isinstance(out, dict):
                raise SystemExit(f"{name} seed {seed} failed: {out}")
            book.add({"model": name, "seed": seed, "sample": sample, **out}, echo=False)
            print(f"{name} seed {seed}: test {out['report']['test_acc']:.4f}", flush=True)
    finally:
        ex.close()


def part3_summary(runs: list[dict]) -> dict:
    by = {(r["model"], r["seed"]): r for r in runs}
    seeds = sorted({s for (m, s) in by if m == "blockqnn" and ("random", s) in by})
    if not seeds:
        return {"pass": False, "note": "no seed with both searches finished"}
    probe = by.get(("probe", -1))

    def last16(method: str, s: int) -> float:
        ok = [t["objective"] for t in by[(method, s)]["trials"] if t["status"] == "ok"]
        return statistics.mean(ok[-16:])

    def occupancy(method: str, s: int) -> float:
        r = by[(method, s)]
        return sum(t["seconds"] or 0 for t in r["trials"]) / r["wall_s"]

    methods = ("blockqnn", "random")
    last = {m: [last16(m, s) for s in seeds] for m in methods}
    retrained = {m: [by[(f"retrain {m}", s)]["report"]["test_acc"] for s in seeds if (f"retrain {m}", s) in by]
                 for m in methods}  # fmt: skip
    best_conv = {m: [has_conv(by[(f"retrain {m}", s)]["sample"]) for s in seeds if (f"retrain {m}", s) in by]
                 for m in methods}  # fmt: skip
    both = len(retrained["blockqnn"]) == len(retrained["random"]) == len(seeds)
    wins = sum(q > r for q, r in zip(retrained["blockqnn"], retrained["random"], strict=True)) if both else 0
    mean_ok = both and statistics.mean(retrained["blockqnn"]) > statistics.mean(retrained["random"])
    conv_ok = both and all(all(v) for v in best_conv.values())
    return {
        "seeds": seeds,
        "throughput_x_serial": probe["throughput_x"] if probe else None,
        "trial_seconds_per_wall_second": {m: [occupancy(m, s) for s in seeds] for m in methods},
        "last16_mean_objective": last,
        "best_retrained_test_acc": retrained,
        "best_block_has_conv": best_conv,
        "blockqnn_retrain_wins": wins,
        "criterion": "every search's best block holds a convolution; BlockQNN's best block re-trains above random "
        "search's best in >= 2 of 3 seeds and on the mean",
        "best_blocks_have_conv": bool(conv_ok),
        "retrain_wins_ok": wins >= 2,
        "retrain_mean_ok": bool(mean_ok),
        "pass": bool(conv_ok and wins >= 2 and mean_ok),
    }


def part3_table(runs: list[dict], summary: dict) -> None:
    print("\n| run | seed | best objective | last-16 mean | wall s | re-trained test acc |\n|---|---|---|---|---|---|")
    by = {(r["model"], r["seed"]): r for r in runs}
    for (m, s), r in by.items():
        if m in ("blockqnn", "random"):
            ok = [t["objective"] for t in r["trials"] if t["status"] == "ok"]
            re = by.get((f"retrain {m}", s))
            acc = f"{re['report']['test_acc']:.4f}" if re else "-"
            print(f"| {m} | {s} | {max(ok):.3f} | {statistics.mean(ok[-16:]):.3f} | {r['wall_s']:.0f} | {acc} |")
    print(json.dumps(summary, indent=2))


def part3_plot(runs: list[dict], path: Path) -> None:
    from leanvision.report import line_panels

    series = {}
    for r in runs:
        if r["model"] in ("blockqnn", "random"):
            ok = [t for t in r["trials"] if t["status"] == "ok"]
            best, rows = -math.inf, []
            for i, t in enumerate(ok, 1):
                best = max(best, t["objective"])
                rows.append({"block": i, "objective": t["objective"], "best": best})
            series[f"{r['model']} s{r['seed']}"] = rows
    line_panels(series, [("objective", "redefined reward"), ("best", "best so far")], path, x_key="block",
                title="BlockQNN vs random, 1-epoch proxy")  # fmt: skip


PARTS = {
    1: (part1, part1_summary, part1_table, part1_plot),
    2: (part2, part2_summary, part2_table, part2_plot),
    3: (part3, part3_summary, part3_table, part3_plot),
}


def parse_args() -> argparse.Namespace:
    ap = _runs.make_parser(__doc__)
    ap.add_argument("--part", type=int, choices=(1, 2, 3), default=1)
    ap.add_argument("--max-layers", type=int, default=6, help="T: entries per block counting the terminal")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0-9 (part 1), 0-2 (part 3)")
    ap.add_argument("--episodes", type=int, default=2000, help="part 1: blocks per run")
    ap.add_argument("--eval-every", type=int, default=10, help="part 1: score the greedy block every N episodes")
    ap.add_argument("--replay", type=int, default=64, help="part 1: episodes replayed per result")
    ap.add_argument("--alpha", type=float, default=0.01, help="parts 1, 3: Q learning rate (BlockQNN: 0.01)")
    ap.add_argument("--q-init", type=float, default=0.5, help="part 1: initial Q value (MetaQNN's 0.5)")
    ap.add_argument("--blocks", type=int, default=16, help="part 2: random blocks")
    ap.add_argument("--block-seed", type=int, default=0, help="part 2: seed of the random blocks")
    ap.add_argument("--budget", type=int, default=40, help="part 3: blocks per search")
    ap.add_argument("--probe-blocks", type=int, default=4, help="part 3: blocks of the throughput probe (0: skip)")
    _runs.add_split_args(ap, 10_000, scope="parts 2-3: ")
    ap.add_argument("--final-epochs", type=int, default=6)
    ap.add_argument("--channels", type=int, default=16, help="F: width of the first stage")
    ap.add_argument("--acc-scale", type=float, default=1.0, help="parts 2-3: accuracy unit in the reward (100: %%)")
    ap.add_argument("--mu", type=float, default=PAPER_MU, help="parts 2-3: the reward's FLOPs weight (paper: 1)")
    ap.add_argument("--rho", type=float, default=PAPER_RHO, help="parts 2-3: the reward's density weight (paper: 8)")
    ap.add_argument("--allow-conv-free", action="store_true",
                    help="parts 2-3: let blocks without a convolution in (the earlier runs' blocks)")  # fmt: skip
    ap.add_argument("--executor", choices=("process", "ray"), default="process")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker (and of this process)")
    _runs.add_run_args(ap, "blockqnn_part<N>", folder="blockqnn")
    args = ap.parse_args()
    if args.seeds is None:
        args.seeds = list(range(10)) if args.part == 1 else [0, 1, 2]
    return args


def main() -> None:
    _runs.main_by_part(parse_args(), "blockqnn", PARTS, SAME)


if __name__ == "__main__":
    main()
