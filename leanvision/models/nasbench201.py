"""The NAS-Bench-201 network (Dong & Yang, arXiv 2001.00326) for any of its 15,625 cells.

Faithful to the benchmark's ``TinyNetwork``: a 3x3 conv + BN stem; three stages of ``N`` cells at widths C, 2C,
4C with a ResNet basic block (stride 2) between stages; BN-ReLU, global average pool and a linear classifier.
A cell has 4 nodes; node j is the sum over i < j of ``op_{j<-i}(node i)`` and node 3 is the output. Ops:
ReLU-Conv-BN (1x1, 3x3), 3x3 average pooling (stride 1, padding excluded from the mean), skip (identity) and
``none`` (the edge contributes nothing; a node whose inputs are all ``none`` is zeros).

The op modules are reusable: :data:`OP_BUILDERS` maps each op name to ``fn(channels) -> nn.Module`` and
:class:`Cell` takes one module per edge (an edge left out is ``none``), so a supernet puts a mixed op on each edge.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from leanvision.errors import ConfigError
from leanvision.models._base import Classifier, make_classifier
from leanvision.models._registry import CIFAR10_MEAN, CIFAR10_STD, register_model
from leanvision.models.nasbench201_arch import BEST_CIFAR10_ARCH, EDGES, OPS, edge, format_arch, parse_arch
from leanvision.ops.fuse import bn_affine


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv2d (no bias, 'same' padding) -> BatchNorm2d. A plain Sequential, so ``fuse_bn`` folds the BN."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, *, stride: int = 1) -> None:
        super().__init__(
            nn.ReLU(inplace=False),  # the input node feeds other edges too: never overwrite it
            nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_chs),
        )


class Skip(nn.Module):
    """``skip_connect``: the identity (its own class, so deploy forms keep it while dropping ``nn.Identity``)."""

    def forward(self, x: Tensor) -> Tensor:
        return x


class Zero(nn.Module):
    """``none`` as a module, for supernets that weight every op; :class:`Cell` simply omits ``none`` edges."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.zeros_like(x)


OP_BUILDERS: dict[str, Callable[[int], nn.Module]] = {
    "none": lambda c: Zero(),
    "skip_connect": lambda c: Skip(),
    "nor_conv_1x1": lambda c: ReLUConvBN(c, c, 1),
    "nor_conv_3x3": lambda c: ReLUConvBN(c, c, 3),
    "avg_pool_3x3": lambda c: nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
}
assert tuple(OP_BUILDERS) == OPS


def edge_key(e: str) -> str:
    """The module name of edge ``"j<-i"`` inside a :class:`Cell` (``"e{j}_{i}"``)."""
    j, i = e.split("<-")
    return f"e{j}_{i}"


class Cell(nn.Module):
    """A 4-node NAS-Bench-201 cell from one module per edge (``{"1<-0": module, ...}``; a missing edge is ``none``).

    Node 0 is the input, node j = sum of ``edges[j<-i](node i)`` over the edges present, node 3 the output. Every
    op runs even when its result cannot reach the output (as in the benchmark, whose counts include such ops).
    """

    def __init__(self, edges: Mapping[str, nn.Module]) -> None:
        super().__init__()
        unknown = sorted(set(edges) - set(EDGES))
        if unknown:
            raise ConfigError(f"a NAS-Bench-201 cell has the edges {list(EDGES)}, got {unknown}")
        self.edges = nn.ModuleDict({edge_key(e): edges[e] for e in EDGES if e in edges})
        self._inputs = [[(i, edge_key(edge(j, i))) for i in range(j) if edge(j, i) in edges] for j in (1, 2, 3)]

    @classmethod
    def from_ops(cls, ops: Mapping[str, str], channels: int) -> Cell:
        """The cell with op ``ops[edge]`` on each edge (``none`` edges get no module)."""
        return cls({e: OP_BUILDERS[op](channels) for e, op in ops.items() if op != "none"})

    def forward(self, x: Tensor) -> Tensor:
        return cell_forward(self.edges, self._inputs, x)


def cell_forward(edges: nn.ModuleDict, inputs: list[list[tuple[int, str]]], x: Tensor) -> Tensor:
    """Node j = sum of ``edges[key](node i)`` over ``inputs[j - 1]`` (in that order; zeros if empty); node 3 out.

    Shared by :class:`Cell` and the supernet's cell, so a standalone child reproduces a path's outputs exactly.
    """
    nodes = [x]
    for node_inputs in inputs:
        out: Tensor | None = None
        for i, key in node_inputs:
            y = edges[key](nodes[i])
            out = y if out is None else out + y
        nodes.append(torch.zeros_like(x) if out is None else out)
    return nodes[3]


class ResNetBasicBlock(nn.Module):
    """The reduction between stages: ReLU-Conv3x3(stride 2)-BN, ReLU-Conv3x3-BN, plus a shortcut of 2x2 average
    pooling and a 1x1 conv (no BN); the sum is returned without an activation, as in the benchmark."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(in_chs, out_chs, 3, stride=2)
        self.conv_b = ReLUConvBN(out_chs, out_chs, 3)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(in_chs, out_chs, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_b(self.conv_a(x)) + self.downsample(x)


def skeleton(C: int, N: int, in_chans: int, make_cell) -> tuple[nn.Module, nn.Sequential, nn.Module, int]:
    """NAS-Bench-201's macro skeleton: ``(stem, cells, lastact, final width)``; three stages of N cells
    (``make_cell(width)``) joined by stride-2 residual blocks that double the width."""
    stem = nn.Sequential(nn.Conv2d(in_chans, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
    cells: list[nn.Module] = []
    c = C
    for stage in range(3):
        if stage:
            cells.append(ResNetBasicBlock(c, 2 * c))
            c *= 2
        cells += [make_cell(c) for _ in range(N)]
    return stem, nn.Sequential(*cells), nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True)), c


class NB201Net(Classifier):
    """NAS-Bench-201's network for the cell ``arch`` (an arch string or ``{edge: op}``); see the module docstring."""

    def __init__(
        self, arch: str | Mapping[str, str], *, C: int = 16, N: int = 5, num_classes: int = 10, in_chans: int = 3
    ) -> None:
        super().__init__()
        ops = parse_arch(arch if isinstance(arch, str) else format_arch(arch))
        if not isinstance(C, int) or not isinstance(N, int) or C < 1 or N < 1:
            raise ConfigError(
                f"nasbench201: C (stem width) and N (cells per stage) must be integers >= 1, got {C}, {N}"
            )
        self.arch = format_arch(ops)
        self.num_classes = num_classes
        self.stem, self.cells, self.lastact, c = skeleton(C, N, in_chans, lambda width: Cell.from_ops(ops, width))
        self.head_chs = self.num_features = c
        self.classifier = make_classifier(c, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.lastact(self.cells(self.stem(x)))

    @torch.no_grad()
    def fold_bn(self) -> NB201Net:
        """``fuse_bn`` hook: the last BatchNorm has no conv before it, so it becomes a per-channel 1x1 conv."""
        bn = self.lastact[0]
        if type(bn) is nn.BatchNorm2d and bn.track_running_stats and bn.running_mean is not None:
            scale, shift = bn_affine(bn)
            c, ref = bn.num_features, bn.running_mean
            conv = nn.Conv2d(c, c, 1, groups=c, device=ref.device, dtype=ref.dtype)
            conv.weight.copy_(scale.view(-1, 1, 1, 1))
            conv.bias.copy_(shift)
            self.lastact[0] = conv.train(bn.training)
        return self


_CIFAR = {"input_size": (3, 32, 32), "mean": CIFAR10_MEAN, "std": CIFAR10_STD, "num_classes": 10}


@register_model(
    **_CIFAR,
    paper="2001.00326",
    notes="any of the 15,625 cells via arch (a NAS-Bench-201 arch string); default: index 6111, the best "
    "CIFAR-10 cell (94.37% test after 200 epochs)",
)
def nasbench201(
    *, arch: str = BEST_CIFAR10_ARCH, C: int = 16, N: int = 5, num_classes: int = 10, in_chans: int = 3
) -> NB201Net:
    """NAS-Bench-201's network with the cell ``arch`` (stem width ``C``, ``N`` cells per stage)."""
    return NB201Net(arch, C=C, N=N, num_classes=num_classes, in_chans=in_chans)
