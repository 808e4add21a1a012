"""Synaptic Strength pruning on CIFAR-10 (arXiv 1811.02454, Lin et al. NeurIPS 2018): L1 strengths vs kernel-norm.

    python benchmarks/synaptic_cifar.py --data-dir DIR                       # 10k subset, 5 + 1 epochs, 2 seeds
    python benchmarks/synaptic_cifar.py --data-dir DIR --out OUT --resume    # continue: finished runs are skipped
    python benchmarks/synaptic_cifar.py --summarize OUT/synaptic_cifar.json  # recompute the verdicts, no training

DIR holds cifar10/ (or set $LEANVISION_DATA and omit --data-dir). The spec's E2 experiment: a 6-conv VGG
(leanvision's CifarVGG with --widths 32 32 64 64 128 128: conv3x3-BN-ReLU, max-pool after the first two pairs,
GAP, linear) converted by SynapticStrength (BN scales removed) and trained --epochs with the Synaptic Strength
step for every lambda in --lams (SGD nesterov lr 0.05, cosine, wd 5e-4 on kernels only, batch 128, crop + flip),
on a seeded class-balanced --subset of the training split; --val-size training images are held out.
Each trained net is pruned globally to every --sparsities value of connections (2-D kernels) and fine-tuned
--ft-epochs with the masks enforced (lr 0.01, cosine, lambda 0): "ss" ranks |s| of a lambda > 0 net,
"kernel_norm" ranks ||K_ij|| (the kernel the layer applies) of the lambda = 0 net, "random" drops uniformly
random kernels of the lambda = 0 net; "kernel_norm_layer" (an extra row, not in the verdicts) prunes the same
share of every layer by ||K_ij||. All go through make_plan -> SynapticStrength.prune -> apply_plan, so they are
fine-tuned and cut identically. In this re-parameterisation ||K_ij|| = |s_ij| (BN scales are
absorbed), so "kernel_norm" is the |s| ranking of the unregularised net: it isolates the L1 training.
Accuracy is on the 10,000-image test set (reporting only); choices use the validation split only: the lambda
called "best" is the one with the highest mean validation accuracy after fine-tuning at 90%.
Verdicts (spec 5d E2): (a) on every seed >= 70% of |s| below 1e-2 max|s| for the chosen lambda, and below 70%
for lambda = 0 on every seed; (b) means over seeds, after fine-tuning at 90%: SS >= dense(lambda=0) - 1.5,
SS >= kernel_norm, SS - random >= 10 points (our reading of "much better than random"; the spec's only number
is random's > 10-point loss before fine-tuning). Both need 2 finished seeds.
Writes JSON + PNGs into --out; every finished run is saved at once to synaptic_cifar.partial.json and the trained
nets to OUT/models/ (so --resume skips them). For seed 0 and the best lambda at 90% after fine-tuning, OUT/deploy/
holds the pruned net (plan.json + pruned.pt), the same net unpruned with zero kernels (masked.pt) and the dense
lambda = 0 net (dense.pt), all as plain BN-unfolded CifarVGG state_dicts, for benchmarks/latency_pruned.py.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import statistics
import time
from pathlib import Path

import _runs
import torch
from torch import nn

from leanvision._io import atomic_write_text
from leanvision.compress import SynapticStrength, apply_plan, make_plan
from leanvision.data import load_dataset, make_loader
from leanvision.engine import evaluate, fit, make_optimizer, make_scheduler
from leanvision.models.fsf import CifarVGG
from leanvision.profile import profile
from leanvision.report import line_panels

NAME = "synaptic_cifar"
METHODS = ("ss", "kernel_norm", "random", "kernel_norm_layer")
VERDICT_SPARSITY = 0.9
STRENGTH_FRACTION = 1e-2  # (a): |s| below this fraction of the largest |s| counts as "near 0"
MASS_NEAR_ZERO = 0.7  # (a): ... for at least this share of all connections
DENSE_MARGIN = 1.5  # (b): SS within this many points of the dense model
RANDOM_MARGIN = 10.0  # (b): "much better than random", in points
HIST_BINS = 64
HIST_RANGE = (-6.0, 0.0)  # log10(|s| / max|s|); smaller values (and exact zeros) go into the first bin
SAME_ON_RESUME = ("widths", "subset", "val_size", "epochs", "ft_epochs", "lr", "ft_lr")


# --- model and data -----------------------------------------------------------------------------------------


def build_net(widths: list[int]) -> CifarVGG:
    """CifarVGG with a max-pool after every conv pair but the last (32-32-M-64-64-M-128-128 by default)."""
    cfg: list[int | str] = []
    for i, w in enumerate(widths):
        cfg.append(w)
        if i % 2 == 1 and i < len(widths) - 1:
            cfg.append("M")
    return CifarVGG(cfg)


def load_data(args: argparse.Namespace, seed: int) -> dict:
    split = {"root": args.data_dir, "val_size": args.val_size, "val_seed": 0}
    return {
        "train": load_dataset("cifar10", split="train", subset=args.subset or None, seed=seed, **split),
        "val": load_dataset("cifar10", split="val", **split),
        "test": load_dataset("cifar10", root=args.data_dir, split="test"),
    }


def accuracy(model: nn.Module, dataset) -> float:
    return 100 * evaluate(model, make_loader(dataset, batch_size=500, shuffle=False))["acc"]


def plain(model: nn.Module) -> nn.Module:
    """The plain-conv form of a (masked) SynapticStrength net at full width: pruned kernels are zeros."""
    return apply_plan(model, make_plan(model)).eval()


def train(model: nn.Module, ss: SynapticStrength, train_set, *, epochs: int, lr: float, lam: float, seed: int) -> float:
    """SGD (nesterov, cosine, wd 5e-4 on kernels; strengths get only the L1 term) with ss.train_step(lam)."""
    loader = make_loader(train_set, batch_size=128, shuffle=True, seed=seed)
    opt = make_optimizer(model, "sgd", lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = make_scheduler(opt, "cosine", total_steps=epochs * len(loader))
    t0 = time.perf_counter()
    fit(model, loader, epochs=epochs, optimizer=opt, scheduler=sched, train_step=ss.train_step(lam), seed=seed)
    return time.perf_counter() - t0


# --- dense (lambda) runs --------------------------------------------------------------------------------------


def strength_stats(ss: SynapticStrength) -> dict:
    """Share of |s| near 0 (relative to the largest) and a histogram of log10(|s| / max|s|) over all layers."""
    s = torch.cat([v.flatten() for v in ss.scores().values()]).double()
    rel = s / s.max()
    logs = rel.clamp_min(10 ** HIST_RANGE[0]).log10().clamp(*HIST_RANGE)
    hist = torch.histc(logs, bins=HIST_BINS, min=HIST_RANGE[0], max=HIST_RANGE[1])
    return {
        "connections": s.numel(),
        "max_abs_s": float(s.max()),
        "frac_below_1e-2_max": float((rel < 1e-2).double().mean()),
        "frac_below_1e-3_max": float((rel < 1e-3).double().mean()),
        "hist_log10_rel": [int(c) for c in hist],
    }


def new_ss_net(widths: list[int]) -> tuple[nn.Module, SynapticStrength]:
    model = build_net(widths)
    return model, SynapticStrength(model)


def dense_run(lam: float, seed: int, data: dict, args: argparse.Namespace, path: Path) -> dict:
    """Train one lambda for --epochs; save the net to ``path``; accuracy, |s| statistics, size."""
    torch.manual_seed(seed)
    model, ss = new_ss_net(args.widths)
    train_s = train(model, ss, data["train"], epochs=args.epochs, lr=args.lr, lam=lam, seed=seed)
    torch.save(model.state_dict(), path)
    prof = profile(plain(model), torch.zeros(1, 3, 32, 32))
    return {
        "kind": "dense",
        "lam": lam,
        "seed": seed,
        "acc": accuracy(model, data["test"]),
        "val_acc": accuracy(model, data["val"]),
        "strengths": strength_stats(ss),
        "params": prof.params,
        "macs": prof.macs,
        "train_s": train_s,
    }


def load_dense(widths: list[int], path: Path) -> nn.Module:
    model, _ = new_ss_net(widths)
    model.load_state_dict(torch.load(path, weights_only=True))
    return model


# --- pruning runs ---------------------------------------------------------------------------------------------


def global_masks(scores: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """Drop the ``sparsity`` share of connections with the lowest score, ranked over all layers together."""
    flat = torch.cat([v.flatten() for v in scores.values()])
    keep = torch.ones_like(flat, dtype=torch.bool)
    keep[torch.argsort(flat, stable=True)[: round(sparsity * flat.numel())]] = False
    parts = keep.split([v.numel() for v in scores.values()])
    return {n: p.view_as(v) for (n, v), p in zip(scores.items(), parts, strict=True)}


def select_plan(method: str, model: nn.Module, ss: SynapticStrength, sparsity: float, seed: int) -> dict:
    """The pruning plan of one method; every method's plan goes through make_plan (same surgery for all)."""
    if method == "ss":
        return ss.plan(sparsity)
    if method == "random":  # uniform scores from a generator fixed by (seed, sparsity)
        g = torch.Generator().manual_seed(1000 * seed + round(1000 * sparsity))
        scores = {n: torch.rand(m.strength.shape, generator=g) for n, m in ss.layers.items()}
    else:  # ||K_ij|| of the kernel each layer applies
        scores = {n: m.weight.detach().pow(2).sum((2, 3)).sqrt() for n, m in ss.layers.items()}
    if method == "kernel_norm_layer":
        masks = {n: global_masks({n: v}, sparsity)[n] for n, v in scores.items()}
    else:
        masks = global_masks(scores, sparsity)
    scope = "layer" if method == "kernel_norm_layer" else "global"
    return make_plan(model, masks, selection={"method": method, "sparsity": sparsity, "scope": scope})


def conv_positions(widths: list[int]) -> dict[str, int]:
    """Output positions (H' x W') of every conv of the net at 32x32: the factor of its kernel-sparse MACs."""
    model, out = build_net(widths).eval(), {}
    hooks = [
        m.register_forward_hook(lambda _m, _i, y, n=n: out.__setitem__(n, y.shape[2] * y.shape[3]))
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d)
    ]
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    return out


def cost_record(plan: dict, phys: nn.Module, positions: dict[str, int], dense: dict) -> dict:
    """Size of the cut net beside the ideal kernel-sparse cost (spec 5a: sum over kept kernels of k^2 H'W')."""
    prof = profile(phys, torch.zeros(1, 3, 32, 32))
    lin = sum(m.in_features * m.out_features for m in phys.modules() if isinstance(m, nn.Linear))
    sparse_macs = lin + sum(e["kept"] * math.prod(e["shape"][2:]) * positions[n] for n, e in plan["layers"].items())
    s = plan["summary"]
    return {
        "sparsity_effective": s["sparsity"],
        "params": prof.params,
        "params_nonzero": s["params_nonzero_after"],
        "macs": prof.macs,
        "macs_kernel_sparse": sparse_macs,
        # share of the ideal (kernel-sparse) saving that channel removal made physical
        "macs_saving_physical_share": (dense["macs"] - prof.macs) / max(dense["macs"] - sparse_macs, 1),
        "params_saving_physical_share": (s["params"] - prof.params) / max(s["params"] - s["params_nonzero_after"], 1),
        "out_channels_after": [e["out_channels_after"] for e in plan["layers"].values()],
    }


def candidate_files(model_dir: Path, lam: float) -> dict[str, Path]:
    """Where seed 0's SS net at 90% for ``lam`` is kept until the summary picks a lambda for OUT/deploy/."""
    stem = f"ss_lam{lam:g}_p{round(100 * VERDICT_SPARSITY)}_s0"
    return {k: model_dir / f"{stem}.{k}" for k in ("plan.json", "pruned.pt", "masked.pt")}


def prune_run(method: str, lam: float, sparsity: float, seed: int, dense_model: nn.Module, ctx: dict) -> dict:
    """Prune a copy of a trained net, fine-tune it with the masks enforced, cut it; accuracies before and after."""
    args, data = ctx["args"], ctx["data"]
    model = copy.deepcopy(dense_model)
    ss = SynapticStrength(model)  # adopts the converted net as it is
    plan = select_plan(method, model, ss, sparsity, seed)
    ss.prune(plan)
    acc_before = accuracy(apply_plan(model, plan), data["test"])
    torch.manual_seed(seed)
    ft_s = train(model, ss, data["train"], epochs=args.ft_epochs, lr=args.ft_lr, lam=0.0, seed=seed)
    phys = apply_plan(model, plan).eval()
    x = next(iter(make_loader(data["val"], batch_size=256, shuffle=False)))[0]
    with torch.no_grad():
        surgery_diff = float((model.eval()(x) - phys(x)).abs().max())
    record = {
        "kind": "prune",
        "method": method,
        "lam": lam,
        "sparsity": sparsity,
        "seed": seed,
        "acc_before": acc_before,
        "acc": accuracy(phys, data["test"]),
        "val_acc": accuracy(phys, data["val"]),
        "surgery_max_abs_diff": surgery_diff,
        "ft_s": ft_s,
        **cost_record(plan, phys, ctx["positions"], ctx["dense_cost"]),
    }
    if method == "ss" and seed == 0 and sparsity == VERDICT_SPARSITY:  # candidates for OUT/deploy
        files = candidate_files(ctx["model_dir"], lam)
        atomic_write_text(files["plan.json"], json.dumps(plan) + "\n")
        torch.save(phys.state_dict(), files["pruned.pt"])
        torch.save(plain(model).state_dict(), files["masked.pt"])
    return record


# --- summary and verdicts -------------------------------------------------------------------------------------


def run_key(r: dict) -> tuple:
    if r["kind"] == "dense":
        return ("dense", r["lam"], r["seed"])
    return ("prune", r["method"], r["lam"], r["sparsity"], r["seed"])


def label(method: str, lam: float) -> str:
    return f"SS lam={lam:g}" if method == "ss" else f"{method} (lam=0)"


def mean_of(values: list[float]) -> float | None:
    return statistics.mean(values) if values else None


def summarize(runs: list[dict]) -> dict:
    """Per-configuration means and seeds, the lambda chosen on validation, and the spec's E2 verdicts."""
    dense = {(r["lam"], r["seed"]): r for r in runs if r["kind"] == "dense"}
    pruned = {(label(r["method"], r["lam"]), r["sparsity"], r["seed"]): r for r in runs if r["kind"] == "prune"}
    lams = sorted({lam for lam, _ in dense})
    seeds = sorted({s for _, s in dense})
    dense_table = {
        f"{lam:g}": {
            "acc": [dense[(lam, s)]["acc"] for s in seeds if (lam, s) in dense],
            "val_acc": [dense[(lam, s)]["val_acc"] for s in seeds if (lam, s) in dense],
            "frac_below_1e-2_max": [
                dense[(lam, s)]["strengths"]["frac_below_1e-2_max"] for s in seeds if (lam, s) in dense
            ],
        }
        for lam in lams
    }
    table = {}
    for name, sp in sorted({(n, sp) for n, sp, _ in pruned}):
        rs = [pruned[(name, sp, s)] for s in seeds if (name, sp, s) in pruned]
        table[f"{name} @ {sp:g}"] = {
            "seeds": [r["seed"] for r in rs],
            **{k: [r[k] for r in rs] for k in ("acc_before", "acc", "val_acc")},
            **{f"{k}_mean": mean_of([r[k] for r in rs]) for k in ("acc_before", "acc", "val_acc")},
            **{k: rs[0][k] for k in ("sparsity_effective", "params", "params_nonzero", "macs", "macs_kernel_sparse")},
            **{k: mean_of([r[k] for r in rs]) for k in ("macs_saving_physical_share", "params_saving_physical_share")},
        }
    summary = {"seeds": seeds, "dense": dense_table, "pruned": table}
    return summary | verdicts(dense, pruned, lams, seeds)


def verdicts(dense: dict, pruned: dict, lams: list[float], seeds: list[int]) -> dict:
    """Spec 5d E2 (a) and (b) for the lambda > 0 with the best mean validation accuracy after fine-tuning at 90%."""
    sp = VERDICT_SPARSITY
    needed = [label("kernel_norm", 0.0), label("random", 0.0)]
    full = [
        s
        for s in seeds
        if all((lam, s) in dense for lam in lams)
        and all((n, sp, s) in pruned for n in needed + [label("ss", lam) for lam in lams if lam > 0])
    ]
    cands = [lam for lam in lams if lam > 0]
    if not full or 0.0 not in lams or not cands:
        return {"complete_seeds": full, "pass": False, "note": "no seed with every run at 90% finished"}
    val = {lam: statistics.mean(pruned[(label("ss", lam), sp, s)]["val_acc"] for s in full) for lam in cands}
    best = max(cands, key=lambda lam: val[lam])
    m = {  # test accuracy means over the complete seeds
        n: statistics.mean(pruned[(n, sp, s)]["acc"] for s in full) for n in [label("ss", best), *needed]
    }
    ss_acc, dense_acc = m[label("ss", best)], statistics.mean(dense[(0.0, s)]["acc"] for s in full)
    frac = {lam: [dense[(lam, s)]["strengths"]["frac_below_1e-2_max"] for s in full] for lam in lams}
    a_by_lam = {f"{lam:g}": all(f >= MASS_NEAR_ZERO for f in frac[lam]) for lam in cands}
    a = a_by_lam[f"{best:g}"] and all(f < MASS_NEAR_ZERO for f in frac[0.0])
    random_before = statistics.mean(pruned[(label("random", 0.0), sp, s)]["acc_before"] for s in full)
    b = {
        "ss_within_1_5_of_dense": ss_acc >= dense_acc - DENSE_MARGIN,
        "ss_ge_kernel_norm": ss_acc >= m[label("kernel_norm", 0.0)],
        "ss_minus_random_ge_10": ss_acc - m[label("random", 0.0)] >= RANDOM_MARGIN,
    }
    per_seed = {
        s: {
            "ss_minus_dense": pruned[(label("ss", best), sp, s)]["acc"] - dense[(0.0, s)]["acc"],
            "ss_minus_kernel_norm": pruned[(label("ss", best), sp, s)]["acc"] - pruned[(needed[0], sp, s)]["acc"],
            "ss_minus_random": pruned[(label("ss", best), sp, s)]["acc"] - pruned[(needed[1], sp, s)]["acc"],
        }
        for s in full
    }
    layer = label("kernel_norm_layer", 0.0)
    layer_wise = [pruned[(layer, sp, s)]["acc"] for s in full if (layer, sp, s) in pruned]
    info_layer = ss_acc - statistics.mean(layer_wise) if len(layer_wise) == len(full) else None
    return {
        "complete_seeds": full,
        "best_lam_by_val": best,
        "val_acc_after_ft_at_90": {f"{lam:g}": v for lam, v in val.items()},
        "criterion_a": f"every seed: >= {MASS_NEAR_ZERO:.0%} of |s| < {STRENGTH_FRACTION:g} max|s| for the chosen "
        f"lambda, < {MASS_NEAR_ZERO:.0%} for lambda = 0",
        "criterion_b": f"means over seeds, test acc after fine-tuning at {sp:.0%}: SS(chosen lambda) >= dense(lambda=0)"
        f" - {DENSE_MARGIN}, SS >= kernel_norm, SS - random >= {RANDOM_MARGIN:g} points",
        "frac_below_1e-2_max": {f"{lam:g}": v for lam, v in frac.items()},
        "a_per_lam_gt_0": a_by_lam,
        "a_lam0_below_70": all(f < MASS_NEAR_ZERO for f in frac[0.0]),
        "a_pass": a,
        "means_at_90": {"dense lam=0": dense_acc, **m},
        "random_loss_before_ft_at_90": dense_acc - random_before,
        "b": b,
        "b_pass": all(b.values()),
        "b_margins_per_seed": per_seed,
        "info_ss_minus_kernel_norm_layer_at_90": info_layer,  # not part of the verdict
        "pass": bool(a and all(b.values()) and len(full) >= 2),
    }


# --- outputs --------------------------------------------------------------------------------------------------


def plot_strengths(runs: list[dict], path: Path) -> None:
    """One histogram panel per lambda of log10(|s| / max|s|), seeds overlaid; the dashed line is 1e-2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dense = sorted((r for r in runs if r["kind"] == "dense"), key=lambda r: (r["lam"], r["seed"]))
    lams = sorted({r["lam"] for r in dense})
    if not lams:
        return
    fig, axes = plt.subplots(1, len(lams), figsize=(4.2 * len(lams), 3.4), squeeze=False)
    edges = torch.linspace(*HIST_RANGE, HIST_BINS + 1).tolist()
    for ax, lam in zip(axes[0], lams, strict=True):
        for r in (r for r in dense if r["lam"] == lam):
            st = r["strengths"]
            ax.stairs(st["hist_log10_rel"], edges, label=f"seed {r['seed']}: {st['frac_below_1e-2_max']:.1%} < 1e-2")
        ax.axvline(math.log10(STRENGTH_FRACTION), color="k", ls="--", lw=0.8)
        ax.set_title(f"lambda = {lam:g}")
        ax.set_xlabel("log10(|s| / max|s|)  (<= -6 in the first bin)")
        ax.set_ylabel("connections")
        ax.legend(fontsize=8)
    fig.suptitle("Synaptic strengths after training")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_accuracy(summary: dict, path: Path, title: str) -> None:
    """Test accuracy (means over seeds) before and after fine-tuning, and MACs of the cut net, vs sparsity."""
    series: dict[str, list[dict]] = {}
    for key, row in summary["pruned"].items():
        name, sp = key.rsplit(" @ ", 1)
        series.setdefault(name, []).append(
            {"sparsity": float(sp), "acc_before": row["acc_before_mean"], "acc": row["acc_mean"], "macs": row["macs"]}
        )
    dense = summary["dense"].get("0")
    if dense and dense["acc"] and series:
        sps = sorted({p["sparsity"] for pts in series.values() for p in pts})
        series["dense lam=0"] = [{"sparsity": sp, "acc": statistics.mean(dense["acc"])} for sp in sps]
    metrics = [
        ("acc_before", "test acc before FT (%)"),
        ("acc", "test acc after FT (%)"),
        ("macs", "MACs of the cut net (seed 0)"),
    ]
    line_panels(series, metrics, path, x_key="sparsity", title=title)


def save_deploy(runs: list[dict], summary: dict, args: argparse.Namespace) -> None:
    """Copy seed 0's pruned net for the chosen lambda (90%) and the dense lambda = 0 net into OUT/deploy/."""
    best, models = summary.get("best_lam_by_val"), args.out / "models"
    files = candidate_files(models, best) if best is not None else {}
    if not files or not all(f.is_file() for f in files.values()) or not (models / "dense_lam0_s0.pt").is_file():
        print("deploy: seed 0 has no pruned net for the chosen lambda yet; OUT/deploy/ not written")
        return
    deploy = args.out / "deploy"
    deploy.mkdir(exist_ok=True)
    for name, src in files.items():
        shutil.copyfile(src, deploy / name)
    torch.save(plain(load_dense(args.widths, models / "dense_lam0_s0.pt")).state_dict(), deploy / "dense.pt")
    by = {run_key(r): r for r in runs}
    meta = {
        "paper": "arXiv 1811.02454",
        "model": "leanvision.models.fsf.CifarVGG (build_net in benchmarks/synaptic_cifar.py)",
        "widths": args.widths,
        "seed": 0,
        "lam": best,
        "sparsity": VERDICT_SPARSITY,
        "files": {
            "dense.pt": "lambda = 0 net, plain convs (BN not folded)",
            "plan.json": "pruning plan: apply_plan(build_net(widths), plan) gives the pruned architecture",
            "pruned.pt": "state_dict of that pruned net after fine-tuning",
            "masked.pt": "the same fine-tuned net at full width, pruned kernels stored as zeros",
        },
        "test_acc": {
            "dense": by[("dense", 0.0, 0)]["acc"],
            "pruned": by[("prune", "ss", best, VERDICT_SPARSITY, 0)]["acc"],
        },
    }
    atomic_write_text(deploy / "meta.json", json.dumps(meta, indent=2) + "\n")
    print(f"deploy: wrote {deploy} (seed 0, lambda {best:g}, {VERDICT_SPARSITY:.0%})")


def fmt(values: list[float], mean: float | None = None) -> str:
    if not values:
        return "-"
    mean = statistics.mean(values) if mean is None else mean
    return f"{mean:.2f} ({' / '.join(f'{v:.2f}' for v in values)})"


def print_table(runs: list[dict], summary: dict) -> None:
    print("\n| lambda | test acc, mean (seeds) | val acc, mean (seeds) | |s| < 1e-2 max |\n|---|---|---|---|")
    for lam, row in summary["dense"].items():
        frac = " / ".join(f"{f:.1%}" for f in row["frac_below_1e-2_max"])
        print(f"| {lam} | {fmt(row['acc'])} | {fmt(row['val_acc'])} | {frac} |")
    print(
        "\n| method @ sparsity | eff. sparsity | test acc before FT | test acc after FT | val acc after FT "
        "| params | MACs (cut) | MACs (kernel-sparse) | physical share of MAC saving |\n" + "|---" * 9 + "|"
    )
    for key, row in summary["pruned"].items():
        print(
            f"| {key} | {row['sparsity_effective']:.3f} | {fmt(row['acc_before'])} | {fmt(row['acc'])} "
            f"| {fmt(row['val_acc'])} | {row['params']:,} | {row['macs']:,} | {row['macs_kernel_sparse']:,} "
            f"| {row['macs_saving_physical_share']:.2f} |"
        )
    print(json.dumps({k: v for k, v in summary.items() if k not in ("dense", "pruned")}, indent=2))


# --- main -----------------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    ap = _runs.make_parser(__doc__)
    ap.add_argument("--widths", type=int, nargs="+", default=[32, 32, 64, 64, 128, 128], help="conv widths")
    ap.add_argument("--subset", type=int, default=10_000, help="seeded class-balanced training subset; 0 = all")
    ap.add_argument("--val-size", type=int, default=5_000, help="training images held out for validation")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--ft-epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--ft-lr", type=float, default=0.01)
    ap.add_argument("--lams", type=float, nargs="+", default=[0.0, 5e-5, 2e-4], help="L1 weights; 0 is required")
    ap.add_argument("--sparsities", type=float, nargs="+", default=[0.9, 0.8, 0.95], help="run in this order")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--threads", type=int, default=2)
    _runs.add_run_args(ap, NAME)
    return ap.parse_args()


def jobs(args: argparse.Namespace) -> list[tuple]:
    """Every run in the order it is done: per seed the lambdas, then the first sparsity; then the other sparsities."""

    def prunes(sp: float, seed: int) -> list[tuple]:
        ss = [("prune", "ss", lam, sp, seed) for lam in args.lams if lam > 0]
        return ss + [("prune", m, 0.0, sp, seed) for m in METHODS[1:]]

    first = [j for s in args.seeds for j in [("dense", lam, s) for lam in args.lams] + prunes(args.sparsities[0], s)]
    return first + [j for sp in args.sparsities[1:] for s in args.seeds for j in prunes(sp, s)]


def main() -> None:
    args = parse_args()
    if args.summarize:
        _runs.summarize_file(args.summarize, summarize, print_table)
        return
    if 0.0 not in args.lams:
        raise SystemExit("--lams must include 0: the kernel-norm and random baselines prune the lambda = 0 net")
    partial, saved_args, runs = _runs.prepare(args, NAME, SAME_ON_RESUME)
    model_dir = args.out / "models"
    model_dir.mkdir(exist_ok=True)
    done = {run_key(r) for r in runs}
    if done:
        print(f"--resume: {len(done)} finished run(s) in {partial}")
    positions = conv_positions(args.widths)
    data_seed, data, nets = None, None, {}
    for job in jobs(args):
        if job in done:
            continue
        seed = job[-1]
        if data_seed != seed:
            data_seed, data = seed, load_data(args, seed)
        if job[0] == "dense":
            runs.append(dense_run(job[1], seed, data, args, model_dir / f"dense_lam{job[1]:g}_s{seed}.pt"))
        else:
            _, method, lam, sp, _ = job
            path = model_dir / f"dense_lam{lam:g}_s{seed}.pt"
            if (lam, seed) not in nets:
                nets[(lam, seed)] = load_dense(args.widths, path)
            dense_cost = next(r for r in runs if run_key(r) == ("dense", lam, seed))
            ctx = {"args": args, "data": data, "positions": positions, "dense_cost": dense_cost, "model_dir": model_dir}
            runs.append(prune_run(method, lam, sp, seed, nets[(lam, seed)], ctx))
        print(json.dumps({k: v for k, v in runs[-1].items() if k != "strengths"}), flush=True)
        _runs.save_partial(partial, saved_args, runs)

    summary = summarize(runs)
    _runs.save_result(args.out / f"{NAME}.json", saved_args, runs, summary)
    plot_strengths(runs, args.out / f"{NAME}_strengths.png")
    title = f"Synaptic Strength, VGG-6 CIFAR-10 {args.subset or 'all'} imgs, {args.epochs}+{args.ft_epochs} ep"
    plot_accuracy(summary, args.out / f"{NAME}.png", title)
    save_deploy(runs, summary, args)
    print_table(runs, summary)


if __name__ == "__main__":
    main()
