"""Dynamic convolution: per-sample kernels fused from a fixed bank (DyNet arXiv 2004.10694).

The same operator covers CondConv (arXiv 1904.04971: one sigmoid scalar per expert) and DY-CNN (arXiv
1912.03458: softmax over K experts with an annealed temperature). Kernels are fused from coefficients
predicted by ``GAP -> FC -> normaliser`` on the input. Three exact execution forms:

* ``"features"`` -- one static conv with ``C_out * g`` outputs, then the coefficient-weighted sum (DyNet's
  training trick). g times the conv MACs, but batch-generic: used for training and for ONNX export.
* ``"per_sample"`` -- fuse each sample's kernel, then one ordinary conv per sample. One conv at batch 1.
* ``"batched"`` -- fuse all kernels, then one conv with ``groups = B * groups`` (timm's CondConv trick).

``form="auto"`` (default) uses ``"features"`` in training and while tracing/exporting, ``"per_sample"`` in eval
at batch 1 and, at larger batches, ``"batched"`` on the CPU and ``"features"`` on a GPU.

Training is set up to match a static conv trained beside it: the combined kernel starts at a static conv's scale
(``leanvision.ops.init``), each expert's gradient is scaled so that an SGD step moves the combined kernel as much as a
static conv's (DY-CNN's softmax would otherwise split it g ways), and the coefficient layer is exempt from weight
decay and may have its own learning rate (``lr_mult``, honoured by ``leanvision.engine.make_optimizer``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leanvision.errors import ConfigError
from leanvision.ops.conv_bn_act import make_act
from leanvision.ops.fuse import bn_affine

MODES = ("dynet", "condconv", "dycnn")
FORMS = ("auto", "features", "per_sample", "batched")


def _pair(v: int) -> list[int]:
    return [v, v] if isinstance(v, int) else list(v)


def _onednn_ok(x: Tensor) -> bool:
    """Whether oneDNN's conv can be called directly: CPU float32 inference, not while tracing or exporting."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_grad_enabled()
        and torch.backends.mkldnn.is_available()
        and not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling())
    )


def _check_choice(what: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{what} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def coefficient_macs(in_chs: int, rows: int, *, g: int, mode: str = "dynet", reduction: int = 4) -> int:
    """MACs of the coefficient branch (per sample): ``C_in * rows * g``, or FC1 + FC2 for DY-CNN (1912.03458)."""
    if mode == "dycnn":
        hidden = dycnn_hidden(in_chs, reduction)
        return in_chs * hidden + hidden * rows * g
    return in_chs * rows * g


DYCNN_MIN_HIDDEN = 16


def dycnn_hidden(in_chs: int, reduction: int) -> int:
    """Width of DY-CNN's attention bottleneck FC1: ``in_chs // reduction`` (4 by default), at least 16 units.

    The floor is this library's (the paper states only the reduction). FC1 sees the average of post-ReLU maps
    (>= 0 and much alike across images), so a unit's sign varies little from image to image, and one that is off
    for every image never gets a gradient again: with 4 units (16 channels) whole attentions of a narrow CIFAR VGG died
    and became image-independent (``attention_active_units`` counts the live ones).
    """
    return max(DYCNN_MIN_HIDDEN, in_chs // reduction)


def dynamic_conv_macs(
    in_chs: int,
    out_chs: int,
    kernel_size: int,
    out_hw: tuple[int, int] | int,
    *,
    groups: int = 1,
    g: int = 4,
    coefficient_in: int | None = None,
    mode: str = "dynet",
    reduction: int = 4,
) -> int:
    """Inference MACs of one dynamic conv per sample (DyNet arXiv 2004.10694).

    ``C_out * C_in/groups * k^2 * H'W'`` (conv with the fused kernel) ``+ g * C_out * C_in/groups * k^2``
    (kernel fusion) ``+`` the coefficient FC on ``coefficient_in`` channels (``None``: shared with other
    layers and counted once elsewhere). Training in the feature-fusion form costs g times the conv term instead.
    """
    hw = out_hw * out_hw if isinstance(out_hw, int) else out_hw[0] * out_hw[1]
    kernel = out_chs * (in_chs // groups) * kernel_size * kernel_size
    macs = kernel * hw + g * kernel
    if coefficient_in is not None:
        rows = out_chs if mode == "dynet" else 1
        macs += coefficient_macs(coefficient_in, rows, g=g, mode=mode, reduction=reduction)
    return macs


class DynamicCoefficients(nn.Module):
    """``GAP -> FC -> sigmoid`` (DyNet 2004.10694, CondConv 1904.04971) or ``GAP -> FC-ReLU-FC -> softmax/τ``.

    Returns coefficients of shape ``(B, rows, g)``: ``rows = C_out`` gives DyNet's per-output-channel
    coefficients, ``rows = 1`` one scalar per expert (CondConv / DY-CNN, arXiv 1912.03458), broadcast over
    the output channels. One module may feed several dynamic convs (slice its rows, or share ``rows = 1``).
    DY-CNN's softmax temperature is the buffer ``temperature`` (saved in checkpoints, used in eval too).
    No BatchNorm1d in the branch, so training at batch 1 works. Never weight-decayed (decay pulls the logits to 0,
    i.e. to the same coefficients for every image); ``lr_mult`` scales the learning rate of its logits layer.
    """

    def __init__(
        self,
        in_chs: int,
        rows: int,
        *,
        g: int = 4,
        mode: str = "dynet",
        reduction: int = 4,
        temperature: float = 30.0,
        lr_mult: float = 1.0,
    ) -> None:
        super().__init__()
        _check_choice("mode", mode, MODES)
        if not (isinstance(g, int) and g >= 1 and rows >= 1 and in_chs >= 1):
            raise ConfigError(f"DynamicCoefficients needs g >= 1, rows >= 1, in_chs >= 1; got {g}, {rows}, {in_chs}")
        self.in_chs, self.rows, self.g, self.mode, self.reduction = in_chs, rows, g, mode, reduction
        self.lr_mult = lr_mult
        if mode == "dycnn":
            hidden = dycnn_hidden(in_chs, reduction)
            self.fc = nn.Sequential(nn.Linear(in_chs, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, rows * g))
            self.register_buffer("temperature", torch.tensor(float(temperature)))
        else:
            self.fc = nn.Linear(in_chs, rows * g)
        # Zero last layer: every expert starts at the same coefficient (1/2 for sigmoid, 1/g for softmax) for every
        # input, which the bank initialisation of DynamicConv2d assumes; the gradients still differ per expert.
        last = self.fc[-1] if isinstance(self.fc, nn.Sequential) else self.fc
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, x: Tensor) -> Tensor:
        logits = self.fc(x.mean((2, 3))).unflatten(1, (self.rows, self.g))
        if self.mode == "dycnn":
            return (logits / self.temperature).softmax(-1)
        return logits.sigmoid()

    def macs(self) -> int:
        """MACs per sample (the FC layers)."""
        return coefficient_macs(self.in_chs, self.rows, g=self.g, mode=self.mode, reduction=self.reduction)

    def no_weight_decay(self) -> set[str]:
        """All parameters (``make_optimizer`` honours it)."""
        return {n for n, _ in self.named_parameters()}

    def lr_scale(self) -> dict[str, float]:
        """Learning-rate multiplier per parameter name (``make_optimizer`` honours it): ``lr_mult`` on the logits layer.

        DY-CNN's ReLU bottleneck FC1 keeps the base rate: at a multiple of it, its units were pushed off for every
        image and stayed dead (no gradient through a ReLU that is never on), leaving image-independent kernels.
        """
        last = self.fc[-1] if isinstance(self.fc, nn.Sequential) else self.fc
        return {n: float(self.lr_mult) for n, p in self.named_parameters() if any(p is q for q in last.parameters())}


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the gradient multiplied by ``scale``."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad * ctx.scale, None


class DynamicConv2d(nn.Module):
    """Dynamic conv: ``W(x)_t = sum_i η_t^i(x) w_t^i`` over a bank of ``C_out * g`` fixed kernels (2004.10694).

    The bank ``weight`` has shape ``(C_out * g, C_in/groups, k, k)`` laid out ``[t][i]`` (i fastest), so the
    feature-fusion form is one grouped conv whose outputs reshape to ``(B, C_out, g, H', W')``. ``mode``:
    ``"dynet"`` (coefficients per sample and output channel, sigmoid), ``"condconv"`` (one sigmoid scalar per
    expert, arXiv 1904.04971), ``"dycnn"`` (softmax over experts with temperature, arXiv 1912.03458).
    ``coefficients="own"`` builds its ``DynamicCoefficients`` on this layer's input; ``"external"`` expects
    ``forward(x, coefs)`` with coefficients of shape ``(B, rows, g)`` from a module shared by a block.
    ``bias`` is static (per output channel, not fused), e.g. a folded BatchNorm's shift.
    Execution forms (all exact; see the module docstring): ONNX export traces ``"features"``, which keeps a
    dynamic batch axis; set ``form="per_sample"`` and export with ``dynamic_batch=False`` for a batch-1 file
    with one conv per layer (the ``"batched"`` form bakes the batch size into ``groups``).
    ``grad_scale`` multiplies the bank's gradient in training: ``1 / (g * c0^2)`` for the initial coefficient c0
    (1/2 sigmoid, 1/g softmax), so one SGD step moves the combined kernel as far as a static conv's (DY-CNN: g).
    """

    # The profiler books profile_macs for this module and ignores the ops inside it.

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = False,
        g: int = 4,
        mode: str = "dynet",
        coefficients: str = "own",
        reduction: int = 4,
        form: str = "auto",
    ) -> None:
        super().__init__()
        _check_choice("mode", mode, MODES)
        _check_choice("coefficients", coefficients, ("own", "external"))
        _check_choice("form", form, FORMS)
        if not (isinstance(g, int) and g >= 1):
            raise ConfigError(f"g (fixed kernels per output channel / experts) must be an int >= 1, got {g!r}")
        if in_chs % groups or out_chs % groups:
            raise ConfigError(
                f"DynamicConv2d: in_chs={in_chs} and out_chs={out_chs} must both be divisible by groups={groups}; "
                "change the widths or the groups"
            )
        self.in_chs, self.out_chs, self.kernel_size = in_chs, out_chs, kernel_size
        self.stride, self.dilation, self.groups = stride, dilation, groups
        self.padding = dilation * (kernel_size - 1) // 2 if padding is None else padding
        self.g, self.mode, self.form = g, mode, form
        self.rows = out_chs if mode == "dynet" else 1
        c0 = 1 / g if mode == "dycnn" else 0.5
        self.grad_scale = 1 / (g * c0 * c0)
        self.weight = nn.Parameter(torch.empty(out_chs * g, in_chs // groups, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_chs)) if bias else None
        self.coef = (
            DynamicCoefficients(in_chs, self.rows, g=g, mode=mode, reduction=reduction)
            if coefficients == "own"
            else None
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The combined kernel at init gets a static conv's variance (``leanvision.ops.init``), whatever g and mode.

        Coefficients start equal (zero-initialised last FC): sigmoid = 1/2 gives Var(Σ_i w^i / 2) = g/4 Var(w), so
        the bank std is scaled by 2/sqrt(g); softmax = 1/g gives Var(w)/g, so it is scaled by sqrt(g).
        """
        fan_out = self.out_chs * self.kernel_size**2  # torch's fan-out, as kaiming_std
        std = math.sqrt(2.0 / fan_out) * (math.sqrt(self.g) if self.mode == "dycnn" else 2.0 / math.sqrt(self.g))
        nn.init.normal_(self.weight, 0.0, std)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.in_chs}, {self.out_chs}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, groups={self.groups}, g={self.g}, mode={self.mode!r}, form={self.form!r}"
        )

    # --- the three exact forms --------------------------------------------------------------------------------

    def bank(self) -> Tensor:
        """The fixed kernels ``(C_out * g, C_in/groups, k, k)``, their gradient scaled by ``grad_scale`` in training."""
        if self.grad_scale != 1 and self.training and torch.is_grad_enabled() and self.weight.requires_grad:
            return _ScaleGrad.apply(self.weight, self.grad_scale)
        return self.weight

    def fused_kernels(self, coefs: Tensor) -> Tensor:
        """Per-sample kernels ``(B, C_out, C_in/groups, k, k)``: the ``g``-term sum of each output channel."""
        bank = self.bank().flatten(1).unflatten(0, (self.out_chs, self.g))  # (C_out, g, D)
        coefs = coefs.expand(-1, self.out_chs, -1).transpose(0, 1)  # (C_out, B, g); CondConv/DY-CNN share one row
        # A batched MatMul (t, b, g) @ (t, g, D), not an Einsum: exported, onnxruntime runs it several times faster.
        fused = torch.matmul(coefs, bank)  # (C_out, B, D)
        if fused.shape[1] == 1:  # batch 1: dropping the batch axis is a reshape; exported, a transpose would copy
            return fused.reshape(1, self.out_chs, *self.weight.shape[1:])
        return fused.transpose(0, 1).unflatten(2, self.weight.shape[1:])

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None, groups: int) -> Tensor:
        if _onednn_ok(x):
            # PyTorch's heuristic sends some small batch-1 maps (seen: 320x7x7, 3x3 kernel) to its im2col conv;
            # calling oneDNN keeps every dynamic conv on the backend the static convs of the net use.
            pad, stride, dil = (_pair(v) for v in (self.padding, self.stride, self.dilation))
            return torch.ops.aten.mkldnn_convolution(x, weight.contiguous(), bias, pad, stride, dil, groups)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, groups)

    def forward_features_form(self, x: Tensor, coefs: Tensor) -> Tensor:
        """One conv with ``C_out * g`` outputs, then the coefficient-weighted sum over ``g`` (batch-generic)."""
        y = self._conv(x, self.bank(), None, self.groups).unflatten(1, (self.out_chs, self.g))
        y = (y * coefs[..., None, None]).sum(2)
        return y if self.bias is None else y + self.bias[:, None, None]

    def forward_per_sample(self, x: Tensor, coefs: Tensor) -> Tensor:
        """Fuse each sample's kernel, then one ordinary conv per sample (a single conv at batch 1)."""
        fused = self.fused_kernels(coefs)
        if x.shape[0] == 1:  # no slice of the input, no gather of the kernel: exported, both would be copies
            return self._conv(x, fused.squeeze(0), self.bias, self.groups)
        outs = [self._conv(x[b : b + 1], fused[b], self.bias, self.groups) for b in range(x.shape[0])]
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def forward_batched(self, x: Tensor, coefs: Tensor) -> Tensor:
        """Fuse all kernels, then one conv over the batch folded into channels with ``groups = B * groups``."""
        b = x.shape[0]
        fused = self.fused_kernels(coefs).flatten(0, 1)
        bias = None if self.bias is None else self.bias.repeat(b)
        y = self._conv(x.flatten(0, 1).unsqueeze(0), fused, bias, b * self.groups)
        return y.view(b, self.out_chs, *y.shape[2:])

    def chosen_form(self, batch: int, device_type: str = "cpu") -> str:
        """The form ``forward`` runs for this batch size and device in the current mode."""
        if self.form != "auto":
            return self.form
        exporting = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()
        if self.training or exporting:
            return "features"
        if batch == 1:
            return "per_sample"
        # On a GPU cuDNN's convolution with groups = B * groups is several times slower than the g-times
        # wider static conv (measured on an H200, batch 32 and 256); on the CPU the grouped conv wins.
        return "features" if device_type == "cuda" else "batched"

    def forward(self, x: Tensor, coefs: Tensor | None = None) -> Tensor:
        if coefs is None:
            if self.coef is None:
                raise ConfigError(
                    "this DynamicConv2d was built with coefficients='external': call it as conv(x, coefs) with the "
                    "output of a shared DynamicCoefficients"
                )
            coefs = self.coef(x)
        tracing = torch.jit.is_tracing()  # shapes are symbolic then: checking them would freeze them
        if not tracing and (coefs.dim() != 3 or coefs.shape[1:] != (self.rows, self.g)):
            raise ConfigError(
                f"coefficients must have shape (B, {self.rows}, {self.g}) for this layer, got {tuple(coefs.shape)}"
            )
        form = self.chosen_form(x.shape[0], x.device.type)
        if form == "features":
            return self.forward_features_form(x, coefs)
        if form == "per_sample":
            return self.forward_per_sample(x, coefs)
        return self.forward_batched(x, coefs)

    def profile_macs(self, inputs: tuple, output: Tensor) -> int:
        """Inference MACs (fused conv + kernel fusion + own coefficient FC), whatever form ran (2004.10694)."""
        b, _, h, w = output.shape
        macs = dynamic_conv_macs(
            self.in_chs, self.out_chs, self.kernel_size, (h, w), groups=self.groups, g=self.g, mode=self.mode
        )
        if self.coef is not None:
            macs += self.coef.macs()
        return b * macs

    @torch.no_grad()
    def fold_scale_shift(self, scale: Tensor, shift: Tensor) -> None:
        """Make this layer compute ``scale * conv(x) + shift`` per output channel (BN folding).

        Fusion is linear, so scaling every fixed kernel of channel t by ``scale_t`` scales the fused kernel; the
        shift becomes a static bias. Arithmetic in float64, cast back.
        """
        w = self.weight.double().unflatten(0, (self.out_chs, self.g)) * scale.double().view(-1, 1, 1, 1, 1)
        bias = torch.zeros_like(shift, dtype=torch.float64) if self.bias is None else self.bias.double()
        self.weight = nn.Parameter(w.flatten(0, 1).to(self.weight.dtype), self.weight.requires_grad)
        self.bias = nn.Parameter((bias * scale.double() + shift.double()).to(self.weight.dtype))


class DynamicConvBnAct(nn.Module):
    """DynamicConv2d -> BatchNorm2d -> activation; ``fold_bn()`` folds the BN into the fixed kernels (2004.10694).

    ``coefficients="external"`` takes ``forward(x, coefs)`` from a block-level ``DynamicCoefficients``.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        groups: int = 1,
        g: int = 4,
        mode: str = "dynet",
        coefficients: str = "own",
        act_layer: type[nn.Module] | None = nn.ReLU,
        norm_layer: type[nn.Module] | None = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.conv = DynamicConv2d(
            in_chs,
            out_chs,
            kernel_size,
            stride=stride,
            groups=groups,
            g=g,
            mode=mode,
            coefficients=coefficients,
            bias=norm_layer is None,
        )
        self.bn: nn.Module | None = norm_layer(out_chs) if norm_layer is not None else None
        self.act: nn.Module | None = make_act(act_layer)

    def forward(self, x: Tensor, coefs: Tensor | None = None) -> Tensor:
        x = self.conv(x, coefs)
        if self.bn is not None:
            x = self.bn(x)
        if self.act is not None:
            x = self.act(x)
        return x

    def fold_bn(self) -> DynamicConvBnAct:
        """Fold the eval-mode BatchNorm into the fixed kernels (+ static bias) and drop it; returns self."""
        bn = self.bn
        # Only an exact torch BatchNorm with running stats: a subclass may do more (e.g. an activation).
        if type(bn) is nn.BatchNorm2d and bn.track_running_stats and bn.running_mean is not None:
            self.conv.fold_scale_shift(*bn_affine(bn))
            self.bn = None
        return self


def dynamic_convs(model: nn.Module) -> Iterable[DynamicConv2d]:
    """Every DynamicConv2d in ``model``."""
    return (m for m in model.modules() if isinstance(m, DynamicConv2d))


def set_form(model: nn.Module, form: str) -> nn.Module:
    """Set the execution form of every DynamicConv2d in ``model`` (``"auto"`` restores the default); returns it."""
    _check_choice("form", form, FORMS)
    for m in dynamic_convs(model):
        m.form = form
    return model


@torch.no_grad()
def anneal_temperature(
    model: nn.Module, step: int, total_steps: int, *, start: float = 30.0, end: float = 1.0
) -> float:
    """Set DY-CNN's softmax temperature (arXiv 1912.03458) linearly from ``start`` to ``end`` over ``total_steps``.

    Call it from a ``train_step`` with ``ctx.step`` (the global batch index, continued on resume); after
    ``total_steps`` it stays at ``end``. The temperature is a buffer, so checkpoints keep it and eval uses it.
    Returns the value set.
    """
    if not isinstance(total_steps, int) or total_steps < 1:
        raise ConfigError(f"total_steps must be an int >= 1 (e.g. 10 epochs x batches per epoch), got {total_steps!r}")
    modules = [m for m in model.modules() if isinstance(m, DynamicCoefficients) and m.mode == "dycnn"]
    if not modules:
        raise ConfigError("the model has no DY-CNN coefficients to anneal; build its dynamic convs with mode='dycnn'")
    value = start + (end - start) * min(max(step, 0) / total_steps, 1.0)
    for m in modules:
        m.temperature.fill_(value)
    return value


class CoefficientSpread:
    """How much the coefficients depend on the image: std / mean of each coefficient across a batch's images.

    Hooks every ``DynamicCoefficients`` of ``model`` (one per layer, or per block when shared); each forward of a
    batch of >= 2 images adds its layer's mean over coefficients of std/mean across the images. ``result()`` gives
    the batch-size-weighted average per layer since the last ``reset()``. About 0 means an input-independent,
    in effect static, kernel. Use as a context manager, or ``close()`` to remove the hooks.
    """

    def __init__(self, model: nn.Module) -> None:
        self._sum: dict[str, float] = {}
        self._n: dict[str, int] = {}
        self._hooks = [
            m.register_forward_hook(self._hook(name))
            for name, m in model.named_modules()
            if isinstance(m, DynamicCoefficients)
        ]

    def _hook(self, name: str):
        def record(module: nn.Module, inputs: tuple, coefs: Tensor) -> None:
            c = coefs.detach().flatten(1).double()
            if c.shape[0] < 2:
                return
            spread = (c.std(0, correction=0) / c.mean(0).abs().clamp_min(1e-12)).mean().item()
            self._sum[name] = self._sum.get(name, 0.0) + spread * c.shape[0]
            self._n[name] = self._n.get(name, 0) + c.shape[0]

        return record

    def result(self) -> dict[str, float]:
        """Spread per coefficient module name (empty before a batch of >= 2 images)."""
        return {name: self._sum[name] / self._n[name] for name in self._sum}

    def reset(self) -> None:
        self._sum.clear()
        self._n.clear()

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def __enter__(self) -> CoefficientSpread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@torch.no_grad()
def coefficient_spread(model: nn.Module, data: Iterable, *, max_batches: int | None = None) -> dict[str, float]:
    """Per-layer coefficient spread (see :class:`CoefficientSpread`) of ``model`` in eval mode over ``data``.

    ``data`` yields input batches or ``(inputs, targets)`` pairs; inputs go to the model's device.
    """
    with CoefficientSpread(model) as rec:
        _eval_pass(model, itertools.islice(data, max_batches))
        return rec.result()


def _eval_pass(model: nn.Module, data: Iterable) -> int:
    """Run ``model`` in eval mode over input batches or ``(inputs, targets)`` pairs (for hooks); the image count."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    images = 0
    try:
        for batch in data:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(x.to(device))
            images += x.shape[0]
    finally:
        model.train(was_training)
    return images


@torch.no_grad()
def attention_active_units(
    model: nn.Module, data: Iterable, *, min_fraction: float = 0.01
) -> dict[str, tuple[int, int]]:
    """Per DY-CNN attention (arXiv 1912.03458): (hidden ReLU units active on >= ``min_fraction`` of the images, all).

    A unit active on no image passes no gradient and never recovers: with every unit of a layer dead its
    attention is the same for every image, i.e. a static kernel (``coefficient_spread`` then reads about 0).
    ``data`` yields input batches or ``(inputs, targets)`` pairs.
    """
    counts: dict[str, Tensor] = {}

    def count(name: str):
        def hook(module: nn.Module, inputs: tuple, hidden: Tensor) -> None:
            counts[name] = counts.get(name, 0) + (hidden > 0).sum(0)  # FC1's output; the ReLU after it is in place

        return hook

    attentions = [(n, m) for n, m in model.named_modules() if isinstance(m, DynamicCoefficients) and m.mode == "dycnn"]
    hooks = [m.fc[0].register_forward_hook(count(n)) for n, m in attentions]
    try:
        images = _eval_pass(model, data)
    finally:
        for h in hooks:
            h.remove()
    return {n: (int((c >= min_fraction * images).sum()), c.numel()) for n, c in counts.items()}


@dataclass
class DynamicStep:
    """``fit(train_step=...)`` for dynamic-conv nets: DY-CNN's temperature schedule and the coefficient spread.

    ``anneal_steps`` > 0 anneals every DY-CNN temperature linearly from ``start`` to ``end`` over that many batches
    (DY-CNN, arXiv 1912.03458, anneals over the first 10 epochs of 300; keep it within ~10% of training). Each
    epoch's row of metrics gets ``coefficient_spread`` ({coefficient module: spread}) over its training batches.
    """

    anneal_steps: int = 0
    start: float = 30.0
    end: float = 1.0
    _spread: CoefficientSpread | None = field(default=None, repr=False)
    _epoch: int = field(default=-1, repr=False)

    def __call__(self, model: nn.Module, inputs: Any, targets: Tensor, ctx: Any) -> tuple[Tensor, Any]:
        if self.anneal_steps:
            anneal_temperature(model, ctx.step, self.anneal_steps, start=self.start, end=self.end)
        if self._spread is None:
            self._spread = CoefficientSpread(model)
        if ctx.epoch != self._epoch:  # also drops what the previous epoch's validation passes added
            self._spread.reset()
            self._epoch = ctx.epoch
        outputs = model(inputs)
        loss = ctx.loss_fn(outputs, targets, inputs)
        ctx.update(loss)
        ctx.metrics["coefficient_spread"] = self._spread.result()
        return loss, outputs
