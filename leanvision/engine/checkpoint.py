"""Atomic, weights-only-loadable checkpoints plus the RNG and version state that make resume exact."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import random
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from leanvision._io import atomic_write
from leanvision.errors import CheckpointError, ConfigError

# Exact types torch.load(weights_only=True) reads back (subclasses such as TorchVersion are refused).
_SAFE_LEAVES = (str, bytes, int, float, bool, complex, type(None))
_SAFE_OBJECTS = (torch.Tensor, torch.dtype, torch.device)
_SAFE_MAPPINGS = (dict, OrderedDict)
_SAFE_SEQUENCES = (list, tuple, set, frozenset, torch.Size)


def _check_loadable(value: Any, where: str) -> None:
    kind = type(value)
    if kind in _SAFE_LEAVES or isinstance(value, _SAFE_OBJECTS):
        return
    if kind in _SAFE_MAPPINGS:
        for k, v in value.items():
            if type(k) not in _SAFE_LEAVES:
                raise ConfigError(f"checkpoint key {where}[{k!r}] has type {type(k).__name__}; use str keys.")
            _check_loadable(v, f"{where}.{k}" if where else str(k))
    elif kind in _SAFE_SEQUENCES:
        for i, v in enumerate(value):
            _check_loadable(v, f"{where}[{i}]")
    else:
        raise ConfigError(
            f"checkpoint value '{where}' has type {kind.__name__}, which torch.load(weights_only=True) "
            "cannot read; convert it to plain data (str, int, float, list, dict or tensor)."
        )


def _load_error_reason(e: Exception) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    # The weights-only unpickler buries the useful part ("Unsupported global: ...") under boilerplate.
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return first.split(". ", 1)[0][:200] or type(e).__name__


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare module under DDP / DataParallel / torch.compile wrappers, whose state_dict has no prefix."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def library_versions() -> dict[str, str]:
    """Versions of leanvision, torch, torchvision and python, stored with every checkpoint."""
    import leanvision

    try:  # read from the package metadata: importing torchvision only for its version is slow
        tv = importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:  # torchvision is optional for the engine itself
        tv = "not installed"
    return {
        "leanvision": leanvision.__version__,
        "torch": str(torch.__version__),  # a TorchVersion, which weights-only loading refuses
        "torchvision": tv,
        "python": platform.python_version(),
    }


def rng_state() -> dict[str, Any]:
    """The torch (CPU and CUDA), python and numpy global RNG states, as weights-only-loadable data."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "python": {"version": version, "state": list(mt), "gauss": gauss},
        "numpy": {"kind": kind, "keys": keys.tolist(), "pos": pos, "has_gauss": has_gauss, "cached": cached},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the global RNG states captured by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npy = state["numpy"]
    keys = np.asarray(npy["keys"], dtype=np.uint32)
    np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["cached"]))


def save_checkpoint(path: str | os.PathLike[str], **state: Any) -> Path:
    """Write ``state`` (plus library ``versions``) to ``path`` atomically: a crash never leaves half a file.

    Values must be weights-only loadable (tensors, dicts, lists, str, int, float, bool, None); anything
    else raises ConfigError before the file is touched. A write the disk refuses (full, read-only, ...) raises
    WriteError naming the file and the cause, and leaves the previous checkpoint as it was.
    """
    state.setdefault("versions", library_versions())
    _check_loadable(state, "")
    return atomic_write(path, lambda f: torch.save(state, f))


# What a finished run's checkpoint needs to be rebuilt, evaluated and described; the rest only resumes training.
_SLIM_KEYS = ("model", "arch", "config", "meta", "epoch", "epochs", "best_val_acc", "best_epoch", "metrics", "history",
              "precision")  # fmt: skip


def slim_checkpoint(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], *, dtype: torch.dtype | None = None
) -> Path:
    """Copy a fit checkpoint without its optimizer, scheduler and RNG state (it can no longer resume).

    ``dtype`` (e.g. torch.float16) stores the floating-point weights at that precision to ship a small file; they
    load back into a float32 model unchanged in shape. The copy records what it dropped and the dtype used.
    """
    state = load_checkpoint(src)
    if not isinstance(state.get("model"), dict):
        raise CheckpointError(f"checkpoint {src} holds no 'model' weights; slim a checkpoint written by fit.")
    slim = {k: state[k] for k in _SLIM_KEYS if k in state}
    if dtype is not None:
        if not dtype.is_floating_point:
            raise ConfigError(f"dtype {dtype} is not a floating-point type; use torch.float16 or torch.bfloat16.")
        slim["model"] = OrderedDict(
            (k, v.to(dtype) if torch.is_floating_point(v) else v) for k, v in state["model"].items()
        )
    slim["slim"] = {"dropped": sorted(set(state) - set(slim) - {"versions"}), "weights_dtype": str(dtype or "as saved")}
    return save_checkpoint(dst, **slim)


def load_checkpoint(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)``; missing or corrupt files raise CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint not found: {path}; check the path (a run writes <out_dir>/last.pt and best.pt)."
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for truncated / foreign / unsafe files
        reason = _load_error_reason(e)
        raise CheckpointError(
            f"cannot read checkpoint {path} ({reason}): the file is corrupt or not a weights-only checkpoint; "
            "re-create it with the run that wrote it, or use another one (e.g. best.pt)."
        ) from e
    if not isinstance(state, dict):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(state).__name__}, not a dict; save it with save_checkpoint "
            "or torch.save(model.state_dict(), path)."
        )
    return state


def _describe_mismatch(model: nn.Module, weights: dict[str, Any]) -> str:
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(weights[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in weights and isinstance(weights[k], torch.Tensor) and weights[k].shape != v.shape
    ]
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", shapes)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            parts.append(f"{label} {', '.join(items[:3])}{more}")
    return "; ".join(parts) or "incompatible tensors"


def load_model_state(model: nn.Module, state: dict[str, Any], *, source: str | os.PathLike[str]) -> None:
    """Load a fit checkpoint's ``model`` weights (or a bare state_dict) into ``model``, unwrapped.

    A mismatch raises CheckpointError naming ``source`` (the checkpoint's path) and what to do.
    """
    weights = state["model"] if isinstance(state.get("model"), dict) else state
    target = unwrap_model(model)
    try:
        target.load_state_dict(weights, strict=True)
    except (RuntimeError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"checkpoint {source} does not fit the model ({_describe_mismatch(target, weights)}); build the "
            "model with the same name and arguments as the run that wrote it (see the checkpoint's 'config')."
        ) from e


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load model weights from a fit checkpoint (or a bare state_dict file); returns the checkpoint."""
    state = load_checkpoint(path)
    load_model_state(model, state, source=path)
    return state


def model_from_checkpoint(
    path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a fit checkpoint describes (name, arguments) and load its weights; returns (model, ckpt).

    The model is in eval mode; ``ckpt["arch"]["input_size"]`` is the (C, H, W) it was trained on. A checkpoint of
    a pruned model (``arch["plan"]``) is rebuilt by replaying the plan on the registered build.
    """
    from leanvision.models import create_from_arch

    state = load_checkpoint(path, map_location=map_location)
    arch = state.get("arch")
    if not isinstance(arch, dict) or not isinstance(arch.get("name"), str):
        raise CheckpointError(
            f"checkpoint {path} does not say which model it holds (no 'arch'): it was written for a model not built "
            "with create_model, or by an older leanvision; build the model yourself and use load_weights(model, path)."
        )
    model = create_from_arch(arch)  # a pruned model replays its plan through the transform compress registers
    load_model_state(model, state, source=path)
    return model.eval(), state
