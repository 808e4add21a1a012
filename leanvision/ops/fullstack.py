"""Full-stack filters (arXiv 1908.02023): conv filters made of 1-bit masks on a few shared float filters."""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from leanvision._io import atomic_write
from leanvision.errors import CheckpointError, ConfigError
from leanvision.ops.bitpack import pack_signs, unpack_signs
from leanvision.ops.fuse import plain_conv2d

FORMAT = "leanvision.fsf"
FORMAT_VERSION = 1


def binarize(h: Tensor) -> Tensor:
    """sign(h) in {-1, +1} (0 -> +1) with the identity straight-through gradient (arXiv 1908.02023)."""
    # torch.sign(0) = 0 would zero a weight entry. The detach form needs no autograd.Function, so it traces and
    # exports; for |h| <= 1 (proxies are clipped there) the value is exactly +-1 in floating point.
    sign = torch.where(h >= 0, 1.0, -1.0).to(h.dtype)
    return h + (sign - h).detach()


class MaskConv2d(nn.Conv2d):
    """Conv2d whose n filters are +-1 masks times m = n/s float "full-stack" filters (arXiv 1908.02023).

    Parameters: ``basis`` B (m, C_in/groups, k, k) and real mask proxies ``mask`` H, one per output filter
    (n, C_in/groups, k, k), or with ``shared=True`` s masks shared by all bases (s, C_in/groups, k, k). The
    applied weight is W_o = sign(H_o) * B_(o mod m) (shared: W_(i*m+b) = sign(H_i) * B_b), with the identity
    straight-through gradient for the sign; ``weight`` is that effective weight (read-only, differentiable).
    It is a drop-in ``nn.Conv2d`` (same arguments, ``ratio`` = s keyword-only). With ``groups`` > 1 each group
    owns m/groups bases so that no basis mixes input channels of two groups (m must be divisible by groups).

    Training: clip ``mask`` to [-1, 1] after each step and do not weight-decay it (``no_weight_decay()``
    declares it, ``make_optimizer`` honours that); :class:`FSFStep` does both plus the orthogonality loss.
    Deploy: ``fold()`` gives the plain ``nn.Conv2d`` (same MACs: this is a memory method, not a FLOPs one).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        ratio: int = 4,
        shared: bool = False,
    ) -> None:
        if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 1 or out_channels % ratio:
            raise ConfigError(
                f"MaskConv2d: out_channels={out_channels} must be divisible by ratio s={ratio!r} (a positive int); "
                f"there are n/s full-stack filters, so pick s among the divisors of {out_channels}"
            )
        num_basis = out_channels // ratio
        if num_basis % groups:
            raise ConfigError(
                f"MaskConv2d: with groups={groups} every group needs its own full-stack filters, so "
                f"m = out_channels / ratio = {num_basis} must be divisible by groups; lower ratio or groups"
            )
        # nn.Conv2d validates the geometry and registers a dense weight; that weight is replaced by bases + masks.
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode)
        del self.weight
        self.ratio, self.num_basis, self.shared = ratio, num_basis, bool(shared)
        kshape = (in_channels // groups, *self.kernel_size)
        self.basis = nn.Parameter(torch.empty(num_basis, *kshape))
        self.mask = nn.Parameter(torch.empty(ratio if self.shared else out_channels, *kshape))
        self.reset_parameters()

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, *, ratio: int = 4, shared: bool = False) -> MaskConv2d:
        """A freshly initialised MaskConv2d with ``conv``'s geometry (for ``replace_modules``; weights are not kept)."""
        return cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            conv.bias is not None,
            conv.padding_mode,
            ratio=ratio,
            shared=shared,
        ).to(device=conv.weight.device, dtype=conv.weight.dtype)

    def reset_parameters(self) -> None:
        if "mask" not in self._parameters:  # nn.Conv2d.__init__ calls this before bases and masks exist
            return
        # As the official code: bases and proxies both kaiming-uniform(a=sqrt(5)), i.e. small proxies that can
        # still flip sign early in training, and |W| distributed like a default-initialised dense conv.
        nn.init.kaiming_uniform_(self.basis, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.mask, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.basis[0].numel())
            nn.init.uniform_(self.bias, -bound, bound)

    @property
    def weight(self) -> Tensor:  # type: ignore[override]
        """The applied weight (n, C_in/groups, k, k): sign(H) * B laid out as the official code does."""
        g, s, mg = self.groups, self.ratio, self.num_basis // self.groups
        k = self.basis.shape[1:]
        masks = binarize(self.mask).view(1, s, 1, *k) if self.shared else binarize(self.mask).view(g, s, mg, *k)
        # Output o = j*(n/g) + i*(m/g) + b uses basis j*(m/g) + b: for groups=1 that is o mod m.
        return (masks * self.basis.view(g, 1, mg, *k)).flatten(0, 2)

    def mask_signs(self) -> Tensor:
        """The current +-1 masks (no gradient)."""
        return torch.where(self.mask.detach() >= 0, 1.0, -1.0).to(self.mask.dtype)

    def no_weight_decay(self) -> set[str]:
        """Weight decay would pull the proxies to 0 where their signs flip at random."""
        return {"mask"}

    def fold(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` with W = sign(H) * B precomputed: the same outputs, for export and deployment."""
        return plain_conv2d(self)

    def fold_bn(self) -> nn.Conv2d:
        """``fuse_bn`` hook: become a plain conv, which the BatchNorm after it is then folded into."""
        return self.fold()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ratio={self.ratio}, num_basis={self.num_basis}, shared={self.shared}"


def named_mask_convs(model: nn.Module) -> Iterator[tuple[str, MaskConv2d]]:
    """``(name, module)`` of every :class:`MaskConv2d` in ``model``."""
    return ((n, m) for n, m in model.named_modules() if isinstance(m, MaskConv2d))


def _key(module_name: str, param: str) -> str:
    return f"{module_name}.{param}" if module_name else param  # "" is the model itself


def ortho_loss(model: nn.Module) -> Tensor:
    """Orthogonality of the binary masks (arXiv 1908.02023): sum over layers of mean((X X^T / d - I)^2).

    X = sign(H).view(#masks, -1) with the straight-through gradient, d = X.size(1). Rows of a +-1 Hadamard
    matrix give 0. Layers whose mask length d is below #masks (the 3-channel stem: d = 27) cannot reach 0.
    """
    total: Tensor | None = None
    for _, conv in named_mask_convs(model):
        x = binarize(conv.mask).flatten(1)
        gram = x @ x.T / x.shape[1]
        term = (gram - torch.eye(x.shape[0], dtype=x.dtype, device=x.device)).pow(2).mean()
        total = term if total is None else total + term
    return torch.zeros(()) if total is None else total


@torch.no_grad()
def clip_mask_proxies(model: nn.Module, bound: float = 1.0) -> None:
    """Clamp every mask proxy to [-bound, bound]; call it after each optimizer step (arXiv 1908.02023)."""
    # Unclipped proxies drift far from 0 and their signs (the masks) stop changing.
    for _, conv in named_mask_convs(model):
        conv.mask.clamp_(-bound, bound)


def freeze_masks(model: nn.Module) -> nn.Module:
    """Stop training the masks (they keep their current signs): the random-mask ablation; returns ``model``."""
    for _, conv in named_mask_convs(model):
        conv.mask.requires_grad_(False)
    return model


@dataclass
class FSFStep:
    """``fit(train_step=...)`` for full-stack filters (arXiv 1908.02023): task loss + λ·ortho, step, clip proxies.

    Returns the task loss (comparable with ``val_loss``); with ``ortho_weight`` > 0 the mean orthogonality loss of
    each epoch is kept in ``ortho_by_epoch`` (0-based epoch -> value) so its decrease can be checked.
    """

    ortho_weight: float = 0.0
    clip: float = 1.0
    ortho_by_epoch: dict[int, float] = field(default_factory=dict)
    _seen: dict[int, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.ortho_weight >= 0 or not self.clip > 0:
            raise ConfigError(
                f"FSFStep: ortho_weight must be >= 0 and clip > 0, got {self.ortho_weight} and {self.clip}; "
                "ortho_weight 0.01-0.1 is a starting point, clip 1.0 the usual bound"
            )

    def __call__(self, model: nn.Module, inputs: Any, targets: Tensor, ctx: Any) -> tuple[Tensor, Any]:
        outputs = model(inputs)
        task = ctx.loss_fn(outputs, targets, inputs)
        loss = task
        if self.ortho_weight > 0:
            ortho = ortho_loss(model)
            loss = task + self.ortho_weight * ortho
            n = self._seen.get(ctx.epoch, 0)
            prev = self.ortho_by_epoch.get(ctx.epoch, 0.0)
            self.ortho_by_epoch[ctx.epoch] = prev + (ortho.item() - prev) / (n + 1)
            self._seen[ctx.epoch] = n + 1
        ctx.update(loss)
        clip_mask_proxies(model, self.clip)
        return task, outputs


def fold_masks(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """``model`` with every :class:`MaskConv2d` replaced by its ``fold()`` (BatchNorms kept): the dense twin."""
    out = model if inplace else copy.deepcopy(model)
    if isinstance(out, MaskConv2d):
        return out.fold()
    for name, conv in list(named_mask_convs(out)):
        parent, _, child = name.rpartition(".")
        setattr(out.get_submodule(parent), child, conv.fold())
    return out


# --- storage --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StorageReport:
    """Stored size of a model with 1-bit masks and float32 tensors vs the same model with dense float32 convs.

    ``bytes`` = 4·float_values + mask_bytes + other_bytes (mask_bytes = sum over layers of ceil(bits / 8));
    ``dense_bytes`` counts each masked conv as its dense float32 weight instead. Payload only: the container
    (``save_fsf``'s zip) adds a few hundred bytes per tensor.
    """

    float_values: int  # bases, biases, norm layers, classifier, running statistics: stored as float32
    mask_bits: int
    mask_bytes: int
    other_bytes: int  # non-float state (BatchNorm's batch counter) at its own size
    dense_float_values: int

    @property
    def bytes(self) -> int:
        return 4 * self.float_values + self.mask_bytes + self.other_bytes

    @property
    def dense_bytes(self) -> int:
        return 4 * self.dense_float_values + self.other_bytes

    @property
    def ratio(self) -> float:
        """How many times smaller than the dense float32 model."""
        return self.dense_bytes / self.bytes


def storage_report(model: nn.Module) -> StorageReport:
    """The memory model of arXiv 1908.02023 applied to ``model``'s state: 32 bits per float, 1 bit per mask entry."""
    convs = dict(named_mask_convs(model))
    masks = {_key(n, "mask") for n in convs}
    bases = {_key(n, "basis"): c for n, c in convs.items()}
    floats = mask_bits = mask_bytes = other = dense = 0
    for key, t in model.state_dict().items():
        if key in masks:
            mask_bits += t.numel()
            mask_bytes += (t.numel() + 7) // 8
        elif t.is_floating_point():
            floats += t.numel()
            conv = bases.get(key)
            dense += t.numel() if conv is None else conv.out_channels * conv.basis[0].numel()
        else:
            other += t.numel() * t.element_size()
    return StorageReport(floats, mask_bits, mask_bytes, other, dense)


def save_fsf(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write ``model``'s state with masks as packed sign bits and float tensors as float32, atomically.

    The file is ``torch.save`` of plain data (loadable with ``weights_only=True``): ``format``, ``version``,
    ``tensors`` (name -> tensor, everything but masks) and ``masks`` (name -> {"bits": uint8, "shape": [...]}).
    Only the signs of the mask proxies are kept (all the weights need); :func:`load_fsf` restores them as +-1.
    """
    masks = {_key(n, "mask") for n, _ in named_mask_convs(model)}
    tensors: dict[str, Tensor] = {}
    packed: dict[str, dict[str, Any]] = {}
    for key, t in model.state_dict().items():
        t = t.detach().cpu()
        if key in masks:
            packed[key] = {"bits": pack_signs(t), "shape": list(t.shape)}
        else:
            # clone(): a view would make torch.save write its whole underlying storage.
            tensors[key] = (t.float() if t.is_floating_point() else t).clone()
    payload = {"format": FORMAT, "version": FORMAT_VERSION, "tensors": tensors, "masks": packed}
    return atomic_write(path, lambda f: torch.save(payload, f))


def load_fsf(path: str | os.PathLike[str], model: nn.Module) -> nn.Module:
    """Load a :func:`save_fsf` file into ``model`` (built with the same architecture); returns ``model``.

    Mask proxies come back as +-1 (the saved signs), so every effective weight and output is exactly as saved.
    Raises ``CheckpointError`` for a missing, foreign or corrupt file and for one that does not fit ``model``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file; pass a file written by leanvision.ops.save_fsf")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path} cannot be read ({type(err).__name__}); it is not a complete FSF file") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a full-stack-filter file (written by save_fsf); use load_weights")
    if obj.get("version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path} has FSF format version {obj['version']}; upgrade leanvision to read it")
    expected = model.state_dict()
    mask_keys = {_key(n, "mask") for n, _ in named_mask_convs(model)}
    state = dict(obj["tensors"])
    try:
        for key, rec in obj["masks"].items():
            state[key] = unpack_signs(rec["bits"], tuple(rec["shape"]))
    except (ConfigError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: corrupt packed mask ({err})") from None
    problems = []
    if expected.keys() - state.keys():
        problems.append(f"missing: {', '.join(sorted(expected.keys() - state.keys())[:3])}")
    if state.keys() - expected.keys():
        problems.append(f"unexpected: {', '.join(sorted(state.keys() - expected.keys())[:3])}")
    if not problems and set(obj["masks"]) != mask_keys:
        problems.append("packed masks where this model has no MaskConv2d, or the reverse")
    bad = [k for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems += [
        f"shape mismatch for {k}: file {tuple(state[k].shape)}, model {tuple(expected[k].shape)}" for k in bad[:3]
    ]
    if problems:
        raise CheckpointError(
            f"{path} does not fit this model ({'; '.join(problems)}); build it with the architecture and ratio it "
            "was saved from"
        )
    model.load_state_dict(state)
    return model
