"""Checks shared by the commands: output directories, thread counts and devices given on the command line."""

from __future__ import annotations

import os
from pathlib import Path

from leanvision.errors import ConfigError, LeanVisionError


def writable_dir(path: Path) -> Path:
    """Create ``path`` if needed; an unusable location is a one-line ConfigError, not a traceback."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create output directory '{path}' ({e.strerror}): choose a writable path") from None
    if not os.access(path, os.W_OK):
        raise ConfigError(f"output directory '{path}' is not writable: choose a writable path")
    return path


def cpu_count() -> int:
    """CPU cores this process may run on (the affinity mask, not the whole machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_threads(threads: int | None) -> int | None:
    """Refuse more threads than cores: oversubscribed PyTorch runs many times slower, which nobody wants."""
    cores = cpu_count()
    if threads is not None and threads > cores:
        raise ConfigError(
            f"--threads {threads} is more than the {cores} CPU cores available here; oversubscribed threads make "
            f"PyTorch much slower: pass --threads {cores} or fewer"
        )
    return threads


def check_device(device: str) -> str:
    """A torch device string that exists on this machine (cpu, cuda, cuda:N, mps)."""
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device {device}: not a device name; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {device}: MPS is not available on this machine; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"--device {device}: unsupported device type '{dev.type}'; use cpu, cuda or cuda:N")
    return device


class Interrupted(LeanVisionError):
    """The user pressed Ctrl-C; the message says what was kept and how to continue."""

    exit_code = 130
