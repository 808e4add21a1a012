"""`leanvision augsearch`: leanvision.augment.run from a YAML config and the shared options."""

from __future__ import annotations

from pathlib import Path

import typer

from leanvision.cli._common import (
    data_dir_option,
    device_option,
    out_dir_option,
    precision_option,
    quiet_option,
    resume_option,
    threads_option,
)

CONFIG_HELP = "YAML config (example: configs/augsearch_cifar10.yaml); optional with --resume"


def augsearch_cmd(
    config: Path = typer.Argument(None, help=CONFIG_HELP),
    epochs: int = typer.Option(None, "--epochs", min=1, help="total training epochs (default: the config's)"),
    subset: int = typer.Option(None, "--subset", min=1, help="class-balanced training subset size"),
    seed: int = typer.Option(None, "--seed", min=0, help="seed of initialisation, data order and augmentation"),
    data_dir: str = data_dir_option(),
    out_dir: Path = out_dir_option(),
    threads: int = threads_option(),
    device: str = device_option(),
    precision: str = precision_option(),
    resume: bool = resume_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Search augmentation policies while the model trains (Adversarial AutoAugment, arXiv 1912.11188)."""
    from leanvision.augment import AugSearchConfig, run
    from leanvision.config import load_config

    overrides = {"epochs": epochs, "subset": subset, "seed": seed, "data_dir": data_dir, "threads": threads,
                 "device": device, "precision": precision, "out_dir": out_dir and str(out_dir)}  # fmt: skip
    cfg = load_config(AugSearchConfig, config, overrides, source="augsearch flags")
    typer.echo(run(cfg, resume=resume, progress=not quiet).summary())
