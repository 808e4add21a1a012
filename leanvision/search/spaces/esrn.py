"""ESR-EA's space (arXiv 1909.11409): a chromosome of ``node_num`` genes, each an active bit and a block id.

A sample is ``{"genes": [[active, block_id], ...]}``; the network is the active genes' blocks in order
(:data:`leanvision.models.sr.BLOCK_TYPES` codes ``"T_C_G_O"``, ids index :attr:`ESRNSpace.blocks`). Constraints, as
in the authors' code (vega ``esr_ea_individual``): at least ``min_active`` active genes and the parameter count in
``[min_params, max_params]``. Repair, vega's: flip active bits (probability ``p_using`` each) until enough are
active, then re-draw active block ids (``p_node`` each) until the parameters fit; a retry cap restarts from a
fresh random chromosome, and a window no chromosome can meet is a one-line ConfigError instead of a hang.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

from leanvision.errors import ConfigError
from leanvision.models.sr import BLOCK_TYPES, ESRN, esrn_cost, parse_block
from leanvision.search.space import SPACES, Choice, Sample, check_options

Weights = Sequence[float] | None  # a sampling weight per block id (None: uniform)


@SPACES.register("esrn")
class ESRNSpace:
    """ESRN networks of ``node_num`` genes; block ids over ``types`` x ``convs`` x ``growths`` x outputs
    ``{o in outs: o >= G}``. Defaults are the paper-scale x2 space (20 genes, >= 16 active, 315K-325K params).
    Parameters are counted in closed form (no network is built) at ``scale`` and ``G0``."""

    name = "esrn"

    def __init__(self, *, node_num: int = 20, min_active: int = 16, types: Sequence[str] = BLOCK_TYPES,
                 convs: Sequence[int] = (4, 6, 8), growths: Sequence[int] = (8, 16, 24, 32),
                 outs: Sequence[int] = (8, 16, 24, 32), min_params: int = 315_000, max_params: int = 325_000,
                 scale: int = 2, G0: int = 32, p_using: float = 0.05, p_node: float = 0.05,
                 max_repairs: int = 200, max_restarts: int = 50) -> None:  # fmt: skip
        check_options("esrn: types", list(types), BLOCK_TYPES)
        if not 1 <= min_active <= node_num:
            raise ConfigError(f"esrn: need 1 <= min_active <= node_num, got {min_active} and {node_num}")
        if not 0 < min_params <= max_params:
            raise ConfigError(f"esrn: need 0 < min_params <= max_params, got {min_params}, {max_params}")
        self.blocks = [f"{t}_{c}_{g}_{o}" for t in types for c in convs for g in growths for o in outs if o >= g]
        for b in self.blocks:
            parse_block(b)  # a combination a block type cannot build fails here
        if not self.blocks:
            raise ConfigError("esrn: no block fits (every output width is below every growth rate)")
        self.node_num, self.min_active, self.scale, self.G0 = node_num, min_active, scale, G0
        self.min_params, self.max_params = min_params, max_params
        self.p_using, self.p_node, self.max_repairs, self.max_restarts = p_using, p_node, max_repairs, max_restarts
        self._cost: dict[tuple[str, ...], tuple[int, int]] = {}

    # --- encoding ------------------------------------------------------------------------------------------
    def params(self) -> dict[str, Choice]:
        return {}

    def arch(self, sample: Sample) -> list[str]:
        """The network: the active genes' block codes, in order."""
        return [self.blocks[b] for a, b in sample["genes"] if a]

    def key(self, sample: Sample) -> str:
        return json.dumps(self.arch(sample))

    def cost(self, sample: Sample) -> tuple[int, int]:
        """(params, Multi-Adds at a 1280x720 output) in closed form, cached per architecture."""
        arch = tuple(self.arch(sample))
        if arch not in self._cost:
            self._cost[arch] = esrn_cost(arch, scale=self.scale, G0=self.G0) if arch else (0, 0)
        return self._cost[arch]

    def feasible(self, sample: Sample) -> bool:
        active = sum(a for a, _ in sample["genes"])
        return active >= self.min_active and self.min_params <= self.cost(sample)[0] <= self.max_params

    def validate(self, sample: Sample) -> None:
        genes = sample.get("genes") if isinstance(sample, dict) else None
        ok = isinstance(genes, list) and len(genes) == self.node_num and all(
            isinstance(g, list) and len(g) == 2 and g[0] in (0, 1) and isinstance(g[1], int)
            and 0 <= g[1] < len(self.blocks) for g in genes)  # fmt: skip
        if not ok:
            raise ConfigError(f"esrn: a sample is {{'genes': [[active 0/1, block id 0..{len(self.blocks) - 1}], ...]}} "
                              f"with {self.node_num} genes, got {sample!r:.200}")  # fmt: skip
        if not self.feasible(sample):
            raise ConfigError(f"esrn: {self.key(sample)} breaks the constraints (>= {self.min_active} active blocks, "
                              f"{self.min_params}-{self.max_params} params; it has "
                              f"{self.cost(sample)[0]})")  # fmt: skip

    def build(self, sample: Sample, **kwargs: Any) -> ESRN:
        return ESRN(self.arch(sample), scale=self.scale, G0=self.G0, **kwargs)

    # --- operators -----------------------------------------------------------------------------------------
    def _draw(self, rng: random.Random, weights: Weights) -> int:
        if weights is None:
            return rng.randrange(len(self.blocks))
        return rng.choices(range(len(self.blocks)), weights=weights)[0]

    def mutate_using(self, sample: Sample, rng: random.Random) -> Sample:
        """Flip each active bit with probability ``p_using``."""
        return {"genes": [[1 - a if rng.random() < self.p_using else a, b] for a, b in sample["genes"]]}

    def mutate_node(self, sample: Sample, rng: random.Random, weights: Weights = None) -> Sample:
        """Re-draw each active gene's block id with probability ``p_node`` (from ``weights``: block credit)."""
        return {"genes": [[a, self._draw(rng, weights) if a and rng.random() < self.p_node else b]
                          for a, b in sample["genes"]]}  # fmt: skip

    def repair(self, sample: Sample, rng: random.Random, weights: Weights = None) -> Sample:
        """A feasible chromosome near ``sample`` (vega's repair loops, capped; restarts from random genes)."""
        for restart in range(self.max_restarts + 1):
            s = sample if restart == 0 else self._random(rng)
            for _ in range(self.max_repairs):
                if sum(a for a, _ in s["genes"]) >= self.min_active:
                    break
                s = self.mutate_using(s, rng)
            for _ in range(self.max_repairs):
                if self.feasible(s):
                    return s
                s = self.mutate_node(s, rng, weights)
        raise ConfigError(f"esrn: no chromosome met the constraints after {self.max_restarts} restarts "
                          f"({self.min_params}-{self.max_params} params with {self.min_active}-{self.node_num} "
                          f"active blocks of {len(self.blocks)} kinds): widen the params window")  # fmt: skip

    def _random(self, rng: random.Random) -> Sample:
        return {"genes": [[rng.randrange(2), rng.randrange(len(self.blocks))] for _ in range(self.node_num)]}

    def sample(self, rng: random.Random) -> Sample:
        return self.repair(self._random(rng), rng)

    def mutate(self, sample: Sample, rng: random.Random, weights: Weights = None) -> Sample:
        """vega's mutation: flip active bits + repair, re-draw block ids + repair; redone until the network changes
        (a copy of its parent would spend an evaluation on a known result)."""
        for _ in range(self.max_repairs):
            child = self.repair(self.mutate_using(sample, rng), rng, weights)
            child = self.repair(self.mutate_node(child, rng, weights), rng, weights)
            if self.key(child) != self.key(sample):
                return child
        return child

    def crossover(self, a: Sample, b: Sample, rng: random.Random) -> tuple[Sample, Sample]:
        """Two-point crossover: a segment of length in [4, node_num/2) at the same place swapped, then repaired."""
        n = self.node_num
        length = rng.randrange(min(4, max(n // 2 - 1, 1)), max(n // 2, 2)) if n > 2 else 1
        start = rng.randrange(n - length + 1)
        ga, gb = [list(g) for g in a["genes"]], [list(g) for g in b["genes"]]
        ga[start : start + length], gb[start : start + length] = gb[start : start + length], ga[start : start + length]
        return self.repair({"genes": ga}, rng), self.repair({"genes": gb}, rng)

    def block_ids(self, sample: Sample) -> set[int]:
        """The distinct block ids of the active genes (what a network's result credits)."""
        return {b for a, b in sample["genes"] if a}
