"""The shared command-line grammar: options every command declares the same way, and the checks they run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

# Re-exported: the commands check their options with the same functions the library runs with.
from leanvision.config import check_device, check_threads, cpu_count, writable_dir  # noqa: F401
from leanvision.errors import Interrupted  # noqa: F401

# ---- the shared grammar: every command that takes one of these options declares it with these helpers, so the
# name, type and help text are the same everywhere (tests/test_cli_grammar.py walks every command to check).
CHECKPOINT_HELP = "a checkpoint written by leanvision (best.pt, last.pt or compressed.pt)"
OUT_DIR_HELP = "the run directory: where this command writes its files (default: the config's out_dir)"
THREADS_HELP = "CPU threads for PyTorch (default: torch's choice; at most the cores available)"
DEVICE_HELP = "cpu, cuda or cuda:N (default: the config's device, else cpu)"
DATA_DIR_HELP = "your data directory, holding the dataset in torchvision's layout (default: $LEANVISION_DATA)"
RESUME_HELP = "continue the interrupted run in --out-dir with the settings it was started with"
QUIET_HELP = "no progress bars"
PRECISION_HELP = (
    "fp32 (default), or bf16: mixed-precision training, faster on hardware with bf16 arithmetic (CPUs with "
    "AVX512-BF16 or AMX, recent GPUs)"
)


def checkpoint_option(*, required: bool = False) -> Any:
    """``--checkpoint PATH``."""
    return typer.Option(... if required else None, "--checkpoint", help=CHECKPOINT_HELP)


def out_dir_option(default: Path | None = None) -> Any:
    """``--out-dir PATH``."""
    return typer.Option(default, "--out-dir", help=OUT_DIR_HELP)


def threads_option() -> Any:
    """``--threads N``."""
    return typer.Option(None, "--threads", min=1, help=THREADS_HELP)


def device_option() -> Any:
    """``--device NAME`` (checked with :func:`check_device` before anything runs)."""
    return typer.Option(None, "--device", help=DEVICE_HELP)


def precision_option() -> Any:
    """``--precision fp32|bf16`` (training commands; the config checks the value)."""
    return typer.Option(None, "--precision", help=PRECISION_HELP)


def data_dir_option() -> Any:
    """``--data-dir PATH``."""
    return typer.Option(None, "--data-dir", help=DATA_DIR_HELP)


def resume_option() -> Any:
    """``--resume`` (a flag: the run is named by --out-dir or the config)."""
    return typer.Option(False, "--resume", help=RESUME_HELP)


def quiet_option() -> Any:
    """``--quiet``."""
    return typer.Option(False, "--quiet", help=QUIET_HELP)
