"""Balanced binary convolutions with gated residuals, BBG (arXiv 1909.12117), and their packed 1-bit form.

Pieces, smallest first:

* :func:`sign_pm1` / :func:`sign_ste`: sign with ``sign(0) = +1`` and a clip straight-through estimator.
* :func:`binarize_weight`: balanced (per-filter centred) or plain XNOR-style weights, ``alpha * sign(W_hat)``.
* :class:`BinaryConv2d`: 1-bit weights x 1-bit activations (its MACs are booked as binary OPs by the profiler).
* :class:`BinaryGatedLayer`: ``y = BN(B * sign(a)) + g * S(a)``, the gated residual layer.
* :func:`pack_binary_conv`, :class:`PackedBinaryConv2d`, :func:`xnor_conv2d_reference`: 1-bit storage and an
  exact XNOR/popcount reference of its inference.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leanvision.errors import ConfigError
from leanvision.ops.bitpack import pack_signs, unpack_signs
from leanvision.ops.fuse import bn_affine

RESIDUALS = ("none", "identity", "gate", "se_gate")


# --- binarisers -----------------------------------------------------------------------------------------------


def sign_pm1(x: Tensor) -> Tensor:
    """``+1`` where ``x >= 0`` else ``-1``, in ``x``'s dtype (BBG, arXiv 1909.12117).

    ``torch.sign(0) = 0`` would turn exact zeros (after ReLU, padding, centring) into 0 outputs and break the
    +-1 algebra that the XNOR/popcount kernel relies on, so zero maps to +1 (as ``bitpack.pack_signs`` does).
    """
    one = torch.ones((), dtype=x.dtype, device=x.device)
    return torch.where(x >= 0, one, -one)


def sign_ste(x: Tensor, *, clip: bool = True) -> Tensor:
    """``sign_pm1(x)`` forward; backward passes the gradient where ``|x| <= 1`` (clip-STE, arXiv 1909.12117).

    Written as ``s + (x - x.detach()) * 1{|x| <= 1}`` instead of a custom autograd Function, so TorchScript /
    ONNX can trace it. This form (not ``x + (s - x).detach()``) keeps the forward value exactly +-1 in float:
    ``x - x.detach()`` is exactly 0, whereas ``x + (s - x)`` rounds (0.3 + (-1.3) != -1).
    ``clip=False`` is the identity STE (gradient 1 everywhere).
    """
    s = sign_pm1(x)
    if not (torch.is_grad_enabled() and x.requires_grad):
        return s  # inference and export: a plain Where node, no STE arithmetic in the graph
    delta = x - x.detach()  # exactly 0 forward, gradient 1 backward
    if clip:  # an explicit mask, not clamp: torch's clamp passes no gradient at exactly +-1
        delta = delta * (x.detach().abs() <= 1).to(x.dtype)
    return s + delta


def centre_weight(w: Tensor) -> Tensor:
    """``W - mean(W)`` per output filter (dim 0): the relaxed balance constraint of BBG (arXiv 1909.12117)."""
    return w - w.mean(dim=tuple(range(1, w.dim())), keepdim=True)


def binarize_weight(
    w: Tensor, *, balanced: bool = True, detach_alpha: bool = False, clip: bool = True, ste: bool = True
) -> tuple[Tensor, Tensor]:
    """``(signs, alpha)`` with ``B = alpha[o] * signs[o]``: BBG's balanced binary weights (arXiv 1909.12117).

    ``balanced=True`` centres each output filter first (``W_hat = W - mean_o(W)``), so about half of each
    filter's signs are +1 whatever the latent weights' bias; ``balanced=False`` is the plain XNOR-Net binariser
    ``sign(W) * mean|W|`` (arXiv 1603.05279). ``alpha = mean|W_hat|`` per output channel, differentiated like
    XNOR-Net unless ``detach_alpha``. The signs carry a clip-STE (gradient where ``|W_hat| <= 1``); the gradient
    reaches ``W`` through the centring, whose Jacobian ``I - 11^T/n`` makes it sum to zero over each filter.
    ``ste=False`` gives the plain signs (no gradient to ``W`` through them), the inference form.
    """
    w_hat = centre_weight(w) if balanced else w
    alpha = w_hat.abs().mean(dim=tuple(range(1, w.dim())))
    if detach_alpha:
        alpha = alpha.detach()
    return (sign_ste(w_hat, clip=clip) if ste else sign_pm1(w_hat)), alpha


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


# --- binary convolution ---------------------------------------------------------------------------------------


def _integer_barrier(y: Tensor) -> Tensor:
    """``round(y)`` of an already integer-valued +-1 conv output: a no-op in value, kept for exported graphs.

    Graph optimisers (onnxruntime's Conv+Mul / Conv+BatchNormalization fusions) would fold alpha and the BN
    into the +-1 weights; the conv then sums +-alpha*s terms with rounding, an exact 0 (frequent: a sum of an
    even number of +-1) becomes +-1e-8 and the next sign flips. Round between them keeps the sum exact.
    """
    return y.round()


def _scale_out(y: Tensor, alpha: Tensor, scale: Tensor | None, shift: Tensor | None) -> Tensor:
    """``y * alpha``, then a folded BatchNorm's ``scale``/``shift``, per output channel: every binary conv's order."""
    y = y * alpha.view(1, -1, 1, 1)
    return y if scale is None else y * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)


class BinaryConv2d(nn.Module):
    """1-bit weights x 1-bit activations: ``alpha * (sign(W_hat) conv sign(x))`` (BBG, arXiv 1909.12117).

    Not an ``nn.Conv2d`` subclass on purpose: generic conv -> BN folding would rescale the latent weights and
    reference MAC counters would book the binary MACs as float ones. ``mac_precision = "binary"`` makes the
    profiler book the convolution's MACs as ``bops``. The per-channel ``alpha`` (and, after :meth:`folded`, the
    folded BatchNorm affine) is applied to the integer-valued conv output: at deployment it merges into the
    following BatchNorm, so it is counted free like BN (the papers' convention).

    ``padding`` pads the binarised input with zeros, which are not +-1: a deployed XNOR kernel must treat
    padded positions as "contributes 0" (as :func:`xnor_conv2d_reference` does with a validity mask).
    """

    mac_precision = "binary"

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int | tuple[int, int] = 3,
        *,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | None = None,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        balanced: bool = True,
        detach_alpha: bool = False,
        clip_ste: bool = True,
    ) -> None:
        super().__init__()
        if in_chs % groups or out_chs % groups:
            raise ConfigError(
                f"BinaryConv2d: in_chs={in_chs} and out_chs={out_chs} must both be divisible by groups={groups}"
            )
        self.in_channels, self.out_channels, self.groups = in_chs, out_chs, groups
        self.kernel_size = _pair(kernel_size)
        self.stride, self.dilation = _pair(stride), _pair(dilation)
        self.padding = _pair(padding) if padding is not None else tuple((k - 1) // 2 for k in self.kernel_size)
        self.balanced, self.detach_alpha, self.clip_ste = balanced, detach_alpha, clip_ste
        self.weight = nn.Parameter(torch.empty(out_chs, in_chs // groups, *self.kernel_size))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Conv2d's default
        # Deploy-time affine of a folded BatchNorm (see `folded`); None buffers stay out of the state dict.
        self.register_buffer("out_scale", None)
        self.register_buffer("out_shift", None)

    def binary_weight(self, *, ste: bool = True) -> tuple[Tensor, Tensor]:
        """``(signs, alpha)`` of the current latent weights (see :func:`binarize_weight`)."""
        return binarize_weight(
            self.weight, balanced=self.balanced, detach_alpha=self.detach_alpha, clip=self.clip_ste, ste=ste
        )

    def forward(self, x: Tensor) -> Tensor:
        # Eval mode is the deploy form: exact signs without STE arithmetic (so no gradient reaches x through the
        # sign there), which is also what ONNX export traces.
        signs, alpha = self.binary_weight(ste=self.training)
        xb = sign_ste(x, clip=self.clip_ste) if self.training else sign_pm1(x)
        # +-1 conv +-1 sums integers, exact in float32 below 2^24 whatever the summation order: the same numbers
        # as an XNOR/popcount kernel. alpha multiplies afterwards (same value and gradient as conv with alpha*B).
        y = F.conv2d(xb, signs, None, self.stride, self.padding, self.dilation, self.groups)
        if not self.training:
            y = _integer_barrier(y)
        return _scale_out(y, alpha, self.out_scale, self.out_shift)

    @torch.no_grad()
    def folded(self, bn: nn.BatchNorm2d) -> BinaryConv2d:
        """A copy with the eval-mode ``bn`` after it applied as a per-channel affine on its output.

        The latent weights are untouched: scaling them (generic conv-BN folding) flips signs for negative BN scales
        and can round near-zero centred weights across 0. The result equals ``bn(self(x))`` up to float rounding.
        """
        scale, shift = bn_affine(bn)
        if self.out_scale is not None:  # already folded once: compose the two affines
            shift = self.out_shift.double() * scale + shift
            scale = self.out_scale.double() * scale
        out = copy.deepcopy(self)
        out.out_scale = scale.to(self.weight.dtype)
        out.out_shift = shift.to(self.weight.dtype)
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, groups={self.groups}, balanced={self.balanced}"
        )


@torch.no_grad()
def sign_balance(conv: BinaryConv2d) -> Tensor:
    """p+ per output filter: the fraction of +1 among the binary weights that ``conv`` uses (arXiv 1909.12117)."""
    signs, _ = conv.binary_weight()
    return (signs > 0).flatten(1).double().mean(1)


def balance_error(model: nn.Module) -> float:
    """Mean over all binary filters of ``|p+ - 0.5|`` (0 = perfectly balanced, BBG's max-entropy target)."""
    ps = [sign_balance(m) for m in model.modules() if isinstance(m, BinaryConv2d)]
    if not ps:
        raise ConfigError("balance_error: the model has no BinaryConv2d layer")
    return float((torch.cat(ps) - 0.5).abs().mean())


@torch.no_grad()
def clip_latent_weights(model: nn.Module, bound: float = 1.0) -> None:
    """Clamp the latent weights of every BinaryConv2d to ``[-bound, bound]`` (the BNN recipe, after each step).

    Outside the clip-STE window a latent weight gets no gradient and could drift forever; clamping keeps every
    weight able to flip its sign again.
    """
    for m in model.modules():
        if isinstance(m, BinaryConv2d):
            m.weight.clamp_(-bound, bound)


def binary_train_step(model: nn.Module, inputs: Any, targets: Tensor, ctx: Any) -> tuple[Tensor, Any]:
    """A ``fit`` train step for binary nets: the usual update, then latent weights clamped to [-1, 1]."""
    outputs = model(inputs)
    loss = ctx.loss_fn(outputs, targets, inputs)
    ctx.update(loss)
    clip_latent_weights(model)
    return loss, outputs


# --- gated residual layer -------------------------------------------------------------------------------------


class ChannelGate(nn.Conv2d):
    """Learnable per-channel gate ``g * x`` (init 1) of BBG's gated residual (arXiv 1909.12117).

    Written as a depthwise 1x1 conv so that every MAC counter (the profiler's dispatcher and hooks on
    ``nn.Conv2d``) books its ``C*H*W`` float multiplies; a bare ``g * x`` would count as a free element-wise op.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels, channels, 1, groups=channels, bias=False)
        nn.init.ones_(self.weight)


class SEGate(nn.Module):
    """Input-dependent gate ``sigmoid(FC(GAP(a))) * s`` of the gated residual (variant, arXiv 1909.12117)."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_chs, out_chs)

    def forward(self, a: Tensor, s: Tensor) -> Tensor:
        g = torch.sigmoid(self.fc(a.mean((2, 3))))
        return s * g[:, :, None, None]

    def profile_macs(self, inputs: tuple, output: Tensor) -> dict[str, int]:
        # The FC plus the per-sample gate multiply (C*H*W float MACs, free for the dispatcher as element-wise).
        return {"macs": self.fc.in_features * self.fc.out_features + output[0].numel()}


class ShapeShortcut(nn.Module):
    """Parameter-free S(a) for a shape change: average pool by ``stride``, then repeat (or zero-pad) channels."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        if out_chs < in_chs:
            raise ConfigError(
                f"a residual from {in_chs} to {out_chs} channels needs out_chs >= in_chs; use non-decreasing widths "
                "or residual='none'"
            )
        self.stride = stride
        self.repeat = out_chs // in_chs if out_chs % in_chs == 0 else 1
        extra = out_chs - in_chs * self.repeat
        self.pad = (0, 0, 0, 0, 0, extra)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            # ceil_mode matches the spatial size of a padded stride-s conv for odd inputs
            x = F.avg_pool2d(x, self.stride, self.stride, ceil_mode=True, count_include_pad=False)
        if self.repeat > 1:
            x = x.repeat(1, self.repeat, 1, 1)
        if self.pad[-1]:
            x = F.pad(x, self.pad)
        return x


class BinaryGatedLayer(nn.Module):
    """``y = BN(B conv sign(a)) + g * S(a)``: BBG's binary layer with gated residual (arXiv 1909.12117).

    ``residual``: ``"gate"`` (learnable channel gate, init 1, the default), ``"se_gate"`` (input-dependent
    ``sigmoid(FC(GAP(a)))``), ``"identity"`` (ungated shortcut, as Bi-Real Net) or ``"none"`` (plain binary layer,
    no float path: XNOR-Net / VGG style). The gate and BN stay in float; the gate's ``C*H*W`` multiplies are
    counted as float MACs. ``fold_bn()`` (called by ``fuse_bn``) folds the BN into the binary conv's
    per-channel output scale, which is exact: the BN sits after the conv, never between a sign and its conv.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        *,
        kernel_size: int = 3,
        stride: int = 1,
        balanced: bool = True,
        residual: str = "gate",
        detach_alpha: bool = False,
    ) -> None:
        super().__init__()
        if residual not in RESIDUALS:
            raise ConfigError(f"residual must be one of {RESIDUALS}, got {residual!r}")
        self.residual = residual
        self.conv = BinaryConv2d(
            in_chs, out_chs, kernel_size, stride=stride, balanced=balanced, detach_alpha=detach_alpha
        )
        self.bn: nn.Module | None = nn.BatchNorm2d(out_chs)
        needs_s = residual != "none" and (in_chs != out_chs or stride != 1)
        self.shortcut = ShapeShortcut(in_chs, out_chs, stride) if needs_s else None
        self.gate: nn.Module | None = None
        if residual == "gate":
            self.gate = ChannelGate(out_chs)
        elif residual == "se_gate":
            self.gate = SEGate(in_chs, out_chs)

    def forward(self, a: Tensor) -> Tensor:
        y = self.conv(a)
        if self.bn is not None:
            y = self.bn(y)
        if self.residual == "none":
            return y
        s = a if self.shortcut is None else self.shortcut(a)
        if self.residual == "gate":
            s = self.gate(s)
        elif self.residual == "se_gate":
            s = self.gate(a, s)
        return y + s

    def fold_bn(self) -> BinaryGatedLayer:
        """Fold the eval-mode BatchNorm into the binary conv's output affine and drop it; returns self."""
        if type(self.bn) is nn.BatchNorm2d and self.bn.track_running_stats and self.bn.running_mean is not None:
            self.conv = self.conv.folded(self.bn)
            self.bn = None
        return self


# --- packed 1-bit storage and an exact XNOR / popcount reference ----------------------------------------------


@torch.no_grad()
def pack_binary_conv(conv: BinaryConv2d) -> dict[str, Any]:
    """The deployable state of ``conv``: packed sign bits + per-channel float32 ``alpha`` (+ folded BN affine).

    Everything is a tensor or an int tuple, so ``torch.save`` / ``torch.load(weights_only=True)`` round-trip it.
    Storage is 1 bit per weight plus 32 bits per output channel instead of 32 bits per weight.
    """
    signs, alpha = conv.binary_weight()
    state: dict[str, Any] = {
        "bits": pack_signs(signs),
        "shape": tuple(signs.shape),
        "alpha": alpha.detach().float().clone(),
        "stride": conv.stride,
        "padding": conv.padding,
        "dilation": conv.dilation,
        "groups": conv.groups,
    }
    if conv.out_scale is not None:
        state["out_scale"] = conv.out_scale.detach().float().clone()
        state["out_shift"] = conv.out_shift.detach().float().clone()
    return state


class PackedBinaryConv2d(nn.Module):
    """Inference-only binary conv rebuilt from :func:`pack_binary_conv`'s 1-bit state (arXiv 1909.12117)."""

    mac_precision = "binary"

    def __init__(self, state: dict[str, Any]) -> None:
        super().__init__()
        shape = tuple(int(v) for v in state["shape"])
        self.shape, self.groups = shape, int(state["groups"])
        self.stride, self.padding, self.dilation = (_pair(tuple(state[k])) for k in ("stride", "padding", "dilation"))
        self.register_buffer("bits", state["bits"].clone())
        self.register_buffer("alpha", state["alpha"].clone())
        self.register_buffer("out_scale", state["out_scale"].clone() if "out_scale" in state else None)
        self.register_buffer("out_shift", state["out_shift"].clone() if "out_shift" in state else None)
        # Unpacked once: torch has no 1-bit conv kernel, so the +-1 weights run through an ordinary float conv.
        self.register_buffer("signs", unpack_signs(self.bits, shape), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        y = F.conv2d(sign_pm1(x), self.signs.to(x.dtype), None, self.stride, self.padding, self.dilation, self.groups)
        return _scale_out(_integer_barrier(y), self.alpha.to(x.dtype), self.out_scale, self.out_shift)


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)


def xnor_conv2d_reference(x: Tensor, state: dict[str, Any]) -> Tensor:
    """Reference inference of a packed binary conv with XNOR + popcount on packed bytes (numpy, exact).

    For +-1 vectors ``a . w = n - 2 * popcount(a XOR w)``. Zero padding contributes 0, not +-1, so each patch
    carries a validity mask and only valid positions are counted: ``n_valid - 2 * popcount((a XOR w) & valid)``.
    The integer result is scaled by ``alpha`` (and a folded BN affine) in float32, in the same order as
    :class:`BinaryConv2d`, so the two agree bit for bit. Slow (numpy, one output channel at a time): for tests.
    """
    o, cin_g, kh, kw = (int(v) for v in state["shape"])
    groups = int(state["groups"])
    sh, sw = state["stride"]
    ph, pw = state["padding"]
    dh, dw = state["dilation"]
    w_bits = np.unpackbits(state["bits"].numpy(), count=o * cin_g * kh * kw).reshape(o, cin_g * kh * kw)
    xb = (x.detach().numpy() >= 0).astype(np.uint8)  # bit 1 = +1, as pack_signs
    n, c, h, w_in = xb.shape
    if c != cin_g * groups:
        raise ConfigError(f"input has {c} channels, the packed conv expects {cin_g * groups}")
    valid = np.zeros((1, 1, h + 2 * ph, w_in + 2 * pw), np.uint8)
    valid[..., ph : ph + h, pw : pw + w_in] = 1
    xb = np.pad(xb, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w_in + 2 * pw - dw * (kw - 1) - 1) // sw + 1

    def patches(t: np.ndarray) -> np.ndarray:  # (N, C, H, W) -> (N, Ho*Wo, C*kh*kw) in the weight's (c, i, j) order
        cols = [
            t[:, :, i * dh : i * dh + sh * (ho - 1) + 1 : sh, j * dw : j * dw + sw * (wo - 1) + 1 : sw]
            for i in range(kh)
            for j in range(kw)
        ]
        return np.stack(cols, axis=2).reshape(t.shape[0], t.shape[1] * kh * kw, ho * wo).transpose(0, 2, 1)

    out = np.zeros((n, o, ho * wo), np.int64)
    o_g = o // groups
    for g in range(groups):
        a = np.packbits(patches(xb[:, g * cin_g : (g + 1) * cin_g]), axis=-1)  # (N, P, bytes)
        m = np.packbits(patches(np.broadcast_to(valid, (1, cin_g, *valid.shape[2:]))), axis=-1)  # (1, P, bytes)
        n_valid = _POPCOUNT[m].sum(-1)  # (1, P)
        for oc in range(g * o_g, (g + 1) * o_g):
            wb = np.packbits(w_bits[oc])  # (bytes,)
            mismatches = _POPCOUNT[(a ^ wb) & m].sum(-1)  # XNOR popcount = n_valid - mismatches
            out[:, oc] = n_valid - 2 * mismatches
    y = torch.from_numpy(out.astype(np.float32)).reshape(n, o, ho, wo)
    return _scale_out(y, state["alpha"].float(), state.get("out_scale"), state.get("out_shift"))
