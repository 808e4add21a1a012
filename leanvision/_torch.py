"""Small torch helpers shared by profile, export and others: input normalisation, restoring eval mode, threads.

A neutral module (it imports no leanvision room), so `export` and `profile` can both use it without importing
each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from leanvision.errors import ConfigError


def as_args(example_input: Tensor | tuple[Tensor, ...]) -> tuple[Any, ...]:
    """A tensor or a tuple/list of tensors as the positional arguments of `model(*args)`."""
    if isinstance(example_input, Tensor):
        return (example_input,)
    if isinstance(example_input, (tuple, list)) and all(isinstance(t, Tensor) for t in example_input):
        return tuple(example_input)
    raise ConfigError(
        f"example_input must be a Tensor or a tuple of Tensors, got {type(example_input).__name__}; "
        "pass e.g. torch.randn(1, 3, 224, 224)"
    )


@contextmanager
def eval_mode(model: nn.Module, *, grad: bool = False) -> Iterator[None]:
    """Put every submodule in eval mode (no autograd unless `grad`) and restore each one's own flag after."""
    flags = [(m, m.training) for m in model.modules()]  # some submodules may be frozen in eval on purpose
    model.eval()
    try:
        with torch.set_grad_enabled(grad):
            yield
    finally:
        for m, training in flags:
            m.training = training


@contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Set torch's intra-op thread count for the block (None keeps the current one) and restore it after."""
    before = torch.get_num_threads()
    n = before if threads is None else threads
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"threads must be a positive integer or None, got {threads!r}; pass e.g. threads=1")
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)
