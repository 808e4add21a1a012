"""BlockQNN's Network Structure Code (NSC) space: a block is a small DAG of layers (Zhong et al., arXiv 1708.05552).

A sample is ``{"layers": [[index, type, kernel, pred1, pred2], ...]}`` with JSON lists:

====  ===========================================  ============  =====  =====
type  operation                                    kernel        pred1  pred2
====  ===========================================  ============  =====  =====
1     convolution = pre-activation cell ReLU-Conv-BN  1, 3, 5    K      0
2     max pooling (stride 1, "same")               1, 3          K      0
3     average pooling (stride 1, "same")           1, 3          K      0
4     identity                                     0             K      0
5     element-wise add                             0             K      K
6     concat                                       0             K      K
7     terminal                                     0             0      0
====  ===========================================  ============  =====  =====

K = {0 (the block input), 1, ..., index - 1}. Indices run 1, 2, 3, ... A block has at most ``max_layers`` (T)
entries counting the terminal: a block whose T-th entry is a layer ends there without one. The paper's T is 23
as recalled (not checked against the PDF); the Keras re-implementation ``elenathfgs/BlockQNN_Keras`` uses 10;
the default here is 6 (small blocks for CPU searches).

Assumptions where the paper is silent (re-implementation choices, not the paper's stated facts): every layer has
the stage's width F; a concat layer is the concatenation followed by a ReLU-Conv1x1-BN back to F channels (as in
the Keras re-implementation), so adds always match; the layers no other layer uses are concatenated and projected
to F by a ReLU-Conv1x1-BN (a single such layer is the block output as it is); when a block's input width differs
from F (the first block of a stage) the input is first projected by a ReLU-Conv1x1-BN.
"""

from __future__ import annotations

import functools
import json
import math
import random
import statistics
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from leanvision.errors import ConfigError
from leanvision.search.space import SPACES, Choice, Sample, check_options

CONV, MAXPOOL, AVGPOOL, IDENTITY, ADD, CONCAT, TERMINAL = range(1, 8)
TYPE_NAMES = {CONV: "conv", MAXPOOL: "max-pool", AVGPOOL: "avg-pool", IDENTITY: "identity", ADD: "add",
              CONCAT: "concat", TERMINAL: "terminal"}  # fmt: skip
ALL_TYPES = tuple(TYPE_NAMES)
CONV_KERNELS = (1, 3, 5)
POOL_KERNELS = (1, 3)

Layer = tuple[int, int, int, int, int]

# The ResNeXt bottleneck written in NSC (grouped convs collapse to plain convs): conv1x1 <- input, conv3x3 <- 1,
# conv1x1 <- 2, add(input, 3), terminal. The expert demonstration of IRLAS (arXiv 1812.05285).
RESNEXT_EXPERT: Sample = {"layers": [[1, CONV, 1, 0, 0], [2, CONV, 3, 1, 0], [3, CONV, 1, 2, 0], [4, ADD, 0, 0, 3],
                                     [5, TERMINAL, 0, 0, 0]]}  # fmt: skip


def expert_block() -> Sample:
    """A fresh copy of :data:`RESNEXT_EXPERT` (the ResNeXt block in NSC)."""
    return json.loads(json.dumps(RESNEXT_EXPERT))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _rows(sample: Sample) -> list[Layer]:
    return [tuple(row) for row in sample["layers"]]  # type: ignore[misc]


def canonical_layers(sample: Sample) -> list[Layer]:
    """The layers as tuples with the two inputs of add/concat in increasing order (both are commutative here)."""
    out = []
    for i, t, k, p1, p2 in _rows(sample):
        if t in (ADD, CONCAT) and p1 > p2:
            p1, p2 = p2, p1
        out.append((i, t, k, p1, p2))
    return out


def real_layers(sample: Sample) -> list[Layer]:
    """The layers without the terminal."""
    return [row for row in canonical_layers(sample) if row[1] != TERMINAL]


def _inputs(layer: Layer) -> tuple[int, ...]:
    _, t, _, p1, p2 = layer
    return (p1, p2) if t in (ADD, CONCAT) else (p1,)


def leaves(sample: Sample) -> list[int]:
    """Indices of the layers no later layer uses: they are concatenated into the block output."""
    layers = real_layers(sample)
    used = {p for layer in layers for p in _inputs(layer)}
    return [layer[0] for layer in layers if layer[0] not in used]


def has_conv(sample: Sample) -> bool:
    """Whether the block holds a convolution layer (the validity rule ``require_conv``)."""
    return any(row[1] == CONV for row in sample["layers"])


def density(sample: Sample) -> float:
    """#edges / #nodes of the block DAG: nodes are the block input and the layers (not the terminal); an add or
    concat brings 2 edges, any other layer 1 (BlockQNN's density, arXiv 1708.05552)."""
    layers = real_layers(sample)
    edges = sum(2 if layer[1] in (ADD, CONCAT) else 1 for layer in layers)
    return edges / (len(layers) + 1)


def flops(sample: Sample, channels: int, resolution: int, *, in_channels: int | None = None) -> int:
    """Multiply-accumulates of one block of width ``channels`` at ``resolution`` x ``resolution``.

    Counted (the convolutions, as ``leanvision.profile`` counts them): each conv layer F·F·k²·H·W, each concat's
    1x1 projection 2F·F·H·W, the output projection (when two or more layers are concatenated) L·F·F·H·W for L
    such layers, and, when ``in_channels`` differs from F, the input projection C_in·F·H·W. Pooling, identity,
    add, BN and ReLU count nothing. Equals ``profile(NSCBlock(sample, in_channels, channels), x).macs``.
    """
    f, hw = channels, resolution * resolution
    total = 0
    for _, t, k, _, _ in real_layers(sample):
        if t == CONV:
            total += f * f * k * k * hw
        elif t == CONCAT:
            total += 2 * f * f * hw
    n_leaves = len(leaves(sample))
    if n_leaves > 1:
        total += n_leaves * f * f * hw
    if in_channels is not None and in_channels != f:
        total += in_channels * f * hw
    return total


def synthetic_reward(sample: Sample, max_layers: int = 6) -> float:
    """A known reward on NSC blocks for testing searchers without training (a toy, not from the paper).

    raw = +0.3 if a 3x3 conv's output is added back to that conv's own input (a residual), +0.2 if a concat joins
    two convs of different kernels, -0.05 per layer; mapped linearly to [0, 1] by the best (0.3, reached with
    four layers) and worst (-0.05·``max_layers``) raw values. The optimum is 1.0.
    """
    layers = real_layers(sample)
    by_index = {layer[0]: layer for layer in layers}
    residual = any(
        c[1] == CONV and c[2] == 3 and a[1] == ADD and {a[3], a[4]} == {c[0], c[3]} for c in layers for a in layers
    )
    mixed_concat = False
    for _, t, _, p1, p2 in layers:
        a, b = by_index.get(p1), by_index.get(p2)
        if t == CONCAT and a and b and a[1] == CONV and b[1] == CONV and a[2] != b[2]:
            mixed_concat = True
    raw = 0.3 * residual + 0.2 * mixed_concat - 0.05 * len(layers)
    lo, hi = -0.05 * max_layers, 0.3
    return (raw - lo) / (hi - lo)


# --- modules ---------------------------------------------------------------------------------------------------


class PreActConv(nn.Sequential):
    """BlockQNN's pre-activation convolution cell: ReLU -> Conv (stride 1, "same") -> BN."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int) -> None:
        super().__init__(nn.ReLU(), nn.Conv2d(in_chs, out_chs, kernel, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(out_chs))  # fmt: skip


class _Add(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


class _Concat(nn.Module):
    def __init__(self, chs: int) -> None:
        super().__init__()
        self.proj = PreActConv(2 * chs, chs, 1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.cat([a, b], dim=1))


def _layer_module(layer: Layer, chs: int) -> nn.Module:
    _, t, k, _, _ = layer
    if t == CONV:
        return PreActConv(chs, chs, k)
    if t == MAXPOOL:
        return nn.MaxPool2d(k, stride=1, padding=k // 2)
    if t == AVGPOOL:
        return nn.AvgPool2d(k, stride=1, padding=k // 2, count_include_pad=False)
    if t == IDENTITY:
        return nn.Identity()
    return _Add() if t == ADD else _Concat(chs)


class NSCBlock(nn.Module):
    """One block: the NSC DAG at width ``out_chs`` (see the module docstring for the projections)."""

    def __init__(self, sample: Sample, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.layers_code = real_layers(sample)
        self.inputs = [_inputs(layer) for layer in self.layers_code]
        self.proj = PreActConv(in_chs, out_chs, 1) if in_chs != out_chs else nn.Identity()
        self.ops = nn.ModuleList(_layer_module(layer, out_chs) for layer in self.layers_code)
        self.leaves = leaves(sample)
        self.out = PreActConv(len(self.leaves) * out_chs, out_chs, 1) if len(self.leaves) > 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [self.proj(x)]
        for op, ins in zip(self.ops, self.inputs, strict=True):
            outs.append(op(*(outs[i] for i in ins)))
        if len(self.leaves) == 1:
            return outs[self.leaves[0]]
        return self.out(torch.cat([outs[i] for i in self.leaves], dim=1))


class NSCNet(nn.Module):
    """BlockQNN's CIFAR template: stem conv3x3 -> N blocks (F) -> max-pool -> N blocks (2F) -> max-pool -> N blocks
    (4F) -> ReLU -> global average pool -> linear."""

    def __init__(self, sample: Sample, *, channels: int = 16, N: int = 1, num_classes: int = 10, in_chans: int = 3,
                 stem: int | None = None) -> None:  # fmt: skip
        super().__init__()
        stem = stem or channels
        self.stem = nn.Sequential(nn.Conv2d(in_chans, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem))
        body: list[nn.Module] = []
        prev = stem
        for stage in range(3):
            width = channels * 2**stage
            if stage:
                body.append(nn.MaxPool2d(2))
            for _ in range(N):
                body.append(NSCBlock(sample, prev, width))
                prev = width
        self.body = nn.Sequential(*body)
        self.head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(prev, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(x)))


# --- the space -------------------------------------------------------------------------------------------------


@SPACES.register("nsc")
class NSCSpace:
    """BlockQNN's block space (arXiv 1708.05552): sample, mutate, validate, build; ``actions`` for Q-learning.

    Options: ``max_layers`` (T, entries per block counting the terminal), ``kernels`` (conv kernel sizes),
    ``pool_kernels`` and ``types`` (the allowed layer types, 1-7; one of 1-4 must be among them because the first
    layer has only the block input to read), ``require_conv`` (default on: a block without any convolution is
    invalid, so pooling-only blocks, which train no weights in the block, are never sampled or scored).
    """

    name = "nsc"

    def __init__(self, *, max_layers: int = 6, kernels: Sequence[int] = CONV_KERNELS,
                 pool_kernels: Sequence[int] = POOL_KERNELS, types: Sequence[int] = ALL_TYPES,
                 require_conv: bool = True) -> None:  # fmt: skip
        if not _is_int(max_layers) or max_layers < 1:
            raise ConfigError(f"nsc: max_layers must be an int >= 1, got {max_layers!r}")
        check_options("nsc kernels", list(kernels), CONV_KERNELS)
        check_options("nsc pool_kernels", list(pool_kernels), POOL_KERNELS)
        check_options("nsc types", list(types), ALL_TYPES)
        if not set(types) & {CONV, MAXPOOL, AVGPOOL, IDENTITY}:
            raise ConfigError("nsc types: include one of 1-4 (conv, pools, identity); a first layer can only read "
                              f"the block input, got {list(types)}")  # fmt: skip
        if require_conv and CONV not in types:
            raise ConfigError(f"nsc: require_conv needs type 1 (conv) among types {list(types)}; add it or set "
                              "require_conv=False")  # fmt: skip
        self.require_conv = bool(require_conv)
        self.max_layers = max_layers
        self.kernels = tuple(sorted(set(kernels)))
        self.pool_kernels = tuple(sorted(set(pool_kernels)))
        self.types = tuple(sorted(set(types)))
        self._actions = {i: self._make_actions(i) for i in range(1, max_layers + 1)}

    def params(self) -> dict[str, Choice]:
        """Empty: blocks have a variable number of layers, not a flat set of choices."""
        return {}

    def actions(self, index: int) -> tuple[Layer, ...]:
        """The valid layers (tuples) at ``index``, in a fixed order: inputs among 0..index-1, add/concat inputs
        as pairs p1 < p2, and the terminal from index 2 on. Empty outside 1..max_layers."""
        return self._actions.get(index, ())

    def _make_actions(self, index: int) -> tuple[Layer, ...]:
        out: list[Layer] = []
        preds = range(index)
        for t in self.types:
            if t == CONV:
                out += [(index, t, k, p, 0) for k in self.kernels for p in preds]
            elif t in (MAXPOOL, AVGPOOL):
                out += [(index, t, k, p, 0) for k in self.pool_kernels for p in preds]
            elif t == IDENTITY:
                out += [(index, t, 0, p, 0) for p in preds]
            elif t in (ADD, CONCAT):
                out += [(index, t, 0, p1, p2) for p1 in preds for p2 in preds if p1 < p2]
            elif index >= 2:
                out.append((index, TERMINAL, 0, 0, 0))
        return tuple(out)

    def sample(self, rng: random.Random) -> Sample:
        """A random valid block built layer by layer, each layer uniform over :meth:`actions` at its index (with
        ``require_conv``: drawn again until it holds a convolution, i.e. uniform over the valid blocks' walks)."""
        while True:
            layers: list[list[int]] = []
            for index in range(1, self.max_layers + 1):
                layer = rng.choice(self.actions(index))
                layers.append(list(layer))
                if layer[1] == TERMINAL:
                    break
            if not self.require_conv or has_conv({"layers": layers}):
                return {"layers": layers}

    def mutate(self, sample: Sample, rng: random.Random) -> Sample:
        """Change the entry at one random index to another valid choice there.

        Turning a layer into the terminal cuts the block there; turning the terminal into a layer grows the block
        by that layer (and a new terminal when there is room). Other entries never become invalid: a layer's
        validity depends only on its index. With ``require_conv`` a change that leaves no convolution is drawn
        again (up to 100 times, then the block comes back unchanged).
        """
        for _ in range(100):
            out = self._mutate_once(sample, rng)
            if not self.require_conv or has_conv(out):
                return out
        return {"layers": [list(row) for row in canonical_layers(sample)]}

    def _mutate_once(self, sample: Sample, rng: random.Random) -> Sample:
        layers = [list(row) for row in canonical_layers(sample)]
        pos = rng.randrange(len(layers))
        index = pos + 1
        old = tuple(layers[pos])
        choices = [a for a in self.actions(index) if a != old]
        if not choices:
            return {"layers": layers}
        new = rng.choice(choices)
        if new[1] == TERMINAL:
            return {"layers": [*layers[:pos], list(new)]}
        layers[pos] = list(new)
        if old[1] == TERMINAL and index < self.max_layers:
            layers.append([index + 1, TERMINAL, 0, 0, 0])
        return {"layers": layers}

    def validate(self, sample: Sample) -> None:
        """Raise ``ConfigError`` naming the first wrong layer and what to change."""
        if not isinstance(sample, dict) or set(sample) != {"layers"}:
            raise ConfigError(f"nsc: a sample is {{'layers': [[index, type, kernel, pred1, pred2], ...]}}, "
                              f"got {sample!r:.200}")  # fmt: skip
        rows = sample["layers"]
        if not isinstance(rows, (list, tuple)) or not rows:
            raise ConfigError("nsc: 'layers' must be a non-empty list of [index, type, kernel, pred1, pred2]")
        if len(rows) > self.max_layers:
            raise ConfigError(f"nsc: the block has {len(rows)} entries; at most max_layers={self.max_layers} "
                              "(counting the terminal) are allowed")  # fmt: skip
        for pos, row in enumerate(rows):
            where = f"nsc: layer {pos + 1} {row!r}"
            if not isinstance(row, (list, tuple)) or len(row) != 5 or not all(_is_int(v) for v in row):
                raise ConfigError(f"{where}: must be 5 integers [index, type, kernel, pred1, pred2]")
            index, t, k, p1, p2 = row
            if index != pos + 1:
                raise ConfigError(f"{where}: index must be {pos + 1} (indices run 1, 2, 3, ... in order)")
            if t not in self.types:
                raise ConfigError(f"{where}: type {t} is not one of this space's types {list(self.types)}")
            if t == TERMINAL:
                if index == 1:
                    raise ConfigError(f"{where}: the terminal cannot come first (the block would be empty)")
                if pos != len(rows) - 1:
                    raise ConfigError(f"{where}: the terminal must be the last entry; remove the entries after it")
                if (k, p1, p2) != (0, 0, 0):
                    raise ConfigError(f"{where}: a terminal is [{index}, 7, 0, 0, 0]")
                continue
            allowed = {CONV: self.kernels, MAXPOOL: self.pool_kernels, AVGPOOL: self.pool_kernels}.get(t, (0,))
            if k not in allowed:
                raise ConfigError(f"{where}: kernel {k} is not allowed for a {TYPE_NAMES[t]} layer; use one of "
                                  f"{list(allowed)}")  # fmt: skip
            if not 0 <= p1 < index:
                raise ConfigError(f"{where}: pred1 must be an earlier layer or the block input, 0..{index - 1}")
            if t in (ADD, CONCAT):
                if not 0 <= p2 < index:
                    raise ConfigError(f"{where}: pred2 must be an earlier layer or the block input, 0..{index - 1}")
                if p1 == p2:
                    raise ConfigError(f"{where}: a {TYPE_NAMES[t]} needs two different inputs (pred1 != pred2)")
            elif p2 != 0:
                raise ConfigError(f"{where}: a {TYPE_NAMES[t]} layer has one input; set pred2 to 0")
        if self.require_conv and not has_conv(sample):
            raise ConfigError("nsc: the block has no convolution; add a conv layer (type 1) or create the space "
                              "with require_conv=False")  # fmt: skip

    def key(self, sample: Sample) -> str:
        """The layers with add/concat inputs ordered and without the terminal (it adds no operation)."""
        return json.dumps([list(row) for row in real_layers(sample)], separators=(",", ":"))

    def build(self, sample: Sample, *, channels: int = 16, N: int = 1, num_classes: int = 10, in_chans: int = 3,
              stem: int | None = None) -> NSCNet:  # fmt: skip
        """The CIFAR network of the block (:class:`NSCNet`): ``channels`` = F, ``N`` blocks per stage."""
        self.validate(sample)
        return NSCNet(sample, channels=channels, N=N, num_classes=num_classes, in_chans=in_chans, stem=stem)

    def graph(self, sample: Sample) -> tuple[list[str], list[tuple[int, int, str]]]:
        """Nodes and edges of the block for drawing: the input, every layer, the output (concat of the leaves)."""
        layers = real_layers(sample)
        pos = {0: 0} | {row[0]: k + 1 for k, row in enumerate(layers)}
        names = ["input"] + [TYPE_NAMES[t] + (f" {k}x{k}" if t in (CONV, MAXPOOL, AVGPOOL) else "")
                             for _, t, k, _, _ in layers] + ["output"]  # fmt: skip
        edges = [(pos[p], pos[row[0]], "") for row in layers for p in _inputs(row)]
        edges += [(pos[i], len(names) - 1, "") for i in leaves(sample)]
        return names, edges

    # helpers (also used by the BlockQNN strategy and the short-training evaluator)
    density = staticmethod(density)
    flops = staticmethod(flops)

    def median_flops(self, channels: int = 16, resolution: int = 32, *, n: int = 1000, seed: int = 0) -> float:
        """The median :func:`flops` of ``n`` seeded random blocks: a reference that makes log(FLOPs / ref) O(1)."""
        return _median_flops(self.max_layers, self.kernels, self.pool_kernels, self.types, channels, resolution, n,
                             seed, self.require_conv)  # fmt: skip


@functools.lru_cache(maxsize=64)
def _median_flops(max_layers: int, kernels: tuple, pool_kernels: tuple, types: tuple, channels: int,
                  resolution: int, n: int, seed: int, require_conv: bool = True) -> float:  # fmt: skip
    space = NSCSpace(
        max_layers=max_layers, kernels=kernels, pool_kernels=pool_kernels, types=types, require_conv=require_conv
    )
    rng = random.Random(seed)
    values = [flops(space.sample(rng), channels, resolution) for _ in range(n)]
    ref = statistics.median(values)
    return ref if ref > 0 else math.nan
