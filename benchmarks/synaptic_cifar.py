"""Synaptic Strength (arXiv 1811.02454) on a converged CIFAR-10 net against a thinner net of the same latency.

    python benchmarks/synaptic_cifar.py --baseline benchmarks/baselines/vgg_cifar10.pt --data-dir DIR \
        --out benchmarks/results/synaptic_vgg          # grid on val, 3 rankings x rounding, thin control, 2 seeds
    python benchmarks/synaptic_cifar.py --baseline ... --out OUT --resume   # continue; finished epochs are kept
    python benchmarks/synaptic_cifar.py --baseline ... --out OUT --resume --match-only   # quiet machine: thin widths
    python benchmarks/synaptic_cifar.py --summarize OUT/synaptic_cifar.json # recompute the summary, no training
    python benchmarks/latency_pruned.py --results OUT/synaptic_cifar.json --threads 2   # then the latency verdict

DIR holds cifar10/ (or set $LEANVISION_DATA). The dense net is --baseline, a `leanvision train` checkpoint (its
registered model, e.g. vgg8_cifar or resnet20, trained on 45,000 images with 5,000 held out); the same split is
used here (--val-size must match it) and accuracy is on the 10,000 test images (reporting only).
Per seed: SynapticStrength (BN scales absorbed) trains --reg-epochs with lambda * sum |s| (SGD nesterov --lr,
cosine, wd 5e-4 on kernels only, batch 128, crop + flip); the strengths' share below 1e-2 / 1e-3 of the largest
and the L1 budget (lambda x the sum of the learning rates: how far the L1 term alone can shrink one strength) are
recorded. Each regularised net is pruned with every --granularity x --ranks x --round-to configuration to each
--targets share of the dense MACs (the sparsity is bisected so that the cut net has at most that many MACs), cut
and fine-tuned --ft-epochs with the masks held (--ft-lr, cosine, lambda 0; the cut model makes the masked model's
updates at its own cost). --schedule 0.7 0.5 prunes gradually instead (arXiv 1710.01878): to each share of the
dense MACs in turn, each cut fine-tuned --step-epochs and written back (SynapticStrength.uncut), then to the target
as above; the thin control's budget counts those epochs too. Rankings: "strength" (|s|, the paper),
"normalized" (|s| over the layer's median), "cost" (normalised |s| per MAC the connection carries); --round-to 16
keeps a multiple of 16 channels per resized layer (0: widths as they fall). Granularity "connection" prunes
kernels (the paper; a channel goes when all its kernels do), "channel" prunes whole channels ranked by the mean
score of the kernels that write them (residual streams written through 1x1 projections included; records
without a granularity are connection runs). --scopes layer adds configurations that prune every layer by the same
share instead of ranking all layers together: uniform widths, the thin control's shape with the trained weights kept.
The grid: lambda x reg-epochs (--lams, --reg-epochs) is run in the first seed with the first granularity, ranking
and rounding at the first target; the point with the best validation accuracy after fine-tuning is used for every other
configuration and seed. The first seed runs every configuration; later seeds run the one it chose on validation
at that target (--all-configs-every-seed: all of them). The thin control: the same registered model with a uniform
width multiplier, bisected until its measured batch-1 latency (--match-backend, --match-threads; BN folded) equals
the pruned net with the best validation accuracy at that target (or its MACs, --thin-match macs). Every pruned net
of every seed is made before any thin match, and a latency match is deferred while other processes use more than
0.1 CPU cores: on a quiet machine, --resume --match-only bisects the deferred widths and stops, and --resume then
trains the thin nets. Each thin net is trained from scratch with the baseline's
recipe for the baseline's epochs + reg-epochs + ft-epochs (arXiv 1810.05270), tested with its best-on-val weights.
Accuracy verdicts here (latency ones in latency_pruned.py): per seed, the chosen pruned net is within 1.5 points
of dense and at least the thin control + 1.0 point.
Writes JSON + PNG into --out; every finished run is saved at once to synaptic_cifar.partial.json, every training
stage keeps its last epoch in OUT/stages/ (--resume continues inside a stage), and every pruned and thin net is a
leanvision checkpoint in OUT/deploy/ (leanvision evaluate/profile/export --checkpoint load them).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import statistics
from pathlib import Path

import _runs
import torch
from _machine import QUIET_CORES, other_cpu, others_busy
from torch import nn

from leanvision._io import atomic_write_text
from leanvision.compress import SynapticStrength, apply_plan
from leanvision.compress.plan import thin_builder
from leanvision.data import load_dataset, make_loader
from leanvision.engine import evaluate, fit, make_optimizer, make_scheduler, model_from_checkpoint, save_checkpoint
from leanvision.engine.checkpoint import load_weights
from leanvision.engine.fit import LAST_FILE
from leanvision.errors import ConfigError
from leanvision.models import arch_of, create_from_arch
from leanvision.models.thin import latency_at, macs_at, match_width
from leanvision.profile import profile
from leanvision.report import bar_panels

NAME = "synaptic_cifar"
SIZE = (3, 32, 32)
DENSE_MARGIN, THIN_MARGIN = 1.5, 1.0  # within 1.5 points of dense; >= thin + 1.0
HIST_BINS, HIST_RANGE = 48, (-6.0, 0.0)  # log10(|s| / max|s|)
SAME_ON_RESUME = ("baseline", "subset", "val_size", "lr", "ft_lr", "ft_epochs", "norm", "max_layer_sparsity",
                  "thin_match", "match_backend", "match_threads", "match_batch", "batch_size", "schedule",
                  "step_epochs", "writers")  # fmt: skip


# --- data, models, training --------------------------------------------------------------------------------------


def load_data(args: argparse.Namespace, seed: int) -> dict:
    split = {"root": args.data_dir, "val_size": args.val_size, "val_seed": 0}
    test = load_dataset("cifar10", root=args.data_dir, split="test", subset=args.test_subset or None)
    train = load_dataset("cifar10", split="train", subset=args.subset or None, seed=seed, **split)
    return {
        "train": make_loader(train, batch_size=args.batch_size, shuffle=True, seed=seed),
        "val": make_loader(load_dataset("cifar10", split="val", **split), batch_size=500, shuffle=False),
        "test": make_loader(test, batch_size=500, shuffle=False),
    }


def accuracy(model: nn.Module, loader) -> float:
    return 100 * evaluate(model, loader)["acc"]


def cost(model: nn.Module) -> dict:
    prof = profile(model, torch.zeros(1, *SIZE))
    return {"params": prof.params, "macs": prof.macs}


def stage(model: nn.Module, data: dict, out: Path, *, epochs: int, lr: float, step, seed: int) -> float:
    """One resumable training stage in ``out`` (strengths get no decay); every net trains channels-last."""
    model.to(memory_format=torch.channels_last)  # the same computation, faster on CPU
    return _runs.sgd_stage(model, data["train"], out, epochs=epochs, lr=lr, step=step, seed=seed)


def strength_record(ss: SynapticStrength) -> dict:
    s = torch.cat([v.flatten() for v in ss.scores().values()]).double()
    logs = (s / s.max()).clamp_min(10 ** HIST_RANGE[0]).log10().clamp(*HIST_RANGE)
    hist = torch.histc(logs, bins=HIST_BINS, min=HIST_RANGE[0], max=HIST_RANGE[1])
    return {**ss.strength_stats(), "hist_log10_rel": [int(c) for c in hist]}


def l1_budget(lam: float, lr: float, steps: int) -> float:
    """lambda x sum of the cosine learning rates: how far the L1 term alone moves one strength towards 0."""
    return lam * sum(lr * 0.5 * (1 + math.cos(math.pi * t / steps)) for t in range(steps))


# --- the runs ------------------------------------------------------------------------------------------------------


def reg_key(lam: float, epochs: int, seed: int) -> str:
    return f"reg_lam{lam:g}_e{epochs}_s{seed}"


def prune_key(cfg: tuple, target: float, lam: float, epochs: int, seed: int, schedule: tuple = ()) -> str:
    granularity, rank, round_to, scope = cfg
    head = "" if granularity == "connection" else f"{granularity}_"  # connection keys read as before
    steps = "" if not schedule else "_g" + "-".join(f"{share:g}" for share in schedule)  # one-shot keys as before
    where = "" if scope == "global" else f"_{scope}"  # global keys read as before
    return f"{head}{rank}{where}_r{round_to}_t{target:g}{steps}_lam{lam:g}_e{epochs}_s{seed}"


def config_of(rec: dict) -> tuple:
    """(granularity, rank, round_to, scope) of a prune record; older records are connection and global runs."""
    return rec.get("granularity", "connection"), rec["rank"], rec["round_to"], rec.get("scope", "global")


def config_name(cfg: tuple) -> str:
    granularity, rank, round_to, scope = cfg
    return f"{granularity} {rank}{' per layer' if scope == 'layer' else ''} round {round_to or '-'}"


class Bench:
    """Runs the stages in order, skipping finished ones (records in the partial JSON, nets in OUT/models)."""

    def __init__(self, args: argparse.Namespace, runs: _runs.Runs) -> None:
        self.args, self.book = args, runs
        self.dense, self.ckpt = model_from_checkpoint(args.baseline)
        self.arch = arch_of(self.dense)
        if self.arch is None:
            raise SystemExit(f"{args.baseline} holds no registered model; train the baseline with leanvision train")
        base_val = (self.ckpt.get("config") or {}).get("val_size")
        if base_val is not None and int(base_val) != args.val_size:
            raise SystemExit(f"--val-size {args.val_size} differs from the baseline's val_size {base_val}: the "
                             "validation images would have been trained on")  # fmt: skip
        for d in ("models", "stages", "deploy"):
            (args.out / d).mkdir(exist_ok=True)
        self.data_seed, self.data = None, None

    def done(self, key: str) -> dict | None:
        return next((r for r in self.book.runs if r.get("key") == key), None)

    def loaders(self, seed: int) -> dict:
        if self.data_seed != seed:
            self.data_seed, self.data = seed, load_data(self.args, seed)
        return self.data

    def dense_record(self) -> None:
        if self.done("dense") is None:
            data = self.loaders(self.args.seeds[0])
            rec = {"key": "dense", "kind": "dense", "acc": accuracy(self.dense, data["test"]),
                   "val_acc": accuracy(self.dense, data["val"]), **cost(self.dense)}  # fmt: skip
            self.book.add(rec)

    def regularised(self, lam: float, epochs: int, seed: int) -> nn.Module:
        key = reg_key(lam, epochs, seed)
        path = self.args.out / "models" / f"{key}.pt"
        model = copy.deepcopy(self.dense).train()
        ss = SynapticStrength(model)
        if self.done(key) is not None:
            model.load_state_dict(torch.load(path, weights_only=True))
            return model
        data = self.loaders(seed)
        torch.manual_seed(seed)
        print(f"{key}: regularising {epochs} epochs", flush=True)
        secs = stage(model, data, self.args.out / "stages" / key, epochs=epochs, lr=self.args.lr,
                     step=ss.train_step(lam), seed=seed)  # fmt: skip
        torch.save(model.state_dict(), path)
        steps = epochs * len(data["train"])
        self.book.add({"key": key, "kind": "reg", "lam": lam, "epochs": epochs, "seed": seed,
                       "l1_budget": l1_budget(lam, self.args.lr, steps), "val_acc": accuracy(model, data["val"]),
                       "acc": accuracy(model, data["test"]), "strengths": strength_record(ss),
                       "train_s": secs})  # fmt: skip
        return model

    def pruned(self, cfg: tuple, target: float, lam: float, epochs: int, seed: int) -> dict:
        key = prune_key(cfg, target, lam, epochs, seed, self.args.schedule)
        if (rec := self.done(key)) is not None:
            return rec
        data, (granularity, rank, round_to, scope) = self.loaders(seed), cfg
        model = self.regularised(lam, epochs, seed)
        ss = SynapticStrength(model)
        cap = self.args.max_layer_sparsity
        kw = {"rank": rank, "norm": self.args.norm, "input_size": SIZE, "round_to": round_to or None,
              "max_layer_sparsity": cap if cap < 1 else None, "granularity": granularity, "scope": scope,
              "writers": self.args.writers}  # fmt: skip
        head = {"key": key, "kind": "prune", "granularity": granularity, "rank": rank, "round_to": round_to,
                "scope": scope, "target": target, "lam": lam, "epochs": epochs, "seed": seed}  # fmt: skip
        if self.args.schedule:
            head |= {"schedule": list(self.args.schedule), "step_epochs": self.args.step_epochs}
        try:
            steps = self.step_down(ss, key, kw, seed)
            sparsity = ss.sparsity_for_macs(target, **kw)
        except ConfigError as e:  # e.g. rounding and the layer cap keep more than the target: recorded, skipped
            print(f"{key}: {e}", flush=True)
            return self.book.add({**head, "unreachable": str(e)})
        plan = ss.plan(sparsity, **kw)
        acc_before = accuracy(apply_plan(model, plan), data["test"])
        small = ss.cut(plan)  # fine-tuning the cut model is fine-tuning the masked one, ~3x faster at 0.3x MACs
        torch.manual_seed(seed)
        print(f"{key}: {sparsity:.3f} of {granularity}s pruned, fine-tuning {self.args.ft_epochs} epochs", flush=True)
        secs = stage(small.model, data, self.args.out / "stages" / key, epochs=self.args.ft_epochs,
                     lr=self.args.ft_lr, step=small.train_step(0.0), seed=seed)  # fmt: skip
        cut = apply_plan(small.model, small.held_plan).eval()
        ckpt = self.args.out / "deploy" / f"{key}.pt"
        save_checkpoint(ckpt, model=cut.state_dict(), arch={**self.arch, "plan": plan, "input_size": list(SIZE)},
                        meta=self.ckpt.get("meta"))  # fmt: skip
        rec = {**head, **({"steps": steps} if steps else {}), "sparsity": sparsity, "acc_before_ft": acc_before,
               "acc": accuracy(cut, data["test"]), "val_acc": accuracy(cut, data["val"]), **cost(cut),
               "widths": [e["out_channels_after"] for e in plan["layers"].values()], "ft_s": secs,
               "checkpoint": str(ckpt.relative_to(self.args.out))}  # fmt: skip
        return self.book.add(rec)

    def step_down(self, ss: SynapticStrength, key: str, kw: dict, seed: int) -> list[dict]:
        """Gradual pruning (--schedule): prune to each share of the dense MACs in turn, fine-tune the cut model
        --step-epochs and write it back, so the last cut starts from a net that has already adapted to most of it.
        Each finished step is saved (OUT/models) with its plan; every plan is on the registered build."""
        steps, data = [], self.loaders(seed)
        for i, share in enumerate(self.args.schedule):
            saved = self.args.out / "models" / f"{key}_step{i}.pt"
            if saved.is_file():
                blob = torch.load(saved, weights_only=True)
                ss.model.load_state_dict(blob["state"])
                ss.prune(blob["plan"])
                steps.append(blob["record"])
                continue
            sparsity = ss.sparsity_for_macs(share, **kw)
            plan = ss.plan(sparsity, **kw)
            acc_before = accuracy(apply_plan(ss.model, plan), data["val"])
            small = ss.cut(plan)
            torch.manual_seed(seed)
            print(f"{key}: step {i + 1}/{len(self.args.schedule)} to {share:g}x the MACs, {sparsity:.3f} pruned, "
                  f"fine-tuning {self.args.step_epochs} epochs", flush=True)  # fmt: skip
            secs = stage(small.model, data, self.args.out / "stages" / f"{key}_step{i}", epochs=self.args.step_epochs,
                         lr=self.args.ft_lr, step=small.train_step(0.0), seed=seed)  # fmt: skip
            ss.uncut(small)
            rec = {"share": share, "sparsity": sparsity, "val_acc_before_ft": acc_before,
                   "val_acc": accuracy(small.model, data["val"]), "ft_s": secs}  # fmt: skip
            torch.save({"state": ss.model.state_dict(), "plan": plan, "record": rec}, saved)
            steps.append(rec)
        return steps

    def match(self, target: float, seed: int, matched: dict) -> dict | None:
        """The thin control's width: saved, or bisected now on a quiet machine (None: deferred to a --resume)."""
        key, args = f"thin_t{target:g}_s{seed}", self.args
        saved = args.out / "models" / f"{key}_match.json"
        if saved.is_file():
            match = json.loads(saved.read_text())
            if match["matched_to"] != matched["key"]:  # configurations added on --resume changed the choice
                raise SystemExit(f"{key} was matched to {match['matched_to']}, but validation now chooses "
                                 f"{matched['key']}: delete {saved} (and the {key} run, if trained) to redo the "
                                 "thin control, or --resume without the added configurations")  # fmt: skip
            return match
        timed = args.thin_match == "latency"
        if timed and (busy := others_busy()) is not None and busy > QUIET_CORES and not args.allow_busy:
            # Defer rather than exit: the remaining training stages need no quiet machine.
            print(f"{key}: other processes use {busy:.2f} cores; the latency match waits for a quiet machine "
                  "(rerun with --resume --match-only then, or pass --allow-busy)", flush=True)  # fmt: skip
            return None
        if timed:
            fn = latency_at(SIZE, batch_size=args.match_batch, backend=args.match_backend, threads=args.match_threads)
        else:
            fn = macs_at(SIZE)
        pruned, _ = model_from_checkpoint(args.out / matched["checkpoint"])
        match = {"matched_to": matched["key"], "matched_on": args.thin_match}
        with other_cpu(match):
            m = match_width(thin_builder(self.arch), fn(pruned), cost=fn, low=0.05, iters=12 if timed else 40)
        match.update(width=m.width, target_cost=m.target, cost=m.cost)
        atomic_write_text(saved, json.dumps(match, indent=2) + "\n")
        print(f"{key}: width {m.width:.4f} matches {matched['key']} ({args.thin_match})", flush=True)
        return match

    def thin(self, target: float, seed: int, match: dict, reg_epochs: int) -> None:
        key, args = f"thin_t{target:g}_s{seed}", self.args
        if self.done(key) is not None:
            return
        base = self.ckpt.get("config") or {}
        ft = args.ft_epochs + len(args.schedule) * args.step_epochs
        epochs = int(base.get("epochs") or self.ckpt.get("epochs")) + reg_epochs + ft
        model = self.train_thin(thin_builder(self.arch)(match["width"]), base, epochs, seed, args.out / "stages" / key)
        data = self.loaders(seed)
        ckpt = args.out / "deploy" / f"{key}.pt"
        save_checkpoint(ckpt, model=model.state_dict(), arch={**arch_of(model), "input_size": list(SIZE)},
                        meta=self.ckpt.get("meta"))  # fmt: skip
        self.book.add({"key": key, "kind": "thin", "target": target, "seed": seed, **match, "epochs": epochs,
                       "acc": accuracy(model, data["test"]), "val_acc": accuracy(model, data["val"]),
                       **cost(model), "checkpoint": str(ckpt.relative_to(args.out))})  # fmt: skip

    def train_thin(self, model: nn.Module, base: dict, epochs: int, seed: int, out: Path) -> nn.Module:
        """From scratch with the baseline's recipe (optimizer, lr, decay, warm-up); its best-on-val weights."""
        data = self.loaders(seed)
        torch.manual_seed(seed)
        fresh = build_like(model).to(memory_format=torch.channels_last)  # seeded init, the same architecture
        steps = len(data["train"])
        opt = make_optimizer(fresh, base.get("optimizer", "sgd"), lr=base.get("lr", 0.1),
                             momentum=base.get("momentum", 0.9), weight_decay=base.get("weight_decay"))  # fmt: skip
        sched = make_scheduler(opt, base.get("scheduler", "cosine"), total_steps=epochs * steps,
                               warmup_steps=int(base.get("warmup_epochs") or 0) * steps)  # fmt: skip
        last = out / LAST_FILE
        print(f"{out.name}: thin control, {epochs} epochs from scratch", flush=True)
        res = fit(fresh, data["train"], epochs=epochs, optimizer=opt, scheduler=sched, val_data=data["val"],
                  out_dir=out, resume=last if last.is_file() else None, seed=seed, progress=False)  # fmt: skip
        if res.best_checkpoint is not None:
            load_weights(fresh, res.best_checkpoint)
        return fresh.eval()

    def run(self) -> None:
        """Every pruned net of every seed first, then every thin match, then the thin trainings: a match needs a
        quiet machine and training does not, so deferred matches wait for one --resume --match-only."""
        args = self.args
        self.dense_record()
        configs = list(itertools.product(args.granularity, args.ranks, args.round_to, args.scopes))
        grid = list(itertools.product(args.lams, args.reg_epochs))
        best, chosen = {}, {}  # (target, seed) -> the pruned record chosen on val; seed -> (lambda, reg-epochs)
        for i, seed in enumerate(args.seeds):
            if i == 0 and not args.match_only:  # the grid: first configuration, first target
                for lam, epochs in grid:
                    self.pruned(configs[0], args.targets[0], lam, epochs, seed)
            last = prune_key(configs[0], args.targets[0], *grid[-1], args.seeds[0], args.schedule)
            if args.match_only and self.done(last) is None:
                break  # the grid is not finished: nothing to match yet
            lam, epochs = chosen[seed] = choose(self.book.runs, args)["chosen"]
            print(f"seed {seed}: lambda {lam:g}, {epochs} regularisation epochs (chosen on validation)", flush=True)
            for target in args.targets:
                cfgs = configs
                if i > 0 and not args.all_configs_every_seed and (first := best.get((target, args.seeds[0]))):
                    cfgs = [config_of(first)]  # later seeds: the configuration the first seed chose on val
                keys = [prune_key(cfg, target, lam, epochs, seed, self.args.schedule) for cfg in cfgs]
                if args.match_only:
                    recs = [r for k in keys if (r := self.done(k)) is not None and "acc" in r]
                else:
                    recs = [r for cfg in cfgs if "acc" in (r := self.pruned(cfg, target, lam, epochs, seed))]
                if recs and (not args.match_only or len(recs) == len(keys)):
                    best[(target, seed)] = max(recs, key=lambda r: r["val_acc"])
        matches = {k: m for k, rec in best.items() if (m := self.match(*k, rec)) is not None}
        if args.match_only:
            print(f"--match-only: {len(matches)} of {len(best)} thin widths matched; continue with --resume")
            return
        for (target, seed), m in matches.items():
            self.thin(target, seed, m, chosen[seed][1])


def build_like(model: nn.Module) -> nn.Module:
    """A freshly initialised copy of a registered (possibly planned) model's architecture."""
    return create_from_arch(arch_of(model))


# --- summary and verdicts ----------------------------------------------------------------------------------------


def choose(runs: list[dict], args: argparse.Namespace | None = None) -> dict:
    """(lambda, reg-epochs) with the best validation accuracy after pruning and fine-tuning (first configuration
    and target, first seed): the grid point every other run uses."""
    prunes = [r for r in runs if r["kind"] == "prune"]
    if not prunes:
        return {"chosen": None, "table": {}}
    seed = min(r["seed"] for r in prunes)
    first = prunes[0]
    cands = [r for r in prunes if r["seed"] == seed and (config_of(r), r["target"]) ==
             (config_of(first), first["target"])]  # fmt: skip
    if args is not None:
        expected = len(args.lams) * len(args.reg_epochs)
        if len(cands) < expected:
            raise SystemExit(f"the grid is not finished ({len(cands)} of {expected} points); run with --resume")
    measured = [r for r in cands if "acc" in r]
    if not measured:
        raise SystemExit("no grid point reached the first target with the first configuration; lower the target")
    best = max(measured, key=lambda r: (r["val_acc"], -r["lam"]))
    table = {f"lam={r['lam']:g} epochs={r['epochs']}": {"val_acc_after_ft": r["val_acc"]} for r in measured}
    return {"chosen": (best["lam"], best["epochs"]), "config": list(config_of(first)),
            "target": first["target"], "seed": seed, "table": table}  # fmt: skip


def summarize(runs: list[dict]) -> dict:
    """The grid and its choice, strengths per regularisation run, the configurations per target (seed means),
    rounding's accuracy effect, and the accuracy verdicts against dense and the thin control per seed."""
    dense = next((r for r in runs if r["kind"] == "dense"), None)
    pick = choose(runs)
    out = {"dense": dense and {k: dense[k] for k in ("acc", "val_acc", "params", "macs")}, "grid": pick}
    out["regularisation"] = {
        r["key"]: {"val_acc": r["val_acc"], "l1_budget": r["l1_budget"],
                   **{k: r["strengths"][k] for k in ("frac_below_1e-2_max", "frac_below_1e-3_max")}}
        for r in runs if r["kind"] == "reg"
    }  # fmt: skip
    if pick["chosen"] is None or dense is None:
        return {**out, "pass": False, "note": "no pruned run yet"}
    lam, epochs = pick["chosen"]
    chosen = [r for r in runs if r["kind"] == "prune" and "acc" in r and (r["lam"], r["epochs"]) == (lam, epochs)]
    thins = {(r["target"], r["seed"]): r for r in runs if r["kind"] == "thin"}
    table, verdicts = {}, {}
    for target in sorted({r["target"] for r in chosen}):
        at = [r for r in chosen if r["target"] == target]
        for cfg in sorted({config_of(r) for r in at}):
            rs = [r for r in at if config_of(r) == cfg]
            table[f"{config_name(cfg)} @ {target:g} MACs"] = {
                "seeds": [r["seed"] for r in rs],
                **{k: [r[k] for r in rs] for k in ("acc", "val_acc", "acc_before_ft", "macs", "sparsity")},
                "acc_mean": statistics.mean(r["acc"] for r in rs),
                "widths_seed0": rs[0]["widths"],
            }
        per_seed = {}
        for seed in sorted({r["seed"] for r in at}):
            mine = [r for r in at if r["seed"] == seed]
            best = max(mine, key=lambda r: r["val_acc"])
            thin = thins.get((target, seed))
            per_seed[seed] = {
                "chosen_on_val": best["key"],
                "acc": best["acc"],
                "dense_minus_pruned": dense["acc"] - best["acc"],
                "within_1_5_of_dense": dense["acc"] - best["acc"] <= DENSE_MARGIN,
                "thin_acc": thin and thin["acc"],
                "thin_width": thin and thin["width"],
                "pruned_minus_thin": thin and best["acc"] - thin["acc"],
                "beats_thin_by_1": None if thin is None else best["acc"] >= thin["acc"] + THIN_MARGIN,
            }
        seeds_done = [s for s, v in per_seed.items() if v["beats_thin_by_1"] is not None]
        verdicts[f"{target:g}"] = {
            "per_seed": per_seed,
            "seeds_complete": seeds_done,
            "accuracy_pass": len(seeds_done) >= 2
            and all(per_seed[s]["within_1_5_of_dense"] and per_seed[s]["beats_thin_by_1"] for s in seeds_done),
        }
    rounding = {}
    for key in table:
        if " round - " in key:
            continue
        twin = key.split(" round ")[0] + " round - @ " + key.split(" @ ")[1]
        if twin in table:  # on the seeds both ran (later seeds run only the chosen configuration)
            acc, macs = ({n: dict(zip(table[n]["seeds"], table[n][k], strict=True)) for n in (key, twin)}
                         for k in ("acc", "macs"))  # fmt: skip
            seeds = [s for s in acc[key] if s in acc[twin]]
            rounding[key] = {"seeds": seeds,
                             "acc_rounded_minus_unrounded": statistics.mean(acc[key][s] - acc[twin][s] for s in seeds),
                             "macs_rounded_over_unrounded": statistics.mean(macs[key][s] / macs[twin][s]
                                                                            for s in seeds)}  # fmt: skip
    return {
        **out,
        "configurations": table,
        "rounding": rounding,
        "verdicts": verdicts,
        "rules": f"per seed, the pruned net chosen on val: test acc >= dense - {DENSE_MARGIN} and >= thin + "
        f"{THIN_MARGIN}; 2 seeds; the >= 2x measured speed-up is checked by latency_pruned.py",
        "pass": bool(verdicts) and all(v["accuracy_pass"] for v in verdicts.values()),
    }


def print_table(runs: list[dict], summary: dict) -> None:
    cols = {"run": "key", "val acc": ("val_acc", ".2f"), "test acc": ("acc", ".2f"),
            "before FT": ("acc_before_ft", ".2f"), "sparsity": ("sparsity", ".3f"),
            "MACs": lambda r: f"{r['macs'] / 1e6:.1f}M" if "macs" in r else "-",
            "|s|<1e-2 max": lambda r: f"{r['strengths']['frac_below_1e-2_max']:.1%}" if "strengths" in r
            else "-"}  # fmt: skip
    print(_runs.markdown(runs, cols))
    print(json.dumps({k: v for k, v in summary.items() if k != "regularisation"}, indent=2))


def plot(runs: list[dict], summary: dict, path: Path) -> None:
    """Test accuracy and MACs per run (pruned, thin, dense) at the chosen grid point."""
    pick = (summary.get("grid") or {}).get("chosen")
    rows = [{"model": r["key"], "acc": r["acc"], "macs": r["macs"] / 1e6} for r in runs
            if r["kind"] in ("dense", "thin") or (r["kind"] == "prune" and "acc" in r and pick and
                                                 (r["lam"], r["epochs"]) == tuple(pick))]  # fmt: skip
    if rows:
        bar_panels(rows, [("acc", "test acc (%)"), ("macs", "MACs (M)")], path, title="Synaptic Strength vs thin")


# --- main ----------------------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    ap = _runs.make_parser(__doc__)
    ap.add_argument("--baseline", type=Path, help="the converged dense net: a leanvision train checkpoint")
    _runs.add_split_args(ap, 0)
    ap.add_argument("--test-subset", type=int, default=0, help="evaluate on a seeded test subset (smoke tests)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lams", type=float, nargs="+", default=[0.0, 5e-4, 2e-3], help="L1 weights of the grid")
    ap.add_argument("--reg-epochs", type=int, nargs="+", default=[5, 15], help="regularisation epochs of the grid")
    ap.add_argument("--lr", type=float, default=0.02, help="regularisation learning rate (cosine)")
    ap.add_argument("--ft-epochs", type=int, default=10)
    ap.add_argument("--ft-lr", type=float, default=0.01)
    ap.add_argument("--schedule", type=float, nargs="*", default=[],
                    help="gradual pruning: shares of the dense MACs to prune to first, each followed by "
                    "--step-epochs of fine-tuning (e.g. 0.7 0.5); none = one-shot")  # fmt: skip
    ap.add_argument("--step-epochs", type=int, default=10, help="fine-tuning epochs after each --schedule cut")
    # normalized first: on a converged VGG, cost (at the 0.9 cap) cut the first two convs to 4 channels already at
    # 0.6x the MACs, where normalized kept every layer >= half; the grid's lambda is chosen on the first ranking
    ap.add_argument("--ranks", nargs="+", default=["normalized", "cost", "strength"],
                    choices=["strength", "normalized", "cost"], help="the first one runs the grid")  # fmt: skip
    ap.add_argument(
        "--granularity",
        nargs="+",
        default=["channel", "connection"],
        choices=["connection", "channel"],
        help="prune whole channels or single connections (the paper); the first one runs the grid",
    )
    ap.add_argument("--scopes", nargs="+", default=["global"], choices=["global", "layer"],
                    help="rank all layers together (global, the paper) or prune each layer by the same share (layer: "
                    "uniform widths, the thin control's shape with the trained weights kept)")  # fmt: skip
    ap.add_argument("--norm", default="median", choices=["median", "fan_in"])
    ap.add_argument("--writers", default="sum", choices=["sum", "mean"],
                    help="channel granularity: a residual channel scores the sum or the mean over the convs that "
                    "write it")  # fmt: skip
    ap.add_argument("--max-layer-sparsity", type=float, default=0.9,
                    help="the most of one layer's connections a ranking may prune (cost ranking empties the "
                    "early layers without it); 1 = no cap")  # fmt: skip
    ap.add_argument("--round-to", type=int, nargs="+", default=[16, 0], help="channel multiples; 0 = no rounding")
    ap.add_argument("--targets", type=float, nargs="+", default=[0.3], help="shares of the dense MACs to keep")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--thin-match", default="latency", choices=["latency", "macs"])
    ap.add_argument("--match-backend", default="eager", choices=["eager", "onnxruntime"])
    ap.add_argument("--match-threads", type=int, default=2)
    ap.add_argument("--match-batch", type=int, default=1)
    ap.add_argument("--allow-busy", action="store_true",
                    help="time the thin match while other processes use the CPU (recorded)")  # fmt: skip
    ap.add_argument(
        "--match-only",
        action="store_true",
        help="only bisect the thin widths of the finished pruned runs (on a quiet machine), then stop",
    )
    ap.add_argument(
        "--all-configs-every-seed",
        action="store_true",
        help="every configuration in every seed (default: later seeds run the first seed's choice)",
    )
    _runs.add_run_args(ap, NAME)
    args = ap.parse_args()
    if not args.summarize and args.baseline is None:
        ap.error("--baseline is required: a converged checkpoint, e.g. benchmarks/baselines/vgg_cifar10.pt (ship.py)")
    shares = [*args.schedule, max(args.targets)]
    if any(not a > b for a, b in itertools.pairwise(shares)) or not 0 < shares[0] < 1:
        ap.error(f"--schedule {' '.join(map(str, args.schedule))}: shares of the dense MACs must fall from below 1 "
                 f"to above the largest target ({max(args.targets):g}), e.g. --schedule 0.7 0.5")  # fmt: skip
    return args


def main() -> None:
    args = parse_args()
    _runs.main(args, NAME, SAME_ON_RESUME, lambda runs: Bench(args, runs).run(), summarize, print_table,
               lambda runs, summary: plot(runs, summary, args.out / f"{NAME}.png"))  # fmt: skip


if __name__ == "__main__":
    main()
