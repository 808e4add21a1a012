"""The augsearch report: losses and controller entropy per epoch, the op histogram over epochs, an image grid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from leanvision._io import atomic_write
from leanvision.augment.ops import OP_NAMES
from leanvision.report import Column, line_panels
from leanvision.report import write_report as write_table

GRID_IMAGES, GRID_COPIES = 8, 8


def _op_heatmap(history: list[dict[str, Any]], path: Path) -> Path | None:
    rows = [(h["epoch"], h["op_counts"]) for h in history if h.get("op_counts")]
    if not rows:
        return None
    import matplotlib.pyplot as plt  # leanvision.report has chosen the Agg backend

    counts = torch.tensor([c for _, c in rows], dtype=torch.float64)
    share = (counts / counts.sum(1, keepdim=True)).T.numpy()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(rows) + 2), 5))
    extent = (rows[0][0] - 0.5, rows[-1][0] + 0.5, len(OP_NAMES) - 0.5, -0.5)
    im = ax.imshow(share, aspect="auto", cmap="viridis", extent=extent)
    ax.set_yticks(range(len(OP_NAMES)), OP_NAMES, fontsize=8)
    ax.set_xlabel("epoch")
    fig.colorbar(im, ax=ax, label="share of the epoch's sampled ops")
    fig.suptitle("ops the controller sampled, per epoch")
    fig.tight_layout()
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    finally:
        plt.close(fig)
    return path


def image_grid(images: torch.Tensor, step: Any, path: Path, *, scale: int = 3) -> Path:
    """Each row: a training image, then ``GRID_COPIES - 1`` augmented copies (step's policies and Cutout), as PNG."""
    from PIL import Image
    from torchvision.utils import make_grid

    with torch.random.fork_rng(devices=[]):  # the report draws must not change a run's random stream
        torch.manual_seed(0)
        copies = [step.augment(images)[0] for _ in range((GRID_COPIES - 1 + step.copies - 1) // step.copies)]
    mean, std = step.mean, step.std
    aug = torch.cat([c.view(len(images), step.copies, *c.shape[1:]) for c in copies], 1)[:, : GRID_COPIES - 1]
    aug = ((aug * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)
    grid = make_grid(torch.cat([images[:, None], aug], 1).flatten(0, 1), nrow=GRID_COPIES, padding=2)
    pil = Image.fromarray(grid.permute(1, 2, 0).numpy())
    pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    return atomic_write(path, lambda f: pil.save(f, format="png"))


def write_report(cfg: Any, out: Path, step: Any, train_ds: Any, history: list[dict[str, Any]],
                 results: dict[str, Any]) -> Path:  # fmt: skip
    """report.html / report.md in ``out``: per-epoch table, loss and entropy curves, op heatmap, image grid."""
    series = {
        "train, augmented": [{"epoch": h["epoch"], "loss": h["train_loss"]} for h in history],
        "probe, clean (eval)": [{"epoch": h["epoch"], "loss": h.get("probe_clean_loss")} for h in history],
        "probe, augmented (eval)": [{"epoch": h["epoch"], "loss": h.get("probe_aug_loss")} for h in history],
        "controller": [{"epoch": h["epoch"], "entropy": h.get("controller_entropy")} for h in history],
    }
    panels = [("loss", "cross-entropy")]
    if step.controller is not None:
        panels.append(("entropy", "controller entropy (nats)"))
    figures = [line_panels(series, panels, out / "curves.png", title="augmented vs clean loss; controller entropy")]
    heat = _op_heatmap(history, out / "ops.png")
    figures += [heat] if heat else []
    images = train_ds.images[torch.linspace(0, len(train_ds) - 1, min(GRID_IMAGES, len(train_ds))).round().long()]
    if len(images):
        figures.append(image_grid(images, step, out / "grid.png"))

    def top_ops(counts: list[int] | None) -> str:
        if not counts:
            return "-"
        ranked = sorted(range(len(counts)), key=lambda i: -counts[i])[:3]
        return ", ".join(f"{OP_NAMES[i]} {counts[i]}" for i in ranked)

    rows = [{**h, "top_ops": top_ops(h.get("op_counts"))} for h in history]
    f3 = lambda v: f"{v:.3f}"  # noqa: E731
    columns = [Column("epoch", "epoch"), Column("train_loss", "train loss (augmented)", f3),
               Column("probe_clean_loss", "clean loss", f3), Column("probe_aug_loss", "augmented loss", f3),
               Column("controller_entropy", "entropy", f3), Column("val_acc", "val acc %", lambda v: f"{100 * v:.2f}"),
               Column("top_ops", "most sampled ops"),
               Column("epoch_time_s", "epoch s", lambda v: f"{v:.1f}")]  # fmt: skip
    test = results.get("test_acc")
    intro = (f"Adversarial AutoAugment (arXiv 1912.11188): {cfg.model} on {cfg.dataset}, controller {cfg.controller}, "
             f"M = {cfg.copies} copies per image, {cfg.sub_policies} sub-policies of 2 ops, Cutout {cfg.cutout} px"
             + (f"; test acc {100 * test:.2f}% ({results.get('weights')})." if test is not None else "."))  # fmt: skip
    notes = ["clean / augmented loss: the probe images in eval mode, without and under the epoch's policies.",
             "grid: each row a training image, then copies under the final policies (and Cutout)."]  # fmt: skip
    if step.controller is not None and step.actions is not None:
        subs = [sub for p in step.controller.policies(step.actions) for sub in p.sub_policies]
        notes.append("learned sub-policies (op, level): " + "; ".join(
            " + ".join(f"{op} {lv}" for op, _, lv in sub) for sub in subs))  # fmt: skip
    html, _ = write_table(out, title=f"leanvision augsearch: {cfg.model} on {cfg.dataset}", rows=rows,
                          columns=columns, figures=figures, notes=notes, intro=intro)  # fmt: skip
    return html
