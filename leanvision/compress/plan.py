"""Kernel-level pruning plans (plain JSON) and the surgery that removes channels left without connections.

A plan keeps or drops each *connection* of a conv: the 2-D kernel from input channel i to output channel j
(arXiv 1811.02454). Replaying it (``apply_plan``) zeroes the dropped kernels and physically removes every channel
that no longer carries information: one whose producing kernels are all gone (it is all zeros) or one that no
consumer reads any more. Which layers share a channel (a residual add, a BatchNorm, a flatten before a linear
layer) is read from the model's ``torch.fx`` graph. A channel that reaches anything this module does not
understand is kept, so surgery never changes what the masked model computes.
"""

from __future__ import annotations

import copy
import inspect
import json
import operator
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from leanvision.errors import ConfigError
from leanvision.models._registry import ARCH_ATTR, MODELS, create_model, register_arch_transform
from leanvision.models.surgery import replace_modules, trace

PLAN_FORMAT = "leanvision.prune_plan"
PLAN_VERSION = 1
_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)

# Channel-wise ops that map an all-zero channel to an all-zero channel: a dead channel stays dead through them.
_ZERO_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.GELU, nn.Mish, nn.Hardswish, nn.Tanh, nn.Identity,
    nn.Dropout, nn.Dropout2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
)  # fmt: skip
_ZERO_FUNCTIONS = {
    F.relu, torch.relu, F.relu_, F.relu6, F.leaky_relu, F.elu, F.silu, F.gelu, F.mish, F.hardswish, torch.tanh,
    F.dropout, F.dropout2d, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d,
}  # fmt: skip
_ZERO_METHODS = {"relu", "relu_", "tanh", "contiguous", "clone"}
# The subset that also commutes with a positive per-channel scale (relu(a*x) = a*relu(x) for a > 0): a BatchNorm
# scale can move across them into the next conv exactly.
_SCALE_MODULES = (
    nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Dropout, nn.Dropout2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)  # fmt: skip
_SCALE_FUNCTIONS = {
    F.relu, torch.relu, F.relu_, F.leaky_relu, F.dropout, F.dropout2d, F.max_pool2d, F.avg_pool2d,
    F.adaptive_avg_pool2d, F.adaptive_max_pool2d,
}  # fmt: skip
_SCALE_METHODS = {"relu", "relu_", "contiguous", "clone"}
_ADD = {operator.add, operator.iadd, torch.add}
_MUL = {operator.mul, operator.imul, torch.mul}
_SHAPE_ONLY = {"size", "dim"}  # read a tensor's shape, not its values


def is_conv(module: nn.Module) -> bool:
    """A plain ``nn.Conv2d`` or a re-parameterised conv that can hand back one (``as_conv2d()``)."""
    return type(module) is nn.Conv2d or callable(getattr(module, "as_conv2d", None))


def trace_model(model: nn.Module) -> fx.Graph:
    """The model's ``torch.fx`` graph with every conv a leaf; a ``ConfigError`` says why it cannot be traced."""
    return trace(model, leaf=is_conv, why="channel surgery needs the graph to know which layers share channels")


def scale_passes(node: fx.Node, modules: Mapping[str, nn.Module], value: fx.Node) -> bool:
    """Whether ``node`` is channel-wise and commutes with a positive per-channel scale of its input ``value``."""
    return _channelwise(node, modules, value, scale=True)


def _channelwise(node: fx.Node, modules: Mapping[str, nn.Module], value: fx.Node, *, scale: bool) -> bool:
    if not node.args or node.args[0] is not value or _mentions(node.args[1:], node.kwargs, value):
        return False
    extra = [a for a in [*node.args[1:], *node.kwargs.values()] if isinstance(a, fx.Node)]
    if node.op == "call_module":
        m = modules[node.target]
        if getattr(m, "return_indices", False):
            return False
        if type(m) is nn.Hardtanh or type(m) is nn.ReLU6:
            return not scale and m.min_val <= 0 <= m.max_val
        return isinstance(m, _SCALE_MODULES if scale else _ZERO_MODULES) and type(m).__module__.startswith("torch.nn")
    if extra:
        return False
    if node.op == "call_function":
        if node.target in _MUL:
            return len(node.args) == 2 and isinstance(node.args[1], (int, float))
        if node.kwargs.get("return_indices"):
            return False
        return node.target in (_SCALE_FUNCTIONS if scale else _ZERO_FUNCTIONS)
    if node.op == "call_method":
        if node.target in ("mul", "mul_"):
            return len(node.args) == 2 and isinstance(node.args[1], (int, float))
        return node.target in (_SCALE_METHODS if scale else _ZERO_METHODS)
    return False


def _mentions(args: Any, kwargs: Any, value: fx.Node) -> bool:
    found = []
    fx.node.map_arg((args, kwargs), lambda n: found.append(n is value))
    return any(found)


# --- which channels are shared ----------------------------------------------------------------------------------


@dataclass
class _Space:
    """Channels that are the same channels for every module listed (kept or removed together)."""

    size: int | None = None
    opaque: bool = False  # touched by an op we cannot resize: no channel may be removed
    source: bool = False  # also written by something other than a conv: never all-zero
    producers: list[str] = field(default_factory=list)  # convs that write these channels
    consumers: list[str] = field(default_factory=list)  # convs that read them
    linears: list[str] = field(default_factory=list)  # linear layers that read them (flattened)
    norms: list[str] = field(default_factory=list)  # BatchNorms over them


class ChannelGraph:
    """Channel spaces of a model, from its fx graph: who writes, reads and normalises each set of channels."""

    def __init__(self, model: nn.Module) -> None:
        self.modules = dict(model.named_modules())
        self._parent: list[int] = []
        self._spaces: list[_Space] = []
        self.conv_io: dict[str, tuple[int, int]] = {}  # conv -> (input space, output space)
        self.bn_space: dict[str, int] = {}
        self.linear_in: dict[str, int] = {}
        self.linear_factor: dict[str, int] = {}  # linear -> input features per channel (H*W before a flatten)
        self._module_spaces: dict[str, list[int]] = {}
        self.coupled: list[tuple[int, int]] = []  # depthwise (input, output): same channels kept on both
        calls: Counter[str] = Counter()
        touched: set[str] = set()
        vals: dict[fx.Node, tuple[int, bool] | None] = {}  # node -> (space, flattened) or None (not a feature map)
        for node in trace_model(model).nodes:
            if node.op == "call_module":
                calls[node.target] += 1
            elif node.op == "get_attr":
                touched.add(node.target.rpartition(".")[0])
            vals[node] = self._visit(node, vals)
        # A module called twice or read directly (its weight used functionally) cannot be resized safely.
        for name in [n for n, c in calls.items() if c > 1] + sorted(touched):
            for sid in self._module_spaces.get(name, []):
                self.space(sid).opaque = True
                self.space(sid).source = True
        for name, sid in self.linear_in.items():
            size, n_in = self.space(sid).size, self.modules[name].in_features
            if size is None or n_in % size:
                self.space(sid).opaque = True
            else:
                self.linear_factor[name] = n_in // size

    # union-find over spaces
    def _new(self, size: int | None = None, *, opaque: bool = False, source: bool = False) -> int:
        self._parent.append(len(self._parent))
        self._spaces.append(_Space(size, opaque, source))
        return len(self._parent) - 1

    def root(self, sid: int) -> int:
        while self._parent[sid] != sid:
            self._parent[sid] = self._parent[self._parent[sid]]
            sid = self._parent[sid]
        return sid

    def space(self, sid: int) -> _Space:
        return self._spaces[self.root(sid)]

    def roots(self) -> list[int]:
        return sorted({self.root(i) for i in range(len(self._parent))})

    def _union(self, a: int, b: int) -> int:
        a, b = self.root(a), self.root(b)
        if a == b:
            return a
        sa, sb = self._spaces[a], self._spaces[b]
        if sa.size is not None and sb.size is not None and sa.size != sb.size:
            sa.opaque = True  # broadcasting between different widths: not a channel-for-channel match
        sa.size = sa.size if sa.size is not None else sb.size
        sa.opaque |= sb.opaque
        sa.source |= sb.source
        for attr in ("producers", "consumers", "linears", "norms"):
            getattr(sa, attr).extend(getattr(sb, attr))
        self._parent[b] = a
        return a

    def _expect(self, sid: int, size: int) -> None:
        s = self.space(sid)
        if s.size is None:
            s.size = size
        elif s.size != size:
            s.opaque = True

    def _opaque_inputs(self, node: fx.Node, vals: dict) -> tuple[int, bool]:
        def mark(n: fx.Node) -> fx.Node:
            if vals.get(n) is not None:
                self.space(vals[n][0]).opaque = True
            return n

        fx.node.map_arg((node.args, node.kwargs), mark)
        return self._new(opaque=True, source=True), False

    def _visit(self, node: fx.Node, vals: dict) -> tuple[int, bool] | None:
        if node.op in ("placeholder", "get_attr"):
            return self._new(opaque=True, source=True), False
        if node.op == "output":
            self._opaque_inputs(node, vals)
            return None
        x = node.args[0] if node.args else None
        xv = vals.get(x) if isinstance(x, fx.Node) else None
        if node.op == "call_method" and node.target in _SHAPE_ONLY:
            return None
        if node.op == "call_function" and node.target is getattr and node.args[1:] == ("shape",):
            return None
        if xv is None:
            return self._opaque_inputs(node, vals)
        sid, flat = xv
        if node.op == "call_module":
            return self._visit_module(node, sid, flat, vals)
        if (node.op == "call_function" and node.target in _ADD) or (
            node.op == "call_method" and node.target in ("add", "add_")
        ):
            y = node.args[1] if len(node.args) > 1 else None
            yv = vals.get(y) if isinstance(y, fx.Node) else None
            if yv is None or yv[1] != flat or set(node.kwargs) - {"alpha"} or len(node.args) > 2:
                return self._opaque_inputs(node, vals)
            return self._union(sid, yv[0]), flat
        if self._flattens(node):
            return (sid, True) if not flat else self._opaque_inputs(node, vals)
        pooled = self._spatial_mean(node)
        if pooled is not None and not flat:
            return sid, not pooled
        if _channelwise(node, self.modules, x, scale=False):
            return sid, flat
        return self._opaque_inputs(node, vals)

    def _visit_module(self, node: fx.Node, sid: int, flat: bool, vals: dict) -> tuple[int, bool]:
        m, name = self.modules[node.target], node.target
        if len(node.args) != 1 or node.kwargs:
            return self._opaque_inputs(node, vals)
        if is_conv(m) and not flat:
            out = self._new(m.out_channels)
            self._module_spaces.setdefault(name, []).extend((sid, out))
            self._expect(sid, m.in_channels)
            self.space(sid).consumers.append(name)
            self.space(out).producers.append(name)
            self.conv_io[name] = (sid, out)
            if m.groups > 1 and m.in_channels == m.groups == m.out_channels:
                self.coupled.append((sid, out))
            elif m.groups > 1:  # a grouped conv ties channels across groups: prune its kernels, keep its channels
                self.space(sid).opaque = self.space(out).opaque = True
            return out, False
        if type(m) in _BN_TYPES and (type(m) is nn.BatchNorm1d) == flat:
            self._expect(sid, m.num_features)
            self.space(sid).norms.append(name)
            self.bn_space[name] = sid
            self._module_spaces.setdefault(name, []).append(sid)
            return sid, flat
        if type(m) is nn.Linear and flat:
            self.space(sid).linears.append(name)
            self.linear_in[name] = sid
            out = self._new(m.out_features, opaque=True, source=True)
            self._module_spaces.setdefault(name, []).extend((sid, out))
            return out, True
        if type(m) is nn.Flatten and m.start_dim == 1 and m.end_dim == -1 and not flat:
            return sid, True
        if _channelwise(node, self.modules, node.args[0], scale=False):
            return sid, flat
        return self._opaque_inputs(node, vals)

    @staticmethod
    def _flattens(node: fx.Node) -> bool:
        if (node.op, node.target) not in (("call_function", torch.flatten), ("call_method", "flatten")):
            return False
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return start == 1 and end == -1

    @staticmethod
    def _spatial_mean(node: fx.Node) -> bool | None:
        """For ``x.mean((2, 3))``-style global pooling: whether it keeps dims; None for anything else."""
        if (node.op, node.target) not in (("call_method", "mean"), ("call_function", torch.mean)):
            return None
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        keep = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
        if not isinstance(dims, (tuple, list)) or not isinstance(keep, bool) or "dtype" in node.kwargs:
            return None
        return keep if sorted(dims) in ([2, 3], [-2, -1]) else None


# --- what a set of masks removes ----------------------------------------------------------------------------


@dataclass
class Solution:
    """Effective masks (dropped kernels plus those a removal makes useless) and the channels kept per space."""

    masks: dict[str, torch.Tensor]  # conv -> bool [out, in/groups]
    keep: dict[int, torch.Tensor]  # space root -> sorted channel indices kept
    dead: dict[int, torch.Tensor]  # space root -> bool [size]: all-zero channels (kept ones get silenced)


def _col_use(mask: torch.Tensor, groups: int) -> torch.Tensor:
    """Per input channel (of the full conv input): whether any kept kernel reads it."""
    out, cpg = mask.shape
    return mask.view(groups, out // groups, cpg).any(1).flatten()


def _drop_inputs(mask: torch.Tensor, groups: int, drop: torch.Tensor) -> None:
    out, cpg = mask.shape
    idx = drop.nonzero().flatten()
    mask.view(groups, out // groups, cpg)[idx // cpg, :, idx % cpg] = False


def solve(graph: ChannelGraph, masks: Mapping[str, torch.Tensor]) -> Solution:
    """Propagate ``masks`` to a fixed point: kernels that read all-zero channels or write unread ones are dropped
    too; then every channel that is all-zero or unread (and shared by nothing opaque) is removed."""
    m = _full_masks(graph, masks)
    while True:
        dead, unused = _dead_unused(graph, m)
        before = sum(int(v.sum()) for v in m.values())
        for name, (sin, sout) in graph.conv_io.items():
            conv, mk = graph.modules[name], m[name]
            if graph.root(sin) in dead and len(dead[graph.root(sin)]) == conv.in_channels:
                _drop_inputs(mk, conv.groups, dead[graph.root(sin)])
            if graph.root(sout) in unused:
                mk[unused[graph.root(sout)]] = False
        if sum(int(v.sum()) for v in m.values()) == before:
            break
    removable = {r: dead.get(r, torch.zeros_like(u)) | u for r, u in unused.items()}
    _couple(graph, removable)
    for r, rm in removable.items():
        if rm.all():
            removable[r] = rm.clone()
            removable[r][0] = False  # never an empty layer: keep one (all-zero) channel
    _couple(graph, removable)
    keep = {r: (~rm).nonzero().flatten() for r, rm in removable.items() if rm.any()}
    return Solution(m, keep, dead)


def _couple(graph: ChannelGraph, removable: dict[int, torch.Tensor]) -> None:
    """A depthwise conv keeps the same channels on its input and output: remove only what both sides can lose."""
    changed = True
    while changed:
        changed = False
        for a, b in graph.coupled:
            a, b = graph.root(a), graph.root(b)
            ra, rb = removable.get(a), removable.get(b)
            if ra is rb:  # both None (kept whole) or already the same
                continue
            if ra is None or rb is None or len(ra) != len(rb):
                removable.pop(a, None), removable.pop(b, None)
            elif torch.equal(ra, rb):
                continue
            else:
                removable[a] = removable[b] = ra & rb
            changed = True


def _full_masks(graph: ChannelGraph, masks: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy of ``masks`` with an all-True mask for every conv it does not name."""
    full = {n: torch.ones(_mask_shape(c), dtype=torch.bool) for n, c in _convs(graph)}
    return {n: masks[n].clone() if n in masks else m for n, m in full.items()}


def _convs(graph: ChannelGraph) -> list[tuple[str, nn.Module]]:
    return [(n, mod) for n, mod in graph.modules.items() if is_conv(mod)]


def _mask_shape(conv: nn.Module) -> tuple[int, int]:
    return conv.out_channels, conv.in_channels // conv.groups


def _dead_unused(
    graph: ChannelGraph, masks: Mapping[str, torch.Tensor]
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    dead, unused = {}, {}
    for r in graph.roots():
        s = graph.space(r)
        if s.size is None:
            continue
        if s.producers and not s.source and all(len(masks[p]) == s.size for p in s.producers):
            d = torch.ones(s.size, dtype=torch.bool)
            for p in s.producers:
                d &= ~masks[p].any(1)
            dead[r] = d
        if not s.opaque:
            u = torch.ones(s.size, dtype=torch.bool) if not s.linears else torch.zeros(s.size, dtype=torch.bool)
            for q in s.consumers:
                u &= ~_col_use(masks[q], graph.modules[q].groups)
            unused[r] = u
    return dead, unused


# --- hardware-friendly widths ---------------------------------------------------------------------------------


def _channel_strength(graph: ChannelGraph, root: int, scores: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Per channel of a space: the mean score of the kernels that write it, per writing conv, summed over its convs."""
    total = torch.zeros(graph.space(root).size, dtype=torch.float64)
    for p in graph.space(root).producers:
        score = scores.get(p)
        if score is None:
            w = graph.modules[p].weight.detach()
            score = w.pow(2).sum((2, 3)).sqrt()
        total += score.double().cpu().mean(1)
    return total


def _restore(graph: ChannelGraph, work: dict[str, torch.Tensor], sol: Solution, root: int, extra: torch.Tensor,
             seen: set[int]) -> None:  # fmt: skip
    """Give channels ``extra`` of a space back their kernels from and to kept channels (depthwise: both sides)."""
    if root in seen:
        return
    seen.add(root)
    for name, (sin, sout) in graph.conv_io.items():
        conv, mk = graph.modules[name], work[name]
        sin, sout = graph.root(sin), graph.root(sout)
        if root not in (sin, sout):
            continue
        if _depthwise(conv):
            mk[extra, 0] = True
            _restore(graph, work, sol, sin if root == sout else sout, extra, seen)
        elif conv.groups == 1 and root == sout:
            cols = sol.keep.get(sin, torch.arange(conv.in_channels))
            mk[extra[:, None], cols[None, :]] = True
        elif conv.groups == 1:
            rows = sol.keep.get(sout, torch.arange(conv.out_channels))
            mk[rows[:, None], extra[None, :]] = True


def _round_widths(graph: ChannelGraph, masks: dict[str, torch.Tensor], sol: Solution, multiple: int,
                  scores: Mapping[str, torch.Tensor] | None) -> Solution:  # fmt: skip
    """Round every shrunk space up to a multiple of ``multiple`` kept channels: the strongest removed ones return."""
    work = _full_masks(graph, masks)
    strength = {r: _channel_strength(graph, r, scores or {}) for r in sol.keep}
    for _ in range(len(graph.roots()) + 1):  # restoring only links kept channels, so this settles quickly
        changed, seen = False, set()
        for r, keep in sol.keep.items():
            size = graph.space(r).size
            want = min(size, -(-len(keep) // multiple) * multiple)
            if want == len(keep) or r in seen:
                continue
            removed = torch.ones(size, dtype=torch.bool)
            removed[keep] = False
            idx = removed.nonzero().flatten()
            s = strength.get(r, _channel_strength(graph, r, scores or {}))[idx]
            order = torch.argsort(-s, stable=True)  # strongest first; ties: the lower index
            _restore(graph, work, sol, r, idx[order[: want - len(keep)]].sort().values, seen)
            changed = True
        if not changed:
            return sol
        sol = solve(graph, work)
    return sol


# --- plans --------------------------------------------------------------------------------------------------


def encode_mask(mask: torch.Tensor) -> list[str]:
    """One hex string per output channel; bit i (little-endian bytes) set = kernel from input channel i kept."""
    bits = np.packbits(mask.cpu().numpy().astype(np.uint8), axis=1, bitorder="little")
    return [row.tobytes().hex() for row in bits]


def decode_mask(rows: list[str], shape: tuple[int, int]) -> torch.Tensor:
    """Inverse of ``encode_mask`` for a ``[out, in/groups]`` mask."""
    out, cols = shape
    if not isinstance(rows, list) or len(rows) != out:
        raise ConfigError(f"a plan mask needs {out} rows (one per output channel), got {_describe(rows)}")
    try:
        packed = np.stack([np.frombuffer(bytes.fromhex(r), dtype=np.uint8) for r in rows])
    except (TypeError, ValueError) as e:
        raise ConfigError(f"a plan mask row is not a hex string: {e}") from None
    if packed.shape[1] != (cols + 7) // 8:
        raise ConfigError(f"a plan mask row must have {(cols + 7) // 8} bytes for {cols} input channels")
    bits = np.unpackbits(packed, axis=1, count=cols, bitorder="little")
    return torch.from_numpy(bits.astype(bool))


def _describe(x: Any) -> str:
    return f"{len(x)} rows" if isinstance(x, list) else type(x).__name__


def make_plan(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor] | None = None,
    *,
    selection: dict[str, Any] | None = None,
    round_to: int | None = None,
    channel_scores: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """A JSON-ready plan for ``model``: every conv with its kept kernels (all of them where ``masks`` is silent).

    ``masks`` maps conv names to bool ``[out, in/groups]`` tensors (True = keep). The plan stores the effective
    masks (including kernels that the removal of a channel makes useless) and a summary of what surgery will do.
    ``round_to`` (e.g. 8 or 16): every set of channels that surgery shrinks keeps a multiple of it (or all), by
    keeping the strongest of the channels it would remove, with their kernels from and to kept channels;
    strength = the mean of ``channel_scores`` (``[out, in/groups]`` per conv, e.g. |s|) over the kernels that write
    the channel (summed over the convs that write it), by default their weight norms.
    """
    graph = ChannelGraph(model)
    convs = dict(_convs(graph))
    masks = dict(masks or {})
    for what, given in (("mask", masks), ("channel score", channel_scores or {})):
        for name, mk in given.items():
            if name not in convs:
                raise ConfigError(f"{what} for {name!r}, which is not a Conv2d of this model; known: {_first(convs)}")
            if tuple(mk.shape) != _mask_shape(convs[name]):
                shape = _mask_shape(convs[name])
                raise ConfigError(f"{what} for {name!r} has shape {tuple(mk.shape)}, expected {shape}")
    masks = {n: mk.bool().cpu() for n, mk in masks.items()}
    sol = solve(graph, masks)
    if round_to is not None:
        if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
            raise ConfigError(f"round_to must be a positive int (a channel multiple such as 8 or 16), got {round_to!r}")
        sol = _round_widths(graph, masks, sol, round_to, channel_scores)
        selection = {**(selection or {}), "round_to": round_to}
    layers = {}
    for name, conv in convs.items():
        mk = sol.masks[name]
        outs, ins = _kept_channels(graph, sol, name)
        layers[name] = {
            "shape": [conv.out_channels, conv.in_channels // conv.groups, *conv.kernel_size],
            "groups": conv.groups,
            "kept": int(mk.sum()),
            "out_channels_after": len(outs),
            "in_channels_after": len(ins),
            "mask": encode_mask(mk),
        }
    total = sum(mk.numel() for mk in sol.masks.values())
    kept = sum(int(mk.sum()) for mk in sol.masks.values())
    dense, nonzero = _params_after(graph, sol)
    summary = {
        "connections": total,
        "connections_kept": kept,
        "sparsity": 1 - kept / total if total else 0.0,
        "params": _plain_params(model),
        "params_after": dense,
        "params_nonzero_after": nonzero,
    }
    plan = {"format": PLAN_FORMAT, "version": PLAN_VERSION, "selection": selection or {}, "summary": summary}
    return {**plan, "layers": layers}


def uniform_plan(model: nn.Module, width: float) -> dict[str, Any]:
    """A plan keeping the first ``max(1, round(width·C))`` channels of every set of C channels surgery can resize.

    Replayed on a freshly built model (``apply_plan``) it gives a uniformly thinner net of the same family, for
    any traceable model (the thin control of a pruning claim, arXiv 1810.05270). Channels shared with something
    surgery cannot resize (a channel-padding shortcut, a concatenation, the input) keep their width: a family
    with its own width argument thins those too.
    """
    if not 0 < width <= 1:
        raise ConfigError(f"width must be in (0, 1], got {width!r}")
    graph = ChannelGraph(model)
    masks = {}
    for name, (_, sout) in graph.conv_io.items():
        conv, space = graph.modules[name], graph.space(sout)
        if space.opaque or space.source or (conv.groups > 1 and not _depthwise(conv)):
            continue
        mask = torch.ones(_mask_shape(conv), dtype=torch.bool)
        mask[max(1, round(width * conv.out_channels)) :] = False
        masks[name] = mask
    return make_plan(model, masks, selection={"method": "uniform", "width": width})


def thin_builder(arch: Mapping[str, Any]) -> Callable[[float], nn.Module]:
    """``build(width)``: a freshly initialised, uniformly thinner net of a registered model (``arch_of`` record).

    Uses the family's own width argument (``width``, or ``widths`` scaled) where it has one, which also thins what
    surgery cannot (a channel-padding shortcut); else ``uniform_plan`` surgery on a fresh build.
    """
    name, kw = arch["name"], dict(arch.get("kwargs") or {})
    params = inspect.signature(MODELS.get(name)).parameters
    if "width" in params:
        base = kw.get("width", params["width"].default)
        return lambda w: create_model(name, **{**kw, "width": base * w})
    if "widths" in params:
        base = kw.get("widths", params["widths"].default)
        return lambda w: create_model(name, **{**kw, "widths": tuple(max(1, round(c * w)) for c in base)})

    def build(width: float) -> nn.Module:
        model = create_model(name, **kw)
        return apply_plan(model, uniform_plan(model, width), inplace=True) if width < 1 else model

    return build


def _first(names: Mapping[str, Any] | list[str], n: int = 5) -> str:
    names = list(names)
    return ", ".join(names[:n]) + (f", ... ({len(names)} in all)" if len(names) > n else "") or "none"


def _kept_channels(graph: ChannelGraph, sol: Solution, conv: str) -> tuple[torch.Tensor, torch.Tensor]:
    mod = graph.modules[conv]
    if conv not in graph.conv_io:  # never called: nothing to resize
        return torch.arange(mod.out_channels), torch.arange(mod.in_channels)
    sin, sout = (graph.root(s) for s in graph.conv_io[conv])
    return sol.keep.get(sout, torch.arange(mod.out_channels)), sol.keep.get(sin, torch.arange(mod.in_channels))


def _plain_params(model: nn.Module) -> int:
    """Parameters of the model with each re-parameterised conv counted as the plain conv it stands for."""
    total = 0
    for mod in model.modules():
        if is_conv(mod):
            out, cpg = _mask_shape(mod)
            total += out * cpg * int(np.prod(mod.kernel_size)) + (out if mod.bias is not None else 0)
        else:
            total += sum(p.numel() for p in mod.parameters(recurse=False))
    return total


def _params_after(graph: ChannelGraph, sol: Solution) -> tuple[int, int]:
    """(dense, nonzero) parameter counts after surgery, predicted without doing it."""
    dense = nonzero = 0
    for name, mod in graph.modules.items():
        if is_conv(mod):
            outs, ins = _kept_channels(graph, sol, name)
            groups = len(outs) if _depthwise(mod) else mod.groups
            k = int(np.prod(mod.kernel_size))
            w = len(outs) * (len(ins) // groups) * k
            bias = len(outs) if mod.bias is not None else 0
            kept = _slice_mask(mod, sol.masks[name], outs, ins)
            dense, nonzero = dense + w + bias, nonzero + int(kept.sum()) * k + bias
            continue
        own = sum(p.numel() for p in mod.parameters(recurse=False))
        if name in graph.bn_space and own:
            own = 2 * len(_keep_of(graph, sol, graph.bn_space[name], mod.num_features))
        elif name in graph.linear_factor:
            f = graph.linear_factor[name]
            n_in = len(_keep_of(graph, sol, graph.linear_in[name], mod.in_features // f)) * f
            own = mod.out_features * n_in + (mod.out_features if mod.bias is not None else 0)
        dense, nonzero = dense + own, nonzero + own
    return dense, nonzero


def _keep_of(graph: ChannelGraph, sol: Solution, sid: int, size: int) -> torch.Tensor:
    return sol.keep.get(graph.root(sid), torch.arange(size))


def _depthwise(conv: nn.Module) -> bool:
    return conv.groups > 1 and conv.in_channels == conv.groups == conv.out_channels


def _slice_mask(conv: nn.Module, mask: torch.Tensor, outs: torch.Tensor, ins: torch.Tensor) -> torch.Tensor:
    if _depthwise(conv):
        return mask[outs]
    if conv.groups > 1:  # grouped convs keep their channels (see ChannelGraph)
        return mask
    return mask[outs][:, ins]


# --- surgery ------------------------------------------------------------------------------------------------


def read_plan(model: nn.Module, plan: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The plan's masks, checked against ``model``'s convs (same names, shapes and groups)."""
    if not isinstance(plan, Mapping) or plan.get("format") != PLAN_FORMAT:
        raise ConfigError(
            f"not a pruning plan (expected a dict with format={PLAN_FORMAT!r}); make one with make_plan() "
            "or SynapticStrength.plan(), and load saved ones with json.load"
        )
    if plan.get("version") != PLAN_VERSION:
        raise ConfigError(f"pruning plan version {plan.get('version')!r} is not supported (this leanvision reads 1)")
    layers = plan.get("layers")
    if not isinstance(layers, Mapping):
        raise ConfigError("pruning plan has no 'layers' dict")
    convs = {n: m for n, m in model.named_modules() if is_conv(m)}
    missing, extra = sorted(set(layers) - set(convs)), sorted(set(convs) - set(layers))
    if missing or extra:
        raise ConfigError(
            f"pruning plan does not fit this model: plan layers not in the model: {_first(missing)}; model convs "
            f"not in the plan: {_first(extra)}. Replay a plan on the architecture it was made for."
        )
    masks = {}
    for name, conv in convs.items():
        entry = layers[name] if isinstance(layers[name], Mapping) else {}
        shape = [conv.out_channels, conv.in_channels // conv.groups, *conv.kernel_size]
        if list(entry.get("shape", [])) != shape or entry.get("groups") != conv.groups:
            got = (entry.get("shape"), entry.get("groups"))
            raise ConfigError(
                f"pruning plan does not fit this model: layer {name!r} is shape {shape} with groups={conv.groups} "
                f"here, (shape, groups)={got} in the plan"
            )
        masks[name] = decode_mask(entry.get("mask"), (shape[0], shape[1]))
    return masks


@torch.no_grad()
def apply_plan(model: nn.Module, plan: Mapping[str, Any], *, inplace: bool = False, plain: bool = True) -> nn.Module:
    """Replay ``plan`` on ``model``: zero the dropped kernels and remove channels that carry nothing any more.

    Works on a trained model (its re-parameterised convs become plain ``nn.Conv2d``) and on a freshly built one of
    the same architecture. The result computes exactly what the masked model computes when all-zero channels
    pass through their BatchNorms as zeros (``SynapticStrength.prune`` trains under that rule). A plan that
    keeps everything returns the same function with the same parameters. ``model`` is left untouched unless
    ``inplace=True``. ``plain=False`` keeps re-parameterised convs as they are, their tensors cut and their
    masks narrowed to the plan's (``SynapticStrength.cut`` fine-tunes the smaller model so).
    """
    masks = read_plan(model, plan)
    out = model if inplace else copy.deepcopy(model)
    if plain:
        replace_modules(out, lambda _n, m: is_conv(m) and type(m) is not nn.Conv2d, lambda _n, m: m.as_conv2d())
    graph = ChannelGraph(out)
    sol = solve(graph, masks)
    for name, conv in _convs(graph):
        if not sol.masks[name].all():
            _drop_kernels(conv, sol.masks[name])
    for r, dead in sol.dead.items():  # before any resizing: `dead` is in the original channel numbering
        _silence(graph, r, dead)
    changed = False
    for name, conv in _convs(graph):
        changed |= _shrink_conv(conv, *_kept_channels(graph, sol, name))
    for name, sid in graph.bn_space.items():
        changed |= _shrink_bn(graph.modules[name], _keep_of(graph, sol, sid, graph.modules[name].num_features))
    for name, f in graph.linear_factor.items():
        lin, sid = graph.modules[name], graph.linear_in[name]
        keep = _keep_of(graph, sol, sid, lin.in_features // f)
        if len(keep) * f != lin.in_features:
            idx = (keep[:, None] * f + torch.arange(f)).flatten()
            lin.weight = nn.Parameter(lin.weight[:, idx].clone(), lin.weight.requires_grad)
            lin.in_features, changed = len(idx), True
    arch = vars(out).get(ARCH_ATTR)
    if changed and isinstance(arch, dict):
        if "plan" in arch:  # pruned twice: one plan on the registered build can no longer describe it
            delattr(out, ARCH_ATTR)
        else:  # the record says how to rebuild it (leanvision.engine.model_from_checkpoint)
            setattr(out, ARCH_ATTR, {**arch, "plan": json.loads(json.dumps(plan))})
    return out


@torch.no_grad()
def cut_positions(model: nn.Module, plan: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Where each entry of ``apply_plan(model, plan, plain=False)`` comes from: for every floating-point parameter
    and buffer of the cut model, the row-major index of its entry in ``model``'s tensor of the same name, -1 where
    surgery zeroed it (dropped kernels, silenced channels).

    Found by replaying the plan on a copy whose entries hold their own positions, so it inverts exactly the
    surgery ``apply_plan`` does (``SynapticStrength.uncut`` writes a fine-tuned cut model back with it).
    """
    tagged = copy.deepcopy(model)
    for mod in tagged.modules():
        for store in (mod._parameters, mod._buffers):
            for name, t in store.items():
                if t is not None and t.is_floating_point():  # float64 holds every index exactly
                    pos = torch.arange(1, t.numel() + 1, dtype=torch.float64, device=t.device).view(t.shape)
                    store[name] = nn.Parameter(pos, requires_grad=False) if isinstance(t, nn.Parameter) else pos
    cut = apply_plan(tagged, plan, inplace=True, plain=False)
    named = [*cut.named_parameters(), *cut.named_buffers()]
    return {name: t.detach().long() - 1 for name, t in named if t.is_floating_point()}


def _silence(graph: ChannelGraph, root: int, dead: torch.Tensor) -> None:
    """All-zero channels leave their BatchNorms (and conv biases) as zeros, so removing them changes nothing."""
    if not dead.any():
        return
    s = graph.space(root)
    for name in s.norms:
        bn = graph.modules[name]
        for t in (bn.bias, bn.running_mean):
            if t is not None:
                t[dead.to(t.device)] = 0
    for name in s.producers:
        bias = graph.modules[name].bias
        if bias is not None:
            bias[dead.to(bias.device)] = 0


def silence_targets(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list]:
    """Effective masks for ``model`` and the (module, attribute, channels) that must stay zero for them."""
    graph = ChannelGraph(model)
    sol = solve(graph, masks)
    targets = []
    for r, dead in sol.dead.items():
        if dead.any():
            s = graph.space(r)
            idx = dead.nonzero().flatten()
            targets += [(graph.modules[n], a, idx) for n in s.norms for a in ("bias", "running_mean")]
            targets += [(graph.modules[n], "bias", idx) for n in s.producers]
    return sol.masks, [(m, a, i) for m, a, i in targets if getattr(m, a, None) is not None]


def _kernel_tensors(conv: nn.Module) -> dict[str, torch.Tensor]:
    """A conv's own tensors; every one is laid out ``[out, in/groups, ...]`` (weights, a re-parameterised conv's
    strengths and masks) or ``[out]`` (bias)."""
    return {n: t for n, t in [*conv._parameters.items(), *conv._buffers.items()] if t is not None}


def _drop_kernels(conv: nn.Module, keep: torch.Tensor) -> None:
    for t in _kernel_tensors(conv).values():
        if t.dim() >= 2:
            k = keep.to(t.device).view(*keep.shape, *[1] * (t.dim() - 2))
            if t.dtype == torch.bool:
                t.logical_and_(k)
            else:
                t.mul_(k.to(t.dtype))


def _shrink_conv(conv: nn.Module, outs: torch.Tensor, ins: torch.Tensor) -> bool:
    if len(outs) == conv.out_channels and len(ins) == conv.in_channels:
        return False
    for name, t in _kernel_tensors(conv).items():
        t = t[outs] if t.dim() < 2 or conv.groups > 1 else t[outs][:, ins]
        if name in conv._parameters:
            setattr(conv, name, nn.Parameter(t.clone(), conv._parameters[name].requires_grad))
        else:
            conv._buffers[name] = t.clone()
    if _depthwise(conv):
        conv.groups = len(outs)
    conv.out_channels, conv.in_channels = len(outs), len(ins)
    return True


def _shrink_bn(bn: nn.Module, keep: torch.Tensor) -> bool:
    if len(keep) == bn.num_features:
        return False
    for attr in ("weight", "bias"):
        p = getattr(bn, attr)
        if p is not None:
            setattr(bn, attr, nn.Parameter(p[keep].clone(), p.requires_grad))
    for attr in ("running_mean", "running_var"):
        if getattr(bn, attr) is not None:
            setattr(bn, attr, getattr(bn, attr)[keep].clone())
    bn.num_features = len(keep)
    return True


def replay_plan(model: nn.Module, plan: Mapping[str, Any]) -> nn.Module:
    """Rebuild a pruned model from its registered build (the arch transform behind checkpoints of pruned nets)."""
    return apply_plan(model, plan, inplace=True)


# Also found through the "leanvision.arch_transforms" entry point; registered here so a source checkout that was
# never pip-installed rebuilds pruned checkpoints too, once compress is imported.
register_arch_transform("plan", replay_plan)
