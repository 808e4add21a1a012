"""ESR-EA (Song et al., arXiv 1909.11409): elitist evolution of ESRN chromosomes with block-credit-guided mutation.

Per generation (vega ``esr_search``): the elites are the best ``elites`` networks evaluated so far; the first
``population - 2*floor(population/4)`` children are mutated copies of the elites (in turn), the rest come in pairs
from two-point crossover of roulette-selected elites (weights: fitness minus the lowest, normalised). The first
generation is random.

Block credit, the paper's addition, as reconstructed here (the paper's exact formula was not checked; every
choice is an option): a network's result is its fitness z-scored within its generation; a block's credit is the
mean z of the evaluated networks that contain it (0 for a block never seen); a mutation re-draws a block id with
probability (1 - ``epsilon``) softmax(credit / ``tau``) + ``epsilon`` / n_blocks. ``mutation="uniform"`` is vega's
plain mutation (the control). ``objective="nsga"`` selects the elites by NSGA-II (non-dominated rank, then
crowding distance) on (PSNR, params, Multi-Adds) instead of by PSNR alone; crossover parents are then uniform.

The driver is asynchronous: a generation's children are bred at its first ask from the results told by then, so
with one worker this is exactly generational and with more it breeds from the finished part of the last generation.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from leanvision.errors import ConfigError
from leanvision.search.oneshot.nsga import non_dominated_fronts
from leanvision.search.space import Result, Sample, SearchSpace
from leanvision.search.strategies.base import STRATEGIES, Strategy, ok

MUTATIONS = ("credit", "uniform")
OBJECTIVES = ("psnr", "nsga")


def crowding_distance(F: np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance of the rows of ``F`` (one front; extremes infinite)."""
    n, m = F.shape
    dist = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(m):
        order = np.argsort(F[:, j], kind="stable")
        span = F[order[-1], j] - F[order[0], j]
        dist[order[0]] = dist[order[-1]] = np.inf
        if span > 0:
            dist[order[1:-1]] += (F[order[2:], j] - F[order[:-2], j]) / span
    return dist


@STRATEGIES.register("esr_ea")
class ESREA(Strategy):
    """ESR-EA on the ``esrn`` space: ``population`` children per generation, ``elites`` kept (vega: 8 and 4)."""

    def __init__(self, space: SearchSpace, *, seed: int = 0, population: int = 8, elites: int = 4,
                 mutation: str = "credit", objective: str = "psnr", tau: float = 1.0,
                 epsilon: float = 0.2) -> None:  # fmt: skip
        if not callable(getattr(space, "crossover", None)) or not callable(getattr(space, "mutate_node", None)):
            raise ConfigError(f"esr_ea searches the esrn space (chromosomes of blocks), not '{space.name}'")
        if population < 2 or not 1 <= elites <= population:
            raise ConfigError(f"esr_ea: need population >= 2 and 1 <= elites <= population, got {population}, {elites}")
        if mutation not in MUTATIONS or objective not in OBJECTIVES:
            raise ConfigError(f"esr_ea: mutation is one of {MUTATIONS} and objective one of {OBJECTIVES}, got "
                              f"{mutation!r}, {objective!r}")  # fmt: skip
        if not tau > 0 or not 0 <= epsilon <= 1:
            raise ConfigError(f"esr_ea: need tau > 0 and 0 <= epsilon <= 1, got tau={tau}, epsilon={epsilon}")
        super().__init__(space, seed=seed)
        self.population, self.n_elites, self.mutation, self.objective = population, elites, mutation, objective
        self.tau, self.epsilon = tau, epsilon
        self.asked = 0
        self.queue: list[Sample] = []
        self.pending: dict[str, list[int]] = defaultdict(list)  # generations of asked, untold samples by key
        self.results: list[tuple[Sample, float, int]] = []  # (sample, fitness, generation) of finished trials

    # --- block credit --------------------------------------------------------------------------------------
    def credits(self) -> dict[int, float]:
        """Block id -> credit: the mean within-generation z-score of the fitness of the networks containing it."""
        by_gen: dict[int, list[float]] = defaultdict(list)
        for _, fit, gen in self.results:
            by_gen[gen].append(fit)
        stats = {g: (float(np.mean(v)), float(np.std(v)) or 1.0) for g, v in by_gen.items()}
        total: dict[int, list[float]] = defaultdict(list)
        for sample, fit, gen in self.results:
            mean, std = stats[gen]
            for b in self.space.block_ids(sample):
                total[b].append((fit - mean) / std)
        return {b: float(np.mean(z)) for b, z in total.items()}

    def mutation_weights(self) -> list[float] | None:
        """Sampling weights over block ids for a mutation; ``None`` (uniform) without credit."""
        if self.mutation == "uniform":
            return None
        credit = self.credits()
        logits = np.array([credit.get(b, 0.0) / self.tau for b in range(len(self.space.blocks))])
        soft = np.exp(logits - logits.max())
        soft /= soft.sum()
        return ((1 - self.epsilon) * soft + self.epsilon / len(soft)).tolist()

    # --- selection -----------------------------------------------------------------------------------------
    def elites(self) -> list[tuple[Sample, float]]:
        """The best ``elites`` distinct networks so far, best first (by PSNR, or NSGA-II rank and crowding)."""
        seen: dict[str, tuple[Sample, float]] = {}
        for sample, fit, _ in self.results:
            k = self.space.key(sample)
            if k not in seen or fit > seen[k][1]:
                seen[k] = (sample, fit)
        pool = list(seen.values())
        if self.objective == "psnr" or len(pool) <= self.n_elites:
            return sorted(pool, key=lambda p: -p[1])[: self.n_elites]
        F = np.array([[-fit, *self.space.cost(s)] for s, fit in pool], dtype=float)
        chosen: list[int] = []
        for front in non_dominated_fronts(F):
            if len(chosen) + len(front) <= self.n_elites:
                chosen += front.tolist()
            else:
                crowd = crowding_distance(F[front])
                chosen += [int(front[i]) for i in np.argsort(-crowd, kind="stable")[: self.n_elites - len(chosen)]]
            if len(chosen) == self.n_elites:
                break
        return [pool[i] for i in chosen]

    def _roulette(self, elites: list[tuple[Sample, float]]) -> Sample:
        fits = np.array([f for _, f in elites])
        w = fits - fits.min() if self.objective == "psnr" else np.ones(len(fits))
        if not w.sum() > 0:
            w = np.ones(len(fits))
        return self.rng.choices([s for s, _ in elites], weights=(w / w.sum()).tolist())[0]

    def _breed(self) -> list[Sample]:
        elites = self.elites()
        if not elites:  # nothing finished yet (or all failed): another random generation
            return [self.space.sample(self.rng) for _ in range(self.population)]
        weights = self.mutation_weights()
        n_cross = 2 * (self.population // 4)
        children = [self.space.mutate(elites[i % len(elites)][0], self.rng, weights)
                    for i in range(self.population - n_cross)]  # fmt: skip
        for _ in range(n_cross // 2):
            a = self._roulette(elites)
            others = [e for e in elites if e[0] is not a] or elites  # two distinct parents when there are two
            children += list(self.space.crossover(a, self._roulette(others), self.rng))
        return children

    # --- ask / tell ----------------------------------------------------------------------------------------
    def _ask_one(self) -> Sample:
        gen = self.asked // self.population
        if not self.queue:
            self.queue = [self.space.sample(self.rng) for _ in range(self.population)] if gen == 0 else self._breed()
        self.asked += 1
        sample = self.queue.pop(0)
        self.pending[self.space.key(sample)].append(gen)
        return sample

    def tell(self, sample: Sample, result: Result) -> None:
        gens = self.pending[self.space.key(sample)]
        gen = gens.pop(0) if gens else 0
        if ok(result) and math.isfinite(float(result["objective"])):
            self.results.append((sample, float(result["objective"]), gen))
