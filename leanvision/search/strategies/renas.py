"""Predictor-guided search with ReNAS's ranking predictor (Xu et al., arXiv 1910.01523) on NAS-Bench-201."""

from __future__ import annotations

import math

import numpy as np

from leanvision.errors import ConfigError
from leanvision.search.evaluators.tabular import arch_code
from leanvision.search.space import Result, Sample, SearchSpace
from leanvision.search.spaces.nasbench201 import EDGES, OPS, NB201Space, cell_ops
from leanvision.search.strategies.base import STRATEGIES, Strategy, ok


def _code(sample: Sample) -> int:
    """The cell's row in ``nb201_encodings``."""
    return arch_code(cell_ops(sample))


def _sample(code: int) -> Sample:
    """The inverse of ``arch_code``."""
    return {e: OPS[code // len(OPS) ** k % len(OPS)] for k, e in enumerate(EDGES)}


NEIGHBOURS = ("random", "predicted")


@STRATEGIES.register("renas")
class ReNASSearch(Strategy):
    """``n_init`` uniformly random distinct cells, then rounds of: train ReNAS's predictor on every result told so
    far (sample, objective), score every cell of the space not yet asked, ask the best-scored ones and, for a
    fraction ``explore`` of the ``batch`` asks (rounded half up), unasked cells one edge away from the best cell told
    so far (``neighbours="random"``: drawn at random; ``"predicted"``: the best-scored of them; predictor picks fill
    in when fewer are left). ``explore=0`` is the paper's pure top-k.
    ``encoding`` is ``"onehot"`` (ops one-hot + live edges, an MLP) or ``"paper"`` (the paper's tensor, the LeNet).
    On a ``canonical`` space only its representatives are asked.

    The predictor is retrained once per round (every ``batch`` asks), not at every tell; until two results are
    told (asynchronous workers, failures) asks stay random. Failed trials teach nothing. A seeded strategy told
    the same results proposes the same cells. Needs a space whose cells it can list: ``nasbench201`` (any ``ops``
    subset); the tensors of all 15,625 cells are built once per process.
    """

    def __init__(self, space: SearchSpace, *, seed: int = 0, n_init: int = 10, batch: int = 10,
                 loss: str = "pairwise", epochs: int = 200, features: str = "full", encoding: str = "onehot",
                 explore: float = 0.5, neighbours: str = "random", max_redraws: int = 1000) -> None:  # fmt: skip
        if not isinstance(space, NB201Space):
            raise ConfigError(f"renas scores every cell of its space, which only 'nasbench201' can list; got "
                              f"'{space.name}' (use random, evolution or local there)")  # fmt: skip
        from leanvision.search.predictors.renas import ENCODINGS, FEATURES, LOSSES, nb201_encodings, nb201_onehot

        for name, v, low in (("n_init", n_init, 0), ("batch", batch, 1), ("epochs", epochs, 1)):
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ConfigError(f"renas: {name} must be an integer >= {low}, got {v!r}")
        if loss not in LOSSES or features not in FEATURES:
            raise ConfigError(f"renas: loss must be one of {', '.join(LOSSES)} and features one of "
                              f"{', '.join(FEATURES)}; got loss={loss!r}, features={features!r}")  # fmt: skip
        if encoding not in ENCODINGS:
            raise ConfigError(f"renas: encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r}")
        if isinstance(explore, bool) or not isinstance(explore, (int, float)) or not 0 <= explore <= 1:
            raise ConfigError(f"renas: explore must be a fraction in [0, 1] of each round's asks, got {explore!r}")
        if neighbours not in NEIGHBOURS:
            raise ConfigError(f"renas: neighbours must be one of {', '.join(NEIGHBOURS)}, got {neighbours!r}")
        super().__init__(space, seed=seed)
        self.n_init, self.batch, self.loss, self.epochs, self.features = n_init, batch, loss, epochs, features
        self.max_redraws, self.encoding, self.explore = max_redraws, encoding, float(explore)
        self.neighbours = neighbours
        self._X = nb201_onehot() if encoding == "onehot" else nb201_encodings()
        self._allowed = allowed = [OPS.index(o) for o in space.ops]
        digits = np.arange(len(self._X))[:, None] // len(OPS) ** np.arange(len(EDGES)) % len(OPS)
        self._open = np.isin(digits, allowed).all(axis=1)  # in the space and not asked yet
        if space.canonical:  # one representative per isomorphism class, connected cells only
            keep = np.zeros(len(self._open), bool)
            keep[[arch_code(cell_ops(a)) for a in space.cells()]] = True
            self._open &= keep
        self._told: list[tuple[int, float]] = []
        self._queue: list[int] = []
        self._asked = 0
        self.fits = 0
        self.explored = 0  # asks queued as neighbours of the incumbent

    def _take(self, code: int) -> Sample:
        self._open[code] = False
        return _sample(code)

    def _random(self) -> Sample:
        # Drawn with the space's own sampler, so the first n_init asks are exactly a random search's.
        for _ in range(self.max_redraws):
            s = self.space.sample(self.rng)
            if self._open[_code(s)]:
                break
        return self._take(_code(s))

    def _rank(self) -> list[int]:
        from leanvision.search.predictors.renas import fit_predictor

        codes, labels = zip(*self._told, strict=True)
        model = fit_predictor(self._X[list(codes)], labels, loss=self.loss, epochs=self.epochs,
                              seed=self.rng.randrange(2**31), features=self.features)  # fmt: skip
        self.fits += 1
        near = self._neighbours(max(self._told, key=lambda t: t[1])[0])
        k = min(len(near), math.floor(self.explore * self.batch + 0.5))
        if self.neighbours == "predicted" and k:
            scores = model.predict(self._X[near])
            explore = [near[i] for i in np.argsort(-scores, kind="stable")[:k]]
        else:
            explore = self.rng.sample(near, k)
        self.explored += len(explore)
        open_ = self._open.copy()
        open_[explore] = False
        candidates = np.flatnonzero(open_)
        best = np.argsort(-model.predict(self._X[candidates]), kind="stable")[: self.batch - len(explore)]
        return [int(c) for c in candidates[best]] + explore

    def _neighbours(self, code: int) -> list[int]:
        """Unasked cells of the space one edge away from ``code``, in a fixed order."""
        out = []
        for k in range(len(EDGES)):
            digit = code // len(OPS) ** k % len(OPS)
            out += [code + (o - digit) * len(OPS) ** k for o in self._allowed if o != digit]
        return [c for c in out if self._open[c]]

    def _ask_one(self) -> Sample:
        self._asked += 1
        if self._asked <= self.n_init or len(self._told) < 2 or not self._open.any():
            return self._random()
        while self._queue and not self._open[self._queue[0]]:  # told meanwhile by someone else
            self._queue.pop(0)
        if not self._queue:
            self._queue = self._rank()
        return self._take(self._queue.pop(0))

    def tell(self, sample: Sample, result: Result) -> None:
        if ok(result):
            code = _code(sample)
            self._open[code] = False  # a result told from elsewhere (a warm start) is not asked again
            self._told.append((code, float(result["objective"])))
