"""torch.distributed helpers that degrade to no-ops in a single process (so fit runs under torchrun)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def is_main_process() -> bool:
    """True on rank 0 or without a process group: the only process that writes files and shows progress."""
    return not is_distributed() or dist.get_rank() == 0


def all_reduce_sum(values: list[float]) -> list[float]:
    """Sum ``values`` over all ranks (identity without a process group)."""
    if not is_distributed():
        return values
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()
