"""CARS, continuous evolution on a NAS-Bench-201 supernet (Yang et al., arXiv 1909.04977), after huawei-noah/vega.

One supernet is trained while a population of cells evolves on it: after a warm-up with uniformly random paths,
every round trains the supernet on paths drawn from the population, breeds as many children (25% mutation, 25%
uniform crossover, 50% brand-new cells, duplicates rejected), scores parents and children with inherited weights
and keeps a population's worth by pNSGA-III (accuracy vs size, protecting accurate large cells).
"""

from __future__ import annotations

import copy
import random
import statistics
from typing import Any

import numpy as np

from leanvision.errors import ConfigError
from leanvision.registry import unknown_choice
from leanvision.search.oneshot.base import ONESHOT, OneShotMethod
from leanvision.search.oneshot.nsga import non_dominated_fronts, nsga3_select, pnsga3_select, require_pymoo
from leanvision.search.oneshot.train import canonical_cell
from leanvision.search.space import Sample
from leanvision.search.spaces.nasbench201 import EDGES

SELECTIONS = ("pnsga3", "nsga3", "random")
SIZES = ("params", "macs")
_SELECT = {"pnsga3": pnsga3_select, "nsga3": nsga3_select}


def uniform_pareto_picks(acc: list[float], size: list[float], n_picks: int) -> list[int]:
    """vega's ``select_uniform_pareto_front``: indices of the most accurate individual per size bin, best first.

    Individuals whose min-max normalised accuracy is not above 0.5 are dropped; the remaining size range is split
    into ``n_picks`` equal bins and each non-empty bin gives its most accurate member. Two fixes to vega: the
    smallest size belongs to the first bin (vega's half-open bins leave it out), and an empty bin gives no pick
    (vega's argmax of zeros returns index 0, a repeat).
    """
    a, s = np.asarray(acc, dtype=float), np.asarray(size, dtype=float)
    if len(a) == 0:
        return []
    if a.max() == a.min():
        return [0]
    keep = np.flatnonzero((a - a.min()) / (a.max() - a.min()) > 0.5)
    grid = np.linspace(s[keep].min(), s[keep].max(), n_picks + 1)
    picks = []
    for b in range(n_picks):
        lo_ok = s[keep] >= grid[b] if b == 0 else s[keep] > grid[b]
        members = keep[lo_ok & (s[keep] <= grid[b + 1])]
        if len(members):
            best = members[np.argmax(a[members])]  # first on ties: deterministic
            if best not in picks:
                picks.append(int(best))
    return sorted(picks, key=lambda i: (-a[i], i))


@ONESHOT.register("cars")
class CARS(OneShotMethod):
    """CARS (arXiv 1909.04977) on NAS-Bench-201: a supernet trained on an evolving population of cells.

    Round 0 trains ``warmup_epochs`` epochs with one uniformly random cell per step (every op trained alike),
    then scores an initial population of ``population`` distinct random cells. Each of the ``evolution_rounds``
    next rounds trains ``epochs_per_round`` epochs with one path per step drawn uniformly from the population
    (vega's ``num_individual_per_iter`` = 1), breeds ``population`` children, re-scores the parents (the
    weights moved) with the children on held-out images, and keeps ``population`` of the union by ``selection``
    on (supernet accuracy, ``size`` of the standalone child):

    - ``"pnsga3"``: CARS's pNSGA-III (:func:`~leanvision.search.oneshot.nsga.pnsga3_select`);
    - ``"nsga3"``: plain NSGA-III on (1/acc, size), the baseline that falls into the small-model trap;
    - ``"random"``: the random-search baseline at the same supernet budget: no children and no selection, the
      population is replaced by ``population`` fresh random cells every round (the supernet is still trained on
      the current population), and only those are scored.

    Children: 25% mutation of a random parent (each edge's op replaced by a uniformly random op with probability
    0.5), 25% uniform crossover of two distinct random parents (each edge from the second with probability 0.5),
    50% a brand-new random cell (on a ``canonical`` space every child is mapped to its isomorphism class's
    representative, and disconnected children are rejected, so candidates are connected canonical cells; new cells
    come from the space's own sampling); a child equal to a parent or an earlier child is rejected and redrawn, at most
    ``max_retries`` times per round (then the round goes on with fewer children). ``supernet``: options of
    :class:`~leanvision.search.oneshot.train.SupernetTrainer` (data, width, optimiser); the cosine schedule spans
    ``warmup_epochs + evolution_rounds * epochs_per_round`` epochs. The state after round 0 does not depend on
    ``selection``, so one warm-up can be forked into every selection (``load_state_dict`` allows it).
    """

    name = "cars"

    def __init__(self, space: Any, *, seed: int = 0, supernet: dict[str, Any] | None = None, warmup_epochs: int = 3,
                 evolution_rounds: int = 12, epochs_per_round: int = 1, population: int = 16,
                 selection: str = "pnsga3", size: str = "params", n_picks: int = 4,
                 max_retries: int = 1_000) -> None:  # fmt: skip
        from leanvision.search.oneshot.train import as_space, make_trainer

        require_pymoo("CARS")  # before any training: its selection sorts fronts with pymoo
        for name, v, low in (("warmup_epochs", warmup_epochs, 0), ("evolution_rounds", evolution_rounds, 0),
                             ("epochs_per_round", epochs_per_round, 1), ("population", population, 2),
                             ("n_picks", n_picks, 1), ("max_retries", max_retries, 0)):  # fmt: skip
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ConfigError(f"cars: {name} must be an integer >= {low}, got {v!r}")
        if selection not in SELECTIONS:
            raise unknown_choice("cars selection", selection, SELECTIONS)
        if size not in SIZES:
            raise unknown_choice("cars size", size, SIZES)
        supernet = dict(supernet or {})
        clash = sorted({"seed", "total_epochs", "total_steps"} & set(supernet))
        if clash:
            raise ConfigError(f"cars: supernet option(s) {clash} are set by CARS itself (seed, and the schedule from "
                              "warmup_epochs + evolution_rounds * epochs_per_round); leave them out")  # fmt: skip
        self.space = as_space(space)
        if self.space.size() < 2 * population:
            raise ConfigError(f"cars: the space has {self.space.size()} cells, too few for a population of "
                              f"{population} plus as many distinct children; lower population")  # fmt: skip
        self.seed, self.warmup_epochs, self.evolution_rounds = seed, warmup_epochs, evolution_rounds
        self.epochs_per_round, self.population_size, self.selection = epochs_per_round, population, selection
        self.size, self.n_picks, self.max_retries = size, n_picks, max_retries
        epochs = warmup_epochs + evolution_rounds * epochs_per_round
        self.trainer = make_trainer(self.space, seed, supernet, total_epochs=epochs, total_steps=None)
        # The evolution's own stream, apart from the trainer's path stream (both saved with the state).
        self.rng = random.Random(f"cars:{seed}")
        self.population: list[dict[str, Any]] = []
        self.history: list[dict[str, Any]] = []
        self.rounds_done = 0

    def rounds(self) -> int:
        return 1 + self.evolution_rounds

    # --- variation -----------------------------------------------------------------------------------------------

    def _mutate(self, parent: Sample) -> Sample:
        return {e: self.rng.choice(self.space.ops) if self.rng.random() < 0.5 else parent[e] for e in EDGES}

    def _crossover(self, a: Sample, b: Sample) -> Sample:
        return {e: b[e] if self.rng.random() < 0.5 else a[e] for e in EDGES}

    def _distinct_random(self, n: int, taken: set[str]) -> list[Sample]:
        """``n`` uniformly random cells, none in ``taken`` nor repeated (``taken`` is updated)."""
        out: list[Sample] = []
        while len(out) < n:  # the constructor ensured the space holds enough cells
            s = self.space.sample(self.rng)
            if self.space.key(s) not in taken:
                taken.add(self.space.key(s))
                out.append(s)
        return out

    def _offspring(self, parents: list[Sample]) -> list[tuple[Sample, str]]:
        """``population`` distinct children by the 25/25/50 rule (vega ``get_offspring`` + ``judge_repeat``)."""
        taken = {self.space.key(p) for p in parents}
        children: list[tuple[Sample, str]] = []
        retries = 0
        while len(children) < self.population_size:
            r = self.rng.random()
            if r < 0.25:
                child, origin = self._mutate(self.rng.choice(parents)), "mutation"
            elif r < 0.5:
                a, b = self.rng.sample(parents, 2)
                child, origin = self._crossover(a, b), "crossover"
            else:
                child, origin = self.space.sample(self.rng), "random"
            child = canonical_cell(self.space, child)  # on a canonical space: the class, None if disconnected
            key = None if child is None else self.space.key(child)
            if key is None or key in taken:
                retries += 1
                if retries > self.max_retries:
                    break
                continue
            taken.add(key)
            children.append((child, origin))
        return children

    # --- rounds --------------------------------------------------------------------------------------------------

    def _score(self, samples: list[Sample], origins: list[str], r: int) -> list[dict[str, Any]]:
        scores = self.trainer.score(samples)
        return [{"sample": dict(s), "objective": float(acc), "params": self.trainer.params(s),
                 "macs": self.trainer.macs(s), "round": r, "origin": o}
                for s, acc, o in zip(samples, scores, origins, strict=True)]  # fmt: skip

    def _population_sampler(self):
        samples = [ind["sample"] for ind in self.population]

        def sample(rng: random.Random) -> list[Sample]:
            return [rng.choice(samples)]

        return sample

    def run_round(self, r: int) -> list[dict[str, Any]]:
        """Round ``r``: the warm-up and the initial population (r = 0) or one evolution round; returns every cell
        scored this round (``survived`` says which form the population now)."""
        from leanvision.search.oneshot.train import uniform_sampler

        if r != self.rounds_done or r >= self.rounds():
            raise ConfigError(f"cars: round {r} requested but {self.rounds_done} of {self.rounds()} rounds are done; "
                              "run the rounds in order")  # fmt: skip
        if r == 0:
            if self.warmup_epochs:
                self.trainer.train(self.warmup_epochs, uniform_sampler(self.space))
            fresh = self._distinct_random(self.population_size, set())
            records = self._score(fresh, ["random"] * len(fresh), r)
            keep = list(range(len(records)))
        else:
            self.trainer.train(self.epochs_per_round, self._population_sampler())
            parents = [ind["sample"] for ind in self.population]
            if self.selection == "random":
                fresh = self._distinct_random(self.population_size, set())
                records = self._score(fresh, ["random"] * len(fresh), r)
                keep = list(range(len(records)))
            else:
                children = self._offspring(parents)
                samples = parents + [c for c, _ in children]
                origins = ["parent"] * len(parents) + [o for _, o in children]
                records = self._score(samples, origins, r)
                acc = [rec["objective"] for rec in records]
                size = [rec[self.size] for rec in records]
                # A fresh numpy generator per round, seeded from the saved stream: selection ties stay reproducible.
                rng = np.random.default_rng(self.rng.getrandbits(64))
                keep = _SELECT[self.selection](acc, size, self.population_size, rng).tolist()
        for i, rec in enumerate(records):
            rec["survived"] = i in keep
        self.population = [copy.deepcopy(records[i]) for i in keep]
        pop = self.population
        self.history.append({"round": r, "median_params": statistics.median(ind["params"] for ind in pop),
                             "median_macs": statistics.median(ind["macs"] for ind in pop),
                             "median_score": statistics.median(ind["objective"] for ind in pop)})  # fmt: skip
        self.rounds_done = r + 1
        return records

    # --- state ---------------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        from leanvision.search.oneshot.train import random_state

        return {"trainer": self.trainer.state_dict(), "rng": random_state(self.rng),
                "population": copy.deepcopy(self.population), "history": copy.deepcopy(self.history),
                "rounds_done": self.rounds_done, "population_size": self.population_size,
                "selection": self.selection}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`; a state after round 0 may come from a run with another selection."""
        from leanvision.search.oneshot.train import set_random_state

        if state["population_size"] != self.population_size:
            raise ConfigError(f"cars state has population {state['population_size']} but this run "
                              f"{self.population_size}; build it with the same population")  # fmt: skip
        if state["rounds_done"] > 1 and state["selection"] != self.selection:
            raise ConfigError(f"cars state was evolved by selection {state['selection']!r} (round "
                              f"{state['rounds_done'] - 1}), this run uses {self.selection!r}; only the state after "
                              "round 0 (the warm-up) can be forked into another selection")  # fmt: skip
        if state["rounds_done"] > self.rounds():
            raise ConfigError(f"cars state has {state['rounds_done']} rounds done but this run has {self.rounds()}")
        self.trainer.load_state_dict(state["trainer"])
        set_random_state(self.rng, state["rng"])
        self.population = copy.deepcopy(state["population"])
        self.history = copy.deepcopy(state["history"])
        self.rounds_done = state["rounds_done"]

    # --- result --------------------------------------------------------------------------------------------------

    def result(self) -> dict[str, Any]:
        """``picks`` (uniform-Pareto picks of the final population, best first), ``pareto`` (its first front on
        (1/score, size)), ``population`` and ``population_history`` (per round the medians of params, MACs and
        score: the small-model trap shows as a falling median size)."""
        pop = self.population
        acc = [ind["objective"] for ind in pop]
        size = [ind[self.size] for ind in pop]
        picks = uniform_pareto_picks(acc, size, self.n_picks)
        front = non_dominated_fronts(np.column_stack([1.0 / (np.asarray(acc) + 1e-10), size]))[0] if pop else []

        def brief(ind: dict[str, Any]) -> dict[str, Any]:
            return {"sample": dict(ind["sample"]), "score": ind["objective"], "params": ind["params"],
                    "macs": ind["macs"]}  # fmt: skip

        return {"picks": [dict(pop[i]["sample"]) for i in picks],
                "picks_detail": [brief(pop[i]) for i in picks],
                "pareto": [brief(pop[i]) for i in sorted(front, key=lambda i: (size[i], -acc[i]))],
                "population": [brief(ind) for ind in pop],
                "population_history": copy.deepcopy(self.history),
                "selection": self.selection, "size": self.size,
                "op_counts": copy.deepcopy(self.trainer.op_counts)}  # fmt: skip
