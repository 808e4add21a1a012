"""ESRN / ESR-EA (arXiv 1909.11409) at CPU scale: block-credit evolution vs uniform mutation vs random, then x2 SR.

    python benchmarks/esrn_sr.py --data-dir DIR                   # search (3 x 3 runs), retrain, evaluate
    python benchmarks/esrn_sr.py --data-dir DIR --out OUT --resume   # continue a stopped run in OUT
    python benchmarks/esrn_sr.py --data-dir DIR --summarize OUT/esrn_sr.json   # tables and verdicts only
    python benchmarks/esrn_sr.py --data-dir DIR --out /tmp/esrn_smoke --budget 4 --population 2 --elites 1 \\
        --steps 3 --final-steps 4 --seeds 0 --sets Set5 --timing-iters 0 --workers 1   # smoke run, no timing

DIR holds SR/T91, SR/Set5, SR/Set14 and SR/B100 (or set $LEANVISION_DATA). Training data is T91 only; every
candidate's fitness is its Y-PSNR on --val-images T91 images held out of training (central --val-crop LR pixels);
Set5 / Set14 / B100 are scored only for the final table, never to choose.

Part 1, search at equal budget: the proxy space (G0 16, 8 genes, >= 4 active, C in {2,3,4}, G in {8,16}, O in
{8,16}, 15K-30K params), x2; each candidate trains --steps Adam steps (lr 1e-3, halved at 2/3), batch 16 of 32x32
LR patches, L1, the same seed for every candidate. Strategies, --budget evaluations each, seeds --seeds: ESR-EA
with block-credit mutation ("credit"), ESR-EA with vega's uniform mutation ("uniform"), and random sampling in the
same constraint window ("random"); ESR-EA with population --population and --elites elites. Every trial is
journalled in OUT/search/<strategy>_s<seed>/ (leanvision search's run directory), so --resume continues mid-search.

Part 1b, the fitness's seed noise: the --reseed-top best networks of all searches (distinct, by validation PSNR)
retrained with training seeds 1 and 2 (the searches train every candidate with seed 0); reported: the spread (max -
min over the three seeds) per network and how far the other seeds fall below seed 0 (what selecting on one seed
costs), beside the gaps between the strategies.

Part 2, the x2 table: the best network found by "credit" (highest validation PSNR over its seeds) retrained from
scratch with --final-steps Adam steps (the same fixed budget, batch and schedule for every model; its wall-clock
seconds are recorded), beside bicubic (MATLAB-style, no training), SRCNN and FSRCNN trained the same way, and the
hand-designed control: the shrink block S_4_8_16 repeated by the shallowest depth whose Multi-Adds reach the
found network's. Reported: Set5 / Set14 / B100 Y-PSNR and SSIM (scale-pixel border), params, Multi-Adds at a
1280x720 output (profiled), eager CPU latency at a 1280x720 output with 1 and 2 threads (every model interleaved,
medians; a timing during which other processes kept more than 0.1 core busy is labelled "busy" and re-taken by
--resume), and Set5 butterfly crops side by side (LR | bicubic | found | HR, OUT/esrn_sr_crops.png); the published
rows are quoted as published (trained on DIV2K, 800 images of 2K, far more than T91's 91 small images). With
--extra-seeds the found network and the control are trained again with those seeds (the table keeps seed 0) and
the found - control gap is reported per seed: how much of it is one training's luck.

Verdicts: V1 credit's best validation PSNR beats uniform's and random's in the mean over seeds and in >= 2 of 3
seeds; V2 the found network >= the control + 0.1 dB on Set5 and Set14 at <= the control's Multi-Adds; V3 the found
network >= our FSRCNN + 0.3 dB on all three sets. Writes OUT/esrn_sr.json and esrn_sr.png (best validation PSNR
vs evaluations; the table's PSNR and Multi-Adds); each finished search, model and timing is saved at once to
OUT/esrn_sr.partial.json.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import _runs
import torch
from _machine import QUIET_CORES, cores_text, other_cpu

from leanvision.data.sr import load_sr_set, split_pairs
from leanvision.engine import load_weights
from leanvision.engine.sr import evaluate_sr, train_sr
from leanvision.models.sr import ESRN, create_sr_model, hand_designed, lr_size_720p
from leanvision.profile import compare_latency, profile
from leanvision.report import bar_panels, line_panels
from leanvision.search import create_evaluator, create_space
from leanvision.search import run as run_search

NAME = "esrn_sr"
STRATEGIES = {"credit": ("esr_ea", {"mutation": "credit"}), "uniform": ("esr_ea", {"mutation": "uniform"}),
              "random": ("random", {})}  # fmt: skip
PROXY = {"node_num": 8, "min_active": 4, "convs": [2, 3, 4], "growths": [8, 16], "outs": [8, 16], "G0": 16,
         "min_params": 15_000, "max_params": 30_000, "scale": 2}  # fmt: skip
CONTROL_BLOCK = "S_4_8_16"
BASELINES = ("bicubic", "srcnn", "fsrcnn")
PUBLISHED = [  # x2, the paper's table (trained on DIV2K); Multi-Adds at a 1280x720 output
    {"model": "ESRN (published)", "params": 324e3, "multi_adds": 73.4e9, "Set5_psnr": 37.85, "Set5_ssim": 0.9600,
     "Set14_psnr": 33.42, "Set14_ssim": 0.9161, "B100_psnr": 32.10, "B100_ssim": 0.8987},
    {"model": "SRCNN (published)", "params": 57e3, "multi_adds": 52.7e9, "Set5_psnr": 36.66, "Set5_ssim": 0.9542,
     "Set14_psnr": 32.42, "Set14_ssim": 0.9063, "B100_psnr": 31.36, "B100_ssim": 0.8879},
]  # fmt: skip
SAME = ("budget", "population", "elites", "steps", "final_steps", "val_images", "val_crop", "batch", "patch")
SCALE = 2


def search_config(args: argparse.Namespace, strategy: str, seed: int) -> dict:
    name, kwargs = STRATEGIES[strategy]
    if name == "esr_ea":
        kwargs = {**kwargs, "population": args.population, "elites": args.elites}
    evaluator = {"space_kwargs": PROXY, "steps": args.steps, "batch_size": args.batch, "patch": args.patch,
                 "val_images": args.val_images, "val_crop": args.val_crop}  # fmt: skip
    return {"space": "esrn", "space_kwargs": PROXY, "strategy": name, "strategy_kwargs": kwargs,
            "evaluator": "train_sr", "evaluator_kwargs": evaluator, "budget": args.budget, "seed": seed,
            "executor": "process", "workers": args.workers, "threads": 1, "data_dir": args.data_dir,
            "out_dir": str(args.out / "search" / f"{strategy}_s{seed}")}  # fmt: skip


def part1(args: argparse.Namespace, book: _runs.Runs) -> None:
    done = {(r["model"], r["seed"]) for r in book.runs if r["model"] in STRATEGIES}
    for seed in args.seeds:
        for strategy in STRATEGIES:
            if (strategy, seed) in done:
                continue
            config = search_config(args, strategy, seed)
            held = (args.out / "search" / f"{strategy}_s{seed}" / "journal.jsonl").is_file()
            t0 = time.perf_counter()
            result = run_search(config, resume=args.resume and held)
            trials = [{"trial": t.trial, "sample": t.sample, "status": t.status, "objective": t.objective,
                       "params": t.metrics.get("params"), "multi_adds": t.metrics.get("multi_adds")}
                      for t in result.history.trials]  # fmt: skip
            wall = time.perf_counter() - t0
            book.add({"model": strategy, "seed": seed, "trials": trials, "wall_s": wall}, echo=False)
            print(f"{strategy} seed {seed}: best validation PSNR {result.best.objective:.3f} dB", flush=True)


RESEEDS = (1, 2)  # training seeds of the noise check; every search trains its candidates with seed 0


def _key(sample: dict) -> str:
    return json.dumps(sample, sort_keys=True)


def top_trials(runs: list[dict], k: int) -> list[dict]:
    """The ``k`` best distinct networks of all searches by validation PSNR (ties: the earlier strategy and trial)."""
    out: dict[str, dict] = {}
    for t in (t for r in runs if r["model"] in STRATEGIES for t in r["trials"] if t["status"] == "ok"):
        if _key(t["sample"]) not in out or t["objective"] > out[_key(t["sample"])]["objective"]:
            out[_key(t["sample"])] = t
    return sorted(out.values(), key=lambda t: -t["objective"])[:k]


def reseed(args: argparse.Namespace, book: _runs.Runs) -> None:
    """Part 1b: the top networks retrained with other seeds, each result saved at once."""
    done = {(_key(r["sample"]), r["train_seed"]) for r in book.runs if r["model"] == "reseed"}
    kwargs = search_config(args, "credit", 0)["evaluator_kwargs"]
    for t in top_trials(book.runs, args.reseed_top):
        for seed in RESEEDS:
            if (_key(t["sample"]), seed) not in done:
                ev = create_evaluator("train_sr", **kwargs, seed=seed, threads=1, data_dir=args.data_dir)
                psnr = ev(t["sample"])["objective"]
                book.add({"model": "reseed", "sample": t["sample"], "train_seed": seed, "seed0": t["objective"],
                          "objective": psnr}, echo=False)  # fmt: skip
                print(f"reseed: {t['objective']:.3f} dB at seed 0, {psnr:.3f} dB at seed {seed}", flush=True)


def seed_noise(runs: list[dict]) -> dict:
    """Per network: seed-0 PSNR, the other seeds' PSNRs, spread; means over the networks."""
    nets: dict[str, dict] = {}
    for r in runs:
        if r["model"] == "reseed":
            nets.setdefault(_key(r["sample"]), {"seed0": r["seed0"]})[f"seed{r['train_seed']}"] = r["objective"]
    rows = [n for n in nets.values() if all(f"seed{s}" in n for s in RESEEDS)]
    if not rows:
        return {}
    spread = [max(n.values()) - min(n.values()) for n in rows]
    drop = [n["seed0"] - statistics.mean(n[f"seed{s}"] for s in RESEEDS) for n in rows]
    return {"networks": rows, "spread_mean": statistics.mean(spread), "spread_max": max(spread),
            "seed0_minus_other_seeds_mean": statistics.mean(drop)}  # fmt: skip


def best_so_far(trials: list[dict]) -> list[float]:
    """Best validation PSNR after each evaluation (failed ones keep the previous best)."""
    out, best = [], float("-inf")
    for t in sorted(trials, key=lambda t: t["trial"]):
        if t["status"] == "ok":
            best = max(best, t["objective"])
        out.append(best)
    return out


def found_network(runs: list[dict]) -> list[str]:
    space = create_space("esrn", **PROXY)
    ok = [t for r in runs if r["model"] == "credit" for t in r["trials"] if t["status"] == "ok"]
    return space.arch(max(ok, key=lambda t: (t["objective"], -t["trial"]))["sample"])


def cost_720p(model: torch.nn.Module) -> dict:
    x = torch.zeros(1, 3, *lr_size_720p(SCALE))
    prof = profile(model, x)
    return {"params": prof.params, "multi_adds": prof.macs}


def save_crops(models: dict[str, torch.nn.Module], pair, path, *, size: int = 48, zoom: int = 4) -> None:
    """Side by side, enlarged: the LR input, each model's output and the HR image, on the centre of ``pair``."""
    import numpy as np
    from PIL import Image

    from leanvision.engine.sr import super_resolve

    h, w = pair.hr.shape[:2]
    y, x = (h - size) // 2 // SCALE * SCALE, (w - size) // 2 // SCALE * SCALE
    lr = pair.lr[y // SCALE : (y + size) // SCALE, x // SCALE : (x + size) // SCALE].repeat(SCALE, 0).repeat(SCALE, 1)
    outs = [super_resolve(m, pair.lr, scale=SCALE)[y : y + size, x : x + size] for m in models.values()]
    strip = np.concatenate([lr, *outs, pair.hr[y : y + size, x : x + size]], axis=1)
    Image.fromarray(strip.repeat(zoom, 0).repeat(zoom, 1)).save(path)
    print(f"crops (LR | {' | '.join(models)} | HR): {path}", flush=True)


SEEDED = ("found (ESR-EA)", "hand-designed control")  # the two rows V2 compares; --extra-seeds retrains them


def fit_and_score(
    args: argparse.Namespace, book: _runs.Runs, label: str, name: str, kw: dict, seed: int, train: list, tests: dict
) -> torch.nn.Module:
    """Train one table model with --final-steps (resuming its run directory), score it on every set, save its row."""
    model = create_sr_model(name, scale=SCALE, **kw)
    row: dict = {"model": label, "seed": seed, "arch": kw.get("blocks"), **cost_720p(model)}
    if name != "bicubic":
        folder, last = book.fit_dir(label.split(" ")[0] + (f"_s{seed}" if seed else ""))
        t0 = time.perf_counter()
        per_epoch = math.gcd(args.final_steps, max(args.final_steps // 10, 1))  # a checkpoint every tenth
        train_sr(model, train, scale=SCALE, steps=args.final_steps, steps_per_epoch=per_epoch,
                 batch_size=args.batch, patch=args.patch, milestones=[0.5, 0.75], seed=seed, out_dir=folder,
                 resume=last, progress=not args.quiet)  # fmt: skip
        row["train_s"] = time.perf_counter() - t0
    for set_name, pairs in tests.items():
        m = evaluate_sr(model, pairs, scale=SCALE)
        row[f"{set_name}_psnr"], row[f"{set_name}_ssim"] = m["psnr"], m["ssim"]
    book.add(row)
    return model.eval()


def part2(args: argparse.Namespace, book: _runs.Runs) -> None:
    blocks = found_network(book.runs)
    found_macs = cost_720p(ESRN(blocks, scale=SCALE, G0=PROXY["G0"]))["multi_adds"]
    control = hand_designed(found_macs, block=CONTROL_BLOCK, G0=PROXY["G0"])
    models = {"found (ESR-EA)": ("esrn", {"blocks": blocks, "G0": PROXY["G0"]}),
              "hand-designed control": ("esrn", {"blocks": control, "G0": PROXY["G0"]}),
              **{b: (b, {}) for b in BASELINES}}  # fmt: skip
    train, _ = split_pairs(load_sr_set("T91", SCALE, root=args.data_dir), args.val_images)
    tests = {name: load_sr_set(name, SCALE, root=args.data_dir) for name in args.sets}
    done, trained = {(r["model"], r.get("seed")) for r in book.runs}, {}
    for label, (name, kw) in models.items():
        if (label, 0) in done:  # finished earlier: its weights are in its run directory
            trained[label] = create_sr_model(name, scale=SCALE, **kw)
            if name != "bicubic":
                load_weights(trained[label], book.fit_dir(label.split(" ")[0])[1])
            trained[label].eval()
        else:
            trained[label] = fit_and_score(args, book, label, name, kw, 0, train, tests)
    if "butterfly" in {p.name for p in tests.get("Set5", [])}:
        pair = next(p for p in tests["Set5"] if p.name == "butterfly")
        save_crops({k: trained[k] for k in ("bicubic", "found (ESR-EA)")}, pair, args.out / f"{NAME}_crops.png")
    for seed in (s for s in args.extra_seeds if s != 0):
        for label in (k for k in SEEDED if (k, seed) not in done):
            fit_and_score(args, book, label, *models[label], seed, train, tests)
    if args.timing_iters:
        time_table(args, book, trained)


def timing(runs: list[dict]) -> dict:
    """The saved 720p timing record ({} before one is taken)."""
    return next((r for r in runs if r["model"] == "latency"), {})


def time_table(args: argparse.Namespace, book: _runs.Runs, models: dict[str, torch.nn.Module]) -> None:
    """Eager CPU latency at a 720p output, 1 and 2 threads, every model interleaved in rounds (medians).

    The cores other processes kept busy meanwhile are recorded; a timing taken on a busy machine is labelled in
    the table and taken again by the next --resume.
    """
    timed = timing(book.runs)
    if timed and set(models) <= set(timed["ms"]["1"]) and (timed.get("other_cores") or 0) <= QUIET_CORES:
        return
    x = torch.rand(1, 3, *lr_size_720p(SCALE))
    record: dict = {"model": "latency", "seed": -1, "iters": args.timing_iters, "ms": {}}
    with other_cpu(record):
        for t in (1, 2):
            stats = compare_latency(models, x, threads=t, warmup=1, iters=1, rounds=args.timing_iters)
            record["ms"][str(t)] = {k: v.median_ms for k, v in stats.items()}
    print(f"timed {len(models)} models at 720p (other processes used {cores_text(record)} cores)", flush=True)
    book.runs = [r for r in book.runs if r["model"] != "latency"]
    book.add(record, echo=False)


def run(args: argparse.Namespace, book: _runs.Runs) -> None:
    part1(args, book)
    if args.reseed_top:
        reseed(args, book)
    part2(args, book)


def table_rows(runs: list[dict]) -> list[dict]:
    """The x2 table's rows with their 720p latencies (labelled when other processes kept the CPU busy)."""
    timed = timing(runs)
    busy = (timed.get("other_cores") or 0) > QUIET_CORES
    rows = [dict(r) for r in runs if r["model"] not in (*STRATEGIES, "latency", "reseed") and r["seed"] == 0]
    for r in rows:
        for t, ms in timed.get("ms", {}).items():
            if r["model"] in ms:
                r[f"latency_t{t}_ms"], r["timing"] = ms[r["model"]], "busy" if busy else "quiet"
    return rows


def summarize(runs: list[dict]) -> dict:
    searches = [r for r in runs if r["model"] in STRATEGIES]
    by, seeds, missing = _runs.complete_seeds(searches, STRATEGIES)
    best = {(s, seed): max(best_so_far(by[(s, seed)]["trials"])) for s in STRATEGIES for seed in seeds}
    mean = {s: statistics.mean(best[(s, seed)] for seed in seeds) for s in STRATEGIES} if seeds else {}
    wins = {o: sum(best[("credit", seed)] > best[(o, seed)] for seed in seeds) for o in ("uniform", "random")}
    table = {r["model"]: r for r in table_rows(runs)}
    out = {"seeds": seeds, "missing": missing, "timing_other_cores": timing(runs).get("other_cores"),
           "best_val_psnr": {f"{s} s{seed}": v for (s, seed), v in best.items()},
           "mean_best_val_psnr": mean, "credit_wins_of_seeds": wins, "seed_noise": seed_noise(runs)}  # fmt: skip
    if seeds:
        out["V1_credit_beats_uniform_and_random"] = all(mean["credit"] > mean[o] and 2 * wins[o] > len(seeds)
                                                        for o in ("uniform", "random"))  # fmt: skip
    found, control, fsrcnn = (table.get(k) for k in ("found (ESR-EA)", "hand-designed control", "fsrcnn"))
    sets = [k[:-5] for k in (found or {}) if k.endswith("_psnr")]
    if found and control:
        out["V2_found_beats_control_by_0.1dB_on_Set5_Set14"] = found["multi_adds"] <= control["multi_adds"] and all(
            found[f"{s}_psnr"] >= control[f"{s}_psnr"] + 0.1 for s in ("Set5", "Set14") if s in sets
        )
    seeded = {(r["model"], r["seed"]): r for r in runs if r["model"] in SEEDED}
    both = sorted({s for (_, s) in seeded if all((k, s) in seeded for k in SEEDED)})
    if len(both) > 1:  # --extra-seeds: how much of the found - control gap is the training seed's luck
        gap = {s: {x: seeded[(SEEDED[0], s)][f"{x}_psnr"] - seeded[(SEEDED[1], s)][f"{x}_psnr"] for x in sets}
               for s in both}  # fmt: skip
        out["found_minus_control_by_seed"] = gap
        out["found_minus_control_mean"] = {x: statistics.mean(g[x] for g in gap.values()) for x in sets}
    if found and fsrcnn:
        out["V3_found_beats_fsrcnn_by_0.3dB_on_every_set"] = all(found[f"{s}_psnr"] >= fsrcnn[f"{s}_psnr"] + 0.3
                                                                 for s in sets)  # fmt: skip
    return out


COLUMNS = {
    "model": "model",
    "params": lambda r: f"{r['params'] / 1e3:.1f}K",
    "Multi-Adds (720p)": lambda r: f"{r['multi_adds'] / 1e9:.2f}G",
    **{f"{s} PSNR/SSIM": (lambda r, s=s: f"{r[f'{s}_psnr']:.2f}/{r[f'{s}_ssim']:.4f}" if f"{s}_psnr" in r else "-")
       for s in ("Set5", "Set14", "B100")},
    "ms 720p 1 thr": ("latency_t1_ms", ".0f"),
    "ms 720p 2 thr": ("latency_t2_ms", ".0f"),
    "timing": "timing",
    "train s": ("train_s", ".0f"),
}  # fmt: skip


def print_table(runs: list[dict], summary: dict) -> None:
    rows = table_rows(runs) + PUBLISHED
    print(_runs.markdown(rows, COLUMNS))
    print(_runs.markdown([{"strategy": s, **{f"seed {k.split(' s')[1]}": f"{v:.3f}" for k, v in
                                             summary["best_val_psnr"].items() if k.startswith(s + " ")},
                           "mean": f"{summary['mean_best_val_psnr'].get(s, float('nan')):.3f}"}
                          for s in STRATEGIES], {"strategy": "strategy", **{f"seed {s}": f"seed {s}"
                                                                            for s in summary["seeds"]},
                                                 "mean": "mean"}))  # fmt: skip
    noise = summary.get("seed_noise")
    if noise:
        n, drop = len(noise["networks"]), noise["seed0_minus_other_seeds_mean"]
        print(f"seed noise of the fitness over {n} networks: spread {noise['spread_mean']:.3f} dB "
              f"(max {noise['spread_max']:.3f}); seed 0 above the other seeds by {drop:.3f} dB")  # fmt: skip
    for seed, gap in summary.get("found_minus_control_by_seed", {}).items():
        print(f"found - control, training seed {seed}: " + ", ".join(f"{x} {v:+.3f} dB" for x, v in gap.items()))
    print({k: v for k, v in summary.items() if k.startswith("V") or k == "missing"})


def plot(runs: list[dict], summary: dict, args: argparse.Namespace) -> None:
    curves = {}
    for s in STRATEGIES:
        per_seed = [best_so_far(r["trials"]) for r in runs if r["model"] == s]
        if per_seed:
            n = min(map(len, per_seed))
            curves[s] = [{"evaluation": i + 1, "psnr": statistics.mean(c[i] for c in per_seed)} for i in range(n)]
    line_panels(curves, [("psnr", "best validation Y-PSNR (dB), mean of seeds")], args.out / f"{NAME}.png",
                x_key="evaluation", title="ESR-EA: block credit vs uniform mutation vs random")  # fmt: skip
    table = table_rows(runs)
    if table:
        bar_panels(table, [("Set5_psnr", "Set5 Y-PSNR (dB)"), ("multi_adds", "Multi-Adds at 720p")],
                   args.out / f"{NAME}_table.png", title="x2, trained on T91 with the same budget")  # fmt: skip


def parse_args() -> argparse.Namespace:
    ap = _runs.make_parser(__doc__, data_help="root holding SR/T91, SR/Set5, SR/Set14, SR/B100 (else $LEANVISION_DATA)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--budget", type=int, default=24, help="evaluations per search")
    ap.add_argument("--population", type=int, default=6)
    ap.add_argument("--elites", type=int, default=3)
    ap.add_argument("--steps", type=int, default=300, help="Adam steps per candidate")
    # FSRCNN on Set5: 1500 steps 2.5 dB below bicubic, 6000 steps 0.95 dB above: the table needs trained models.
    # At 2 threads a step costs ~0.06 s (searched nets), 0.04 s (FSRCNN), 0.23 s (SRCNN, which works at HR size).
    ap.add_argument("--final-steps", type=int, default=12000, help="Adam steps of every model in the table")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=32, help="LR patch size")
    ap.add_argument("--val-images", type=int, default=10, help="T91 images held out for the fitness")
    ap.add_argument("--val-crop", type=int, default=48, help="central LR pixels of each validation image")
    ap.add_argument("--reseed-top", type=int, default=6, help="networks retrained with seeds 1 and 2; 0: none")
    ap.add_argument("--extra-seeds", type=int, nargs="*", default=[],
                    help="more training seeds of the found network and the control (the table's is 0)")  # fmt: skip
    ap.add_argument("--sets", nargs="+", default=["Set5", "Set14", "B100"])
    ap.add_argument("--timing-iters", type=int, default=5, help="timed 720p forward passes per thread count; 0: none")
    ap.add_argument("--workers", type=int, default=2, help="parallel candidate trainings (one thread each)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the retraining")
    ap.add_argument("--quiet", action="store_true")
    _runs.add_run_args(ap, NAME)
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    _runs.main(args, NAME, SAME, lambda book: run(args, book), summarize, print_table,
               lambda runs, summary: plot(runs, summary, args))  # fmt: skip


if __name__ == "__main__":
    main()
