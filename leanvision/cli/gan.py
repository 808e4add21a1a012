"""`leanvision gan`: train a GAN (optionally with FIS-GAN's importance-sampled latents) and sample image grids."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from leanvision.cli._common import (
    check_device,
    checkpoint_option,
    data_dir_option,
    device_option,
    out_dir_option,
    quiet_option,
    resume_option,
    threads_option,
)

gan_app = typer.Typer(help="GANs with flow-based importance sampling of the latent (FIS-GAN, arXiv 1910.02519).",
                      no_args_is_help=True)  # fmt: skip
console = Console()


@gan_app.command("train")
def train_cmd(
    config: Path = typer.Argument(..., help="YAML config (examples: configs/gan_mnist.yaml, gan_fashion_mnist.yaml)"),
    data_dir: str = data_dir_option(),
    out_dir: Path = out_dir_option(),
    threads: int = threads_option(),
    device: str = device_option(),
    resume: bool = resume_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Train a GAN; write sample grids, classifier-FID and ESS curves, a report and a resumable last.pt."""
    from leanvision.config import load_config
    from leanvision.generative import GanConfig, train

    overrides = {"data_dir": data_dir, "out_dir": out_dir and str(out_dir), "threads": threads, "device": device}
    cfg = load_config(GanConfig, config, overrides)
    console.print(train(cfg, resume=resume, progress=not quiet).summary(), soft_wrap=True)


@gan_app.command("sample")
def sample_cmd(
    out: Path = typer.Argument(..., metavar="FILE.png", help="the PNG file to write the grid to"),
    checkpoint: Path = checkpoint_option(required=True),
    n: int = typer.Option(64, "-n", "--num", min=1, max=100_000, help="images to generate"),
    seed: int = typer.Option(0, "--seed", min=0, help="seed of the latents drawn from the prior"),
    device: str = device_option(),
) -> None:
    """Generate images from the prior with a trained generator (a run's last.pt) and save them as one PNG grid."""
    from leanvision.generative import sample

    path = sample(checkpoint, out, n=n, seed=seed, device=check_device(device or "cpu"))
    console.print(f"wrote {n} samples to {path}", soft_wrap=True)
