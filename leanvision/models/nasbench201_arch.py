"""NAS-Bench-201 cell encoding (Dong & Yang, arXiv 2001.00326): op names, edge names and the arch string.

Pure data and string handling, no torch: the network (:mod:`leanvision.models.nasbench201`) and the search space
(:mod:`leanvision.search.spaces.nasbench201`) both import it from here.
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Mapping

from leanvision.errors import ConfigError

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


# Isomorphism classes. NB201 reports 6,466 unique cells on CIFAR-10 (arXiv 2001.00326): cells whose computation is
# the same after using two facts about the ops: ``skip_connect`` is the identity and ``none`` outputs zero.
ZERO_RULES = ("nats", "strict")


def unique_str(sample: Mapping[str, str] | str, *, zero: str = "nats") -> str:
    """A string equal for cells that compute the same function (the cell's isomorphism class).

    ``zero="nats"`` is the benchmark's own rule (``to_unique_str(consider_zero=True)`` in the NATS-Bench code): a
    ``none`` edge, or an edge leaving a node that is exactly zero, is zero; ``skip_connect`` passes its input on;
    each node sorts its incoming terms. It gives the published 6,466 classes (5 of them disconnected).
    ``zero="strict"`` also drops zero terms from a sum and makes a node zero when all of its inputs are, so every
    cell with no live input->output path is one class (the output is constant zero): 5,390 classes. Both rules
    ignore ops whose output never reaches node 3.
    """
    if zero not in ZERO_RULES:
        raise ConfigError(f"unique_str: zero must be one of {list(ZERO_RULES)}, got {zero!r}")
    ops = cell_ops(sample)
    nodes = {0: "0"}
    for j in (1, 2, 3):
        terms = []
        for i in range(j):
            op, src = ops[edge(j, i)], nodes[i]
            if op == "none" or src == "#":
                terms.append("#")
            elif op == "skip_connect":
                terms.append(src)
            else:
                terms.append(f"({src})@{op}")
        if zero == "strict":
            terms = [t for t in terms if t != "#"] or ["#"]
        nodes[j] = "+".join(sorted(terms))
    return nodes[3]


def is_connected(sample: Mapping[str, str] | str) -> bool:
    """Whether some input->output path has no ``none`` edge (a cell without one outputs zero: chance accuracy)."""
    ops = cell_ops(sample)
    live = {0}
    for j in (1, 2, 3):
        if any(i in live and ops[edge(j, i)] != "none" for i in range(j)):
            live.add(j)
    return 3 in live


def canonical_archs(ops: tuple[str, ...] = OPS, *, zero: str = "nats") -> dict[str, str]:
    """``{arch: representative}`` for every cell over ``ops``: the representative is the smallest arch string of its
    class (:func:`unique_str`), so ``sorted(set(values))`` lists one cell per class."""
    return dict(_canonical(tuple(ops), zero))


def canonical_arch(sample: Mapping[str, str] | str, *, zero: str = "nats") -> str:
    """The representative arch string of the cell's isomorphism class (see :func:`canonical_archs`)."""
    return _canonical(OPS, zero)[format_arch(cell_ops(sample))]


_CANONICAL: dict[tuple[tuple[str, ...], str], dict[str, str]] = {}


def _canonical(ops: tuple[str, ...], zero: str) -> dict[str, str]:
    if (ops, zero) not in _CANONICAL:
        classes: dict[str, str] = {}
        keys: dict[str, str] = {}
        for combo in itertools.product(ops, repeat=len(EDGES)):
            arch = format_arch(dict(zip(EDGES, combo, strict=True)))
            keys[arch] = u = unique_str(arch, zero=zero)
            classes[u] = min(classes.get(u, arch), arch)
        _CANONICAL[ops, zero] = {a: classes[u] for a, u in keys.items()}
    return _CANONICAL[ops, zero]
