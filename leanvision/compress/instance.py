"""Instance-wise feature sparsity (arXiv 1907.11840): ℓ2,1 feature decay, CV layer selection, per-instance pruning.

A *layer* here is a plain ``nn.Conv2d`` named by its module path; its *feature* is the tensor it receives (the
previous layer's output after its activation and any pooling), i.e. the tensor that is actually fed to it.
Training adds λ·Σ_c ‖F_c(x)‖₂ of those features to each instance's loss; at inference each instance zeroes the
channels whose ℓ2 norm falls below its own threshold, and the conv skips them as input channels. The producing
layer still computes every channel (the decision needs them), so the MACs saved are the conv's own.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import math
import statistics
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
import torch.fx as fx
from torch import Tensor, nn

from leanvision._torch import eval_mode
from leanvision.errors import ConfigError
from leanvision.models.surgery import replace_modules, trace
from leanvision.profile import profile

RULES = ("mean", "max", "top")
CV_KINDS = ("across_instances", "within_instance")


# --- per-instance quantities ---------------------------------------------------------------------------------


def channel_norms(x: Tensor) -> Tensor:
    """ℓ2 norm of every channel of every instance of a (B, C, H, W) feature map: shape (B, C) (arXiv 1907.11840)."""
    return torch.linalg.vector_norm(x.flatten(2), dim=2)


def l21_penalty(x: Tensor, *, normalize: bool = False) -> Tensor:
    """Per-instance ℓ2,1 norm Σ_c ‖x_c‖₂ of a (B, C, H, W) feature map, shape (B,) (arXiv 1907.11840).

    ``normalize`` divides by C·sqrt(H·W) so one λ weighs layers of different sizes alike (an option; whether
    the paper normalises is not known).
    """
    return _l21(channel_norms(x), x.shape, normalize)


def _l21(norms: Tensor, shape: torch.Size, normalize: bool) -> Tensor:
    total = norms.sum(1)
    return total / (shape[1] * math.sqrt(shape[2] * shape[3])) if normalize else total


def keep_mask(norms: Tensor, theta: float, rule: str = "mean") -> Tensor:
    """Which channels each instance keeps, from its own (B, C) channel norms only (arXiv 1907.11840).

    ``"mean"``: keep n_c >= θ·mean_c(n); ``"max"``: keep n_c >= θ·max_c(n); ``"top"``: drop the floor(θ·C)
    weakest channels (ties: the lower index goes first). Every reduction is over channels, never over the batch,
    so an instance's mask does not depend on what else is in the batch. θ = 0 keeps everything for every rule.
    """
    _check_threshold(theta, rule)
    if rule == "top":
        drop = math.floor(theta * norms.shape[1] + 1e-9)  # the epsilon absorbs 0.29 * 100 = 28.999...
        keep = torch.ones_like(norms, dtype=torch.bool)
        # A stable sort breaks ties by index, identically for any batch size.
        weakest = torch.sort(norms, dim=1, stable=True).indices[:, :drop]
        return keep.scatter_(1, weakest, False)
    ref = norms.mean(1, keepdim=True) if rule == "mean" else norms.amax(1, keepdim=True)
    return norms >= theta * ref


def _check_threshold(theta: float, rule: str) -> None:
    if rule not in RULES:
        raise ConfigError(f"rule must be one of {', '.join(map(repr, RULES))}, got {rule!r}")
    if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not math.isfinite(theta) or theta < 0:
        raise ConfigError(f"theta must be a finite number >= 0, got {theta!r}")
    if rule in ("max", "top") and theta > 1:
        raise ConfigError(
            f"theta must be in [0, 1] with rule={rule!r} (a fraction of the strongest norm, or of the channels "
            f"to drop), got {theta}"
        )


# --- coefficient of variation --------------------------------------------------------------------------------


def _cv(std: Tensor, mean: Tensor) -> Tensor:
    # A channel (or instance) that is zero everywhere does not vary: CV 0 rather than 0/0.
    return torch.where(mean > 0, std / mean.clamp_min(torch.finfo(mean.dtype).tiny), torch.zeros_like(mean))


def feature_cv(norms: Tensor) -> dict[str, float]:
    """Both coefficient-of-variation definitions of one layer from its (N, C) channel norms (arXiv 1907.11840).

    ``"across_instances"`` = mean_c[std_x n_c(x) / mean_x n_c(x)]: how much each channel's importance changes
    from image to image. ``"within_instance"`` = mean_x[std_c n_c(x) / mean_c n_c(x)]: how unequal the channels
    are inside one image. Which one the paper uses is not known, so both are given. Population std (no Bessel
    correction); a 0/0 ratio counts as 0.
    """
    if norms.ndim != 2 or norms.shape[0] < 1 or norms.shape[1] < 1:
        raise ConfigError(f"norms must be an (instances, channels) matrix, got shape {tuple(norms.shape)}")
    n = norms.double()
    across = _cv(n.std(0, correction=0), n.mean(0)).mean()
    within = _cv(n.std(1, correction=0), n.mean(1)).mean()
    return {"across_instances": across.item(), "within_instance": within.item()}


def layer_cv(
    model: nn.Module, data: Iterable[Any], *, layers: list[str] | None = None, max_batches: int | None = None
) -> dict[str, dict[str, float]]:
    """Both CVs (``feature_cv``) of every prunable layer's feature over ``data`` (held-out), unpruned, in eval mode.

    ``layers`` defaults to ``prunable_layers(model)``; the result is in the model's order (arXiv 1907.11840).
    """
    return {name: feature_cv(n) for name, n in _collect_norms(model, data, layers, max_batches).items()}


def _collect_norms(
    model: nn.Module, data: Iterable[Any], layers: list[str] | None, max_batches: int | None
) -> dict[str, Tensor]:
    """(instances, channels) input-channel norms of every layer over ``data``, unpruned, in eval mode."""
    sp = InstanceSparsity(model, layers, theta=0.0)
    norms: dict[str, list[Tensor]] = {name: [] for name in sp.layers}
    with eval_mode(sp.model), sp._hooked(mask=False, record_norms=True) as state:
        for x in _inputs(data, sp.model, max_batches):
            sp.model(x)
            for name in sp.layers:
                norms[name].append(state.norms.pop(name).double().cpu())
    return {name: torch.cat(chunks) for name, chunks in norms.items()}


def static_masks(
    model: nn.Module, data: Iterable[Any], layers: list[str], *, keep: float, max_batches: int | None = None
) -> dict[str, Tensor]:
    """The static control of instance-wise pruning: each conv keeps the same inputs for every image.

    Each of ``layers`` keeps its ``max(1, round(keep·C))`` input channels with the largest mean ℓ2 norm over
    ``data`` (held-out); the masks (``[out, in]``, True = keep) go to ``make_plan``, whose surgery then also
    removes the producing channels nothing reads any more (arXiv 1907.11840 compares against static pruning).
    """
    if not 0 < keep <= 1:
        raise ConfigError(f"keep is the fraction of input channels each layer keeps, in (0, 1]; got {keep!r}")
    masks = {}
    for name, norms in _collect_norms(model, data, layers, max_batches).items():
        conv = model.get_submodule(name)
        order = torch.argsort(-norms.mean(0), stable=True)  # strongest first; ties: the lower index
        cols = torch.zeros(conv.in_channels, dtype=torch.bool)
        cols[order[: max(1, round(keep * conv.in_channels))]] = True
        masks[name] = cols.expand(conv.out_channels, -1).clone()
    return masks


def gather_costs(
    model: nn.Module,
    layers: list[str],
    images: Iterable[Tensor],
    *,
    theta: float,
    rule: str = "mean",
    iters: int = 10,
) -> dict[str, dict[str, float]]:
    """Measured per-layer cost at batch 1: median ms of each conv dense vs gathered (``GatheredConv2d``).

    Each conv runs on the features it receives for ``images`` (each ``(1, C, H, W)``), the two paths interleaved,
    ``iters`` calls per image. The gathered time includes the norms, the mask and the ``index_select`` the
    decision needs, so it pays only where the skipped channels save more than that. Time on a quiet machine.
    """
    sp = InstanceSparsity(model, layers, theta=theta, rule=rule)
    inputs: dict[str, list[Tensor]] = {name: [] for name in sp.layers}
    hooks = [
        conv.register_forward_pre_hook(lambda _m, args, n=name: inputs[n].append(args[0].detach().clone()))
        for name, conv in sp._convs.items()
    ]
    try:
        with eval_mode(model):
            for x in images:
                model(x)
    finally:
        for h in hooks:
            h.remove()
    costs = {}
    with torch.inference_mode():
        for name, conv in sp._convs.items():
            paths = {"dense": conv, "gathered": GatheredConv2d(conv, theta=theta, rule=rule)}
            times: dict[str, list[float]] = {k: [] for k in paths}
            kept = []
            for x in inputs[name]:
                for path, fn in paths.items():
                    fn(x)  # warm-up
                    for _ in range(iters):
                        t0 = time.perf_counter()
                        fn(x)
                        times[path].append(1e3 * (time.perf_counter() - t0))
                kept.append(paths["gathered"].last_kept.numel() / conv.in_channels)
            costs[name] = {f"{k}_ms": statistics.median(v) for k, v in times.items()}
            costs[name]["kept_fraction"] = statistics.mean(kept)
    return costs


def layers_that_pay(costs: dict[str, dict[str, float]], *, margin: float = 0.0) -> list[str]:
    """The layers where the gathered path is faster than the dense conv by more than ``margin`` (a fraction).

    ``costs`` as ``gather_costs`` returns it (``dense_ms`` and ``gathered_ms`` per layer), or any table of the
    same shape; the order is kept.
    """
    if not 0 <= margin < 1:
        raise ConfigError(f"margin is a fraction of the dense time, in [0, 1); got {margin!r}")
    return [n for n, c in costs.items() if c["gathered_ms"] < (1 - margin) * c["dense_ms"]]


def select_layers(
    cv: dict[str, dict[str, float]],
    *,
    by: str = "across_instances",
    top_k: int | None = None,
    min_cv: float | None = None,
    lowest: bool = False,
) -> list[str]:
    """Layers to prune instance-wise: the ``top_k`` highest CV (``by`` one definition) and/or CV >= ``min_cv``.

    Returned in the model's order. ``lowest=True`` picks the ``top_k`` lowest instead (the control of a selection
    experiment: low-CV layers are better served by static pruning, arXiv 1907.11840).
    """
    if by not in CV_KINDS:
        raise ConfigError(f"by must be one of {', '.join(map(repr, CV_KINDS))}, got {by!r}")
    if top_k is None and min_cv is None:
        raise ConfigError("give top_k (how many layers) and/or min_cv (a CV threshold) to select layers")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ConfigError(f"top_k must be a positive int, got {top_k!r}")
    names = [n for n in cv if min_cv is None or cv[n][by] >= min_cv]
    if top_k is not None:
        ranked = sorted(names, key=lambda n: cv[n][by], reverse=not lowest)  # sorted is stable: ties keep order
        names = [n for n in names if n in set(ranked[:top_k])]
    return names


# --- which convs can be pruned -------------------------------------------------------------------------------


def _trace(model: nn.Module) -> fx.Graph:
    # Conv subclasses (e.g. masked or binary convs) stay single nodes, so they are refused by name below
    # instead of failing the whole trace inside their weight computation.
    why = "instance-wise pruning needs the graph to check that each pruned feature feeds only its conv"
    return trace(model, leaf=lambda m: isinstance(m, nn.Conv2d), why=why)


def _describe(node: fx.Node) -> str:
    if node.op == "call_module":
        return f"module {node.target!r}"
    if node.op == "call_function":
        return f"{getattr(node.target, '__name__', node.target)}()"
    if node.op == "call_method":
        return f".{node.target}()"
    return "the model's output" if node.op == "output" else node.name


_IN_PLACE_FUNCTIONS = frozenset({"iadd", "isub", "imul", "itruediv", "relu_"})


def _in_place(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return bool(getattr(modules.get(str(node.target)), "inplace", False))
    if node.op == "call_method":
        return str(node.target).endswith("_")
    if node.op == "call_function":
        return getattr(node.target, "__name__", "") in _IN_PLACE_FUNCTIONS or bool(node.kwargs.get("inplace"))
    return False


def _shared_with(conv_node: fx.Node, modules: dict[str, nn.Module]) -> list[str]:
    """Other consumers of a conv's input, following in-place ops back (their output is their input's memory)."""
    others, consumer = [], conv_node
    node = conv_node.args[0] if conv_node.args else conv_node.kwargs.get("input")
    while isinstance(node, fx.Node):
        others += [_describe(u) for u in node.users if u is not consumer]
        if not _in_place(node, modules) or not node.args:
            break
        consumer, node = node, node.args[0]
    return others


def _site_reasons(model: nn.Module, graph: fx.Graph) -> dict[str, str | None]:
    """Every conv called in forward (graph order) -> why its input channels cannot be pruned (None: they can)."""
    modules = dict(model.named_modules())
    calls: dict[str, list[fx.Node]] = {}
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(modules.get(str(node.target)), nn.Conv2d):
            calls.setdefault(str(node.target), []).append(node)
    reasons: dict[str, str | None] = {}
    for name, nodes in calls.items():
        conv = modules[name]
        feature = nodes[0].args[0] if nodes[0].args else nodes[0].kwargs.get("input")
        if type(conv) is not nn.Conv2d:
            reasons[name] = f"it is a {type(conv).__name__}, not a plain nn.Conv2d (its weight may be computed)"
        elif conv.groups != 1:
            reasons[name] = f"it is a grouped conv (groups={conv.groups}): its input channels are not independent"
        elif len(nodes) > 1:
            reasons[name] = f"it is called {len(nodes)} times in forward (shared weights, several features)"
        elif not isinstance(feature, fx.Node) or feature.op == "placeholder":
            reasons[name] = "it takes the model's input, not a feature map"
        elif shared := _shared_with(nodes[0], modules):
            reasons[name] = (
                f"its input feature map also feeds {', '.join(dict.fromkeys(shared))}: pruning it would change what "
                "that computes too (e.g. a residual sum); choose a conv whose input feeds it alone (in a residual "
                "block: the block's inner conv)"
            )
        else:
            reasons[name] = None
    return reasons


def prunable_layers(model: nn.Module) -> list[str]:
    """The convs whose input channels can be pruned instance-wise, in the model's order (arXiv 1907.11840).

    A plain ``nn.Conv2d`` with ``groups=1``, called once, whose input is a feature map (not the model input)
    that no other op uses: not the stem, not a conv whose input also feeds a residual path.
    """
    return [name for name, why in _site_reasons(model, _trace(model)).items() if why is None]


def _resolve_layers(model: nn.Module, layers: list[str] | None) -> tuple[str, ...]:
    reasons = _site_reasons(model, _trace(model))
    ok = [n for n, why in reasons.items() if why is None]
    if layers is None:
        if not ok:
            raise ConfigError(f"{type(model).__name__} has no conv whose input channels can be pruned instance-wise")
        return tuple(ok)
    if isinstance(layers, str) or not layers:
        raise ConfigError(f"layers must be a non-empty list of conv names, got {layers!r}; e.g. {ok[:3]}")
    if len(set(layers)) != len(layers):
        raise ConfigError(f"layers lists a name twice: {layers}")
    names = dict(model.named_modules())
    for name in layers:
        if name not in reasons:
            what = "is not a module of the model" if name not in names else "is not an nn.Conv2d run in forward"
            close = difflib.get_close_matches(name, ok, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"layer {name!r} {what}; {hint}prunable layers: {', '.join(ok) or 'none'}")
        if reasons[name] is not None:
            raise ConfigError(f"cannot prune the input channels of {name!r}: {reasons[name]}")
    return tuple(n for n in reasons if n in set(layers))  # graph order, whatever order they were given in


# --- the method -----------------------------------------------------------------------------------------------


@dataclass
class _HookState:
    mask: bool
    ste: bool = False
    record_norms: bool = False
    penalty: bool = False
    normalize: bool = False
    kept: dict[str, Tensor] = field(default_factory=dict)
    norms: dict[str, Tensor] = field(default_factory=dict)
    penalties: list[Tensor] = field(default_factory=list)


@dataclass(frozen=True)
class InstanceMacs:
    """Per-instance MACs with instance-wise pruning (arXiv 1907.11840); MACs follow ``leanvision.profile``.

    ``dense``: one instance without pruning; ``per_instance``: each instance with its pruned input channels
    skipped by the pruned convs; ``layers_dense``: the pruned convs' own MACs without pruning; ``kept``: the
    input channels each instance keeps, per layer.
    """

    dense: int
    per_instance: Tensor
    layers_dense: int
    kept: dict[str, Tensor]
    channels: dict[str, int]

    @property
    def mean(self) -> float:
        return self.per_instance.double().mean().item()

    @property
    def min(self) -> int:
        return int(self.per_instance.min())

    @property
    def max(self) -> int:
        return int(self.per_instance.max())

    @property
    def reduction(self) -> float:
        """Mean fraction of the whole model's MACs saved."""
        return 1.0 - self.mean / self.dense

    @property
    def layers_reduction(self) -> float:
        """Mean fraction of the pruned convs' MACs saved (where the saving happens)."""
        return (self.dense - self.mean) / self.layers_dense

    def to_dict(self) -> dict[str, Any]:
        layers = {
            name: {
                "channels": self.channels[name],
                "kept_mean": k.double().mean().item(),
                "kept_std": k.double().std(correction=0).item(),
            }
            for name, k in self.kept.items()
        }
        return {
            "n": len(self.per_instance),
            "dense": self.dense,
            "mean": self.mean,
            "min": self.min,
            "max": self.max,
            "reduction": self.reduction,
            "layers_dense": self.layers_dense,
            "layers_reduction": self.layers_reduction,
            "layers": layers,
        }


class InstanceSparsity:
    """Instance-wise feature sparsity on the inputs of chosen convs of ``model`` (arXiv 1907.11840).

    ``layers``: names of plain ``nn.Conv2d`` modules whose input channels are pruned (default: all of
    ``prunable_layers(model)``; a conv whose input also feeds another op, e.g. a residual add, is refused).
    ``theta``/``rule``: the per-instance threshold of ``keep_mask``; both may be changed later (a θ sweep).
    The model is used in place: hooks are attached only inside ``active()``, ``masks()``, ``macs_per_instance()``
    and a training step, and removed after.
    """

    def __init__(self, model: nn.Module, layers: list[str] | None = None, *, theta: float, rule: str = "mean") -> None:
        _check_threshold(theta, rule)
        self.model = model
        self.layers = _resolve_layers(model, layers)
        self._theta, self._rule = theta, rule
        self._convs: dict[str, nn.Conv2d] = {n: model.get_submodule(n) for n in self.layers}
        self._handles: list[Any] = []
        self._dense_cache: dict[tuple[Any, ...], tuple[int, dict[str, int]]] = {}

    @property
    def theta(self) -> float:
        return self._theta

    @theta.setter
    def theta(self, value: float) -> None:
        _check_threshold(value, self._rule)
        self._theta = value

    @property
    def rule(self) -> str:
        return self._rule

    @rule.setter
    def rule(self, value: str) -> None:
        _check_threshold(self._theta, value)
        self._rule = value

    # -- hooks

    def _pre_hook(self, name: str, state: _HookState, _module: nn.Module, args: tuple[Any, ...]) -> Any:
        x = args[0]
        norms = channel_norms(x)
        if state.record_norms:
            state.norms[name] = norms.detach()
        if state.penalty:
            state.penalties.append(_l21(norms, x.shape, state.normalize))
        if not state.mask:
            return None
        keep = keep_mask(norms.detach(), self._theta, self._rule)
        state.kept[name] = keep
        masked = x * keep[:, :, None, None].to(x.dtype)
        if state.ste:  # forward: the masked value; backward: as if unmasked (straight-through)
            masked = x + (masked - x).detach()
        return (masked, *args[1:])

    @contextmanager
    def _hooked(self, **kw: Any) -> Iterator[_HookState]:
        if self._handles:
            raise ConfigError(
                "instance-wise pruning is already active on this model (nested use); leave the `with sp.active()` "
                "block (or finish the training step) first"
            )
        state = _HookState(**kw)
        self._handles = [
            conv.register_forward_pre_hook(partial(self._pre_hook, name, state)) for name, conv in self._convs.items()
        ]
        try:
            yield state
        finally:
            for h in self._handles:
                h.remove()
            self._handles = []

    # -- public

    @contextmanager
    def active(self) -> Iterator[None]:
        """Inside the block the model runs pruned: each instance's pruned channels are zeroed (any batch size).

        It is the reference computation (dense convs on masked inputs: no time is saved); e.g.
        ``with sp.active(): evaluate(model, val)``.
        """
        with self._hooked(mask=True):
            yield

    def masks(self, x: Tensor) -> dict[str, Tensor]:
        """The (B, C) boolean keep-masks of every layer for a batch, from a pruned eval-mode forward."""
        with eval_mode(self.model), self._hooked(mask=True) as state:
            self.model(x)
        return dict(state.kept)

    def train_step(self, lam: float, *, normalize: bool = False, prune: bool = False) -> FeatureDecayStep:
        """A ``fit(train_step=...)`` adding λ·ℓ2,1 feature decay of the layers' inputs; see ``FeatureDecayStep``."""
        return FeatureDecayStep(self, lam=lam, normalize=normalize, prune=prune)

    def _dense_costs(self, x1: Tensor) -> tuple[int, dict[str, int]]:
        key = (tuple(x1.shape), x1.dtype, x1.device)
        if key not in self._dense_cache:
            prof = profile(self.model, x1)
            # groups=1, so a conv's MACs are out.numel() * k*k * C_in: exactly divisible by C_in.
            per_channel = {n: prof.by_module[n] // self._convs[n].in_channels for n in self.layers}
            self._dense_cache[key] = (prof.macs, per_channel)
        return self._dense_cache[key]

    def macs_per_instance(self, data: Iterable[Any], *, max_batches: int | None = None) -> InstanceMacs:
        """MACs every instance of ``data`` needs when each pruned conv skips that instance's pruned input channels.

        ``data`` yields ``(inputs, targets)`` batches or input tensors of one input size. The producing layers are
        counted in full (the pruning decision needs their whole output), as is everything else. Runs in eval mode.
        """
        dense, per_channel, shape = 0, {}, None
        macs, kept = [], {n: [] for n in self.layers}
        for x in _inputs(data, self.model, max_batches):
            if shape is not None and x.shape[1:] != shape:
                raise ConfigError(f"inputs must all have one size, got {tuple(shape)} and {tuple(x.shape[1:])}")
            shape = x.shape[1:]
            dense, per_channel = self._dense_costs(x[:1])
            saved = torch.zeros(x.shape[0], dtype=torch.int64)
            for name, keep in self.masks(x).items():
                k = keep.sum(1).cpu()
                kept[name].append(k)
                saved += (self._convs[name].in_channels - k) * per_channel[name]
            macs.append(dense - saved)
        if shape is None:
            raise ConfigError("data yielded no batches; pass a non-empty loader")
        return InstanceMacs(
            dense=dense,
            per_instance=torch.cat(macs),
            layers_dense=sum(per_channel[n] * self._convs[n].in_channels for n in self.layers),
            kept={n: torch.cat(k) for n, k in kept.items()},
            channels={n: self._convs[n].in_channels for n in self.layers},
        )

    def fast_module(self) -> nn.Module:
        """A batch-1 eval-mode copy whose pruned convs gather the kept channels (``GatheredConv2d``): real savings.

        It shares the model's parameters and buffers (trained weights are seen, nothing is copied) and takes
        θ and the rule as they are now; build it again after changing them or moving the model to a device.
        """
        if self._handles:
            raise ConfigError("build the fast module outside `with sp.active()` and the training step")
        shared = {id(t): t for t in itertools.chain(self.model.parameters(), self.model.buffers())}
        fast = copy.deepcopy(self.model, shared)
        theta, rule = self._theta, self._rule
        replace_modules(
            fast, lambda name, _m: name in self._convs, lambda _n, conv: GatheredConv2d(conv, theta=theta, rule=rule)
        )
        return fast.eval()

    def fast_forward(self, x: Tensor) -> Tensor:
        """The pruned model's output for one instance (batch 1) computed with gathered channels, without autograd.

        Builds ``fast_module()`` on every call (so it always sees the current weights and θ); to time it, build
        ``fast_module()`` once and pass it to ``leanvision.profile.latency``.
        """
        with torch.no_grad():
            return self.fast_module()(x)


@dataclass
class FeatureDecayStep:
    """``fit(train_step=...)`` for arXiv 1907.11840: loss = mean_x[task + λ·Σ_layers ‖F(x)‖₂,₁], then step.

    λ has no verified value (1e-5 to 1e-4 for un-normalised sums on CIFAR is a starting point).
    ``normalize`` divides each layer's term by C·sqrt(H·W). ``prune=True`` fine-tunes with the pruning active
    (masks from the current θ; straight-through: the forward sees the masked features, the gradient passes as
    if unmasked). Returns the task loss (comparable with ``val_loss``); ``penalty_by_epoch`` keeps the mean
    per-instance penalty Σ‖F‖₂,₁ of every epoch (0-based).
    """

    sparsity: InstanceSparsity
    lam: float
    normalize: bool = False
    prune: bool = False
    penalty_by_epoch: dict[int, float] = field(default_factory=dict)
    _seen: dict[int, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.lam, bool) or not isinstance(self.lam, (int, float)) or not self.lam >= 0:
            raise ConfigError(f"lam must be a number >= 0, got {self.lam!r}; 1e-5 to 1e-4 is a starting point")
        if not math.isfinite(self.lam):
            raise ConfigError(f"lam must be finite, got {self.lam}")

    def __call__(self, model: nn.Module, inputs: Any, targets: Tensor, ctx: Any) -> tuple[Tensor, Any]:
        sp = self.sparsity
        with sp._hooked(mask=self.prune, ste=True, penalty=True, normalize=self.normalize) as state:
            outputs = model(inputs)
        if len(state.penalties) != len(sp.layers):
            raise ConfigError(
                f"the training step saw {len(state.penalties)} of the {len(sp.layers)} pruned layers run; pass fit "
                "the model that InstanceSparsity was built on (or a wrapper of it, e.g. DDP)"
            )
        penalty = torch.stack(state.penalties).sum(0).mean()
        task = ctx.loss_fn(outputs, targets, inputs)
        ctx.update(task + self.lam * penalty if self.lam else task)
        n = self._seen.get(ctx.epoch, 0)
        prev = self.penalty_by_epoch.get(ctx.epoch, 0.0)
        self.penalty_by_epoch[ctx.epoch] = prev + (penalty.item() - prev) / (n + 1)
        self._seen[ctx.epoch] = n + 1
        return task, outputs

    def state_dict(self) -> dict[str, dict[int, float]]:
        """The penalty record so far: ``fit`` checkpoints it, so a resumed run keeps the epochs before the stop."""
        return {"penalty_by_epoch": dict(self.penalty_by_epoch), "seen": dict(self._seen)}

    def load_state_dict(self, state: Mapping[str, Mapping[int, float]]) -> None:
        self.penalty_by_epoch = {int(e): float(v) for e, v in state["penalty_by_epoch"].items()}
        self._seen = {int(e): int(n) for e, n in state["seen"].items()}


class GatheredConv2d(nn.Module):
    """A conv that skips, for its one instance, the input channels ``keep_mask`` prunes (arXiv 1907.11840).

    Batch 1 only (each instance keeps other channels): it gathers the kept channels of the input and the same
    input channels of the weight (``index_select``) and convolves those, so the saved MACs are saved in time.
    ``last_kept`` holds the input channels kept by the last call.
    """

    def __init__(self, conv: nn.Conv2d, *, theta: float, rule: str = "mean") -> None:
        super().__init__()
        _check_threshold(theta, rule)
        if type(conv) is not nn.Conv2d or conv.groups != 1:
            raise ConfigError(f"GatheredConv2d needs a plain nn.Conv2d with groups=1, got {conv}")
        self.conv, self.theta, self.rule = conv, theta, rule
        self.last_kept: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[0] != 1:
            raise ConfigError(
                f"the gathered (fast) path runs one instance at a time, got a batch of {x.shape[0]}; loop over the "
                "instances, or use `with sp.active():` for the masked computation of a batch"
            )
        kept = keep_mask(channel_norms(x), self.theta, self.rule)[0].nonzero().squeeze(1)
        self.last_kept = kept
        conv = self.conv
        if kept.numel() == 0:  # every channel pruned: the conv of a zero input is its bias
            shape = conv._conv_forward(x[:0], conv.weight, None).shape[1:]  # batch 0: the output size, no work
            out = x.new_zeros((1, *shape))
            return out if conv.bias is None else out + conv.bias[:, None, None]
        return conv._conv_forward(x.index_select(1, kept), conv.weight.index_select(1, kept), conv.bias)


def _inputs(data: Iterable[Any], model: nn.Module, max_batches: int | None) -> Iterator[Tensor]:
    """The input tensors of ``data``'s batches on the model's device."""
    if max_batches is not None and (
        isinstance(max_batches, bool) or not isinstance(max_batches, int) or max_batches < 1
    ):
        raise ConfigError(f"max_batches must be a positive int or None, got {max_batches!r}")
    ref = next(itertools.chain(model.parameters(), model.buffers()), None)
    for i, batch in enumerate(data):
        if max_batches is not None and i >= max_batches:
            return
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if not isinstance(x, Tensor) or x.ndim != 4:
            raise ConfigError(f"batches must be (B, C, H, W) image tensors or (inputs, targets), got {type(x)}")
        yield x if ref is None else x.to(ref.device)
