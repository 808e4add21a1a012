"""The NAS-Bench-201 cell space (Dong & Yang, arXiv 2001.00326): 5 operations on the 6 edges of a 4-node cell.

A sample is ``{"1<-0": op, "2<-0": op, ..., "3<-2": op}``; its canonical string is the benchmark's own
``"|op~0|+|op~0|op~1|+|op~0|op~1|op~2|"`` (node j lists the op from each earlier node i as ``op~i``), which is
the key into the benchmark's tables. This module needs no torch: ``build`` imports the network
(:mod:`leanvision.models.nasbench201`) only when called, and :func:`params_macs` counts by formula.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from leanvision.errors import ConfigError
from leanvision.search.space import SPACES, Choice, ChoiceSpace, Sample, check_options

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES = ("1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2")
# NAS-Bench-201 index 6111: the best CIFAR-10 cell by 200-epoch test accuracy (94.37%, tied with index 13714).
BEST_CIFAR10_ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
_FORMAT = "'|op~0|+|op~0|op~1|+|op~0|op~1|op~2|'"


def edge(j: int, i: int) -> str:
    """The name of the edge from node ``i`` into node ``j`` (``"j<-i"``)."""
    return f"{j}<-{i}"


def parse_arch(arch: str) -> dict[str, str]:
    """``{"1<-0": op, ...}`` from a NAS-Bench-201 arch string; a malformed string is a ``ConfigError`` naming why."""
    if not isinstance(arch, str):
        raise ConfigError(f"a NAS-Bench-201 arch is a string like {_FORMAT}, got {arch!r}")
    nodes = arch.strip().split("+")
    if len(nodes) != 3:
        raise ConfigError(f"NAS-Bench-201 arch {arch!r}: needs 3 nodes joined by '+', got {len(nodes)}; "
                          f"write it as {_FORMAT}")  # fmt: skip
    ops: dict[str, str] = {}
    for j, node in enumerate(nodes, 1):
        if len(node) < 2 or node[0] != "|" or node[-1] != "|":
            raise ConfigError(f"NAS-Bench-201 arch {arch!r}: node {j} {node!r} must start and end with '|'; "
                              f"write it as {_FORMAT}")  # fmt: skip
        inputs = node[1:-1].split("|")
        if len(inputs) != j:
            raise ConfigError(f"NAS-Bench-201 arch {arch!r}: node {j} needs {j} inputs (one per earlier node), "
                              f"got {len(inputs)}; write it as {_FORMAT}")  # fmt: skip
        for i, item in enumerate(inputs):
            op, sep, src = item.partition("~")
            if not sep or src != str(i):
                raise ConfigError(f"NAS-Bench-201 arch {arch!r}: input {i} of node {j} must be written 'op~{i}', "
                                  f"got {item!r}")  # fmt: skip
            if op not in OPS:
                close = difflib.get_close_matches(op, OPS, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ConfigError(f"NAS-Bench-201 arch {arch!r}: unknown op {op!r} on edge {edge(j, i)}; {hint}"
                                  f"choose one of: {', '.join(OPS)}")  # fmt: skip
            ops[edge(j, i)] = op
    return ops


def format_arch(ops: Mapping[str, str]) -> str:
    """The NAS-Bench-201 arch string of ``{"1<-0": op, ...}`` (the inverse of :func:`parse_arch`)."""
    missing = [e for e in EDGES if e not in ops]
    if missing:
        raise ConfigError(f"a NAS-Bench-201 cell needs an op on every edge; missing {missing}")
    return "+".join("|" + "".join(f"{ops[edge(j, i)]}~{i}|" for i in range(j)) for j in (1, 2, 3))


def cell_ops(sample: Mapping[str, str] | str) -> dict[str, str]:
    """``{edge: op}`` of a sample dict or arch string, checked (``ConfigError`` says what is wrong)."""
    if isinstance(sample, str):
        return parse_arch(sample)
    if not isinstance(sample, Mapping) or set(sample) != set(EDGES):
        got = sorted(sample) if isinstance(sample, Mapping) else repr(sample)
        raise ConfigError(f"a NAS-Bench-201 cell is a dict with exactly the edges {list(EDGES)}, got {got}")
    return parse_arch(format_arch(sample))  # checks every op name


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
    (``leanvision.models.create_model("nasbench201", arch=...)``).
    """

    name = "nasbench201"

    def __init__(self, *, ops: Sequence[str] = OPS) -> None:
        if isinstance(ops, str):
            ops = [ops]
        check_options("nasbench201 ops", list(ops), OPS)
        self.ops = tuple(o for o in OPS if o in ops)  # canonical order, duplicates dropped
        self._params = {e: Choice(self.ops) for e in EDGES}

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
