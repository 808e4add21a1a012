"""`leanvision sr-train`, `sr-eval` and `upscale`: super-resolution models trained, scored the papers' way, used."""

from __future__ import annotations

from pathlib import Path

import typer

from leanvision.cli._common import (
    check_device,
    check_threads,
    checkpoint_option,
    data_dir_option,
    device_option,
    out_dir_option,
    quiet_option,
    resume_option,
    threads_option,
)


def _threads(threads: int | None) -> None:
    import torch

    if check_threads(threads):
        torch.set_num_threads(threads)


def sr_train_cmd(
    model: str = typer.Option("fsrcnn", "--model", help="bicubic, srcnn, fsrcnn or esrn (with --blocks)"),
    scale: int = typer.Option(2, "--scale", help="2, 3 or 4"),
    steps: int = typer.Option(1000, "--steps", min=1, help="Adam steps (batches of 16 random 32x32 LR patches)"),
    blocks: list[str] = typer.Option(None, "--blocks", help="esrn only: its blocks T_C_G_O, e.g. S_4_16_24 G_4_16_16"),
    train_set: str = typer.Option("T91", "--train-set", help="training set in your data directory's SR/ folder"),
    seed: int = typer.Option(0, "--seed", min=0, help="seed of the weights and patches"),
    data_dir: str = data_dir_option(),
    out_dir: Path = out_dir_option(Path("runs/sr")),
    resume: bool = resume_option(),
    device: str = device_option(),
    threads: int = threads_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Train a super-resolution model on T91 patches with an L1 loss (10 T91 images held out for validation)."""
    from leanvision.engine.sr import sr_train

    _threads(threads)
    result = sr_train(model, scale=scale, steps=steps, blocks=blocks or None, train_set=train_set, seed=seed,
                      data_dir=data_dir, out_dir=out_dir, resume=resume, device=check_device(device or "cpu"),
                      progress=not quiet)  # fmt: skip
    typer.echo(result.summary())


def sr_eval_cmd(
    ctx: typer.Context,
    checkpoint: Path = checkpoint_option(),
    bicubic: bool = typer.Option(False, "--bicubic", help="score bicubic upscaling (no checkpoint; give --scale)"),
    scale: int = typer.Option(None, "--scale", help="2, 3 or 4: must be the checkpoint's (default: the checkpoint's)"),
    sets: list[str] = typer.Option(None, "--sets", help="test sets in your SR/ folder: --sets Set5 Set14 B100"),
    data_dir: str = data_dir_option(),
    device: str = device_option(),
    threads: int = threads_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Y-channel PSNR / SSIM of an SR checkpoint, or of bicubic, on test sets (border of `scale` pixels cropped)."""
    from leanvision.engine.sr import sr_eval
    from leanvision.errors import ConfigError

    if ctx.args and not sets:  # `--sets A B C`: click hands B and C over as extra arguments
        raise ConfigError(f"unexpected argument {ctx.args[0]!r}: name test sets after --sets (--sets Set5 Set14 B100)")
    _threads(threads)
    names = [*(sets or ()), *ctx.args] or ["Set5", "Set14", "B100"]
    result = sr_eval(checkpoint, scale=scale, sets=names, data_dir=data_dir, device=check_device(device or "cpu"),
                     progress=not quiet, bicubic=bicubic)  # fmt: skip
    typer.echo(result.summary())


def upscale_cmd(
    images: list[Path] = typer.Argument(..., help="image files (PNG, JPEG, ...) or folders of them"),
    checkpoint: Path = checkpoint_option(required=True),
    out_dir: Path = out_dir_option(Path("upscaled")),
    tile: int = typer.Option(256, "--tile", min=16, help="process large images in tiles of this many input pixels"),
    device: str = device_option(),
    threads: int = threads_option(),
    force: bool = typer.Option(False, "--force", help="overwrite outputs that already exist in --out-dir"),
    quiet: bool = quiet_option(),
) -> None:
    """Upscale images with a super-resolution checkpoint: OUT_DIR/<name>_x<scale>.png for each.

    A file that cannot be read gets a one-line error and the others are still upscaled; the exit code is then 1.
    """
    from leanvision.engine.sr import upscale

    _threads(threads)
    result = upscale(checkpoint, images, out_dir=out_dir, tile=tile, device=check_device(device or "cpu"),
                     progress=not quiet, overwrite=force)  # fmt: skip
    for src, dst in result.written:
        typer.echo(f"{src} -> {dst}")
    for _, err in result.errors:
        typer.echo(f"error: {err}", err=True)
    if result.errors:
        raise typer.Exit(1)
