"""The NAS-Bench-201 cell space (Dong & Yang, arXiv 2001.00326): 5 operations on the 6 edges of a 4-node cell.

A sample is ``{"1<-0": op, "2<-0": op, ..., "3<-2": op}``; its canonical string is the benchmark's own
``"|op~0|+|op~0|op~1|+|op~0|op~1|op~2|"`` (node j lists the op from each earlier node i as ``op~i``), which is
the key into the benchmark's tables. This module needs no torch: ``build`` imports the network
(:mod:`leanvision.models.nasbench201`) only when called, and :func:`params_macs` counts by formula.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from leanvision.errors import ConfigError
from leanvision.models.nasbench201_arch import (  # noqa: F401  (re-exported: the space's public names)
    _FORMAT,
    BEST_CIFAR10_ARCH,
    EDGES,
    OPS,
    canonical_arch,
    canonical_archs,
    cell_ops,
    edge,
    format_arch,
    is_connected,
    parse_arch,
    unique_str,
)
from leanvision.search.space import SPACES, Choice, ChoiceSpace, Sample, check_options

# Parameters and MACs of one cell op at width c (ReLU-Conv-BN: conv weight + BN weight and bias).
_OP_PARAMS = {"nor_conv_3x3": lambda c: 9 * c * c + 2 * c, "nor_conv_1x1": lambda c: c * c + 2 * c}
_OP_MACS_PER_PIXEL = {"nor_conv_3x3": lambda c: 9 * c * c, "nor_conv_1x1": lambda c: c * c}


def params_macs(sample: Mapping[str, str] | str, C: int = 16, N: int = 5, num_classes: int = 10,
                resolution: int = 32, *, in_chans: int = 3) -> tuple[int, int]:  # fmt: skip
    """``(params, MACs)`` of the NAS-Bench-201 network with this cell, by formula (no model is built).

    The convention is :func:`leanvision.profile.profile`'s: params are all parameters (BatchNorm weight and bias
    included); MACs count convolutions and the classifier's multiplies only (no bias adds, pooling, BatchNorm or
    additions). Every op in the cell counts, whether or not its output reaches the cell's output (as in the
    benchmark's own counts); a ``none`` edge costs nothing. ``resolution`` must be divisible by 4 (two stride-2
    reductions).
    """
    ops = cell_ops(sample)
    for name, v in (("C", C), ("N", N), ("num_classes", num_classes), ("resolution", resolution)):
        low = 0 if name == "num_classes" else 1
        if not isinstance(v, int) or v < low:
            raise ConfigError(f"params_macs: {name} must be an integer >= {low}, got {v!r}")
    if resolution % 4:
        raise ConfigError(f"params_macs: resolution must be divisible by 4 (two stride-2 reductions), got {resolution}")
    params = 9 * in_chans * C + 2 * C  # stem: conv3x3 (no bias) + BN
    macs = 9 * in_chans * C * resolution**2
    c, hw = C, resolution**2
    for stage in range(3):
        if stage:  # ResNet basic block, c -> 2c at stride 2: two ReLU-Conv3x3-BN, shortcut avgpool2 + conv1x1
            hw //= 4
            params += 9 * c * 2 * c + 2 * 2 * c + 9 * (2 * c) ** 2 + 2 * 2 * c + c * 2 * c
            macs += (9 * c * 2 * c + 9 * (2 * c) ** 2 + c * 2 * c) * hw
            c *= 2
        convs = [op for op in ops.values() if op in _OP_PARAMS]
        params += N * sum(_OP_PARAMS[op](c) for op in convs)
        macs += N * sum(_OP_MACS_PER_PIXEL[op](c) for op in convs) * hw
    params += 2 * c  # last BN (then ReLU, global pool)
    if num_classes:
        params += c * num_classes + num_classes
        macs += c * num_classes
    return params, macs


@SPACES.register("nasbench201")
class NB201Space(ChoiceSpace):
    """NAS-Bench-201's cell space (arXiv 2001.00326): one op per edge of a 4-node cell, 5^6 = 15,625 cells.

    ``ops`` restricts every edge to a subset of :data:`OPS`. Samples are ``{edge: op}`` dicts keyed by
    :data:`EDGES`; :meth:`key` is the benchmark's arch string, :meth:`build` the network
    (``leanvision.models.create_model("nasbench201", arch=...)``). With ``canonical=True``, :meth:`sample` and
    :meth:`mutate` return only connected cells, one representative per isomorphism class (6,461 of the benchmark's
    6,466 unique cells; :func:`unique_str`), each class equally likely.
    """

    name = "nasbench201"

    def __init__(self, *, ops: Sequence[str] = OPS, canonical: bool = False) -> None:
        if isinstance(ops, str):
            ops = [ops]
        check_options("nasbench201 ops", list(ops), OPS)
        self.ops = tuple(o for o in OPS if o in ops)  # canonical order, duplicates dropped
        self._params = {e: Choice(self.ops) for e in EDGES}
        self.canonical = bool(canonical)
        self._cells: list[str] = []
        if self.canonical:
            self._cells = sorted(a for a in set(canonical_archs(self.ops).values()) if is_connected(a))
            if not self._cells:
                raise ConfigError(f"nasbench201: ops {list(self.ops)} allow no connected cell; add a non-'none' op")

    def cells(self) -> list[str]:
        """The arch strings sampling draws from: the canonical connected cells, or every cell of the space."""
        return list(self._cells) if self.canonical else sorted(canonical_archs(self.ops))

    def sample(self, rng: random.Random) -> Sample:
        if not self.canonical:
            return super().sample(rng)
        return parse_arch(rng.choice(self._cells))

    def mutate(self, sample: Sample, rng: random.Random) -> Sample:
        """Change one edge; canonical spaces map the child to its class's representative, skipping disconnected
        children and ones equivalent to the parent."""
        if not self.canonical:
            return super().mutate(sample, rng)
        parent = canonical_archs(self.ops)[format_arch(sample)]
        for _ in range(100):  # almost every one-edge change of a connected cell is a new connected class
            child = canonical_archs(self.ops)[format_arch(super().mutate(sample, rng))]
            if child != parent and is_connected(child):
                return parse_arch(child)
        return self.sample(rng)

    def to_string(self, sample: Sample) -> str:
        """The NAS-Bench-201 arch string of a valid sample."""
        self.validate(sample)
        return format_arch(sample)

    def from_string(self, arch: str) -> Sample:
        """The sample of a NAS-Bench-201 arch string (``ConfigError`` if malformed or outside this space)."""
        sample = parse_arch(arch)
        self.validate(sample)
        return sample

    def key(self, sample: Sample) -> str:
        return self.to_string(sample)

    def graph(self, sample: Sample) -> tuple[list[str], list[tuple[int, int, str]]]:
        """Nodes 0-3 of the cell and its edges labelled with their operation (``none`` edges left out)."""
        ops = cell_ops(sample)
        edges = [(int(e[-1]), int(e[0]), ops[e]) for e in EDGES if ops[e] != "none"]
        return ["0 (input)", "1", "2", "3 (output)"], edges

    def build(self, sample: Sample, *, C: int = 16, N: int = 5, num_classes: int = 10, **kwargs: Any) -> Any:
        """The network with this cell, as the registered model ``nasbench201`` (checkpoints rebuild it)."""
        from leanvision.models import create_model

        return create_model("nasbench201", arch=self.to_string(sample), C=C, N=N, num_classes=num_classes, **kwargs)
