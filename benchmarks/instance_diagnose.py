"""Why instance-wise pruning (arXiv 1907.11840) does or does not beat its static control: the verdict run's diagnosis.

    python benchmarks/instance_diagnose.py --result benchmarks/results/instance_sparsity_vgg/instance_sparsity.json
    python benchmarks/instance_diagnose.py --result ... --ft-without-decay   # + fine-tuning without the decay

For every seed that benchmarks/instance_sparsity.py fine-tuned (B at the lambda chosen on validation, its theta and
CV-selected layers; --result may be its .partial.json):
  1. before fine-tuning: B's instance-wise validation accuracy at that theta and its mean MACs per image, beside
     the static control built the same way as in the verdict run (the same channel ranking, the kept share
     bisected to those mean MACs), on the same validation images. Is gating itself better than one fixed choice?
  2. how dynamic the gating is, per selected layer on the ranking's 2,000 validation images: channels kept per
     image (mean and std), channels that every image keeps, that none keeps, that some keep, and the mean Jaccard
     overlap of an image's kept set with the static control's (1 = static pruning).
  3. --ft-without-decay: B fine-tuned as the verdict run fine-tunes it (theta, epochs, learning rate, seed, the
     pruning active) but with lambda = 0, as the static control is fine-tuned. Is the decay kept during
     fine-tuning what costs the instance-wise net its lead? Its stage resumes in OUT/stages/. It drops fewer
     channels at that theta, so it is also tested at the theta (0.05 steps up, chosen on validation) that brings
     its mean MACs to the static control's.
Writes OUT/instance_diagnose.json (OUT: --out, default the folder of --result); a run without
--ft-without-decay keeps the fine-tunings an earlier run saved there.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import _runs
import torch
from instance_sparsity import load_data, load_trained, pruned_eval, ranking_batches, stage, static_control

from leanvision._io import atomic_write_text
from leanvision.compress import static_masks
from leanvision.compress.instance import InstanceSparsity
from leanvision.engine import evaluate


def gating(sp: InstanceSparsity, batches: list, static_keep: dict[str, torch.Tensor]) -> dict:
    """Per layer: kept channels per image, always / never / sometimes kept, Jaccard with the static kept set."""
    kept = [sp.masks(x) for x, _ in batches]
    out = {}
    for name, fixed in static_keep.items():
        k = torch.cat([m[name] for m in kept]).float()  # (images, channels)
        share = k.mean(0)
        inter, union = (k * fixed).sum(1), ((k + fixed) > 0).float().sum(1)
        out[name] = {
            "channels": k.shape[1],
            "kept_mean": k.sum(1).mean().item(),
            "kept_std": k.sum(1).std().item(),
            "always": int((share == 1).sum()),
            "never": int((share == 0).sum()),
            "sometimes": int(((share > 0) & (share < 1)).sum()),
            "static_kept": int(fixed.sum()),
            "jaccard_with_static": (inter / union).mean().item(),
        }
    return out


def before_ft(model: torch.nn.Module, ft: dict, rule: str, data: dict) -> dict:
    """Instance-wise vs static at equal mean MACs on validation, B as trained (no fine-tuning), and the gating."""
    sp = InstanceSparsity(model, ft["layers"], theta=ft["theta"], rule=rule)
    acc, macs = pruned_eval(sp, data["val"])
    match = static_control(model, data["val"], ft["layers"], macs.mean)
    static_acc = 100 * evaluate(match.model.eval(), data["val"])["acc"]
    batches = ranking_batches(data["val"])
    fixed = {n: m[0].float() for n, m in static_masks(model, batches, ft["layers"], keep=match.width).items()}
    return {"instance_val_acc": acc, "instance_mean_macs": macs.mean, "layers_reduction": macs.layers_reduction,
            "static_val_acc": static_acc, "static_keep": match.width, "static_macs": match.cost,
            "instance_minus_static": acc - static_acc, "gating": gating(sp, batches, fixed)}  # fmt: skip


def ft_without_decay(model: torch.nn.Module, ft: dict, rule: str, data: dict, saved: dict, out: Path) -> dict:
    """B fine-tuned with the pruning active at the verdict run's theta, lambda 0 (the static control's objective)."""
    sp = InstanceSparsity(model, ft["layers"], theta=ft["theta"], rule=rule)
    torch.manual_seed(ft["seed"])
    stage(model, data["train"], sp.train_step(0.0, prune=True), epochs=int(saved["ft_epochs"]),
          lr=float(saved["ft_lr"]), seed=ft["seed"], out=out)  # fmt: skip
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    acc, macs = pruned_eval(sp, data["test"])
    val_acc, val_macs = pruned_eval(sp, data["val"])
    at_static = at_static_macs(sp, ft, data, val_acc, val_macs.mean)
    sp.theta = ft["theta"]
    return {"at_static_macs": at_static, "test_acc": acc, "layers_reduction": macs.layers_reduction,
            "reduction": macs.reduction, "mean_macs": macs.mean, "val_acc": val_acc, "val_mean_macs": val_macs.mean,
            "acc_unpruned": 100 * evaluate(model, data["test"])["acc"],
            "ft_s": sum(e["epoch_time_s"] for e in epochs),
            "verdict_run": {"test_acc": ft["test"]["acc"], "layers_reduction": ft["test"]["layers_reduction"],
                            "mean_macs": ft["test"]["mean"], "static_acc": ft["static"]["acc"],
                            "static_macs": ft["static"]["macs"]}}  # fmt: skip


def at_static_macs(sp: InstanceSparsity, ft: dict, data: dict, val_acc: float, val_macs: float) -> dict:
    """Raise theta in 0.05 steps until the validation mean MACs reach the static control's; test there.

    Without the decay the fine-tuned net drops fewer channels at the verdict run's theta, so it is compared with
    the static control at equal cost; theta is chosen on validation, never on test.
    """
    target, theta, sweep = ft["static"]["macs"], ft["theta"], [(ft["theta"], val_acc, val_macs)]
    while val_macs > target and theta < ft["theta"] + 1.0:
        theta = sp.theta = round(theta + 0.05, 2)
        val_acc, macs = pruned_eval(sp, data["val"])
        val_macs = macs.mean
        sweep.append((theta, val_acc, val_macs))
    acc, macs = pruned_eval(sp, data["test"])
    return {"theta": theta, "val_acc": val_acc, "val_mean_macs": val_macs, "test_acc": acc, "mean_macs": macs.mean,
            "layers_reduction": macs.layers_reduction, "minus_static": acc - ft["static"]["acc"],
            "static_macs": target, "reached": val_macs <= target,
            "val_sweep": [{"theta": t, "val_acc": a, "val_mean_macs": m} for t, a, m in sweep]}  # fmt: skip


def main() -> None:
    ap = _runs.make_parser(__doc__)
    ap.add_argument("--result", type=Path, required=True, help="instance_sparsity.py's JSON (or .partial.json)")
    ap.add_argument("--ft-without-decay", action="store_true", help="also fine-tune B with lambda 0 (3.)")
    ap.add_argument("--out", type=Path, default=None, help="default: the folder of --result")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if not args.result.is_file():
        raise SystemExit(f"--result {args.result}: no such file; run benchmarks/instance_sparsity.py first")
    torch.set_num_threads(args.threads)
    out = args.out or args.result.parent
    data = json.loads(args.result.read_text())
    saved, runs = data["args"], data["runs"]
    fts = [r for r in runs if r.get("kind") == "ft"]
    if not fts:
        raise SystemExit(f"{args.result} holds no fine-tuned run yet; instance_sparsity.py fine-tunes after training")
    split = argparse.Namespace(data_dir=args.data_dir, val_size=int(saved["val_size"]), subset=int(saved["subset"]),
                               test_subset=int(saved["test_subset"]))  # fmt: skip
    baseline = None if saved.get("baseline") in (None, "None") else saved["baseline"]
    report = {"result": str(args.result), "rule": saved["rule"], "seeds": {}}
    for ft in fts:
        seed, lam = ft["seed"], ft["lam"]
        b = next(r for r in runs if r.get("kind") != "ft" and (r["lam"], r["seed"]) == (lam, seed))
        weights = args.result.parent / b["weights"]
        d = load_data(split, seed)
        rec = {"lam": lam, "theta": ft["theta"], "layers": ft["layers"],
               "before_ft": before_ft(load_trained(baseline, weights).eval(), ft, saved["rule"], d)}  # fmt: skip
        print(f"seed {seed}, before fine-tuning: instance {rec['before_ft']['instance_val_acc']:.2f} vs static "
              f"{rec['before_ft']['static_val_acc']:.2f} (val, equal mean MACs)", flush=True)  # fmt: skip
        if args.ft_without_decay:
            stages = out / "stages" / f"Bft_nodecay_lam{lam:g}_seed{seed}"
            rec["ft_without_decay"] = r = ft_without_decay(
                load_trained(baseline, weights), ft, saved["rule"], d, saved, stages
            )
            print(f"seed {seed}, fine-tuned without the decay: test {r['test_acc']:.2f} at "
                  f"{r['layers_reduction']:.1%} of the selected layers' MACs (verdict run: "
                  f"{r['verdict_run']['test_acc']:.2f} at {r['verdict_run']['layers_reduction']:.1%}, static "
                  f"{r['verdict_run']['static_acc']:.2f}); at the static control's MACs (theta "
                  f"{r['at_static_macs']['theta']:g}, chosen on val): test {r['at_static_macs']['test_acc']:.2f}, "
                  f"{r['at_static_macs']['minus_static']:+.2f} vs static", flush=True)  # fmt: skip
        report["seeds"][str(seed)] = rec
    path = out / "instance_diagnose.json"
    if path.is_file():  # a run without --ft-without-decay keeps the fine-tunings an earlier run saved
        earlier = json.loads(path.read_text())["seeds"]
        for seed, rec in report["seeds"].items():
            if "ft_without_decay" not in rec and "ft_without_decay" in earlier.get(seed, {}):
                rec["ft_without_decay"] = earlier[seed]["ft_without_decay"]
    gaps = [s["before_ft"]["instance_minus_static"] for s in report["seeds"].values()]
    report["mean_instance_minus_static_before_ft"] = statistics.mean(gaps)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
