"""SPOS, Single Path One-Shot NAS with uniform sampling (Guo et al., arXiv 1904.00420), on NAS-Bench-201."""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from typing import Any

from leanvision.errors import ConfigError
from leanvision.search.oneshot.base import ONESHOT, OneShotMethod
from leanvision.search.oneshot.train import as_space, make_trainer, uniform_sampler
from leanvision.search.spaces.nasbench201 import NB201Space, format_arch


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` integers differing by at most one (larger ones first)."""
    q, r = divmod(total, parts)
    return [q + (k < r) for k in range(parts)]


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[k : k + size] for k in range(0, len(items), size)]


def distinct_samples(space: NB201Space, n: int, rng: random.Random) -> list[dict[str, str]]:
    """``n`` distinct uniformly random cells (all of them if the space has fewer), in draw order."""
    n = min(n, space.size())
    seen: dict[str, dict[str, str]] = {}
    while len(seen) < n:
        s = space.sample(rng)
        seen.setdefault(space.key(s), s)
    return list(seen.values())


def best_first(scored: list[dict[str, Any]], n: int) -> list[dict[str, str]]:
    """The samples of the ``n`` best-scored candidates (ties keep the scoring order)."""
    ranked = sorted(range(len(scored)), key=lambda k: -scored[k]["objective"])
    return [dict(scored[k]["sample"]) for k in ranked[:n]]


class RoundPlan:
    """A method's fixed list of rounds and the index of the next one (rounds must run in order)."""

    def __init__(self, plan: list[tuple[Any, ...]]) -> None:
        self.plan, self.next = plan, 0

    def take(self, r: int) -> tuple[Any, ...]:
        if r != self.next:
            raise ConfigError(f"rounds run in order: the next round is {self.next}, got {r}")
        self.next += 1
        return self.plan[r]


@ONESHOT.register("spos", paper="1904.00420")
class SPOS(OneShotMethod):
    """Uniform single-path supernet training for ``epochs`` epochs, then ``n_eval`` distinct random cells scored with
    inherited weights (BatchNorm re-estimated per path); the pick is the best score.

    Training runs in ``rounds`` rounds of whole epochs (default one epoch each), then scoring in rounds of
    ``eval_chunk`` cells; ``supernet`` holds :class:`SupernetTrainer` options (C, N, resolution, data, SGD...).
    The cells to score are drawn by the space (on a ``canonical`` space: connected cells, one per isomorphism
    class), or given as ``eval_cells`` (arch strings or samples, scored in that order; ``n_eval`` is then ignored),
    e.g. a fixed set shared with other methods. Training paths are uniform over every op of every edge either way.
    """

    name = "spos"

    def __init__(self, space: Any, *, seed: int = 0, supernet: dict[str, Any] | None = None, epochs: int = 30,
                 rounds: int | None = None, n_eval: int = 200, eval_chunk: int = 50, n_picks: int = 10,
                 eval_cells: Sequence[Any] | None = None) -> None:  # fmt: skip
        self.space = as_space(space)
        rounds = epochs if rounds is None else rounds
        if not isinstance(epochs, int) or epochs < 1 or not isinstance(rounds, int) or not 1 <= rounds <= epochs:
            raise ConfigError(f"spos: need epochs >= 1 and 1 <= rounds <= epochs, got epochs={epochs}, rounds={rounds}")
        if n_eval < 1 or eval_chunk < 1 or n_picks < 1:
            raise ConfigError(f"spos: n_eval, eval_chunk, n_picks must be >= 1, got {n_eval}, {eval_chunk}, {n_picks}")
        self.seed, self.epochs, self.n_picks = seed, epochs, n_picks
        self.trainer = make_trainer(self.space, seed, supernet, total_epochs=epochs, total_steps=None)
        # The cells to score are fixed up front (their own stream), so they never depend on training.
        if eval_cells is not None:
            cells = [self.space.from_string(c) if isinstance(c, str) else self.space.from_string(format_arch(c))
                     for c in eval_cells]  # fmt: skip
            if not cells or len({format_arch(c) for c in cells}) != len(cells):
                raise ConfigError(f"spos: eval_cells must be distinct cells, at least one; got {len(cells)} "
                                  f"with {len(cells) - len({format_arch(c) for c in cells})} repeats")  # fmt: skip
            self.eval_archs = cells
        else:
            self.eval_archs = distinct_samples(self.space, n_eval, random.Random(f"spos-eval:{seed}"))
        self.plan = RoundPlan([("train", e) for e in split_evenly(epochs, rounds)]
                              + [("score", c) for c in chunks(self.eval_archs, eval_chunk)])  # fmt: skip
        self.scored: list[dict[str, Any]] = []

    def rounds(self) -> int:
        return len(self.plan.plan)

    def run_round(self, r: int) -> list[dict[str, Any]]:
        kind, arg = self.plan.take(r)
        if kind == "train":
            self.trainer.train(arg, uniform_sampler(self.space))
            return []
        found = self.trainer.candidates(arg)
        self.scored += found
        return copy.deepcopy(found)

    def state_dict(self) -> dict[str, Any]:
        scored = copy.deepcopy(self.scored)
        return {"trainer": self.trainer.state_dict(), "next_round": self.plan.next, "scored": scored}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trainer.load_state_dict(state["trainer"])
        self.plan.next = state["next_round"]
        self.scored = copy.deepcopy(state["scored"])

    def result(self) -> dict[str, Any]:
        return {
            "picks": best_first(self.scored, self.n_picks),
            "scores": [c["objective"] for c in self.scored],
            "epochs": self.epochs,
            "path_passes": self.trainer.passes_done,
            "op_counts": copy.deepcopy(self.trainer.op_counts),
        }
