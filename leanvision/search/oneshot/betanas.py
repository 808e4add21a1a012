"""BETANAS: balanced training and selective drop (Fang, Wang, Zhong, arXiv 1912.11191), on NAS-Bench-201.

Only the abstract's mechanism is from the paper (every candidate trained equally; weak candidates dropped
progressively). Reconstructed here: the balanced super-step (FairNAS-style permutations), dropping by the mean
supernet score of sampled paths, d ops per edge per stage, and the exhaustive scoring of what remains.
"""

from __future__ import annotations

import copy
import itertools
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

from leanvision.errors import ConfigError
from leanvision.search.oneshot.base import ONESHOT, OneShotMethod
from leanvision.search.oneshot.spos import RoundPlan, best_first, chunks
from leanvision.search.oneshot.train import as_space, canonical_cell, make_trainer, random_state, set_random_state
from leanvision.search.spaces.nasbench201 import EDGES, OPS, NB201Space, format_arch

Remaining = Mapping[str, Sequence[str]]


def balanced_paths(remaining: Remaining, rng: random.Random) -> list[dict[str, str]]:
    """The K = max remaining-ops paths of one balanced super-step: per edge a random permutation of its ops, edges
    with fewer ops padded by further permutations; an edge with K ops gives each of them exactly one path."""
    k = max(len(ops) for ops in remaining.values())
    columns = {}
    for e in EDGES:
        ops, col = list(remaining[e]), []
        while len(col) < k:
            col += rng.sample(ops, len(ops))
        columns[e] = col[:k]
    return [{e: columns[e][i] for e in EDGES} for i in range(k)]


def op_scores(paths: Sequence[Mapping[str, str]], scores: Sequence[float],
              remaining: Remaining) -> dict[str, dict[str, float]]:  # fmt: skip
    """Per edge and remaining op, the mean score of the paths that use it (NaN if none does)."""
    out = {}
    for e in EDGES:
        out[e] = {}
        for op in remaining[e]:
            got = [s for p, s in zip(paths, scores, strict=True) if p[e] == op]
            out[e][op] = sum(got) / len(got) if got else math.nan
    return out


def drop_ops(remaining: Remaining, scores: Mapping[str, Mapping[str, float]], d: int = 1) -> dict[str, list[str]]:
    """The ops to drop per edge: the ``d`` lowest-scored (ties: the earlier op in the benchmark's order), never the
    edge's last op."""
    dropped = {}
    for e in EDGES:
        missing = [op for op in remaining[e] if scores[e].get(op) != scores[e].get(op)]  # absent or NaN
        if missing:
            raise ConfigError(f"drop_ops: no score for {missing} on edge {e}")
        ranked = sorted(remaining[e], key=lambda op: (scores[e][op], OPS.index(op)))
        dropped[e] = ranked[: min(d, len(ranked) - 1)]
    return dropped


def final_cells(space: NB201Space, remaining: Remaining) -> list[dict[str, str]]:
    """Every cell made of the ``remaining`` ops (in the benchmark's op order); on a ``canonical`` space only the
    connected ones, one per isomorphism class: its representative if that uses remaining ops only, else the class's
    first member here."""
    cells = [dict(zip(EDGES, ops, strict=True)) for ops in itertools.product(*(remaining[e] for e in EDGES))]
    if not space.canonical:
        return cells
    classes: dict[str, dict[str, str]] = {}
    for cell in cells:
        rep = canonical_cell(space, cell)
        if rep is None:
            continue
        if rep == cell or format_arch(rep) not in classes:
            classes[format_arch(rep)] = cell
    return [classes[k] for k in sorted(classes)]


def _split(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` near-equal integers."""
    return [total * (s + 1) // parts - total * s // parts for s in range(parts)]


def stage_sizes(n_ops: int, stages: int, d: int) -> list[int]:
    """Remaining ops per edge in each stage (d fewer after each stage, never below one)."""
    sizes = [n_ops]
    for _ in range(stages - 1):
        sizes.append(max(1, sizes[-1] - d))
    return sizes


def stage_steps(budget: int, sizes: Sequence[int], first_drop: float | None) -> list[int]:
    """Optimiser steps per stage for ``budget`` path passes in stages of ``sizes`` paths per step.

    ``first_drop=None``: the passes split equally over the stages. Otherwise the first stage takes the smallest
    whole number of steps holding at least ``first_drop`` x ``budget`` passes (so the first drop never comes
    before that share of the training), and the later stages split the passes left equally.
    """
    if first_drop is None or len(sizes) == 1:
        passes = _split(budget, len(sizes))
        return [max(1, round(p / k)) for p, k in zip(passes, sizes, strict=True)]
    first = max(1, math.ceil(budget * first_drop / sizes[0]))
    rest = _split(max(budget - first * sizes[0], 0), len(sizes) - 1)
    return [first, *(max(1, round(p / k)) for p, k in zip(rest, sizes[1:], strict=True))]


@ONESHOT.register("betanas", paper="1912.11191")
class BETANAS(OneShotMethod):
    """Balanced training in ``stages`` stages; after each stage but the last, drop the ``d`` worst ops per edge; then
    score every remaining cell (at most ``max_final``, else a seeded random sample of that many) and pick the best.

    Balanced step: per edge a random permutation of its remaining ops, K = the most ops any edge has; the K paths'
    gradients are summed on the same batch before one SGD step, so every remaining op gets the same number of
    gradient contributions. Budget: ``epochs`` is in SPOS epochs, i.e. ``epochs`` x batches-per-epoch path
    forward/backward passes in all: at least a share ``first_drop`` before the first drop (so ops are judged on a
    trained supernet; :func:`stage_steps`), the rest split equally over the later stages (``first_drop=None``: all
    stages equal); a stage with K paths per step takes 1/K as many optimiser steps (and data batches) as SPOS would
    for its passes, and the cosine LR spans all steps.
    Drop score: the mean supernet score (val accuracy, BatchNorm re-estimated) of the paths containing the op; the
    paths are ``R`` balanced super-steps' worth (R x K), shared by all ops, so each op on each edge is in exactly R
    of them while the other edges' ops vary at random (these paths estimate op quality; they are not candidates and
    are used as drawn, disconnected ones included, so the balance stays exact).
    Final cells: on a ``canonical`` space only connected cells, one per isomorphism class (the class's
    representative when it uses remaining ops only, else its first member in the benchmark's op order).
    """

    name = "betanas"

    def __init__(self, space: Any, *, seed: int = 0, supernet: dict[str, Any] | None = None, epochs: int = 30,
                 stages: int = 3, d: int = 1, R: int = 20, max_final: int = 729, eval_chunk: int = 100,
                 n_picks: int = 10, first_drop: float | None = 0.5) -> None:  # fmt: skip
        self.space = as_space(space)
        for name, v in (("epochs", epochs), ("stages", stages), ("d", d), ("R", R), ("max_final", max_final),
                        ("eval_chunk", eval_chunk), ("n_picks", n_picks)):  # fmt: skip
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"betanas: {name} must be an int >= 1, got {v!r}")
        if first_drop is not None and (isinstance(first_drop, bool) or not isinstance(first_drop, (int, float))
                                       or not 0 < first_drop < 1):  # fmt: skip
            raise ConfigError(f"betanas: first_drop is the share of the budget trained before the first drop, in "
                              f"(0, 1), or null for equal stages; got {first_drop!r}")  # fmt: skip
        self.seed, self.epochs, self.stages, self.d, self.R = seed, epochs, stages, d, R
        self.max_final, self.n_picks = max_final, n_picks
        self.trainer = make_trainer(self.space, seed, supernet, total_epochs=epochs, total_steps=None)
        b = self.trainer.steps_per_epoch
        budget = epochs * b
        self.budget_passes = budget
        self.sizes = stage_sizes(len(self.space.ops), stages, d)
        # Drop from a trained supernet: the first stage holds >= first_drop of the passes, the later ones the rest.
        self.stage_steps = stage_steps(budget, self.sizes, first_drop)
        self.trainer.set_total_steps(sum(self.stage_steps))
        plan: list[tuple[Any, ...]] = []
        for s, steps in enumerate(self.stage_steps):
            plan += [("train", s, n) for n in [b] * (steps // b) + ([steps % b] if steps % b else [])]
            if s < stages - 1:
                plan.append(("drop", s))
        n_final = min(max_final, self.sizes[-1] ** len(EDGES))
        plan += [("final", k) for k in range(math.ceil(n_final / eval_chunk))]
        self.eval_chunk = eval_chunk
        self.plan = RoundPlan(plan)
        self.rng = random.Random(f"betanas:{seed}")  # drop paths and the final sample
        self.remaining = {e: list(self.space.ops) for e in EDGES}
        self.dropped: list[dict[str, list[str]]] = []
        self.drop_scores: list[dict[str, dict[str, float]]] = []
        self.stage_op_counts: list[dict[str, dict[str, int]]] = []
        self.final: list[dict[str, str]] = []
        self.scored: list[dict[str, Any]] = []

    def rounds(self) -> int:
        return len(self.plan.plan)

    def _sampler(self, rng: random.Random) -> list[dict[str, str]]:
        return balanced_paths(self.remaining, rng)

    def _end_stage(self) -> None:
        # Per-stage histogram: the trainer's cumulative counts minus those of the earlier stages.
        done = {e: {op: sum(c[e][op] for c in self.stage_op_counts) for op in self.space.ops} for e in EDGES}
        now = self.trainer.op_counts
        self.stage_op_counts.append({e: {op: now[e][op] - done[e][op] for op in self.space.ops} for e in EDGES})

    def run_round(self, r: int) -> list[dict[str, Any]]:
        kind, *arg = self.plan.take(r)
        if kind == "train":
            self.trainer.train_steps(arg[1], self._sampler)
            return []
        if kind == "drop":
            self._end_stage()
            paths = [p for _ in range(self.R) for p in balanced_paths(self.remaining, self.rng)]
            found = self.trainer.candidates(paths)
            scores = op_scores(paths, [c["objective"] for c in found], self.remaining)
            dropped = drop_ops(self.remaining, scores, self.d)
            self.remaining = {e: [op for op in self.remaining[e] if op not in dropped[e]] for e in EDGES}
            self.dropped.append(dropped)
            self.drop_scores.append(scores)
            for c in found:
                c["stage"] = arg[0] + 1
            self.scored += found
            return copy.deepcopy(found)
        if arg[0] == 0:  # the first final round fixes the cells to score
            self._end_stage()
            cells = final_cells(self.space, self.remaining)
            self.final = cells if len(cells) <= self.max_final else self.rng.sample(cells, self.max_final)
        batches = chunks(self.final, self.eval_chunk)
        if arg[0] >= len(batches):  # a canonical space left fewer cells than the rounds planned for
            return []
        found = self.trainer.candidates(batches[arg[0]])
        for c in found:
            c["stage"] = self.stages
        self.scored += found
        return copy.deepcopy(found)

    def state_dict(self) -> dict[str, Any]:
        own = ("remaining", "dropped", "drop_scores", "stage_op_counts", "final", "scored")
        return {"trainer": self.trainer.state_dict(), "next_round": self.plan.next,
                "rng": random_state(self.rng), **copy.deepcopy({k: getattr(self, k) for k in own})}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trainer.load_state_dict(state["trainer"])
        self.plan.next = state["next_round"]
        set_random_state(self.rng, state["rng"])
        for k in ("remaining", "dropped", "drop_scores", "stage_op_counts", "final", "scored"):
            setattr(self, k, copy.deepcopy(state[k]))

    def result(self) -> dict[str, Any]:
        final = [c for c in self.scored if c["stage"] == self.stages]
        return {
            "picks": best_first(final, self.n_picks),
            "dropped": copy.deepcopy(self.dropped),
            "drop_scores": copy.deepcopy(self.drop_scores),
            "remaining": copy.deepcopy(self.remaining),
            "op_counts": copy.deepcopy(self.trainer.op_counts),
            "stage_op_counts": copy.deepcopy(self.stage_op_counts),
            "stage_steps": list(self.stage_steps),
            "path_passes": self.trainer.passes_done,
            "budget_passes": self.budget_passes,
        }


def softmax(logits: Sequence[float]) -> list[float]:
    top = max(logits)
    w = [math.exp(v - top) for v in logits]
    return [v / sum(w) for v in w]


@ONESHOT.register("greedy", paper="1912.11191")
class GreedyAlpha(OneShotMethod):
    """The unbalanced baseline BETANAS argues against: paths sampled with probability softmax(alpha) per edge, alpha
    raised for the ops of paths that score above the others (rich get richer), the pick is argmax alpha.

    After each training round, ``n_update`` policy paths are scored and each op's alpha moves by ``eta`` x the mean
    standardised score of those paths that use it (a REINFORCE step with a mean baseline). Budget: ``epochs``
    single-path epochs, like SPOS, in ``rounds`` rounds (default one per epoch). A last round scores the argmax
    cell (on a ``canonical`` space its class's representative).
    """

    name = "greedy"

    def __init__(self, space: Any, *, seed: int = 0, supernet: dict[str, Any] | None = None, epochs: int = 30,
                 rounds: int | None = None, n_update: int = 10, eta: float = 1.0) -> None:  # fmt: skip
        from leanvision.search.oneshot.spos import split_evenly

        self.space = as_space(space)
        rounds = epochs if rounds is None else rounds
        if not isinstance(epochs, int) or epochs < 1 or not isinstance(rounds, int) or not 1 <= rounds <= epochs:
            raise ConfigError(f"greedy: need epochs >= 1, 1 <= rounds <= epochs; got epochs={epochs}, rounds={rounds}")
        if not isinstance(n_update, int) or n_update < 2 or not eta > 0:
            raise ConfigError(f"greedy: need n_update >= 2 and eta > 0, got {n_update}, {eta}")
        self.n_update, self.eta = n_update, float(eta)
        self.trainer = make_trainer(self.space, seed, supernet, total_epochs=epochs, total_steps=None)
        self.plan = RoundPlan([("train", e) for e in split_evenly(epochs, rounds)] + [("final",)])
        self.rng = random.Random(f"greedy:{seed}")  # the update paths
        self.alpha = {e: dict.fromkeys(self.space.ops, 0.0) for e in EDGES}
        self.scored: list[dict[str, Any]] = []

    def rounds(self) -> int:
        return len(self.plan.plan)

    def _sampler(self, rng: random.Random) -> list[dict[str, str]]:
        ops = self.space.ops
        return [{e: rng.choices(ops, weights=softmax([self.alpha[e][o] for o in ops]))[0] for e in EDGES}]

    def argmax(self) -> dict[str, str]:
        return {e: max(self.space.ops, key=lambda o: self.alpha[e][o]) for e in EDGES}

    def pick(self) -> dict[str, str]:
        """The argmax cell; on a ``canonical`` space its class's representative (as is if it is disconnected)."""
        return canonical_cell(self.space, self.argmax()) or self.argmax()

    def run_round(self, r: int) -> list[dict[str, Any]]:
        kind, *arg = self.plan.take(r)
        if kind == "final":
            found = self.trainer.candidates([self.pick()])
        else:
            self.trainer.train(arg[0], self._sampler)
            paths = [p for _ in range(self.n_update) for p in self._sampler(self.rng)]
            found = self.trainer.candidates(paths)
            scores = [c["objective"] for c in found]
            mean = sum(scores) / len(scores)
            std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores)) or 1.0
            for p, s in zip(paths, scores, strict=True):
                for e in EDGES:
                    self.alpha[e][p[e]] += self.eta * (s - mean) / std / len(paths)
        self.scored += found
        return copy.deepcopy(found)

    def state_dict(self) -> dict[str, Any]:
        return {"trainer": self.trainer.state_dict(), "next_round": self.plan.next, "rng": random_state(self.rng),
                "alpha": copy.deepcopy(self.alpha), "scored": copy.deepcopy(self.scored)}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trainer.load_state_dict(state["trainer"])
        self.plan.next = state["next_round"]
        set_random_state(self.rng, state["rng"])
        self.alpha, self.scored = copy.deepcopy(state["alpha"]), copy.deepcopy(state["scored"])

    def result(self) -> dict[str, Any]:
        return {
            "picks": [self.pick()],
            "alpha": copy.deepcopy(self.alpha),
            "op_counts": copy.deepcopy(self.trainer.op_counts),
            "path_passes": self.trainer.passes_done,
        }
