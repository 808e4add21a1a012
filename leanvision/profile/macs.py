"""Count multiply-accumulates (MACs) and parameters with the papers' convention, per module."""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from math import prod
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils import flop_counter
from torch.utils._python_dispatch import TorchDispatchMode

from leanvision._torch import as_args, eval_mode
from leanvision.errors import ConfigError

aten = torch.ops.aten

# --- The convention -----------------------------------------------------------------------------------------
# COUNTED: convolutions (any dims, grouped, depthwise, transposed) and the matrix-multiply family, plus
# scaled-dot-product attention (it is two batched matmuls). Linear, matmul, einsum and tensordot are
# composite ops that reach the dispatcher as mm / addmm / bmm / baddbmm, so they are counted there.
# Bias additions are not counted (papers and fvcore count multiplications only).
#
# FREE (neither counted nor reported): pointwise / element-wise ops and activations, normalisation layers,
# pooling and interpolation, reductions and softmax, views, copies, concatenation, padding, indexing,
# factory and random ops. See `_FREE_NAMES` and `_FREE_TAGS` below.
#
# UNSUPPORTED: every other op that runs (FFTs, linear algebra, RNN kernels, cdist, quantized kernels, ...).
# They are surfaced in `Profile.unsupported` with their call counts rather than silently counted as zero.
#
# EXTENSIONS (see the package docstring): a module's own `profile_macs`, `mac_precision = "binary"` (MACs booked
# as `bops`), and `register_op_macs` for custom ops. A formula returns MACs (int) or {"macs": .., "bops": ..}.


def _from_torch(packet: Any) -> Callable[..., int]:
    # torch's formulas count 2 FLOPs per multiply-accumulate.
    formula = flop_counter.flop_registry[packet]

    def macs(*args: Any, out: Any, **kwargs: Any) -> int:
        return int(formula(*args, **kwargs, out_val=out)) // 2

    return macs


def _sdpa_macs(q: Tensor, k: Tensor, v: Tensor, *args: Any, out: Any, **kwargs: Any) -> int:
    # Q K^T plus attention-weights x V, as two batched matmuls.
    batch = prod(q.shape[:-2])
    return batch * q.shape[-2] * k.shape[-2] * (q.shape[-1] + v.shape[-1])


_COUNTED: dict[Any, Callable[..., int | Mapping[str, int]]] = {
    **{
        p: _from_torch(p)
        for p in (
            aten.convolution,
            aten._convolution,
            aten.cudnn_convolution,
            aten._slow_conv2d_forward,
            aten.convolution_overrideable,
            aten.mm,
            aten.addmm,
            aten.bmm,
            aten.baddbmm,
        )
    },
    # oneDNN's conv called directly (DynamicConv2d's inference path): each output element is one dot product
    # over the weight's (C_in / groups) x kernel entries.
    aten.mkldnn_convolution: lambda x, w, *_, out, **__: out.numel() * prod(w.shape[1:]),
    aten.mv: lambda a, b, *_, out, **__: prod(a.shape),
    aten.addmv: lambda c, a, b, *_, out, **__: prod(a.shape),
    aten.dot: lambda a, b, *_, out, **__: a.numel(),
    aten.vdot: lambda a, b, *_, out, **__: a.numel(),
    aten.addbmm: lambda c, a, b, *_, out, **__: prod(a.shape) * b.shape[-1],
    aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_macs,
    aten._scaled_dot_product_flash_attention: _sdpa_macs,
    aten._scaled_dot_product_efficient_attention: _sdpa_macs,
    aten._scaled_dot_product_cudnn_attention: _sdpa_macs,
    aten._scaled_dot_product_attention_math: _sdpa_macs,
}

_FREE_TAGS = frozenset(
    {torch.Tag.pointwise, torch.Tag.reduction, torch.Tag.nondeterministic_seeded, torch.Tag.view_copy}
)

# Names are matched on the op's base name with a trailing in-place underscore removed (relu_ -> relu).
_FREE_NAMES = frozenset(
    """
    add sub rsub mul div true_divide floor_divide remainder fmod neg reciprocal where masked_fill lerp addcmul
    addcdiv clamp clamp_min clamp_max maximum minimum abs sign sgn pow exp log sqrt rsqrt square round floor
    ceil trunc eq ne lt le gt ge logical_and logical_or logical_not logical_xor bitwise_and bitwise_or
    bitwise_not isnan isinf isfinite nan_to_num
    relu relu6 leaky_relu elu selu celu gelu silu mish sigmoid hardsigmoid hardswish hardtanh tanh softplus
    softsign threshold glu _prelu_kernel prelu log_sigmoid_forward hardshrink softshrink rrelu_with_noise
    native_batch_norm _native_batch_norm_legit _native_batch_norm_legit_no_training
    _native_batch_norm_legit_functional batch_norm _batch_norm_impl_index _batch_norm_with_update
    _batch_norm_no_update cudnn_batch_norm miopen_batch_norm native_layer_norm native_group_norm
    instance_norm _fused_rms_norm rms_norm local_response_norm
    max_pool1d max_pool2d max_pool3d max_pool2d_with_indices max_pool3d_with_indices max_pool1d_with_indices
    avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d
    _adaptive_avg_pool2d _adaptive_avg_pool3d adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d
    mkldnn_adaptive_avg_pool2d fractional_max_pool2d fractional_max_pool3d lp_pool2d
    upsample_nearest1d upsample_nearest2d upsample_nearest3d _upsample_nearest_exact1d
    _upsample_nearest_exact2d _upsample_nearest_exact3d upsample_linear1d upsample_bilinear2d
    upsample_bicubic2d upsample_trilinear3d _upsample_bilinear2d_aa _upsample_bicubic2d_aa
    grid_sampler_2d grid_sampler_3d affine_grid_generator
    pixel_shuffle pixel_unshuffle channel_shuffle native_channel_shuffle
    sum mean amax amin max min argmax argmin prod var std var_mean std_mean norm linalg_vector_norm logsumexp
    all any count_nonzero cumsum cumprod _softmax _log_softmax softmax log_softmax
    cat stack clone copy _to_copy contiguous empty empty_like empty_strided zeros zeros_like ones ones_like
    eye full full_like new_empty new_empty_strided new_zeros new_ones new_full fill zero arange linspace scalar_tensor
    lift_fresh lift_fresh_copy alias detach _unsafe_view resize set _local_scalar_dense item
    constant_pad_nd reflection_pad1d reflection_pad2d reflection_pad3d replication_pad1d replication_pad2d
    replication_pad3d _pad_circular
    index index_select gather scatter scatter_add scatter_reduce index_put _index_put_impl index_add
    index_copy index_fill masked_scatter masked_select take roll flip repeat repeat_interleave tril triu
    slice_scatter select_scatter diagonal_scatter as_strided_scatter split split_with_sizes unbind chunk
    im2col col2im embedding one_hot topk sort argsort nonzero unique _unique2 bucketize searchsorted
    native_dropout dropout bernoulli _assert_async _assert_scalar _functional_assert_async _linalg_check_errors
    sym_size sym_stride sym_numel sym_storage_offset is_contiguous is_strides_like_format
    is_non_overlapping_and_dense stride size numel dim storage_offset layout device
    unsafe_split unsafe_split_with_sizes unsafe_chunk _cuda_version _version _assert_tensor_metadata
    _functional_assert_scalar _make_dep_token sym_constrain_range sym_constrain_range_for_size
    _functional_sym_constrain_range _functional_sym_constrain_range_for_size _fused_sdp_choice
    _use_cudnn_ctc_loss _use_cudnn_rnn_flatten_weight cudnn_is_acceptable _nnpack_available _shape_as_tensor
    is_same_size is_complex is_floating_point is_signed is_nonzero is_inference is_pinned is_set_to is_conj is_neg
    _is_zerotensor _is_all_true _is_any_true _has_compatible_shallow_copy_type _has_same_storage_numel
    _debug_has_internal_overlap _nested_tensor_size _propagate_xla_data record_stream output_nr retains_grad
    requires_grad_ resolve_conj resolve_neg conj _conj _neg_view pin_memory _pin_memory can_cast
    mse_loss l1_loss smooth_l1_loss huber_loss nll_loss_forward nll_loss2d_forward binary_cross_entropy
    binary_cross_entropy_with_logits kl_div
    """.split()
)


def _op_name(func: Any) -> str:
    return str(func.overloadpacket)


def _is_free(func: Any) -> bool:
    if func.is_view or _FREE_TAGS.intersection(func.tags):
        return True
    name = func.overloadpacket.__name__
    return name in _FREE_NAMES or name.rstrip("_") in _FREE_NAMES


class _Tally:
    """Where counts go: the module now running, as float MACs or (inside a binary module) as BOPs."""

    def __init__(self, names: list[str]) -> None:
        self.macs: dict[str, int] = dict.fromkeys(names, 0)
        self.bops: dict[str, int] = dict.fromkeys(names, 0)
        self.unsupported: Counter[str] = Counter()
        self.stack = [""]
        self.opaque = 0  # enclosing modules that declared their own cost: the ops inside them are theirs
        self.binary = 0  # enclosing modules with mac_precision = "binary"

    def book(self, cost: Any, who: str) -> None:
        if isinstance(cost, Mapping):
            if not cost.keys() <= {"macs", "bops"}:
                raise ConfigError(f"{who} returned keys {sorted(cost)}; only 'macs' and 'bops' are allowed")
            macs, bops = _count(cost.get("macs", 0), who), _count(cost.get("bops", 0), who)
        else:
            n = _count(cost, who)
            macs, bops = (0, n) if self.binary else (n, 0)
        self.macs[self.stack[-1]] += macs
        self.bops[self.stack[-1]] += bops


def _count(value: Any, who: str) -> int:
    try:
        n = operator.index(value)  # ints of any kind (numpy, 0-d integer tensors), never a float
    except TypeError:
        n = -1
    if n < 0:
        raise ConfigError(f"{who} must return a non-negative int or a mapping of them, got {value!r}; fix it")
    return n


class _MacCounter(TorchDispatchMode):
    """Dispatcher-level counter: sees every aten op, including those from functional calls."""

    def __init__(self, tally: _Tally) -> None:
        super().__init__()
        self._tally = tally

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if self._tally.opaque:
            return func(*args, **kwargs)
        formula = _COUNTED.get(func.overloadpacket)
        if formula is not None:
            out = func(*args, **kwargs)
            self._tally.book(formula(*args, out=out, **kwargs), f"the MAC formula of {_op_name(func)}")
            return out
        if not _is_free(func):
            # A composite op may decompose into ops we know (as torch's FlopCounterMode does).
            with self:
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
            self._tally.unsupported[_op_name(func)] += 1
        return func(*args, **kwargs)


def register_op_macs(op: Any, fn: Callable[..., int | Mapping[str, int]]) -> None:
    """Count the custom torch op ``op`` with ``fn(*args, out=output, **kwargs) -> MACs`` (or {"macs", "bops"}).

    ``op`` is an ``OpOverloadPacket`` such as ``torch.ops.mylib.myop`` (an overload or a ``torch.library``
    custom-op object is accepted too). A later registration for the same op replaces the earlier one.
    """
    packet = getattr(op, "_opoverload", op)  # torch.library.custom_op returns a wrapper around its OpOverload
    packet = getattr(packet, "overloadpacket", packet)
    if not isinstance(packet, torch._ops.OpOverloadPacket) or not callable(fn):
        raise ConfigError(
            f"register_op_macs needs a torch op (e.g. torch.ops.mylib.myop) and a callable formula, got {op!r} and "
            f"{fn!r}"
        )
    _COUNTED[packet] = fn


def _precision(module: nn.Module) -> str:
    precision = getattr(module, "mac_precision", None) or "float"
    if precision not in ("float", "binary"):
        raise ConfigError(
            f"{type(module).__name__}.mac_precision is {precision!r}; use 'binary' (MACs counted as bops) or 'float'"
        )
    return precision


@dataclass
class Profile:
    """MACs (the papers' "FLOPs"), unique parameters, per-module MACs and ops that were not counted.

    ``bops`` are binary (1-bit x 1-bit) multiply-accumulates, kept apart from the float ``macs``.
    """

    macs: int
    params: int
    by_module: dict[str, int] = field(default_factory=dict)
    unsupported: Counter[str] = field(default_factory=Counter)
    bops: int = 0
    bops_by_module: dict[str, int] = field(default_factory=dict)

    @property
    def flops(self) -> int:
        """Floating-point operations counting a multiply-accumulate as two."""
        return 2 * self.macs

    @property
    def ops(self) -> float:
        """``macs + bops / 64``: one number for mixed float/binary nets, the Bi-Real Net convention (1808.00278)."""
        return self.macs + self.bops / 64

    def to_dict(self) -> dict[str, Any]:
        return {
            "macs": self.macs,
            "bops": self.bops,
            "params": self.params,
            "by_module": dict(self.by_module),
            "bops_by_module": dict(self.bops_by_module),
            "unsupported": dict(self.unsupported),
        }


def count_params(model: nn.Module) -> int:
    """Unique parameters: a tensor shared by several modules (tied weights) counts once."""
    seen: set[tuple[int, int, torch.Size]] = set()
    total = 0
    for p in model.parameters():  # already de-duplicated by identity
        key = (p.untyped_storage().data_ptr(), p.storage_offset(), p.shape) if p.device.type != "meta" else None
        if key is not None and p.numel() and key in seen:
            continue  # two Parameter objects viewing the same memory
        if key is not None:
            seen.add(key)
        total += p.numel()
    return total


def profile(model: nn.Module, example_input: Tensor | tuple[Tensor, ...]) -> Profile:
    """Run one eval-mode forward and count MACs per module; ops outside the convention land in `unsupported`.

    `by_module` is hierarchical like fvcore: a module's entry includes its submodules, "" is the whole model.
    A tuple input is unpacked into positional arguments. Modules may declare their own cost (``profile_macs``)
    or binary precision (``mac_precision = "binary"``); see the package docstring.
    """
    args = as_args(example_input)
    names = {id(m): name for name, m in model.named_modules()}
    tally = _Tally(list(names.values()))
    flags = {id(m): (callable(getattr(m, "profile_macs", None)), _precision(m) == "binary") for m in model.modules()}

    def pre(mod: nn.Module, _inp: Any) -> None:
        declares, binary = flags[id(mod)]
        tally.stack.append(names[id(mod)])
        tally.opaque += declares
        tally.binary += binary

    def declared(mod: nn.Module, inp: tuple, out: Any) -> None:
        if tally.opaque == 1:  # else an enclosing module's declared cost already covers this one
            tally.book(mod.profile_macs(inp, out), f"{type(mod).__name__}.profile_macs")

    def post(mod: nn.Module, _inp: Any, _out: Any) -> None:
        declares, binary = flags[id(mod)]
        tally.stack.pop()
        tally.opaque -= declares
        tally.binary -= binary

    handles = []
    for m in model.modules():
        handles.append(m.register_forward_pre_hook(pre))
        if flags[id(m)][0]:  # not always_call: after a failed forward there is no output to cost
            handles.append(m.register_forward_hook(declared))
        handles.append(m.register_forward_hook(post, always_call=True))
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # nn.MultiheadAttention / TransformerEncoderLayer otherwise take a fused eval-only kernel; the regular
    # path exposes their linear layers and attention matmuls to the counter.
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with eval_mode(model), _MacCounter(tally):
            model(*args)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for h in handles:
            h.remove()

    by_module, bops_by_module = _rollup(tally.macs), _rollup(tally.bops)
    return Profile(
        macs=by_module[""],
        params=count_params(model),
        by_module=by_module,
        unsupported=tally.unsupported,
        bops=bops_by_module[""],
        bops_by_module=bops_by_module,
    )


def _rollup(own: dict[str, int]) -> dict[str, int]:
    """Each module's own count plus its submodules' (fvcore's hierarchy)."""
    total: dict[str, int] = dict.fromkeys(own, 0)
    for name, n in own.items():
        if not n:
            continue
        parts = name.split(".") if name else []
        for i in range(len(parts) + 1):
            total[".".join(parts[:i])] += n
    return total
