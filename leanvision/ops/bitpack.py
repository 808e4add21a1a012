"""1-bit storage of ±1 tensors (binary masks and binary weights), eight signs per byte."""

from __future__ import annotations

import numpy as np
import torch

from leanvision.errors import ConfigError


def pack_signs(t: torch.Tensor) -> torch.Tensor:
    """A ±1 (or any real) tensor as packed bits, ``x >= 0`` -> 1: a uint8 tensor of ``ceil(numel / 8)`` bytes.

    The shape is not stored: keep ``t.shape`` beside it and pass it to :func:`unpack_signs`.
    """
    bits = (t.detach().reshape(-1) >= 0).cpu().numpy()
    return torch.from_numpy(np.packbits(bits))  # big-endian bit order within each byte, as numpy defines it


def unpack_signs(packed: torch.Tensor, shape: tuple[int, ...] | torch.Size, *, dtype=torch.float32) -> torch.Tensor:
    """The ±1 tensor of ``shape`` that :func:`pack_signs` stored."""
    n = int(np.prod(shape)) if len(shape) else 1
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != (n + 7) // 8:
        raise ConfigError(
            f"packed signs for shape {tuple(shape)} must be a 1-d uint8 tensor of {(n + 7) // 8} bytes, got "
            f"{packed.dtype} {tuple(packed.shape)}; pass the tensor pack_signs returned with its original shape"
        )
    bits = np.unpackbits(packed.cpu().numpy(), count=n)
    return torch.from_numpy(bits.astype(np.float32) * 2 - 1).to(dtype).reshape(shape)
