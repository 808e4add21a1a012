"""PU compression on MNIST, Fashion-MNIST as the unrelated part of the pool (Xu et al., arXiv 1909.09757).

    python benchmarks/pu_mnist.py --data-dir DIR                     # all four parts, 3 student seeds
    python benchmarks/pu_mnist.py --data-dir DIR --parts main        # the main table only
    python benchmarks/pu_mnist.py --out OUT --resume                 # continue a stopped run in OUT
    python benchmarks/pu_mnist.py --summarize OUT/pu_mnist.json      # recompute the verdicts, no training

DIR holds MNIST/ and FashionMNIST/ (or set $LEANVISION_DATA and omit --data-dir). A CPU-sized version of the
paper's setting:
teacher Conv32-Conv64-FC128 (BN, max-pool) trained on all 60,000 MNIST training images (Adam 1e-3, 2 epochs, batch
128). P = 120 MNIST training images per class (2%, class-balanced, seeded). U = 30,000 other MNIST training images
(class-balanced) + 30,000 Fashion-MNIST training images, so the true prior is 0.5 (--u-fashion sets another; the PU
net is always given the true prior u-digits / (u-digits + u-fashion)). PU net = a copy of the teacher's
conv stages, GAP of both (96-d), squeeze-excitation (reduction 4), FC -> 1 logit, nnPU (beta 0, gamma 1), Adam 1e-3,
2 epochs of batch 512 with a fixed number of positives per batch; U+ = {x in U : f(x) > 0}. Students
Conv16-Conv32-FC64, Adam 1e-3, batch 128, KD at tau 1 from the teacher's outputs only (no labels), every one
trained by the same rule until it converges: validation accuracy on --val-per-class held-out labelled MNIST images
(carved from the training images before U is drawn; the user's own held-back positives) is checked every
--check-every steps and training stops after --patience checks without improvement (at most --max-steps; with
--patience 0 every student trains exactly --max-steps steps, an equal budget, and keeps its best check); the
best-on-validation weights are tested. (a) P only; (b) P + all of U; (c) P + U+; (d) (c) with the robust
class-weighted KD (eps 0.1, 1 perturbation); (e) oracle, all of MNIST train; (f) P + as many random images of U
as U+ holds (drawn per student seed): what selection adds over fewer images; (g) P + as many random Fashion-MNIST
training images (a diagnostic beside the verdicts, main part only): what distilling on unrelated images gives.
Parts: main (the above), imbalanced (the MNIST part of U holds digits 0-4 only, as many Fashion-MNIST images,
prior still 0.5; students b-d and f; a and e do not depend on U and are shared), prior (PU selection with a
mis-specified prior, 0.6 and 1.4 times the true one: 0.3 and 0.7), upu (the unbiased PU risk without the
non-negative correction: its per-batch R_n from the PUStep records). Teacher, PU nets and the data split use seed
--data-seed; students use --seeds. Nothing is chosen on the test set: every setting is fixed above, the threshold
is the released f(x) > 0, the teacher and PU nets are taken after their last step and each student at its best
validation check. Test accuracy is on the 10,000 MNIST test images.
Verdicts (accuracies are means over the seeds, selection from the one PU run at the true prior): precision >= 0.90
and recall >= 0.95; acc(c) >= acc(a) + 1.0; acc(c) >= acc(f) + 1.0; acc(c) >= acc(b) - 0.3; acc(c) >= acc(e) - 0.5;
acc(d) >= acc(c) - 0.2; imbalanced: acc on digits 5-9 (d) >= (c) + 0.5. Reported: uPU's R_n goes below 0, and the
steps each student trained.
Writes JSON + PNG (test errors and selection quality; R_n per epoch) into --out; every finished run is saved at once
to pu_mnist.partial.json, the teacher's weights and the PU selections to OUT/models/ so --resume continues after any.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from pathlib import Path

import _runs
import torch
from torch import Tensor, nn

from leanvision.compress import (
    KDLoss,
    PULoader,
    PUNet,
    PUStep,
    fit_until_plateau,
    image_pool,
    precision_recall,
    pu_scores,
    select_positives,
    teacher_class_weights,
)
from leanvision.compress.distill import predict_logits
from leanvision.data import ImageDataset, load_dataset, make_loader
from leanvision.engine import fit, make_optimizer
from leanvision.report import bar_panels, line_panels

NAME = "pu_mnist"
PARTS = ("main", "imbalanced", "prior", "upu")
STUDENTS = {  # key -> (label, uses U)
    "a": ("a P only", False),
    "b": ("b P+U all", True),
    "c": ("c P+U+", True),
    "d": ("d P+U+ RKD", True),
    "e": ("e oracle MNIST", False),
    "f": ("f P+random |U+|", True),
    "g": ("g P+|U+| Fashion only", True),
}
DIAGNOSTIC = ("g",)  # reported beside the verdicts, not needed by them (and not run in the imbalanced pool)
JUDGED = [k for k in STUDENTS if k not in DIAGNOSTIC]  # the students the verdicts read
POOLS = ("balanced", "imbalanced")
MIS_PRIOR_FACTORS = (0.6, 1.4)  # the prior part's mis-specified priors, as multiples of the true one
TEACHER, STUDENT = (32, 64, 128), (16, 32, 64)  # conv1, conv2, fc widths
SAME_ON_RESUME = (
    "p_per_class",
    "u_digits",
    "u_fashion",
    "teacher_epochs",
    "pu_epochs",
    "pu_batch_size",
    "reduction",
    "val_per_class",
    "check_every",
    "patience",
    "max_steps",
    "batch_size",
    "lr",
    "data_seed",
)
RULES = {  # name -> (text, lhs student, rhs student, margin): lhs >= rhs + margin (means over seeds)
    "c_vs_a": ("acc(c) >= acc(a) + 1.0", "c", "a", 1.0),
    "c_vs_f": ("acc(c) >= acc(f) + 1.0", "c", "f", 1.0),
    "c_vs_b": ("acc(c) >= acc(b) - 0.3", "c", "b", -0.3),
    "c_vs_e": ("acc(c) >= acc(e) - 0.5", "c", "e", -0.5),
    "d_vs_c": ("acc(d) >= acc(c) - 0.2", "d", "c", -0.2),
}
MIN_PRECISION, MIN_RECALL, MIN_RKD_GAIN_59 = 0.90, 0.95, 0.5

# ------------------------------------------------------------------------------------------------------ models


def conv_stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True), nn.MaxPool2d(2)
    )


class SmallCNN(nn.Module):
    """Two conv-BN-ReLU-max-pool stages, FC-ReLU, FC: the teacher (32, 64, 128) and student (16, 32, 64)."""

    def __init__(self, widths: tuple[int, int, int], num_classes: int = 10) -> None:
        super().__init__()
        c1, c2, fc = widths
        self.features = nn.Sequential(conv_stage(1, c1), conv_stage(c1, c2))  # PUNet taps both stages
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(c2 * 7 * 7, fc), nn.ReLU(inplace=True), nn.Linear(fc, num_classes)
        )

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


# -------------------------------------------------------------------------------------------------------- data


def load_data(args: argparse.Namespace) -> dict[str, ImageDataset]:
    """P, the other MNIST training images (less the students' validation images), the validation images, all of
    MNIST train, Fashion-MNIST train and MNIST test."""
    held = {"root": args.data_dir, "val_size": 10 * args.p_per_class, "val_seed": args.data_seed}
    rest, val = load_dataset("mnist", split="train", **held).split_off(10 * args.val_per_class, seed=args.data_seed)
    return {
        "P": load_dataset("mnist", split="val", **held),
        "rest": rest,
        "val": val,
        "mnist": load_dataset("mnist", root=args.data_dir),
        "fashion": load_dataset("fashion_mnist", root=args.data_dir),
        "test": load_dataset("mnist", root=args.data_dir, split="test"),
    }


def digits_part(rest: ImageDataset, pool: str, n: int, seed: int) -> ImageDataset:
    """The MNIST part of U: a class-balanced n of ``rest``, or (imbalanced) up to n of its digits 0-4."""
    if pool == "balanced":
        return rest.subset(n, seed=seed)
    low = rest.targets < 5
    idx = torch.nonzero(low).flatten()
    idx = idx[torch.randperm(idx.numel(), generator=torch.Generator().manual_seed(seed))[:n]].sort().values
    meta = {"classes": rest.classes, "name": "mnist", "split": "train", "mean": rest.mean, "std": rest.std}
    return ImageDataset(rest.images[idx], rest.targets[idx], **meta)


def make_pool(data: dict[str, ImageDataset], pool: str, args: argparse.Namespace) -> tuple[ImageDataset, Tensor]:
    """U = digits + --u-fashion (default: as many) Fashion-MNIST images, normalised like P; and the is-digit truth."""
    digits = digits_part(data["rest"], pool, args.u_digits, args.data_seed)
    fashion = data["fashion"].subset(args.u_fashion or len(digits), seed=args.data_seed)
    # Fashion-MNIST goes in as a tensor so its labels (0-9, clothing) never pose as digit labels; they get -1.
    u = image_pool(digits, fashion.images, like=data["P"])
    return u, torch.arange(len(u)) < len(digits)


# ------------------------------------------------------------------------------------------------------ stages


def accuracy_on(model: nn.Module, test: ImageDataset) -> dict:
    """Test accuracy (%) overall, on digits 0-4 and 5-9, and per class."""
    pred = predict_logits(model, test).argmax(dim=1)
    hit = (pred == test.targets).double()
    high = test.targets >= 5
    per_class = [100 * hit[test.targets == k].mean().item() for k in range(10)]
    return {
        "acc": 100 * hit.mean().item(),
        "acc_0_4": 100 * hit[~high].mean().item(),
        "acc_5_9": 100 * hit[high].mean().item(),
        "acc_per_class": per_class,
    }


def train_teacher(data: dict[str, ImageDataset], args: argparse.Namespace) -> tuple[SmallCNN, dict]:
    torch.manual_seed(args.data_seed)
    teacher = SmallCNN(TEACHER)
    loader = make_loader(data["mnist"], batch_size=args.batch_size, shuffle=True, seed=args.data_seed)
    t0 = time.perf_counter()
    opt = make_optimizer(teacher, "adam", lr=args.lr)
    fit(teacher, loader, epochs=args.teacher_epochs, optimizer=opt, seed=args.data_seed, progress=False)
    record = {"kind": "teacher", "name": "teacher", "train_s": time.perf_counter() - t0}
    return teacher, {**record, **accuracy_on(teacher, data["test"])}


def true_prior(args: argparse.Namespace) -> float:
    """The share of digits in U that the PU net is told (the balanced pool's; 0.5 with the default sizes)."""
    return args.u_digits / (args.u_digits + (args.u_fashion or args.u_digits))


def pu_runs(parts: list[str], prior: float) -> list[tuple[str, str, float, bool]]:
    """(name, pool, prior, nonnegative) of the PU runs the parts need at the true ``prior``, in the order they run."""
    runs = []
    if "main" in parts or "prior" in parts or "upu" in parts:
        runs.append(("main", "balanced", prior, True))
    if "imbalanced" in parts:
        runs.append(("imbalanced", "imbalanced", prior, True))
    if "prior" in parts:
        runs += [(f"prior_{p}", "balanced", p, True) for p in (round(prior * f, 3) for f in MIS_PRIOR_FACTORS)]
    if "upu" in parts:
        runs.append(("upu", "balanced", prior, False))
    return runs


def train_pu(
    teacher: SmallCNN, positives: ImageDataset, u: ImageDataset, *, prior: float, nonnegative: bool, args
) -> tuple[Tensor, dict]:
    """Stage 1: the PU net on P vs U; returns the selected indices into U and the training records."""
    torch.manual_seed(args.data_seed)
    pu_net = PUNet(teacher, input_size=positives.input_size, reduction=args.reduction)
    step = PUStep(prior=prior, nonnegative=nonnegative)
    loader = PULoader(positives, u, batch_size=args.pu_batch_size, seed=args.data_seed)
    opt = torch.optim.Adam(pu_net.parameters(), lr=args.lr)
    t0 = time.perf_counter()
    fit(pu_net, loader, epochs=args.pu_epochs, train_step=step, optimizer=opt, seed=args.data_seed, progress=False)
    scores = pu_scores(pu_net, u)
    return select_positives(scores), {
        "train_s": time.perf_counter() - t0,
        "layers": pu_net.layer_names,
        "feature_chs": pu_net.feature_chs,
        "positives_per_batch": loader.sampler.positives_per_batch,
        "batches_per_epoch": len(loader),
        "negative_risk_by_epoch": [step.negative_risk_by_epoch[e] for e in range(args.pu_epochs)],
        "negative_risk_batches_by_epoch": [step.ascent_steps_by_epoch[e] for e in range(args.pu_epochs)],
    }


def selection_record(chosen: Tensor, u: ImageDataset, is_digit: Tensor) -> dict:
    """Precision/recall and the digits among the selected (for reporting; the method never sees labels)."""
    targets = u.targets[chosen]
    return {
        **precision_recall(chosen, is_digit),
        "pool_size": len(u),
        "true_prior": is_digit.double().mean().item(),
        "selected_fashion": int((~is_digit[chosen]).sum()),
        "selected_per_digit": [int((targets == k).sum()) for k in range(10)],
        "pool_per_digit": [int((u.targets == k).sum()) for k in range(10)],
    }


def student_set(key: str, data: dict[str, ImageDataset], u: ImageDataset | None, chosen: Tensor | None, seed: int):
    """The distillation set of student ``key`` (its labels are never read)."""
    if key == "a":
        return data["P"]
    if key == "e":
        return data["mnist"]
    if key == "b":
        return image_pool(data["P"], u.images)
    if key in ("f", "g"):  # as many images as the selection kept, drawn at random (per student seed) from U or
        # from all of Fashion-MNIST train (g: what distilling on unrelated images alone passes on)
        source = u.images if key == "f" else data["fashion"].images
        pick = torch.randperm(len(source), generator=torch.Generator().manual_seed(seed))[: len(chosen)].sort().values
        return image_pool(data["P"], source[pick])
    return image_pool(data["P"], u.images[chosen])


def train_student(key: str, train: ImageDataset, teacher: SmallCNN, test: ImageDataset, val, *, seed: int,
                  args) -> dict:  # fmt: skip
    """Stage 2: KD (robust for d) from the teacher's outputs until validation accuracy stops improving; tested with
    its best-on-validation weights."""
    vectors = teacher_class_weights(teacher, train, eps=0.1, num_perturb=1, seed=seed) if key == "d" else None
    torch.manual_seed(seed)
    student = SmallCNN(STUDENT)
    loader = make_loader(train, batch_size=args.batch_size, shuffle=True, seed=seed, drop_last=True)
    opt = make_optimizer(student, "adam", lr=args.lr)
    t0 = time.perf_counter()
    loss = KDLoss(teacher, weight_vectors=vectors)
    # --patience 0: more checks than the budget holds, so no student stops before --max-steps (equal steps)
    patience = args.patience or args.max_steps // args.check_every + 1
    run = fit_until_plateau(student, loader, val_data=val, optimizer=opt, loss_fn=loss, check_every=args.check_every,
                            patience=patience, max_steps=args.max_steps, seed=seed)  # fmt: skip
    return {
        "train_size": len(train),
        "weight_vectors": None if vectors is None else vectors.tolist(),
        "steps": run.steps,
        "best_step": run.best_step,
        "val_acc": 100 * run.best_val_acc,
        "stopped_early": run.stopped_early,
        "train_s": time.perf_counter() - t0,
        **accuracy_on(student, test),
    }


# ------------------------------------------------------------------------------------------------- the driver


class Runner:
    """Runs the stages in order, skipping the finished ones and saving each run (and its artifacts) at once."""

    def __init__(self, args: argparse.Namespace, runs: _runs.Runs) -> None:
        self.args, self.book = args, runs
        self.models = args.out / "models"
        self.models.mkdir(exist_ok=True)
        self.data = load_data(args)
        self.val = make_loader(self.data["val"], batch_size=1000, shuffle=False)
        self.pools: dict[str, tuple[ImageDataset, Tensor]] = {}

    def done(self, **key) -> bool:
        return any(all(r.get(k) == v for k, v in key.items()) for r in self.book.runs)

    def save(self, record: dict) -> None:
        self.book.add(record)

    def pool(self, name: str) -> tuple[ImageDataset, Tensor]:
        if name not in self.pools:
            self.pools[name] = make_pool(self.data, name, self.args)
        return self.pools[name]

    def artifact(self, name: str) -> Path:
        path = self.models / name
        if not path.is_file():
            raise SystemExit(f"--resume: {path} is missing but its run is recorded; start again with a new --out")
        return path

    def teacher(self) -> SmallCNN:
        if not self.done(kind="teacher"):
            teacher, record = train_teacher(self.data, self.args)
            torch.save(teacher.state_dict(), self.models / "teacher.pt")
            self.save(record)
            return teacher
        teacher = SmallCNN(TEACHER)
        teacher.load_state_dict(torch.load(self.artifact("teacher.pt"), weights_only=True))
        return teacher

    def selection(self, teacher: SmallCNN, name: str, pool: str, prior: float, nonnegative: bool) -> Tensor:
        if self.done(kind="pu", name=name):
            return torch.load(self.artifact(f"pu_{name}.pt"), weights_only=True)
        u, is_digit = self.pool(pool)
        chosen, record = train_pu(teacher, self.data["P"], u, prior=prior, nonnegative=nonnegative, args=self.args)
        torch.save(chosen, self.models / f"pu_{name}.pt")
        head = {"kind": "pu", "name": name, "pool": pool, "prior": prior, "nonnegative": nonnegative}
        self.save({**head, **selection_record(chosen, u, is_digit), **record})
        return chosen

    def students(self, teacher: SmallCNN, pool: str, keys: list[str], chosen: Tensor) -> None:
        u = self.pool(pool)[0]
        for seed, key in itertools.product(self.args.seeds, keys):
            where = pool if STUDENTS[key][1] else "none"
            if self.done(kind="student", model=key, pool=where, seed=seed):
                continue
            train = student_set(key, self.data, u, chosen, seed)
            record = train_student(key, train, teacher, self.data["test"], self.val, seed=seed, args=self.args)
            self.save({"kind": "student", "model": key, "pool": where, "seed": seed, **record})

    def run(self) -> None:
        teacher = self.teacher()
        chosen = {}
        for name, pool, prior, nonneg in pu_runs(self.args.parts, true_prior(self.args)):
            chosen[name] = self.selection(teacher, name, pool, prior, nonneg)
            if name == "main" and "main" in self.args.parts:
                self.students(teacher, "balanced", list(STUDENTS), chosen[name])
            if name == "imbalanced":
                self.students(teacher, "imbalanced", JUDGED, chosen[name])


# ----------------------------------------------------------------------------------------------- the verdicts


def _mean(values: list[float]) -> float:
    return round(statistics.mean(values), 6)


def student_table(runs: list[dict], pool: str) -> dict:
    """Per student: test accuracies per seed and their means, over the seeds every student of the pool finished (a
    diagnostic student is reported only where it finished all of them); a student that never ran is left out."""
    rows = {(r["model"], r["seed"]): r for r in runs if r["kind"] == "student" and r["pool"] in (pool, "none")}
    if not any(r["pool"] == pool for r in rows.values()):
        return {"complete_seeds": [], "students": {}}  # this run did not train the pool's part
    ran = {k for k, _ in rows}  # an older run of the benchmark may lack a student added since (f, g)
    seeds = sorted({s for (_, s) in rows if all((k, s) in rows for k in JUDGED if k in ran)})
    table = {}
    for key, (label, _) in STUDENTS.items():
        if key not in ran:
            continue
        per = [rows[(key, s)] for s in seeds] if all((key, s) in rows for s in seeds) else []
        table[key] = {"label": label, "train_size": per[0]["train_size"] if per else None}
        for metric in ("acc", "acc_5_9", "acc_0_4"):
            table[key][metric] = _mean([r[metric] for r in per]) if per else None
            table[key][f"{metric}_per_seed"] = [r[metric] for r in per]
    return {"complete_seeds": seeds, "students": table}


def check(rule: str, value: float, threshold: float) -> dict:
    margin = round(value - threshold, 6)  # rounded so float noise cannot flip an exact tie; any shortfall fails
    return {
        "rule": rule,
        "value": round(value, 6),
        "threshold": round(threshold, 6),
        "margin": margin,
        "pass": margin >= 0,
    }


def main_verdicts(pu: dict | None, table: dict) -> list[dict]:
    out = []
    if pu is not None:
        out.append(check(f"selection precision >= {MIN_PRECISION}", pu["precision"], MIN_PRECISION))
        out.append(check(f"selection recall >= {MIN_RECALL}", pu["recall"], MIN_RECALL))
    if table["complete_seeds"]:
        acc = {k: v["acc"] for k, v in table["students"].items()}
        for text, lhs, rhs, margin in RULES.values():
            if lhs not in acc or rhs not in acc:
                continue  # a rule on a student this run never trained
            out.append(check(text + " (means over seeds)", acc[lhs], round(acc[rhs] + margin, 6)))
    return out


def imbalanced_verdicts(table: dict) -> list[dict]:
    if not table["complete_seeds"]:
        return []
    c, d = table["students"]["c"]["acc_5_9"], table["students"]["d"]["acc_5_9"]
    text = f"digits 5-9: acc(d) >= acc(c) + {MIN_RKD_GAIN_59} (means over seeds)"
    return [check(text, d, round(c + MIN_RKD_GAIN_59, 6))]


def upu_report(pu: dict[str, dict]) -> dict | None:
    """uPU vs nnPU: per-epoch mean R_n and the batches with R_n < 0, from the PUStep records."""
    if "upu" not in pu:
        return None
    keys = ("negative_risk_by_epoch", "negative_risk_batches_by_epoch", "batches_per_epoch", "precision", "recall")
    report = {name: {k: pu[name][k] for k in keys} for name in ("main", "upu") if name in pu}
    upu = pu["upu"]
    report["R_n_below_0_under_uPU"] = sum(upu["negative_risk_batches_by_epoch"]) > 0
    report["R_n_epoch_mean_below_0_under_uPU"] = min(upu["negative_risk_by_epoch"]) < 0
    return report


def all_pass(verdicts: list[dict]) -> bool:
    return all(v["pass"] for v in verdicts)


def summarize(runs: list[dict]) -> dict:
    """Selection quality, student tables, the verdicts per part, the prior sweep and the uPU report."""
    pu = {r["name"]: r for r in runs if r["kind"] == "pu"}
    teacher = next((r for r in runs if r["kind"] == "teacher"), None)
    sel_keys = ("prior", "nonnegative", "selected", "precision", "recall", "selected_fashion", "true_prior")
    main_t, imb_t = student_table(runs, "balanced"), student_table(runs, "imbalanced")
    main_v, imb_v = main_verdicts(pu.get("main"), main_t), imbalanced_verdicts(imb_t)
    return {
        "teacher": None if teacher is None else {k: teacher[k] for k in ("acc", "acc_0_4", "acc_5_9")},
        "selection": {n: {k: r[k] for k in sel_keys} for n, r in pu.items()},
        "main": {**main_t, "verdicts": main_v, "pass": len(main_v) == 2 + len(RULES) and all_pass(main_v)},
        "imbalanced": {
            **imb_t,
            "selected_per_digit": pu["imbalanced"]["selected_per_digit"] if "imbalanced" in pu else None,
            "verdicts": imb_v,
            "pass": len(imb_v) == 1 and imb_v[0]["pass"],
        },
        "upu": upu_report(pu),
        "note": "pass needs every rule of the part met (a narrow miss is a miss); selection is one PU run (seed "
        "--data-seed), accuracies are means over the complete student seeds",
    }


# ----------------------------------------------------------------------------------------------- the reports


PU_COLUMNS = {
    "PU run": "name",
    "prior": "prior",
    "nnPU": "nonnegative",
    "selected": ("selected", ".0f"),
    "precision": ("precision", ".4f"),
    "recall": ("recall", ".4f"),
    "Fashion selected": "selected_fashion",
}
STUDENT_COLUMNS = {"pool": "pool", "student": lambda r: STUDENTS[r["model"]][0], "seed": "seed",
                   "train imgs": ("train_size", ","), "test acc": ("acc", ".2f"), "acc 0-4": ("acc_0_4", ".2f"),
                   "acc 5-9": ("acc_5_9", ".2f"), "steps": "steps", "best step": "best_step",
                   "train s": ("train_s", ".0f")}  # fmt: skip


def print_table(runs: list[dict], summary: dict) -> None:
    print(_runs.markdown([r for r in runs if r["kind"] == "pu"], PU_COLUMNS))
    _runs.run_table(STUDENT_COLUMNS)([r for r in runs if r["kind"] == "student"], summary)


def error_rows(summary: dict) -> list[dict]:
    """Bar rows: selection quality per PU run, student test errors (100 - acc: small gaps stay visible) per pool."""
    rows = [{"model": n, "precision": s["precision"], "recall": s["recall"]} for n, s in summary["selection"].items()]
    panels = (("main", "acc", "err_main"), ("imbalanced", "acc", "err_imb"), ("imbalanced", "acc_5_9", "err_59"))
    for part, metric, key in panels:
        for s in summary[part]["students"].values():
            if s[metric] is not None:
                spread = statistics.pstdev(s[f"{metric}_per_seed"])
                rows.append({"model": s["label"], key: round(100 - s[metric], 6), f"{key}_sd": spread})
    return rows


def risk_series(runs: list[dict]) -> dict[str, list[dict]]:
    """Per PU run on the balanced pool: mean R_n and batches with R_n < 0, per epoch (the PUStep records)."""
    series = {}
    for r in (r for r in runs if r["kind"] == "pu" and r["pool"] == "balanced"):
        name = f"{r['name']} ({'nnPU' if r['nonnegative'] else 'uPU'}, prior {r['prior']})"
        pairs = zip(r["negative_risk_by_epoch"], r["negative_risk_batches_by_epoch"], strict=True)
        series[name] = [{"epoch": e + 1, "R_n": v, "below_0": n} for e, (v, n) in enumerate(pairs)]
    return series


def plot(summary: dict, runs: list[dict], out: Path) -> None:
    metrics = [
        ("err_main", "MNIST test error (%), U balanced"),
        ("err_imb", "MNIST test error (%), U digits 0-4"),
        ("err_59", "error on digits 5-9 (%), U digits 0-4"),
        ("precision", "selection precision"),
        ("recall", "selection recall"),
    ]
    errors = {k: f"{k}_sd" for k in ("err_main", "err_imb", "err_59")}
    title = "PU compression, MNIST + Fashion-MNIST pool (bars: mean of student seeds, whiskers: seed spread)"
    bar_panels(error_rows(summary), metrics, out / f"{NAME}.png", title=title, errors=errors)
    risk = [("R_n", "mean R_n per epoch"), ("below_0", "batches with R_n < 0")]
    line_panels(risk_series(runs), risk, out / f"{NAME}_risk.png", title="negative-class risk R_n in PU training")


def parse_args() -> argparse.Namespace:
    ap = _runs.make_parser(__doc__, "root holding MNIST/ and FashionMNIST/ (else $LEANVISION_DATA)")
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    ap.add_argument("--p-per-class", type=int, default=120, help="P: labelled MNIST training images per class")
    ap.add_argument("--u-digits", type=int, default=30_000, help="MNIST images in U")
    ap.add_argument("--u-fashion", type=int, default=0, help="Fashion-MNIST images in U (0: as many as --u-digits)")
    ap.add_argument("--teacher-epochs", type=int, default=2)
    ap.add_argument("--pu-epochs", type=int, default=2)
    ap.add_argument("--pu-batch-size", type=int, default=512)
    ap.add_argument("--reduction", type=int, default=4, help="squeeze-excitation reduction of the PU head")
    ap.add_argument("--val-per-class", type=int, default=50, help="students' labelled validation images per class")
    ap.add_argument("--check-every", type=int, default=100, help="student steps between validation checks")
    ap.add_argument(
        "--patience",
        type=int,
        default=5,
        help="checks without improvement before a student stops; 0: none, every student trains --max-steps",
    )
    ap.add_argument("--max-steps", type=int, default=10_000, help="the most steps any student trains")
    ap.add_argument("--batch-size", type=int, default=128, help="teacher and student batch size")
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of every stage")
    ap.add_argument("--data-seed", type=int, default=0, help="P/U split, teacher and PU nets")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="student seeds")
    ap.add_argument("--threads", type=int, default=1)
    _runs.add_run_args(ap, NAME)
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    _runs.main(args, NAME, SAME_ON_RESUME, lambda runs: Runner(args, runs).run(), summarize, print_table,
               lambda runs, summary: plot(summary, runs, args.out))  # fmt: skip


if __name__ == "__main__":
    main()
