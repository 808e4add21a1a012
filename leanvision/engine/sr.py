"""Super-resolution on the engine: an L1 train step for ``fit``, the standard Y-PSNR/SSIM table, tiled upscaling.

``train_sr`` trains any SR model (``leanvision.models.create_sr_model``) on random patches with ``fit`` (so its
checkpoints and ``resume`` are the engine's); ``sr_eval`` scores a checkpoint on Set5 / Set14 / B100 the way SR
papers do (``leanvision.data.sr``); ``upscale`` writes upscaled copies of a user's images, tile by tile.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from leanvision.config import check_device
from leanvision.data.sr import PatchLoader, SRPair, load_sr_set, psnr_y, read_rgb, ssim_y, to_tensor, to_uint8
from leanvision.engine._progress import track
from leanvision.engine.checkpoint import load_checkpoint, load_model_state
from leanvision.engine.fit import FitResult, fit
from leanvision.engine.optim import make_optimizer, make_scheduler
from leanvision.engine.step import StepContext
from leanvision.errors import CheckpointError, ConfigError, LeanVisionError

TASK = "super-resolution"  # the checkpoint's config["task"]: how sr-eval knows an SR checkpoint


def l1_step(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, ctx: StepContext) -> tuple[Any, None]:
    """The SR train step: L1 between the output and the HR patch (no logits to score, so no accuracy)."""
    loss = F.l1_loss(model(inputs), targets)
    ctx.update(loss)
    return loss, None


def train_sr(model: nn.Module, pairs: Sequence[SRPair], *, scale: int, steps: int, batch_size: int = 16,
             patch: int = 32, lr: float = 1e-3, milestones: Sequence[float] = (), gamma: float = 0.5,
             steps_per_epoch: int | None = None, seed: int = 0, out_dir: str | os.PathLike[str] | None = None,
             resume: str | os.PathLike[str] | None = None, progress: bool = False, device: str = "cpu",
             meta: dict[str, Any] | None = None) -> FitResult:  # fmt: skip
    """Train ``model`` for ``steps`` Adam steps on random ``patch``-pixel LR patches of ``pairs`` with an L1 loss.

    The learning rate is multiplied by ``gamma`` at each fraction of the steps in ``milestones``. Runs through
    ``fit``: with ``out_dir`` it writes metrics.jsonl and last.pt every ``steps_per_epoch`` steps (default: all
    steps in one epoch), and ``resume`` continues from a last.pt bitwise as an uninterrupted run would.
    """
    per_epoch = steps_per_epoch or steps
    if steps < 1 or steps % per_epoch:
        raise ConfigError(f"steps ({steps}) must be >= 1 and a multiple of steps_per_epoch ({per_epoch})")
    loader = PatchLoader(pairs, scale=scale, patch=patch, batch_size=batch_size, batches_per_epoch=per_epoch,
                         seed=seed)  # fmt: skip
    torch.manual_seed(seed)
    opt = make_optimizer(model, "adam", lr=lr)
    sched = make_scheduler(opt, "step", total_steps=steps, milestones=list(milestones), gamma=gamma) if milestones \
        else None  # fmt: skip
    config = {"task": TASK, "scale": scale, "steps": steps, "batch_size": batch_size, "patch": patch, "lr": lr,
              "milestones": list(milestones), "gamma": gamma, "seed": seed}  # fmt: skip
    return fit(model, loader, epochs=steps // per_epoch, optimizer=opt, scheduler=sched, train_step=l1_step, seed=seed,
               out_dir=out_dir, resume=resume, progress=progress, config=config, meta=meta, device=device)  # fmt: skip


@dataclass
class SRTrainResult:
    """A finished SR training run: its directory, last checkpoint, final L1 loss and held-out validation PSNR."""

    out_dir: Path
    checkpoint: Path
    train_loss: float
    val_psnr: float

    def summary(self) -> str:
        return (f"trained: {self.checkpoint} (L1 {self.train_loss:.4f}, validation Y-PSNR {self.val_psnr:.2f} dB); "
                f"score it with: leanvision sr-eval --checkpoint {self.checkpoint}")  # fmt: skip


def sr_train(model: str = "fsrcnn", *, scale: int = 2, steps: int = 1000, blocks: Sequence[str] | None = None,
             train_set: str = "T91", val_images: int = 10, batch_size: int = 16, patch: int = 32, lr: float = 1e-3,
             seed: int = 0, data_dir: str | os.PathLike[str] | None = None, out_dir: str | os.PathLike[str] = "runs/sr",
             resume: bool = False, device: str = "cpu", progress: bool = False) -> SRTrainResult:  # fmt: skip
    """Train a registered SR model (``esrn`` with ``blocks``) on ``train_set`` minus ``val_images`` held-out images,
    ``steps`` Adam steps halved at 50% and 75%, into ``out_dir`` (last.pt every tenth of the run; ``resume``
    continues it under leanvision's resume rule)."""
    from leanvision.data.sr import split_pairs
    from leanvision.models.sr import create_sr_model
    from leanvision.runs import changed_settings, check_run_dir

    if model == "bicubic":
        raise ConfigError(
            "bicubic has no weights to train: score it with `leanvision sr-eval --bicubic --scale N` "
            "(Python: sr_eval(bicubic=True, scale=N)), or train another model"
        )
    out = Path(out_dir)
    settings = {"model": model, "scale": scale, "steps": steps, "blocks": list(blocks) if blocks else None,
                "train_set": train_set, "val_images": val_images, "batch_size": batch_size, "patch": patch, "lr": lr,
                "seed": seed}  # fmt: skip
    held = (out / "last.pt").is_file()
    changed = changed_settings(load_checkpoint(out / "last.pt")["meta"], settings) if resume and held else []
    check_run_dir(out, what="SR training", held=held, resume=resume, changed=changed)
    net = create_sr_model(model, scale=scale, **({"blocks": list(blocks)} if blocks else {}))
    train, val = split_pairs(load_sr_set(train_set, scale, root=data_dir), val_images)
    per_epoch = math.gcd(steps, max(steps // 10, 1))  # a checkpoint about every tenth of the run
    res = train_sr(net, train, scale=scale, steps=steps, steps_per_epoch=per_epoch, batch_size=batch_size,
                   patch=patch, lr=lr, milestones=(0.5, 0.75), seed=seed, out_dir=out,
                   resume=out / "last.pt" if resume else None, progress=progress, device=check_device(device),
                   meta=settings)  # fmt: skip
    val_psnr = evaluate_sr(net, val, scale=scale, ssim=False, device=device)["psnr"]
    return SRTrainResult(out, res.last_checkpoint, res.final.get("train_loss", float("nan")), val_psnr)


def super_resolve(model: nn.Module, lr: np.ndarray, *, scale: int, tile: int | None = None, overlap: int = 8,
                  device: str = "cpu", progress: bool = False) -> np.ndarray:  # fmt: skip
    """The uint8 ``H*scale x W*scale x 3`` output of ``model`` for a uint8 LR image.

    With ``tile`` the image is processed in ``tile`` x ``tile`` LR pieces, each with ``overlap`` pixels of context
    on every side (memory stays bounded on large images; the seams differ from a whole-image pass only where the
    network sees further than ``overlap``).
    """
    x = to_tensor(lr)[None].to(device)
    h, w = x.shape[-2:]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if tile is None or (h <= tile and w <= tile):
                return to_uint8(model(x)[0])
            out = torch.zeros(3, h * scale, w * scale, device=device)
            boxes = [(y, xx) for y in range(0, h, tile) for xx in range(0, w, tile)]
            for y0, x0 in track(boxes, description="tiles", enabled=progress):
                y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
                ya, xa = max(y0 - overlap, 0), max(x0 - overlap, 0)
                piece = model(x[..., ya : min(y1 + overlap, h), xa : min(x1 + overlap, w)])[0]
                oy, ox = (y0 - ya) * scale, (x0 - xa) * scale
                out[:, y0 * scale : y1 * scale, x0 * scale : x1 * scale] = \
                    piece[:, oy : oy + (y1 - y0) * scale, ox : ox + (x1 - x0) * scale]  # fmt: skip
            return to_uint8(out)
    finally:
        model.train(was_training)


def evaluate_sr(model: nn.Module, pairs: Sequence[SRPair], *, scale: int, ssim: bool = True,
                device: str = "cpu") -> dict[str, float]:  # fmt: skip
    """Mean Y-PSNR (and SSIM) of ``model`` over ``pairs``, ``scale`` border pixels cropped: {psnr, ssim, n}."""
    psnrs, ssims = [], []
    for p in pairs:
        sr = super_resolve(model, p.lr, scale=scale, device=device)
        psnrs.append(psnr_y(sr, p.hr, border=scale))
        if ssim:
            ssims.append(ssim_y(sr, p.hr, border=scale))
    out = {"psnr": float(np.mean(psnrs)), "n": len(pairs)}
    if ssim:
        out["ssim"] = float(np.mean(ssims))
    return out


def sr_model_from_checkpoint(path: str | os.PathLike[str], *, device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The SR model a checkpoint written by :func:`train_sr` holds, in eval mode, and the checkpoint."""
    from leanvision.models.sr import SR_MODELS, create_sr_model

    ckpt = load_checkpoint(path)
    arch = ckpt.get("arch")
    sr = (ckpt.get("config") or {}).get("task") == TASK and isinstance(arch, dict) and arch.get("name") in SR_MODELS
    if not sr:
        raise CheckpointError(f"{path} is not a super-resolution checkpoint (written by train_sr on a "
                              "create_sr_model network); give one of those")  # fmt: skip
    model = create_sr_model(arch["name"], **dict(arch.get("kwargs") or {}))
    load_model_state(model, ckpt, source=path)
    return model.eval().to(device), ckpt


@dataclass
class SREvalResult:
    """Y-PSNR / SSIM per test set of one checkpoint at one scale, and its size."""

    checkpoint: Path
    scale: int
    rows: list[dict[str, Any]]  # {"set", "images", "psnr", "ssim"}
    params: int

    def summary(self) -> str:
        """The standard table (Markdown) for a person."""
        lines = [
            f"{self.checkpoint} (x{self.scale}, {self.params / 1e3:.1f}K params): Y-PSNR / SSIM, "
            f"{self.scale}-pixel border cropped",
            "",
            "| set | images | PSNR (dB) | SSIM |",
            "|---|---:|---:|---:|",
        ]
        lines += [f"| {r['set']} | {r['images']} | {r['psnr']:.2f} | {r['ssim']:.4f} |" for r in self.rows]
        return "\n".join(lines)


def sr_eval(checkpoint: str | os.PathLike[str] | None = None, *, scale: int | None = None,
            sets: Sequence[str] = ("Set5", "Set14", "B100"),
            data_dir: str | os.PathLike[str] | None = None, device: str = "cpu",
            progress: bool = False, bicubic: bool = False) -> SREvalResult:  # fmt: skip
    """Score an SR checkpoint on test sets (default Set5, Set14, B100) with the literature's Y-channel protocol.

    ``bicubic=True`` (no checkpoint; ``scale`` needed) scores MATLAB-style bicubic upscaling: every table's first row.
    """
    if bicubic == (checkpoint is not None):
        raise ConfigError("give exactly one of a checkpoint and bicubic=True (CLI: --checkpoint CKPT or --bicubic)")
    if bicubic:
        from leanvision.models.sr import create_sr_model

        if scale is None:
            raise ConfigError("bicubic needs the scale: give --scale 2, 3 or 4")
        model, trained, checkpoint = create_sr_model("bicubic", scale=scale).eval(), scale, "bicubic"
    else:
        model, ckpt = sr_model_from_checkpoint(checkpoint, device=check_device(device))
        trained = int(ckpt["config"]["scale"])
        if scale is not None and scale != trained:
            raise ConfigError(
                f"{checkpoint} upscales x{trained}, not x{scale}: give --scale {trained} or another model"
            )
    rows = []
    for name in track(list(sets), description="sets", enabled=progress):
        m = evaluate_sr(model, load_sr_set(name, trained, root=data_dir), scale=trained, device=device)
        rows.append({"set": name, "images": m["n"], "psnr": m["psnr"], "ssim": m["ssim"]})
    return SREvalResult(Path(checkpoint), trained, rows, sum(p.numel() for p in model.parameters()))


@dataclass
class UpscaleResult:
    """The files written (input -> output) and the inputs that failed, each with its one-line reason."""

    written: list[tuple[Path, Path]] = field(default_factory=list)
    errors: list[tuple[Path, str]] = field(default_factory=list)


MIN_SIDE = 3  # pixels: the bicubic border and the 3x3 convs need this much image


def upscale(checkpoint: str | os.PathLike[str], images: Iterable[str | os.PathLike[str]], *,
            out_dir: str | os.PathLike[str] = "upscaled", tile: int | None = 256, device: str = "cpu",
            progress: bool = False, overwrite: bool = False) -> UpscaleResult:  # fmt: skip
    """Upscale image files (folders: their images) with an SR checkpoint into ``out_dir``/<name>_x<scale>.png, in
    tiles of ``tile`` LR pixels.

    A file that cannot be read or is too small, or whose output exists (unless ``overwrite``), gets a one-line error
    in the result; the others are still written.
    """
    from PIL import Image

    from leanvision._io import atomic_write
    from leanvision.config import writable_dir
    from leanvision.engine.use import image_files

    model, ckpt = sr_model_from_checkpoint(checkpoint, device=check_device(device))
    scale = int(ckpt["config"]["scale"])
    out, result = writable_dir(out_dir), UpscaleResult()
    for path in image_files(images):
        try:
            target = out / f"{path.stem}_x{scale}.png"
            if target.exists() and not overwrite:  # an earlier result (or a same-named input) is never lost
                raise ConfigError(f"{target} exists: upscale into another --out-dir, or pass --force to overwrite it")
            lr = read_rgb(path)
            if min(lr.shape[:2]) < MIN_SIDE:
                raise ConfigError(f"{path} is {lr.shape[1]}x{lr.shape[0]} pixels: too small to upscale "
                                  f"(at least {MIN_SIDE}x{MIN_SIDE})")  # fmt: skip
            sr = super_resolve(model, lr, scale=scale, tile=tile, device=device, progress=progress)
            atomic_write(target, lambda f, img=sr: Image.fromarray(img).save(f, format="PNG"))
            result.written.append((path, target))
        except LeanVisionError as e:
            result.errors.append((path, str(e)))
    return result
