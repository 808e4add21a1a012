"""Baseline strategies: random search and regularised (aging) evolution (Real et al., arXiv 1802.01548)."""

from __future__ import annotations

import collections

from leanvision.errors import ConfigError
from leanvision.search.space import Result, Sample, SearchSpace
from leanvision.search.strategies.base import STRATEGIES, Strategy, ok


@STRATEGIES.register("random")
class RandomSearch(Strategy):
    """Uniform samples from the space; with ``unique`` (default) a sample already proposed is drawn again."""

    def __init__(self, space: SearchSpace, *, seed: int = 0, unique: bool = True, max_redraws: int = 1000) -> None:
        super().__init__(space, seed=seed)
        self.unique, self.max_redraws = unique, max_redraws
        self._seen: set[str] = set()

    def _ask_one(self) -> Sample:
        for _ in range(self.max_redraws if self.unique else 1):
            s = self.space.sample(self.rng)
            if self.space.key(s) not in self._seen:
                break
        self._seen.add(self.space.key(s))
        return s


@STRATEGIES.register("evolution")
class RegularizedEvolution(Strategy):
    """Aging evolution: the first ``population`` asks are random; then mutate the best of ``tournament`` random
    members of the population; every result joins the population and the oldest member leaves.

    Failed trials never join. Duplicates are not filtered, as in the paper (each query counts). The tournament
    draws distinct members (``replace=False``); the paper's pseudo-code draws with replacement (``replace=True``).
    """

    def __init__(self, space: SearchSpace, *, seed: int = 0, population: int = 20, tournament: int = 5,
                 replace: bool = False) -> None:  # fmt: skip
        if population < 1 or not 1 <= tournament <= population:
            raise ConfigError(f"evolution: need population >= 1 and 1 <= tournament <= population, got "
                              f"population={population}, tournament={tournament}")  # fmt: skip
        super().__init__(space, seed=seed)
        self.population_size, self.tournament, self.replace = population, tournament, replace
        self.population: collections.deque[tuple[Sample, float]] = collections.deque()
        self._asked = 0

    def _ask_one(self) -> Sample:
        self._asked += 1
        if self._asked <= self.population_size or not self.population:
            return self.space.sample(self.rng)
        n = len(self.population)
        if self.replace:
            contenders = [self.rng.randrange(n) for _ in range(self.tournament)]
        else:
            contenders = self.rng.sample(range(n), min(self.tournament, n))
        parent = max(contenders, key=lambda i: self.population[i][1])
        return self.space.mutate(self.population[parent][0], self.rng)

    def tell(self, sample: Sample, result: Result) -> None:
        if not ok(result):
            return
        self.population.append((sample, float(result["objective"])))
        if len(self.population) > self.population_size:
            self.population.popleft()
