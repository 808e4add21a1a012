"""Local search over one-decision neighbourhoods (White, Nolen & Savani, arXiv 2005.02960)."""

from __future__ import annotations

from leanvision.search.space import Result, Sample, SearchSpace
from leanvision.search.strategies.base import STRATEGIES, Strategy, ok


@STRATEGIES.register("local")
class LocalSearch(Strategy):
    """Hill climbing with restarts on a space of categorical choices.

    ``n_init`` random samples first; then every neighbour (one decision changed) of the best sample so far, in
    random order; as soon as a neighbour is better, its neighbourhood is explored instead. When a centre's whole
    neighbourhood is worse (a local optimum) the search restarts from a random sample. A sample is never proposed
    twice (each proposal is a query).
    """

    def __init__(self, space: SearchSpace, *, seed: int = 0, n_init: int = 10, max_redraws: int = 1000) -> None:
        super().__init__(space, seed=seed)
        self.n_init, self.max_redraws = n_init, max_redraws
        self._seen: set[str] = set()
        self._asked = 0
        self._center: tuple[Sample, float] | None = None
        self._queue: list[Sample] | None = None  # neighbours of the centre still to try; None: not built yet

    def _neighbours(self, sample: Sample) -> list[Sample]:
        out = [{**sample, k: o} for k, p in self.space.params().items() for o in p.options if o != sample[k]]
        self.rng.shuffle(out)
        return out

    def _ask_one(self) -> Sample:
        self._asked += 1
        for _ in range(self.max_redraws):
            if self._asked > self.n_init and self._center is not None and self._queue is None:
                # Built on demand, not in tell: the first n_init draws are then exactly a random search's.
                self._queue = [n for n in self._neighbours(self._center[0]) if self.space.key(n) not in self._seen]
            s = self._queue.pop(0) if self._asked > self.n_init and self._queue else self.space.sample(self.rng)
            if self.space.key(s) not in self._seen:
                break
        self._seen.add(self.space.key(s))
        return s

    def tell(self, sample: Sample, result: Result) -> None:
        if not ok(result):
            return
        value = float(result["objective"])
        if self._center is None or value > self._center[1]:
            self._center, self._queue = (sample, value), None
        elif self._queue == [] and self._asked >= self.n_init:
            self._center, self._queue = None, None  # a local optimum: restart from the next random sample
