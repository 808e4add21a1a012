"""Full-stack filters on CIFAR-10 (arXiv 1908.02023): accuracy and measured storage vs dense VGG-8, two seeds.

    python benchmarks/fsf_cifar.py --data-dir DIR                        # 45k train / 5k val, 15 epochs, 2 seeds
    python benchmarks/fsf_cifar.py --data-dir DIR --seeds 0 1 2 --resume # add a 3rd seed to a finished run
    python benchmarks/fsf_cifar.py --out OUT --resume                    # continue a stopped run in OUT (mid-run too)
    python benchmarks/fsf_cifar.py --summarize OUT/fsf_cifar.json        # recompute the verdicts, no training

DIR holds cifar10/ (or set $LEANVISION_DATA and omit --data-dir). Models (all VGG-8: 32-32-M-64-64-M-128-128-M-256-M,
BN, GAP, linear): A dense; B full-stack filters s=4, per-filter masks, + lambda * orthogonality loss; C thin dense
(width 0.5, about B's float-parameter budget); D as B with the masks frozen at their random initial signs, no
orthogonality loss: the control that says whether learning the masks matters. Every conv starts by one rule
(leanvision.ops.init_convs). --val-size training images are held out (the same for every run) and reported beside
test accuracy (per epoch in OUT/runs/<run>/metrics.jsonl); no choice is made on the test split (every model is
evaluated after its last epoch).

Verdicts: storage(B) / storage(A) within 10% of 1/s + 1/32 (file sizes of the saved models: B in the 1-bit FSF
format, A as a float32 state_dict); mean acc(B) >= mean acc(C); mean acc(A) - acc(B) <= 1.5 points;
mean acc(B) >= mean acc(D) + 1.0 (learned masks beat random ones); B's orthogonality loss lower after training than
at initialisation in every seed. Where B-D or B-C is under 1 point with fewer than 3 seeds the summary says so.
Writes JSON + PNG into --out; every finished (model, seed) run is saved at once to fsf_cifar.partial.json, and
fit's checkpoints in OUT/runs/ let --resume continue a run stopped mid-way.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

import _runs
import torch

from leanvision.data import make_loader
from leanvision.engine import evaluate, fit, make_optimizer, make_scheduler
from leanvision.models import create_model
from leanvision.ops import FSFStep, freeze_masks, ortho_loss, save_fsf, storage_report

RATIO = 4
# key -> (registered model, builder kwargs, FSF?, frozen masks?, orthogonality loss?)
MODELS = {
    "A_dense": ("vgg8_cifar", {}, False, False, False),
    "B_fsf": ("fsf_vgg8_cifar", {"ratio": RATIO}, True, False, True),
    "C_thin": ("vgg8_cifar", {"width": 0.5}, False, False, False),
    "D_fsf_random": ("fsf_vgg8_cifar", {"ratio": RATIO}, True, True, False),
}
STORAGE_TOL = 0.10  # relative, on the ratio storage(B) / storage(A) vs 1/s + 1/32 (BN and the classifier add a bit)
MAX_GAP_A = 1.5
D_MARGIN = 1.0  # learned masks over random masks, points
# Arguments that change what a run measures: a resumed run must use the same values.
SAME_ON_RESUME = ("subset", "val_size", "epochs", "ortho_weight", "optimizer", "lr", "batch_size", "test_subset")


def _ortho(model: torch.nn.Module) -> float:
    with torch.no_grad():
        return ortho_loss(model).item()


def train_one(key: str, data: dict, runs: _runs.Runs, args: argparse.Namespace, *, seed: int, model_dir: Path) -> dict:
    name, kw, fsf, frozen, ortho = MODELS[key]
    torch.manual_seed(seed)
    model = create_model(name, num_classes=10, **kw)
    if frozen:
        freeze_masks(model)
    loader = make_loader(data["train"], batch_size=args.batch_size, shuffle=True, seed=seed)  # crop + flip
    # make_optimizer keeps weight decay off the mask proxies (MaskConv2d.no_weight_decay) with either optimizer.
    wd = 0.0 if args.optimizer == "adam" else 5e-4
    opt = make_optimizer(model, args.optimizer, lr=args.lr, weight_decay=wd)
    sched = make_scheduler(opt, "cosine", total_steps=args.epochs * len(loader))
    step = FSFStep(ortho_weight=args.ortho_weight if ortho else 0.0)
    ortho_init = _ortho(model) if fsf else None
    out, last = runs.fit_dir(f"{key}_s{seed}")  # fit loads a resumed run's weights: ortho_init is the fresh model's
    res = fit(model, loader, epochs=args.epochs, optimizer=opt, scheduler=sched, train_step=step, seed=seed,
              val_data=make_loader(data["val"], batch_size=500, shuffle=False), out_dir=out, resume=last,
              progress=not args.quiet)  # fmt: skip
    train_s = sum(h["epoch_time_s"] for h in res.history)
    evals = {
        split: evaluate(model, make_loader(data[split], batch_size=500, shuffle=False)) for split in ("val", "test")
    }
    # Storage measured from the files: FSF models in the 1-bit format, dense ones as a float32 state_dict.
    path = model_dir / f"{key}_s{seed}.{'fsf' if fsf else 'pt'}"
    if fsf:
        save_fsf(model, path)
    else:
        torch.save({k: v.float() if v.is_floating_point() else v for k, v in model.state_dict().items()}, path)
    report = storage_report(model)
    return {
        "model": key,
        "seed": seed,
        "test_acc": 100 * evals["test"]["acc"],
        "val_acc": 100 * evals["val"]["acc"],
        "file_bytes": os.path.getsize(path),
        "model_bytes": report.bytes,  # the memory model (payload without the container)
        "float_values": report.float_values,
        "mask_bits": report.mask_bits,
        "ortho_init": ortho_init,
        "ortho_final": _ortho(model) if fsf else None,
        "ortho_by_epoch": [step.ortho_by_epoch[e] for e in sorted(step.ortho_by_epoch)],
        "train_s": train_s,
    }


def summarize(runs: list[dict]) -> dict:
    """The verdicts from a list of runs; only seeds with all four models count."""
    by, seeds, missing = _runs.complete_seeds(runs, MODELS)
    if not seeds:
        return {"complete_seeds": [], "missing": missing, "pass": False}
    acc = {k: statistics.mean(by[(k, s)]["test_acc"] for s in seeds) for k in MODELS}
    storage = {k: statistics.mean(by[(k, s)]["file_bytes"] for s in seeds) for k in MODELS}
    expected = 1 / RATIO + 1 / 32
    ratio = storage["B_fsf"] / storage["A_dense"]
    checks = {
        "storage_B_over_A_near_1/s+1/32": abs(ratio / expected - 1) <= STORAGE_TOL,
        "acc_B_ge_C": round(acc["B_fsf"] - acc["C_thin"], 6) >= 0,
        "acc_A_minus_B_le_1_5": round(acc["A_dense"] - acc["B_fsf"], 6) <= MAX_GAP_A,
        "acc_B_ge_D_plus_1": round(acc["B_fsf"] - acc["D_fsf_random"], 6) >= D_MARGIN,
        "ortho_B_decreases_every_seed": all(
            by[("B_fsf", s)]["ortho_final"] < by[("B_fsf", s)]["ortho_init"] for s in seeds
        ),
    }
    return {
        "complete_seeds": seeds,
        "missing": missing,
        "test_acc_mean": acc,
        "test_acc_per_seed": {k: [by[(k, s)]["test_acc"] for s in seeds] for k in MODELS},
        "val_acc_mean": {k: statistics.mean(by[(k, s)]["val_acc"] for s in seeds) for k in MODELS},
        "file_bytes": storage,
        "storage_ratio_B_over_A": ratio,
        "storage_ratio_expected": expected,
        "float_values": {k: by[(k, seeds[0])]["float_values"] for k in MODELS},
        "checks": checks,
        "third_seed_advised": sorted(
            k
            for k, v in {"B vs D": acc["B_fsf"] - acc["D_fsf_random"], "B vs C": acc["B_fsf"] - acc["C_thin"]}.items()
            if abs(v) < 1.0
        )
        if len(seeds) < 3
        else [],
        "pass": all(checks.values()) and not missing and len(seeds) >= 2,
    }


COLUMNS = {
    "model": "model",
    "seed": "seed",
    "test acc (%)": ("test_acc", ".2f"),
    "val acc (%)": ("val_acc", ".2f"),
    "file bytes": ("file_bytes", ","),
    "float values": ("float_values", ","),
    "L_orth init -> final": lambda r: (
        "-" if r["ortho_init"] is None else f"{r['ortho_init']:.4f} -> {r['ortho_final']:.4f}"
    ),
    "train s": ("train_s", ".0f"),
}

print_table = _runs.run_table(COLUMNS)


def parse_args() -> argparse.Namespace:
    ap = _runs.make_parser(__doc__)
    _runs.add_protocol_args(ap)
    ap.add_argument("--ortho-weight", type=float, default=0.05, help="lambda of B's orthogonality loss")
    ap.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    ap.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (cosine schedule)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    _runs.add_run_args(ap, "fsf_cifar")
    return ap.parse_args()


def main() -> None:
    args = parse_args()

    def run(runs: _runs.Runs) -> None:
        model_dir = args.out / "models"
        model_dir.mkdir(exist_ok=True)
        done = {(r["model"], r["seed"]) for r in runs.runs}
        data: dict = {}
        for seed in args.seeds:
            todo = [k for k in MODELS if (k, seed) not in done]
            if not todo:
                continue
            _runs.protocol_data(args, seed, data)
            for key in todo:
                runs.add(train_one(key, data, runs, args, seed=seed, model_dir=model_dir))
        runs.runs = _runs.in_order(runs.runs, sorted({r["seed"] for r in runs.runs}), MODELS)

    def plot(runs: list[dict], summary: dict) -> None:
        _runs.plot_runs(
            [{**r, "file_mb": r["file_bytes"] / 1e6} for r in runs],
            [
                ("test_acc", "CIFAR-10 test acc (%)"),
                ("file_mb", "stored size (MB, on disk)"),
                ("float_values", "float values stored"),
                ("train_s", "train time (s)"),
            ],
            args.out / "fsf_cifar.png",
            f"VGG-8: dense / FSF s={RATIO} / thin / FSF random masks, {args.subset or 'all'} imgs x {args.epochs} ep",
        )

    _runs.main(args, "fsf_cifar", SAME_ON_RESUME, run, summarize, print_table, plot)


if __name__ == "__main__":
    main()
