"""The NAS-Bench-201 (arXiv 2001.00326) weight-sharing supernet, trained and scored one path at a time (1904.00420).

Every cell edge holds all candidate ops; :meth:`NB201Supernet.set_arch` picks one per edge and the forward runs
only those (single path). A path's weights are inherited by the standalone :class:`NB201Net` of that cell with a
plain key mapping (``...edges.e1_0.ops.nor_conv_3x3.1.weight`` -> ``...edges.e1_0.1.weight``), and
:func:`score_paths` rates paths on held-out data with BatchNorm statistics re-estimated per path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from leanvision.errors import ConfigError
from leanvision.models._base import Classifier, make_classifier
from leanvision.models.nasbench201 import OP_BUILDERS, NB201Net, cell_forward, edge_key, skeleton
from leanvision.search.space import check_options
from leanvision.search.spaces.nasbench201 import EDGES, OPS, cell_ops, edge, format_arch

Arch = Mapping[str, str] | str


class MixedEdge(nn.Module):
    """All candidate ops of one edge, by op name (``none`` has no module); ``forward`` runs the active one only."""

    def __init__(self, channels: int, ops: Sequence[str]) -> None:
        super().__init__()
        self.ops = nn.ModuleDict({op: OP_BUILDERS[op](channels) for op in ops if op != "none"})
        self.active: str | None = None

    def forward(self, x: Tensor) -> Tensor:
        return self.ops[self.active](x)


class SuperCell(nn.Module):
    """A NAS-Bench-201 cell with a :class:`MixedEdge` on every edge; ``none`` edges are skipped as in ``Cell``."""

    def __init__(self, channels: int, ops: Sequence[str]) -> None:
        super().__init__()
        self.edges = nn.ModuleDict({edge_key(e): MixedEdge(channels, ops) for e in EDGES})
        self._inputs: list[list[tuple[int, str]]] = []

    def set_ops(self, ops: Mapping[str, str]) -> None:
        for e in EDGES:
            self.edges[edge_key(e)].active = None if ops[e] == "none" else ops[e]
        self._inputs = [[(i, edge_key(edge(j, i))) for i in range(j) if ops[edge(j, i)] != "none"] for j in (1, 2, 3)]

    def forward(self, x: Tensor) -> Tensor:
        return cell_forward(self.edges, self._inputs, x)


class NB201Supernet(Classifier):
    """NAS-Bench-201's macro net (stem, 3 stages of ``N`` cells at C/2C/4C, ResNet reductions, BN-ReLU, classifier)
    with every candidate op on every edge; all cells share the one active cell set by :meth:`set_arch`.

    ``ops`` restricts the candidates (a subset of the benchmark's five). Module names mirror :class:`NB201Net`'s,
    so :meth:`subnet` copies a path's weights and BatchNorm buffers into a standalone network by key mapping.
    """

    def __init__(self, *, C: int = 16, N: int = 5, num_classes: int = 10, in_chans: int = 3,
                 ops: Sequence[str] = OPS) -> None:  # fmt: skip
        super().__init__()
        if isinstance(ops, str):
            ops = [ops]
        check_options("NB201Supernet ops", list(ops), OPS)
        if not isinstance(C, int) or not isinstance(N, int) or C < 1 or N < 1:
            raise ConfigError(f"NB201Supernet: C and N must be integers >= 1, got {C}, {N}")
        self.ops = tuple(o for o in OPS if o in ops)
        self.C, self.N, self.in_chans, self.num_classes = C, N, in_chans, num_classes
        self.arch: str | None = None
        self.stem, self.cells, self.lastact, c = skeleton(C, N, in_chans, lambda width: SuperCell(width, self.ops))
        self.head_chs = self.num_features = c
        self.classifier = make_classifier(c, num_classes)

    def check_arch(self, arch: Arch) -> dict[str, str]:
        """``{edge: op}`` of ``arch`` (a dict or arch string), refused if it uses an op this supernet lacks."""
        ops = cell_ops(arch)
        bad = {e: o for e, o in ops.items() if o not in self.ops}
        if bad:
            raise ConfigError(f"NB201Supernet: ops {bad} are not candidates of this supernet ({list(self.ops)})")
        return ops

    def set_arch(self, arch: Arch) -> None:
        """Make ``arch`` the active path of every cell (the forward then runs only its ops)."""
        ops = self.check_arch(arch)
        for cell in self.cells:
            if isinstance(cell, SuperCell):
                cell.set_ops(ops)
        self.arch = format_arch(ops)

    def forward_features(self, x: Tensor) -> Tensor:
        if self.arch is None:
            raise ConfigError("NB201Supernet: no active path; call set_arch(arch) before the forward")
        return self.lastact(self.cells(self.stem(x)))

    @staticmethod
    def supernet_key(key: str, ops: Mapping[str, str]) -> str:
        """The supernet's state-dict key holding the standalone net's ``key`` for the cell ``ops``."""
        parts = key.split(".")
        if len(parts) > 3 and parts[0] == "cells" and parts[2] == "edges":
            j, i = parts[3][1:].split("_")
            return ".".join([*parts[:4], "ops", ops[edge(int(j), int(i))], *parts[4:]])
        return key

    def subnet(self, arch: Arch) -> NB201Net:
        """The standalone network of ``arch`` (``create_model("nasbench201", ...)``) with the inherited weights."""
        from leanvision.models import create_model

        ops = self.check_arch(arch)
        net = create_model("nasbench201", arch=format_arch(ops), C=self.C, N=self.N, num_classes=self.num_classes,
                           in_chans=self.in_chans)  # fmt: skip
        src = self.state_dict()
        net.load_state_dict({k: src[self.supernet_key(k, ops)].clone() for k in net.state_dict()}, strict=True)
        return net.train(self.training)


def _batchnorms(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[Tensor]) -> None:
    """Re-estimate every BatchNorm's running statistics as the cumulative average over ``batches``.

    Statistics are reset and re-estimated in train mode without gradients (momentum None: every batch weighs the
    same, so with equal-size batches the running mean is the mean over all images); momentum and the model's mode
    are restored after. BatchNorm layers the batches never reach (ops off the active path) keep their statistics.
    """
    bns = _batchnorms(model)
    saved = [(m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in bns]
    was_training = model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        for x in batches:
            model(x)
    finally:
        for m, (momentum, mean, var, count) in zip(bns, saved, strict=True):
            m.momentum = momentum
            if int(m.num_batches_tracked) == 0:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)
        model.train(was_training)


@torch.no_grad()
def score_paths(supernet: NB201Supernet, archs: Sequence[Arch], data: Any, *, bn_images: int = 500,
                eval_images: int = 1_000, batch_size: int = 1_000) -> list[float]:  # fmt: skip
    """Validation accuracy (%) of each path with inherited weights, BatchNorm statistics re-estimated per path.

    ``data`` is a :class:`~leanvision.search.oneshot.data.SupernetData`: statistics come from its fixed seeded
    ``bn_images`` training images, accuracy from the first ``eval_images`` images of its held-out validation split
    (never the test set). The supernet's buffers, active path and mode are restored afterwards, so scoring never
    changes training.
    """
    if not isinstance(eval_images, int) or not 1 <= eval_images <= len(data.val_y):
        n = len(data.val_y)
        raise ConfigError(f"score_paths: eval_images must be in [1, {n}] (the val split), got {eval_images!r}")
    bn_chunks = data.bn_images(bn_images).split(batch_size)
    val_x, val_y = data.val_x[:eval_images], data.val_y[:eval_images]
    buffers = {k: v.clone() for k, v in supernet.named_buffers()}
    arch, was_training = supernet.arch, supernet.training
    scores = []
    try:
        for a in archs:
            supernet.set_arch(a)
            recalibrate_bn(supernet, bn_chunks)
            supernet.eval()
            correct = sum(
                int((supernet(x).argmax(1) == y).sum())
                for x, y in zip(val_x.split(batch_size), val_y.split(batch_size), strict=True)
            )
            scores.append(100.0 * correct / eval_images)
    finally:
        own = dict(supernet.named_buffers())
        for k, v in buffers.items():
            own[k].copy_(v)
        if arch is not None:
            supernet.set_arch(arch)
        supernet.train(was_training)
    return scores
