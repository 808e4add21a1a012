"""Synaptic Strength pruning (arXiv 1811.02454): per-connection strengths, L1 sparsity, kernel-level pruning.

A connection is the 2-D kernel K[j, i] from input channel i to output channel j; in a depthwise conv each
channel has exactly one. Training writes it as ``s[j, i] * K[j, i] / ||K[j, i]||`` with a learnable strength
``s`` under an L1 penalty, with the BatchNorm scales removed (a positive BN scale before a ReLU moves into the
strengths of the next conv). Connections with the smallest |s| are then pruned, globally, to a target sparsity.
Beside the paper's raw |s| ranking, two rankings aim the pruning at whole channels where the time is spent:
``"normalized"`` (|s| over a per-layer scale, so layers initialised small are not emptied first) and ``"cost"``
(normalised |s| per MAC the connection carries). ``granularity="channel"`` prunes whole channels instead (each
scored by the connections that write it), so shared channel spaces such as a residual stream shrink too.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from leanvision.compress.plan import (
    ChannelGraph,
    apply_plan,
    cut_positions,
    is_conv,
    make_plan,
    read_plan,
    scale_passes,
    silence_targets,
    trace_model,
)  # fmt: skip
from leanvision.errors import ConfigError
from leanvision.models.surgery import replace_modules
from leanvision.ops.fuse import plain_conv2d
from leanvision.profile import profile
from leanvision.registry import unknown_choice

if TYPE_CHECKING:  # the engine imports compress, never the other way round
    from leanvision.engine.step import StepContext, TrainStep

EPS = 1e-12  # kernels with a smaller norm count as zero (their direction is undefined)
SCOPES = ("global", "layer")
RANKS = ("strength", "normalized", "cost")
NORMS = ("median", "fan_in")
BN_SCALES = ("remove", "keep")
GRANULARITIES = ("connection", "channel")
WRITERS = ("sum", "mean")


class SynapticConv2d(nn.Module):
    """A Conv2d written per connection as strength x unit-norm kernel (arXiv 1811.02454); built from a conv, exactly.

    ``strength`` has shape ``[out, in/groups]``, ``kernel`` the conv weight's shape; ``mask`` (bool buffer, saved
    with the model) marks the connections still alive. ``weight`` is the weight the layer applies.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if type(conv) is not nn.Conv2d:
            raise ConfigError(f"SynapticConv2d wraps a plain nn.Conv2d, got {type(conv).__name__}")
        for attr in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups"):
            setattr(self, attr, getattr(conv, attr))
        self.padding_mode = conv.padding_mode
        self._pad = conv._reversed_padding_repeated_twice  # what nn.Conv2d pads with for non-zero padding modes
        w = conv.weight.detach()
        grad = conv.weight.requires_grad
        self.strength = nn.Parameter(w.pow(2).sum((2, 3)).sqrt(), requires_grad=grad)
        self.kernel = nn.Parameter(w.clone(), requires_grad=grad)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), conv.bias.requires_grad)
        self.register_buffer("mask", torch.ones(self.strength.shape, dtype=torch.bool, device=w.device))

    @property
    def weight(self) -> Tensor:
        """``(strength * mask)[j, i] * kernel[j, i] / ||kernel[j, i]||``, differentiable."""
        inv_norm = self.kernel.pow(2).sum((2, 3), keepdim=True).clamp_min(EPS**2).rsqrt()
        return (self.strength * self.mask)[:, :, None, None] * self.kernel * inv_norm

    def forward(self, x: Tensor) -> Tensor:
        if self.padding_mode != "zeros":
            x = F.pad(x, self._pad, mode=self.padding_mode)
            return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def as_conv2d(self) -> nn.Conv2d:
        """The plain ``nn.Conv2d`` this layer computes (for surgery, export and deployment)."""
        return plain_conv2d(self)

    def no_weight_decay(self) -> list[str]:
        # The strengths get only the L1 penalty; decay on the kernels is harmless (they are normalised).
        return ["strength"]

    def extra_repr(self) -> str:
        alive = int(self.mask.sum())
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, groups={self.groups}, bias={self.bias is not None}, "
            f"connections={alive}/{self.mask.numel()}"
        )


def _is_depthwise(conv: nn.Conv2d) -> bool:
    return conv.groups > 1 and conv.in_channels == conv.groups


def _keeps_channels(conv: nn.Module) -> bool:
    """A depthwise conv keeps the same channels on its input and output (plan's coupled spaces)."""
    return _is_depthwise(conv) and conv.out_channels == conv.in_channels


class SynapticStrength:
    """Synaptic Strength pruning (arXiv 1811.02454) of ``model``, converted in place.

    Every ``nn.Conv2d`` becomes a ``SynapticConv2d`` computing the same function (depthwise convs only with
    ``prune_depthwise=True``: pruning a depthwise kernel removes its channel). ``bn_scale="remove"`` (the paper)
    takes every BatchNorm scale out of training: where a BN feeds only convs through ReLU/pooling, its scale
    moves exactly into their strengths (γ → sign γ, β → β/|γ|); the other scales are frozen at their current
    value (1 in a fresh model). ``"keep"`` leaves them learnable. A model that already holds
    ``SynapticConv2d`` layers is adopted as it is (e.g. to resume fine-tuning).
    """

    def __init__(self, model: nn.Module, *, bn_scale: str = "remove", prune_depthwise: bool = False) -> None:
        if bn_scale not in BN_SCALES:
            raise unknown_choice("bn_scale", bn_scale, BN_SCALES)
        self.model = model
        self.absorbed: list[str] = []  # BatchNorms whose scale moved into the next convs' strengths
        if not any(isinstance(m, SynapticConv2d) for m in model.modules()):
            trace_model(model)  # an untraceable model fails here, before anything is changed
            convertible = lambda _n, m: type(m) is nn.Conv2d and (prune_depthwise or not _is_depthwise(m))  # noqa: E731
            if not replace_modules(model, convertible, lambda _n, m: SynapticConv2d(m)):
                raise ConfigError(
                    f"{type(model).__name__} has no nn.Conv2d to re-parameterise"
                    + ("" if prune_depthwise else " (depthwise convs are skipped unless prune_depthwise=True)")
                )
            if bn_scale == "remove":
                self.absorbed = _remove_bn_scales(model)
        self.layers: dict[str, SynapticConv2d] = {
            n: m for n, m in model.named_modules() if isinstance(m, SynapticConv2d)
        }
        self._silenced: list[tuple[nn.Module, str, Tensor]] = []
        self.held_plan: dict | None = None  # the plan whose masks ``prune`` holds; apply_plan(model, held_plan) deploys
        self.cut_from: dict | None = None  # the plan ``cut`` made this model with, on the model it was cut from

    def penalty(self) -> Tensor:
        """Σ |s| over all live connections: the L1 sparsity term."""
        return sum((m.strength * m.mask).abs().sum() for m in self.layers.values())

    def train_step(self, lam: float) -> TrainStep:
        """A ``fit`` step: loss + ``lam`` · Σ|s|, optimizer step, then pruned connections back to exactly 0.

        ``lam`` is a hyper-parameter to tune (``lam=0`` fine-tunes a pruned model). The task loss is returned, so
        train and validation losses stay comparable.
        """
        if not (isinstance(lam, (int, float)) and lam >= 0):
            raise ConfigError(f"lam (the L1 weight on the strengths) must be a number >= 0, got {lam!r}")

        def step(model: nn.Module, inputs: Any, targets: Tensor, ctx: StepContext) -> tuple[Tensor, Any]:
            outputs = model(inputs)
            loss = ctx.loss_fn(outputs, targets, inputs)
            ctx.update(loss + lam * self.penalty() if lam else loss)
            self.enforce(ctx.optimizer)
            return loss, outputs

        return step

    def scores(self) -> dict[str, Tensor]:
        """|s| per connection, ``[out, in/groups]`` per layer (0 where pruned): what the paper ranks by."""
        return {n: (m.strength.detach() * m.mask).abs().float().cpu() for n, m in self.layers.items()}

    def rank_scores(
        self, rank: str = "strength", *, norm: str = "median", input_size: Sequence[int] | None = None
    ) -> dict[str, Tensor]:
        """The score each connection is ranked by (0 where pruned); the smallest go first.

        ``"strength"``: |s| (the paper). ``"normalized"``: |s| over a per-layer scale: the median |s| of the layer's
        live connections (``norm="median"``) or the init scale 1/sqrt(fan_in) (``norm="fan_in"``), because strengths
        keep their layer's init scale and a raw global ranking empties the wide, cheap layers first.
        ``"cost"``: the normalised score divided by the MACs one connection carries (k_h·k_w·H'·W', relative to the
        mean over connections) for one ``input_size`` (C, H, W) image, so the connections pruned first are those
        that save the most time per unit of strength lost.
        """
        if rank not in RANKS:
            raise unknown_choice("rank", rank, RANKS)
        if norm not in NORMS:
            raise unknown_choice("norm", norm, NORMS)
        scores = self.scores()
        if rank == "strength":
            return scores
        for name, m in self.layers.items():
            if norm == "median":
                live = scores[name][m.mask.cpu()]
                scale = live.quantile(0.5) if live.numel() else torch.tensor(1.0)
            else:
                scale = torch.tensor(float(m.kernel[0].numel())).rsqrt()  # (in/groups)·k_h·k_w inputs per output
            scores[name] = scores[name] / scale.clamp_min(EPS)
        if rank == "cost":
            macs = self._conv_macs(input_size)
            per_conn = {n: macs[n] / m.strength.numel() for n, m in self.layers.items()}
            scores = _per_cost(scores, per_conn)
        return scores

    def _conv_macs(self, input_size: Sequence[int] | None) -> dict[str, float]:
        """MACs of every conv for one ``input_size`` image (at least 1, so a share of them can divide)."""
        if input_size is None:
            raise ConfigError("rank='cost' needs input_size=(C, H, W): a connection's MACs depend on the image size")
        prof = profile(self.model, torch.zeros(1, *input_size, device=next(self.model.parameters()).device))
        return {n: max(prof.by_module.get(n, 0), 1) for n, m in self.model.named_modules() if is_conv(m)}

    def channel_scores(
        self,
        rank: str = "strength",
        *,
        norm: str = "median",
        input_size: Sequence[int] | None = None,
        writers: str = "sum",
    ) -> tuple[dict[str, Tensor], dict[str, list[str]]]:
        """The score each prunable channel is ranked by with ``granularity="channel"``, and its producers.

        Channels are grouped per channel space (all convs writing the same channels, e.g. a residual stream; a
        depthwise conv's input and output are one), keyed by the space's first producer; only spaces surgery can
        resize appear. A channel scores the mean ``rank_scores`` of the connections that write it, per writing conv,
        summed over its writing convs (``writers="sum"``) or averaged over them (``"mean"``). The sum scores a
        residual stream's channel ~k times an inner one's for k writers, so a global ranking empties the blocks'
        inner convs first; the mean ranks both on one scale (Torch-Pruning's group reduction). For ``rank="cost"``
        that score (of normalised scores) is divided by the MACs removing the channel saves (its rows in the
        producers and columns in the consumers, relative to the mean over channels).
        """
        if writers not in WRITERS:
            raise unknown_choice("writers", writers, WRITERS)
        base = self.rank_scores("normalized" if rank == "cost" else rank, norm=norm)
        graph = ChannelGraph(self.model)
        units = self._channel_units(graph)
        # A mean over a conv's row, not a max (a channel written strongly by many connections carries more than one
        # with a single strong connection) and not a sum: a sum grows with the fan-in, so the 3-input first conv's
        # channels scored ~10x below the rest and every ranking emptied it first, which a CIFAR net cannot survive.
        # round_to brings back removed channels ranked by the same score.
        scores = {k: sum((base[p].double().mean(1) for s in spaces for p in graph.space(s).producers if p in base),
                         torch.zeros(graph.space(spaces[0]).size, dtype=torch.float64))
                  for k, spaces in units.items()}  # fmt: skip
        producers = {k: [p for s in spaces for p in graph.space(s).producers] for k, spaces in units.items()}
        if writers == "mean":
            scores = {k: v / sum(p in base for p in producers[k]) for k, v in scores.items()}
        if rank == "cost":
            macs = self._conv_macs(input_size)
            scores = _per_cost(scores, {k: _channel_macs(graph, spaces, macs) for k, spaces in units.items()})
        return scores, producers

    def _channel_units(self, graph: ChannelGraph) -> dict[str, list[int]]:
        """Channel spaces (roots) that can lose channels, grouped where a depthwise conv couples them."""
        group = {r: (r,) for r in graph.roots()}
        for a, b in graph.coupled:
            merged = tuple(sorted(set(group[graph.root(a)]) | set(group[graph.root(b)])))
            group.update(dict.fromkeys(merged, merged))

        def resizable(r: int) -> bool:
            s = graph.space(r)
            # a plain (unconverted) producer can only be a depthwise conv, whose channel dies with its input's
            ok = all(p in self.layers or _keeps_channels(graph.modules[p]) for p in s.producers)
            return s.size is not None and not s.opaque and not s.source and bool(s.producers) and ok

        names = list(self.layers)
        order, units = {n: i for i, n in enumerate(names)}, {}
        for spaces in dict.fromkeys(group.values()):
            first = min((order[p] for r in spaces for p in graph.space(r).producers if p in order), default=None)
            if first is not None and all(resizable(r) for r in spaces):
                units[names[first]] = list(spaces)
        return units

    def masks(
        self,
        sparsity: float | None = None,
        *,
        threshold: float | None = None,
        scope: str = "global",
        rank: str = "strength",
        norm: str = "median",
        input_size: Sequence[int] | None = None,
        max_layer_sparsity: float | None = None,
        granularity: str = "connection",
        writers: str = "sum",
    ) -> dict[str, Tensor]:
        """Bool masks (True = keep) that prune the weakest connections; already pruned ones stay pruned.

        ``sparsity`` prunes that fraction of connections by rank (rank-based, so unaffected by the overall scale of
        the strengths, which the L1 term keeps shrinking); ``threshold`` instead prunes scores below that fraction
        of the largest score. ``scope="global"`` ranks all layers together (the paper), ``"layer"`` prunes each
        layer by itself. ``rank``/``norm``/``input_size``: what is ranked (``rank_scores``). ``max_layer_sparsity``
        caps the share of any one layer's connections a global ranking may prune (the rest comes from other layers),
        so a ranking cannot empty a layer.

        ``granularity="channel"`` prunes whole channels (``channel_scores``) instead: ``sparsity`` is the fraction of
        prunable channels removed, ``scope="layer"`` and ``max_layer_sparsity`` apply per channel space, every space
        keeps at least one channel, and the masks drop every kernel that writes a removed channel; ``writers``:
        how a channel written by several convs combines their scores (``channel_scores``).
        """
        return self._choose(sparsity, threshold, scope, rank, norm, input_size, max_layer_sparsity, granularity,
                            writers)[0]  # fmt: skip

    def plan(
        self,
        sparsity: float | None = None,
        *,
        threshold: float | None = None,
        scope: str = "global",
        rank: str = "strength",
        norm: str = "median",
        input_size: Sequence[int] | None = None,
        max_layer_sparsity: float | None = None,
        round_to: int | None = None,
        granularity: str = "connection",
        writers: str = "sum",
    ) -> dict:
        """A JSON-ready pruning plan from ``masks(...)`` (see ``leanvision.compress.plan.make_plan``).

        ``round_to`` (e.g. 8 or 16) rounds every resized layer's kept channels up to a multiple, keeping the
        strongest of the channels it would have removed (fast kernels want such widths).
        """
        masks, cut, scores = self._choose(sparsity, threshold, scope, rank, norm, input_size, max_layer_sparsity,
                                          granularity, writers)  # fmt: skip
        selection = {"method": "synaptic_strength", "paper": "arXiv 1811.02454", "granularity": granularity,
                     "scope": scope, "rank": rank}  # fmt: skip
        if rank != "strength":
            selection["norm"] = norm
        if granularity == "channel":
            selection["writers"] = writers
        if max_layer_sparsity is not None:
            selection["max_layer_sparsity"] = max_layer_sparsity
        selection |= {"sparsity": sparsity} if sparsity is not None else {"relative_threshold": threshold}
        if cut is not None:
            selection["strength_cut" if rank == "strength" else "score_cut"] = cut
        return make_plan(self.model, masks, selection=selection, round_to=round_to, channel_scores=scores)

    def sparsity_for_macs(
        self, fraction: float, *, input_size: Sequence[int], iters: int = 14, **plan_kw: Any
    ) -> float:
        """The smallest sparsity whose plan (``plan(s, **plan_kw)``) leaves at most ``fraction`` of the dense MACs
        after surgery, by bisection: channels go only when all their connections do (or, with
        ``granularity="channel"``, at different costs), so a MAC (or latency) target needs this search."""
        if not 0 < fraction < 1:
            raise ConfigError(f"fraction is the share of the dense MACs to keep, in (0, 1); got {fraction!r}")
        x = torch.zeros(1, *input_size, device=next(self.model.parameters()).device)
        dense = profile(self.model, x).macs

        def macs(s: float) -> int:
            return profile(apply_plan(self.model, self.plan(s, input_size=input_size, **plan_kw)), x).macs

        lo, hi = 0.0, 0.999
        if macs(hi) > fraction * dense:
            unit = "channels, one kept per layer" if plan_kw.get("granularity") == "channel" else "connections"
            raise ConfigError(f"the most this ranking prunes (99.9% of the {unit}, less under max_layer_sparsity, "
                              f"widths rounded up) leaves more than {fraction:.0%} of the MACs")  # fmt: skip
        for _ in range(iters):  # invariant: macs(hi) <= target < macs(lo)
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if macs(mid) <= fraction * dense else (mid, hi)
        return hi

    def _choose(self, sparsity: float | None, threshold: float | None, scope: str, rank: str, norm: str,
                input_size: Sequence[int] | None, cap: float | None, granularity: str,
                writers: str) -> tuple[dict[str, Tensor], float | None, dict[str, Tensor]]:  # fmt: skip
        """Masks, the score cut and the per-connection scores (what round_to ranks channels by)."""
        if granularity not in GRANULARITIES:
            raise unknown_choice("granularity", granularity, GRANULARITIES)
        if granularity == "connection":
            scores = self.rank_scores(rank, norm=norm, input_size=input_size)
            keep, cut = _select(sparsity, threshold, scope, scores, cap)
            return {n: k & self.layers[n].mask.cpu() for n, k in keep.items()}, cut, scores
        channels, producers = self.channel_scores(rank, norm=norm, input_size=input_size, writers=writers)
        keep, cut = _select(sparsity, threshold, scope, channels, cap, keep_one=True)
        masks = {n: m.mask.cpu().clone() for n, m in self.layers.items()}
        for unit, kept in keep.items():
            for p in producers[unit]:
                if p in masks:  # a plain depthwise producer loses the channel with its input
                    masks[p][~kept] = False
        return masks, cut, self.rank_scores("normalized" if rank == "cost" else rank, norm=norm)

    def strength_stats(self) -> dict[str, float]:
        """How bimodal the L1 term made the strengths: the share of live |s| below 1e-2 and 1e-3 of the largest."""
        s = torch.cat([v[self.layers[n].mask.cpu()] for n, v in self.scores().items()]).double()
        rel = s / s.max().clamp_min(EPS)
        return {
            "connections": s.numel(),
            "max_abs_s": float(s.max()) if s.numel() else 0.0,
            "frac_below_1e-2_max": float((rel < 1e-2).double().mean()),
            "frac_below_1e-3_max": float((rel < 1e-3).double().mean()),
        }

    @torch.no_grad()
    def prune(self, plan: Mapping[str, Any]) -> None:
        """Fix ``plan``'s masks on the model for fine-tuning with ``train_step``: pruned strengths become 0 and stay
        0, and channels left all-zero pass their BatchNorms as zeros, so ``apply_plan`` afterwards is exact."""
        eff, self._silenced = silence_targets(self.model, read_plan(self.model, plan))
        self.held_plan = dict(plan)
        for name, module in self.model.named_modules():
            if name in self.layers:
                module.mask.copy_(eff[name])
            elif type(module) is nn.Conv2d and not eff[name].all():  # unconverted (depthwise) convs
                module.weight.mul_(eff[name].to(module.weight)[:, :, None, None])
        self.enforce()

    @torch.no_grad()
    def cut(self, plan: Mapping[str, Any]) -> SynapticStrength:
        """A copy of the model pruned by ``plan`` with the channels it frees already removed, re-parameterised and
        masked as ``prune(plan)`` leaves the model: fine-tuning it with its ``train_step`` makes the same updates to
        the same parameters (removed channels only ever carry zeros) at the cut model's cost. Deploy it with
        ``apply_plan(cut.model, cut.held_plan)``; the model here is left as it is."""
        small = apply_plan(self.model, plan, plain=False)
        ss = SynapticStrength(small)  # adopts the re-parameterised convs as they are
        ss.prune(make_plan(small, {name: layer.mask for name, layer in ss.layers.items()}))
        ss.cut_from = dict(plan)
        return ss

    @torch.no_grad()
    def uncut(self, small: SynapticStrength) -> None:
        """Write ``small = cut(plan)`` (e.g. fine-tuned) back into this model and hold ``plan`` as ``prune(plan)``
        does: this model then computes what ``small`` computes, and the next ``plan`` and ``cut`` are made on it, so
        gradual pruning (cut, fine-tune, uncut, prune further) ends with one plan for this model's build."""
        if small.cut_from is None:
            raise ConfigError("uncut writes back a model made by cut(plan); this SynapticStrength was not")
        positions = cut_positions(self.model, small.cut_from)
        mine = dict(self.model.named_parameters()) | dict(self.model.named_buffers())
        theirs = dict(small.model.named_parameters()) | dict(small.model.named_buffers())
        if positions.keys() - theirs.keys() or any(theirs[n].shape != p.shape for n, p in positions.items()):
            raise ConfigError("uncut: that model was not cut from this one (its tensors do not fit the plan it was "
                              "cut with); write it back into the model cut() was called on")  # fmt: skip
        self.prune(small.cut_from)
        for name, pos in positions.items():
            pos, src, dst = pos.flatten(), theirs[name].detach().flatten(), mine[name]
            flat = dst.detach().flatten().clone()
            flat[pos[pos >= 0]] = src[pos >= 0].to(flat)  # zeroed entries stay as prune() leaves them
            dst.copy_(flat.view(dst.shape))
        for name, t in theirs.items():  # integer buffers (BatchNorm's batch count) are copied as they are
            if not t.is_floating_point() and t.dtype != torch.bool and t.shape == mine[name].shape:
                mine[name].copy_(t)
        self.enforce()

    @torch.no_grad()
    def enforce(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Set pruned strengths and silenced channels to exactly 0, with their gradients and optimizer state
        (momentum would otherwise regrow them); call after every optimizer step (``train_step`` does)."""
        for layer in self.layers.values():
            _zero(layer.strength, ~layer.mask, optimizer)
        for module, attr, idx in self._silenced:
            _zero(getattr(module, attr), idx, optimizer)


def _select(sparsity: float | None, threshold: float | None, scope: str, scores: Mapping[str, Tensor],
            cap: float | None = None, *, keep_one: bool = False) -> tuple[dict[str, Tensor], float | None]:  # fmt: skip
    """Bool keep-tensors shaped like ``scores`` (the lowest scores go) and the global cut; ``keep_one``: every entry
    of ``scores`` keeps at least one unit, and the cap applies under a threshold too."""
    if scope not in SCOPES:
        raise unknown_choice("scope", scope, SCOPES)
    if (sparsity is None) == (threshold is None):
        raise ConfigError("give exactly one of sparsity= (fraction of connections to prune) or threshold=")
    if sparsity is not None and not 0 <= sparsity < 1:
        raise ConfigError(f"sparsity is the fraction of connections to prune, in [0, 1); got {sparsity!r}")
    if threshold is not None and not 0 <= threshold <= 1:
        raise ConfigError(f"threshold is relative to the largest score, in [0, 1]; got {threshold!r}")
    if cap is not None and not 0 < cap <= 1:
        raise ConfigError(f"max_layer_sparsity is a fraction of a layer's connections, in (0, 1]; got {cap!r}")
    groups = [list(scores)] if scope == "global" else [[n] for n in scores]
    keep_of, cut = {}, None
    for names in groups:
        sizes = [scores[n].numel() for n in names]
        flat = torch.cat([scores[n].flatten() for n in names])
        order = torch.argsort(flat, stable=True)  # ties (e.g. already pruned zeros) go in a fixed order
        if keep_one or (cap is not None and sparsity is not None):  # a layer's weakest beyond its cap leave
            order = order[~_beyond_cap(order, sizes, 1.0 if cap is None else cap, keep_one)]
        if sparsity is not None:
            n_prune = min(round(sparsity * flat.numel()), order.numel())  # the caps may leave fewer to prune
        else:
            n_prune = int((flat[order] < threshold * flat.max()).sum())  # ascending: a prefix of the order
        keep = torch.ones_like(flat, dtype=torch.bool)
        keep[order[:n_prune]] = False
        if sparsity is not None and n_prune and scope == "global":
            cut = float(flat[order[n_prune - 1]])
        keep_of |= {n: part.view_as(scores[n]) for n, part in zip(names, keep.split(sizes), strict=True)}
    return keep_of, cut


def _per_cost(scores: dict[str, Tensor], cost: Mapping[str, float]) -> dict[str, Tensor]:
    """Scores divided by each entry's cost per unit relative to the mean cost per unit (a score per MAC)."""
    mean = sum(cost[n] * v.numel() for n, v in scores.items()) / max(sum(v.numel() for v in scores.values()), 1)
    return {n: v * (mean / cost[n]) for n, v in scores.items()}


def _channel_macs(graph: ChannelGraph, spaces: list[int], macs: Mapping[str, float]) -> float:
    """The MACs removing one channel of ``spaces`` saves: its output row in each producer, its input column in each
    consumer (a depthwise conv's channel once)."""
    total = 0.0
    for c in {c for r in spaces for c in graph.space(r).producers + graph.space(r).consumers}:
        conv, (sin, sout) = graph.modules[c], (graph.root(r) in spaces for r in graph.conv_io[c])
        share = 1 / conv.out_channels if _keeps_channels(conv) else sout / conv.out_channels + sin / conv.in_channels
        total += macs[c] * share
    return total


def _beyond_cap(order: Tensor, sizes: list[int], cap: float, keep_one: bool = False) -> Tensor:
    """For a global ascending ``order`` over layers of ``sizes``: whether each entry is past its layer's cap."""
    layer = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))[order]
    rank_in_layer = torch.zeros_like(order)
    for i, n in enumerate(sizes):
        rank_in_layer[layer == i] = torch.arange(n)
    limit = [min(math.floor(cap * n + 1e-9), n - 1 if keep_one else n) for n in sizes]
    return rank_in_layer >= torch.tensor(limit)[layer]


def _zero(t: Tensor, where: Tensor, optimizer: torch.optim.Optimizer | None) -> None:
    where = where.to(t.device)
    t[where] = 0
    if t.grad is not None:
        t.grad[where] = 0
    state = optimizer.state.get(t, {}) if optimizer is not None else {}
    for v in state.values():
        if isinstance(v, Tensor) and v.shape == t.shape:
            v[where] = 0


@torch.no_grad()
def _remove_bn_scales(model: nn.Module) -> list[str]:
    """Move each BatchNorm scale that feeds only convs (through ReLU/pooling) into their strengths; freeze the rest.

    ``relu(γ·x̂ + β) = |γ|·relu(sign γ·x̂ + β/|γ|)``: with γ' = sign γ and β' = β/|γ| the BN output shrinks by |γ|
    per channel and the next conv's strengths from that channel grow by |γ|, so the model is unchanged.
    """
    graph = trace_model(model)
    modules = dict(model.named_modules())
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    absorbed = []
    for node in graph.nodes:
        bn = modules.get(node.target) if node.op == "call_module" else None
        if type(bn) is nn.BatchNorm2d and bn.weight is not None and calls[node.target] == 1:
            convs = _scale_consumers(node, modules, calls)
            if convs:
                _absorb(bn, [modules[c] for c in convs])
                absorbed.append(node.target)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None:
            m.weight.requires_grad_(False)
    return absorbed


def _scale_consumers(node: fx.Node, modules: Mapping[str, nn.Module], calls: Counter) -> list[str] | None:
    """The synaptic convs that read ``node`` through scale-preserving ops only; None if anything else reads it."""
    convs, stack = [], [node]
    while stack:
        value = stack.pop()
        for user in value.users:
            mod = modules.get(user.target) if user.op == "call_module" else None
            if isinstance(mod, SynapticConv2d) and user.args == (value,) and not user.kwargs:
                if calls[user.target] != 1:
                    return None
                convs.append(user.target)
            elif scale_passes(user, modules, value):
                stack.append(user)
            else:
                return None
    return convs or None


def _absorb(bn: nn.BatchNorm2d, convs: list[SynapticConv2d]) -> None:
    gamma = bn.weight
    scale = torch.where(gamma != 0, gamma.abs(), torch.ones_like(gamma))  # γ = 0: a constant channel, left as is
    for conv in convs:
        # input channel c = group g, column c mod (in/groups) of the strengths of that group's output rows
        cpg = conv.in_channels // conv.groups
        conv.strength.view(conv.groups, -1, cpg).mul_(scale.view(conv.groups, 1, cpg).to(conv.strength))
    if bn.bias is not None:
        bn.bias.div_(scale)
    gamma.copy_(torch.where(gamma != 0, gamma.sign(), gamma))
