"""Why Adversarial AutoAugment (arXiv 1912.11188) does or does not beat random batch augmentation: the diagnosis.

    python benchmarks/aaa_diagnose.py --result benchmarks/results/aaa_cifar/aaa_cifar.partial.json --seed 0

For one seed of benchmarks/aaa_cifar.py whose AAA run folder (OUT/runs/aaa_s<seed>: best.pt, last.pt,
metrics.jsonl) is still there:
  1. what the controller samples: each epoch's share of every op among the M policies' ops (M x 10 ops: noisy), the
     top op, and the trained controller's op shares, mean level per op and level histogram over 4,000 policies.
  2. hardness against accuracy across the rows of that seed: each row's augmented training loss (mean over the
     second half of the epochs) beside its test accuracy, with their Spearman correlation; single-copy rows and
     M-copy rows apart, because M copies change both.
  3. BatchNorm statistics: are the hard policies' statistics what costs accuracy? best.pt and last.pt evaluated
     as trained, and with every BatchNorm's statistics re-estimated (one pass over the training images, equal
     weights) on crop + flip alone, on M uniform random policies + Cutout (random batch augmentation's inputs)
     and on the final AAA policies + Cutout. Validation and test accuracy of each.
Writes OUT/aaa_diagnose_s<seed>.json (OUT: the folder of --result).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import _runs
import torch
from scipy.stats import spearmanr

from leanvision.augment.adversarial import PolicyController
from leanvision.augment.ops import OP_NAMES, cutout
from leanvision.augment.policy import augment_copies
from leanvision.augment.workflow import AugSearchConfig
from leanvision.data import make_loader, normalize
from leanvision.engine import evaluate, model_from_checkpoint
from leanvision.engine.training import _datasets
from leanvision.report import line_panels
from leanvision.search.oneshot import recalibrate_bn

BN_SOURCES = ("crop_flip", "uniform_policies", "final_aaa_policies")


def op_shares(history: list[dict]) -> list[dict]:
    """Per epoch: the share of each op among the sampled policies' ops, and the most sampled one."""
    rows = []
    for h in history:
        counts = torch.tensor(h["op_counts"], dtype=torch.float64)
        share = dict(zip(OP_NAMES, (counts / counts.sum()).tolist(), strict=True))
        rows.append({"epoch": h["epoch"], "top_op": OP_NAMES[int(counts.argmax())], "share": share})
    return rows


def final_controller(controller: PolicyController, n: int = 4000) -> dict:
    """The trained controller's op shares, mean level per op and level histogram over ``n`` sampled policies."""
    torch.manual_seed(0)
    with torch.no_grad():
        actions, _, entropy = controller(n)
    ops, levels = actions[:, 0::2].flatten(), actions[:, 1::2].flatten()
    share = torch.bincount(ops, minlength=len(OP_NAMES)).double() / ops.numel()
    order = share.argsort(descending=True).tolist()
    return {
        "policies_sampled": n,
        "entropy": entropy.mean().item(),
        "op_share": {OP_NAMES[i]: share[i].item() for i in order},
        "mean_level": {OP_NAMES[i]: levels[ops == i].double().mean().item() for i in order if share[i] > 0},
        "level_share": (torch.bincount(levels, minlength=10).double() / levels.numel()).tolist(),
    }


def hardness(runs: list[dict], seed: int) -> dict:
    """Augmented training loss (2nd half) vs test accuracy across one seed's rows."""
    rows = [r for r in runs if r["seed"] == seed and r.get("aug_loss_late") is not None]
    out = {"rows": {r["row"]: {"aug_loss_late": r["aug_loss_late"], "test_acc": r["test_acc"], "copies": r["copies"]}
                    for r in rows}}  # fmt: skip
    single = [r for r in rows if r["copies"] == 1]
    if len(single) >= 3:
        rho = spearmanr([r["aug_loss_late"] for r in single], [r["test_acc"] for r in single]).statistic
        out["spearman_single_copy_rows"] = float(rho)
    return out


def plot(shares: list[dict], runs: list[dict], seed: int, path: Path) -> None:
    """SamplePairing's share, augmented training loss (AAA vs random) and entropy per epoch."""
    by = {r["row"]: r for r in runs if r["seed"] == seed}
    series = {}
    for row in ("aaa", "random_ba"):
        if row in by:
            losses, entropy = by[row]["aug_loss_by_epoch"], by[row]["entropy_by_epoch"]
            series[row] = [
                {"epoch": i + 1, "aug_loss": a, "entropy": e}
                for i, (a, e) in enumerate(zip(losses, entropy, strict=True))
            ]
    for rec, share in zip(series.get("aaa", []), shares, strict=False):
        rec["sample_pairing"] = share["share"]["SamplePairing"]
    line_panels(
        series,
        [
            ("sample_pairing", "share of ops: SamplePairing"),
            ("aug_loss", "augmented train loss"),
            ("entropy", "controller entropy"),
        ],
        path,
        title=f"AAA vs random batch augmentation, seed {seed}",
    )


def bn_batches(source: str, train_ds, cfg: AugSearchConfig, final: list, seed: int = 1) -> Iterator[torch.Tensor]:
    """Normalised training batches as one of BN_SOURCES sees them (a fixed seed: every source sees the same images)."""
    mean, std = train_ds.mean_std_tensors()
    uniform = PolicyController(sub_policies=cfg.sub_policies, hidden=cfg.hidden)  # zero heads: uniform sampling
    torch.manual_seed(seed)
    for x, _ in make_loader(train_ds, batch_size=cfg.batch_size, shuffle=True, seed=seed, normalized=False):
        if source != "crop_flip":
            policies = final if source == "final_aaa_policies" else uniform.policies(uniform(cfg.copies)[0])
            x, _ = augment_copies(x, policies)
            x = cutout(x, cfg.cutout, torch.rand(x.shape[0], 2))
        yield normalize(x, mean, std)


def bn_check(folder: Path, cfg: AugSearchConfig, final: list) -> dict:
    """Val and test accuracy of best.pt and last.pt as trained and with BN statistics re-estimated per source."""
    train_ds, val, test = _datasets(cfg)
    out = {}
    for weights in ("best", "last"):
        for source in ("as_trained", *BN_SOURCES):
            model, state = model_from_checkpoint(folder / f"{weights}.pt")
            epoch = state["epoch"]
            if source != "as_trained":
                recalibrate_bn(model, bn_batches(source, train_ds, cfg, final))
            acc = {split: 100 * evaluate(model, make_loader(ds, batch_size=256, shuffle=False))["acc"]
                   for split, ds in (("val_acc", val), ("test_acc", test))}  # fmt: skip
            out[f"{weights}/{source}"] = {"epoch": epoch, **acc}
            print(weights, source, out[f"{weights}/{source}"], flush=True)
    return out


def main() -> None:
    ap = _runs.make_parser(__doc__)
    ap.add_argument("--result", type=Path, required=True, help="aaa_cifar.json or aaa_cifar.partial.json")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    folder = args.result.parent / "runs" / f"aaa_s{args.seed}"
    if not (folder / "last.pt").is_file():
        raise SystemExit(f"{folder}/last.pt not found: the AAA run of seed {args.seed} is needed (rerun its row)")
    runs = json.loads(args.result.read_text())["runs"]
    history = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    ckpt = torch.load(folder / "last.pt", map_location="cpu", weights_only=False)
    cfg = AugSearchConfig(**{**ckpt["config"], "data_dir": args.data_dir or ckpt["config"]["data_dir"]})
    controller = PolicyController(sub_policies=cfg.sub_policies, hidden=cfg.hidden)
    controller.load_state_dict(ckpt["train_step"]["controller"])
    shares = op_shares(history)
    plot(shares, runs, args.seed, args.result.parent / f"aaa_diagnose_s{args.seed}.png")
    result = {
        "command": f"python benchmarks/aaa_diagnose.py --result {args.result} --seed {args.seed}",
        "op_shares_sampled_per_epoch": shares,
        "final_controller": final_controller(controller),
        "hardness": hardness(runs, args.seed),
        "bn": bn_check(folder, cfg, controller.policies(ckpt["train_step"]["actions"])),
    }
    _runs.write_json(args.result.parent / f"aaa_diagnose_s{args.seed}.json", result)


if __name__ == "__main__":
    main()
