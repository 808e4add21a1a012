"""IRLAS: BlockQNN Q-learning guided by a mirror stimuli function learnt from one expert by inverse RL.

Guo, Zhong, Wu, Lin and Yan, "IRLAS: Inverse Reinforcement Learning for Architecture Search", arXiv 1812.05285
(CVPR 2019). What the paper states: a *mirror stimuli function* (MSF) extracts topological knowledge from one
human-designed network (ResNeXt), is learnt by inverse reinforcement learning so as not to impose too strong a
prior, and serves as an extra reward that steers the search towards simple, fast topologies.

What this module reconstructs (the exact formulation was not checked against the paper; every choice below is an
option):

* a state feature code φ(s_t) ∈ {0, 1}^d that keeps only topology (op family and connectivity, no kernel sizes or
  widths): :func:`nsc_state_features` for ``nsc`` blocks, :func:`nb201_state_features` for ``nasbench201`` cells;
* feature counts μ(τ) = Σ_t γ^t φ(s_t), γ = 0.9 (apprenticeship learning, Abbeel & Ng 2004);
* the MSF is linear, MSF(τ) = wᵀμ(τ) with ‖w‖ = 1, and w is learnt by Abbeel & Ng's projection method
  (:func:`projection_step`, :class:`MirrorStimuli`) against the feature expectations of the agent's recent blocks;
* the reward of the ``irlas`` strategy is objective + λ·MSF, the MSF min-max normalised to [0, 1] over a window of
  recent blocks, λ = 1.
"""

from __future__ import annotations

import itertools
import random
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

from leanvision.errors import ConfigError
from leanvision.search.space import Result, Sample, SearchSpace
from leanvision.search.spaces.nasbench201 import EDGES, NB201Space, cell_ops, parse_arch
from leanvision.search.spaces.nsc import (
    ADD,
    AVGPOOL,
    CONCAT,
    CONV,
    IDENTITY,
    MAXPOOL,
    TERMINAL,
    NSCSpace,
    canonical_layers,
    expert_block,
    leaves,
    real_layers,
)
from leanvision.search.strategies.base import STRATEGIES, ok
from leanvision.search.strategies.qlearning import EPSILONS, SCHEDULE, BlockQNN

FEATURE_GAMMA = 0.9

# --- NSC blocks --------------------------------------------------------------------------------------------------

NSC_FEATURES = (
    "conv", "pool", "identity", "add", "concat", "terminal",
    "pred1 = previous layer", "pred1 = block input", "pred2 = previous layer", "pred2 = block input",
    "long skip (an input <= index - 3)", "fan-out 0 (to the block output)", "fan-out 1", "fan-out >= 2",
)  # fmt: skip
_FAMILY = {CONV: 0, MAXPOOL: 1, AVGPOOL: 1, IDENTITY: 2, ADD: 3, CONCAT: 4, TERMINAL: 5}


def _inputs(layer: tuple) -> tuple[int, ...]:
    return (layer[3], layer[4]) if layer[1] in (ADD, CONCAT) else (layer[3],)


def _consumers(sample: Sample) -> dict[int, int]:
    """How many later layers read each node (0 = the block input)."""
    out: dict[int, int] = {}
    for layer in real_layers(sample):
        for p in _inputs(layer):
            out[p] = out.get(p, 0) + 1
    return out


def nsc_state_features(sample: Sample, max_layers: int | None = None) -> np.ndarray:
    """φ of each entry of an NSC block, one row per entry (``len(NSC_FEATURES)`` columns of 0/1).

    Per layer at index i (add/concat inputs ordered p1 < p2): the op family one-hot (conv, pool, identity, add,
    concat, terminal); pred1 = i − 1, pred1 = 0 (the block input), and for an add or concat pred2 = i − 1 and
    pred2 = 0; a long skip (an input ≤ i − 3); the fan-out bucket (0: no later layer reads it, so it goes to the
    block output; 1; ≥ 2). A terminal has only its family bit. With ``max_layers`` the rows are padded with
    terminal rows up to ``max_layers`` entries, so that blocks of every length have the same number of states.
    """
    fanout = _consumers(sample)
    rows = []
    for layer in canonical_layers(sample):
        i, t = layer[0], layer[1]
        v = np.zeros(len(NSC_FEATURES))
        v[_FAMILY[t]] = 1.0
        if t != TERMINAL:
            p1, p2 = layer[3], layer[4]
            v[6], v[7] = p1 == i - 1, p1 == 0
            if t in (ADD, CONCAT):
                v[8], v[9] = p2 == i - 1, p2 == 0
            v[10] = any(p <= i - 3 for p in _inputs(layer))
            v[11 + min(fanout.get(i, 0), 2)] = 1.0
        rows.append(v)
    if max_layers is not None:
        end = np.zeros(len(NSC_FEATURES))
        end[_FAMILY[TERMINAL]] = 1.0
        rows += [end] * (max_layers - len(rows))
    return np.array(rows)


def concat_count(sample: Sample) -> int:
    """Concatenations in a block: its concat layers, plus one when two or more layers form the output."""
    return sum(layer[1] == CONCAT for layer in real_layers(sample)) + (len(leaves(sample)) > 1)


def branch_count(sample: Sample) -> int:
    """Σ over the block input and the layers of max(0, consumers − 1), the output counting as a consumer of each
    leaf: how many extra parallel paths the block opens."""
    fanout = _consumers(sample)
    for leaf in leaves(sample):
        fanout[leaf] = fanout.get(leaf, 0) + 1
    return sum(max(0, n - 1) for n in fanout.values())


def _depths(sample: Sample) -> dict[int, int]:
    depth = {0: 0}
    for layer in real_layers(sample):
        depth[layer[0]] = 1 + max(depth[p] for p in _inputs(layer))
    return depth


def depth_irregularity(sample: Sample) -> float:
    """The population standard deviation of the depths (longest path from the block input, in layers) of the
    layers that form the block output; 0 for a block with a single output layer."""
    depth = _depths(sample)
    outs = [depth[i] for i in leaves(sample)]
    return statistics.pstdev(outs) if len(outs) > 1 else 0.0


def has_skip(sample: Sample) -> bool:
    """Whether an add joins a node with something computed from that node (x + f(x)): an identity or add skip.
    Identity layers are followed back to the node they copy."""
    layers = {layer[0]: layer for layer in real_layers(sample)}

    def origin(n: int) -> int:
        while n in layers and layers[n][1] == IDENTITY:
            n = layers[n][3]
        return n

    def ancestors(n: int) -> set[int]:
        seen, todo = set(), [n]
        while todo:
            m = todo.pop()
            for p in _inputs(layers[m]) if m in layers else ():
                if p not in seen:
                    seen.add(p)
                    todo.append(p)
        return seen

    for layer in layers.values():
        if layer[1] == ADD:
            a, b = origin(layer[3]), origin(layer[4])
            if a != b and (a in ancestors(b) or b in ancestors(a)):
                return True
    return False


# --- NAS-Bench-201 cells -----------------------------------------------------------------------------------------

NB201_FEATURES = (
    "none", "skip", "conv", "pool", "live edge",
    "residual (a skip-only path and a conv path to the output)", "dead cell (no path to the output)",
    "conv depth 0", "conv depth 1", "conv depth 2", "conv depth 3",
)  # fmt: skip
_NB201_FAMILY = {"none": 0, "skip_connect": 1, "nor_conv_1x1": 2, "nor_conv_3x3": 2, "avg_pool_3x3": 3}
_PATHS = ((0, 3), (0, 1, 3), (0, 2, 3), (0, 1, 2, 3))  # every path from the cell input to its output
# NAS-Bench-201's ResNet cell, as AutoDL-Projects writes it: node 1 = conv3x3(x), node 2 = conv3x3(node 1),
# output = x + node 2 (a basic residual block).
RESNET_CELL = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"


def nb201_state_features(sample: Sample | str) -> np.ndarray:
    """φ of a NAS-Bench-201 cell: one row per edge in ``EDGES`` order, then one row for the whole cell.

    An edge row: the op family one-hot (none, skip, conv — 1x1 and 3x3 alike —, pool) and whether the edge is live
    (not none, reachable from the cell input and reaching the output through non-none edges). The cell row: a
    residual (a path of skip edges only and a path holding a conv, both from the input to the output), a dead cell
    (no path from the input to the output) and the conv depth one-hot (most convs on one path: 0-3).
    """
    ops = cell_ops(sample)

    def op(j: int, i: int) -> str:
        return ops[f"{j}<-{i}"]

    reach = {0: True}
    for j in (1, 2, 3):
        reach[j] = any(reach[i] and op(j, i) != "none" for i in range(j))
    coreach = {3: True}
    for i in (2, 1, 0):
        coreach[i] = any(coreach[j] and op(j, i) != "none" for j in range(i + 1, 4))
    rows = []
    for e in EDGES:
        j, i = (int(x) for x in e.split("<-"))
        v = np.zeros(len(NB201_FEATURES))
        v[_NB201_FAMILY[ops[e]]] = 1.0
        v[4] = ops[e] != "none" and reach[i] and coreach[j]
        rows.append(v)
    paths = [[op(b, a) for a, b in itertools.pairwise(p)] for p in _PATHS]
    paths = [p for p in paths if "none" not in p]
    cell = np.zeros(len(NB201_FEATURES))
    if paths:
        convs = [sum(o.startswith("nor_conv") for o in p) for p in paths]
        cell[5] = any(all(o == "skip_connect" for o in p) for p in paths) and max(convs) > 0
        cell[7 + max(convs)] = 1.0
    else:
        cell[6] = 1.0
    rows.append(cell)
    return np.array(rows)


# --- feature counts and the projection method ----------------------------------------------------------------------


def feature_counts(states: np.ndarray, gamma: float = FEATURE_GAMMA) -> np.ndarray:
    """μ(τ) = Σ_t γ^t φ(s_t) over the rows of ``states`` (t = 0, 1, ...)."""
    states = np.asarray(states, dtype=float)
    return ((gamma ** np.arange(len(states)))[:, None] * states).sum(axis=0)


def projection_step(mu_expert: np.ndarray, mu_bar: np.ndarray, mu_new: np.ndarray, *, clip: bool = True) -> np.ndarray:
    """One step of Abbeel & Ng's projection method (ICML 2004): the orthogonal projection of μ_E onto the line
    from μ̄ to the newest feature expectation μ^(j), i.e. μ̄ + c (μ^(j) − μ̄) with
    c = (μ^(j) − μ̄)ᵀ(μ_E − μ̄) / ‖μ^(j) − μ̄‖². With ``clip`` c is kept in [0, 1] (the segment, so μ̄ stays in the
    convex hull of the feature expectations seen). Returns the new μ̄; μ̄ itself when μ^(j) = μ̄."""
    mu_expert, mu_bar, mu_new = (np.asarray(x, dtype=float) for x in (mu_expert, mu_bar, mu_new))
    d = mu_new - mu_bar
    dd = float(d @ d)
    if dd <= 1e-18:
        return mu_bar.copy()
    c = float(d @ (mu_expert - mu_bar)) / dd
    if clip:
        c = min(max(c, 0.0), 1.0)
    return mu_bar + c * d


class MirrorStimuli:
    """The MSF wᵀμ with w = (μ_E − μ̄) / ‖μ_E − μ̄‖ (‖w‖ = 1), μ̄ updated by :func:`projection_step`.

    ``mu_init`` is the feature expectation of the first policy (e.g. random blocks). ``margin`` is Abbeel & Ng's
    t = ‖μ_E − μ̄‖; ``margins`` its history. If μ̄ reaches μ_E the previous w is kept.
    """

    def __init__(self, mu_expert: np.ndarray, mu_init: np.ndarray, *, clip: bool = True) -> None:
        self.mu_expert = np.asarray(mu_expert, dtype=float)
        self.mu_bar = np.asarray(mu_init, dtype=float).copy()
        self.clip = clip
        self.w = np.zeros_like(self.mu_expert)
        self.margins: list[float] = []
        self._set_w()

    def _set_w(self) -> None:
        diff = self.mu_expert - self.mu_bar
        norm = float(np.linalg.norm(diff))
        if norm > 1e-12:
            self.w = diff / norm
        self.margins.append(norm)

    @property
    def margin(self) -> float:
        return self.margins[-1]

    def step(self, mu_policy: np.ndarray) -> None:
        """Project against a new policy's feature expectation and update w."""
        self.mu_bar = projection_step(self.mu_expert, self.mu_bar, mu_policy, clip=self.clip)
        self._set_w()

    def __call__(self, mu: np.ndarray) -> Any:
        """wᵀμ for one feature count (a float) or rows of them (an array)."""
        out = np.asarray(mu, dtype=float) @ self.w
        return float(out) if out.ndim == 0 else out


def learn_msf(mu_expert: np.ndarray, candidates: np.ndarray, *, iterations: int = 200, tol: float = 1e-9,
              clip: bool = True) -> MirrorStimuli:  # fmt: skip
    """Apprenticeship learning against a fixed set of feature counts (rows of ``candidates``).

    The first policy is the set's mean; in each iteration the "optimal policy" for the current w is the candidate
    with the highest MSF, and μ̄ is projected towards it, until the margin improves by less than ``tol``. With
    clipping this is Gilbert's algorithm for the point of the candidates' convex hull nearest μ_E, so w tends to
    the max-margin direction argmax_{‖w‖ ≤ 1} min_j wᵀ(μ_E − μ_j).
    """
    candidates = np.asarray(candidates, dtype=float)
    ms = MirrorStimuli(mu_expert, candidates.mean(axis=0), clip=clip)
    for _ in range(iterations):
        before = ms.margin
        ms.step(candidates[int(np.argmax(candidates @ ms.w))])
        if before - ms.margin < tol:
            break
    return ms


class TopologyFeatures:
    """φ, μ and the expert of a space: ``nsc`` blocks (default expert: the ResNeXt block, ``RESNEXT_EXPERT``) or
    ``nasbench201`` cells (default expert: :data:`RESNET_CELL`). ``pad`` pads NSC blocks with terminal states to
    the space's ``max_layers``."""

    def __init__(self, space: SearchSpace, *, gamma: float = FEATURE_GAMMA, pad: bool = True) -> None:
        if not 0 < gamma <= 1:
            raise ConfigError(f"irlas: feature_gamma must be in (0, 1], got {gamma}")
        if isinstance(space, NSCSpace):
            self.kind, self.names = "nsc", NSC_FEATURES
        elif isinstance(space, NB201Space):
            self.kind, self.names = "nasbench201", NB201_FEATURES
        else:
            raise ConfigError(f"irlas encodes the topology of 'nsc' blocks or 'nasbench201' cells; got '{space.name}'")
        self.space, self.gamma, self.pad = space, float(gamma), pad

    @property
    def dim(self) -> int:
        return len(self.names)

    def states(self, sample: Sample) -> np.ndarray:
        if self.kind == "nsc":
            return nsc_state_features(sample, self.space.max_layers if self.pad else None)  # type: ignore[attr-defined]
        return nb201_state_features(sample)

    def counts(self, sample: Sample) -> np.ndarray:
        return feature_counts(self.states(sample), self.gamma)

    def expert(self, expert: Sample | str | None = None) -> Sample:
        """The expert sample (checked to lie in the space; the MSF is meaningless otherwise)."""
        if expert is None:
            expert = expert_block() if self.kind == "nsc" else RESNET_CELL
        if isinstance(expert, str):
            if self.kind != "nasbench201":
                raise ConfigError("irlas: an expert given as a string is a NAS-Bench-201 arch; give an nsc block as "
                                  "{'layers': [...]}")  # fmt: skip
            expert = parse_arch(expert)
        if self.kind == "nsc" and len(expert["layers"]) > self.space.max_layers:  # type: ignore[attr-defined]
            rows = expert["layers"]
            if rows[-1][1] == TERMINAL and len(rows) - 1 <= self.space.max_layers:  # type: ignore[attr-defined]
                expert = {"layers": rows[:-1]}  # the block ends at max_layers without its terminal
        try:
            self.space.validate(expert)
        except ConfigError as e:
            raise ConfigError(f"irlas: the expert is not in this search space ({e}); widen the space or pass "
                              "expert=") from None  # fmt: skip
        return expert


# --- the strategy -------------------------------------------------------------------------------------------------


def top_blocks(scores: Sequence[float], macs: Sequence[float], keys: Sequence[str], k: int) -> list[int]:
    """Indices of the ``k`` best distinct blocks (first trial of each key): higher score first, ties broken by
    fewer MACs, then by trial order (the earlier trial)."""
    out, seen = [], set()
    for i in sorted(range(len(scores)), key=lambda i: (-scores[i], macs[i], i)):
        if keys[i] not in seen:
            seen.add(keys[i])
            out.append(i)
            if len(out) == k:
                break
    return out


@STRATEGIES.register("irlas")
class IRLAS(BlockQNN):
    """BlockQNN Q-learning whose reward is objective + λ·MSF (IRLAS, arXiv 1812.05285; see the module docstring).

    Q-learning options are BlockQNN's (``budget``, ``schedule``, ``epsilons``, ``alpha``, ``gamma``, ``q_init``,
    ``shaping``, ``shaping_steps``, ``replay``, ``failure_reward``, ``objective_scale``), on an ``nsc`` or
    ``nasbench201`` space. The MSF term lies in [0, ``lam``], so the objective should be on a comparable scale (an
    accuracy as a fraction; ``objective_scale=0.01`` for one in percent).

    The MSF: features φ and counts μ with discount ``feature_gamma`` (0.9; ``pad`` NSC blocks with terminal
    states); expert ``expert`` (default: the ResNeXt block for ``nsc``, NAS-Bench-201's ResNet cell
    :data:`RESNET_CELL` for ``nasbench201``). The first policy's feature expectation is the mean μ of ``irl_init``
    seeded random samples (the ε = 1 policy), which gives the first w. Every ``irl_every`` told blocks (an int,
    or ``"phase"``: at the end of each ε phase, then every last-phase length) the projection method is stepped
    with the mean μ of the last ``irl_window`` told blocks (failed ones too: they show the policy).

    Reward of a block: ``objective_scale`` · objective + ``lam`` · clip((MSF − lo) / (hi − lo), 0, 1), lo and hi
    the least and greatest MSF of the last ``norm_window`` remembered blocks (0.5 when they are all equal). With
    ``lam_scale="range"`` λ is in units of the spread (max − min) of the scaled objective over the same window,
    so ``lam=0.5`` lets the MSF move a block by at most half the objective's range; ``"absolute"`` (default) uses
    ``lam`` as it is (the reward's units). ``exploit_share``, ``reuse_results`` and ``max_redraws`` are BlockQNN's.
    Replayed episodes are scored with the current w and window, so the Q table always learns the latest MSF. A
    failed trial learnt with ``failure_reward`` gets no MSF. Deterministic given the seed and the asks and tells.
    """

    def __init__(self, space: SearchSpace, *, seed: int = 0, budget: int | None = None,
                 schedule: Sequence[int] = SCHEDULE, epsilons: Sequence[float] = EPSILONS, alpha: float = 0.01,
                 gamma: float = 1.0, q_init: float = 0.5, shaping: bool = True, shaping_steps: str = "episode",
                 replay: int = 64, failure_reward: float | None = None, objective_scale: float = 1.0,
                 exploit_share: float | None = 0.6, lam: float = 1.0, lam_scale: str = "absolute",
                 feature_gamma: float = FEATURE_GAMMA, pad: bool = True, expert: Sample | str | None = None,
                 irl_every: int | str = "phase", irl_window: int = 32, irl_init: int = 256,
                 norm_window: int = 64, reuse_results: bool = True, max_redraws: int = 100) -> None:  # fmt: skip
        super().__init__(space, seed=seed, budget=budget, schedule=schedule, epsilons=epsilons, alpha=alpha,
                         gamma=gamma, q_init=q_init, shaping=shaping, shaping_steps=shaping_steps, replay=replay,
                         failure_reward=failure_reward, objective_scale=objective_scale,
                         exploit_share=exploit_share, reuse_results=reuse_results,
                         max_redraws=max_redraws)  # fmt: skip
        if lam_scale not in ("absolute", "range"):
            raise ConfigError(f"irlas: lam_scale is 'absolute' or 'range', got {lam_scale!r}")
        self.lam_scale = lam_scale
        if irl_every != "phase" and (not isinstance(irl_every, int) or isinstance(irl_every, bool) or irl_every < 1):
            raise ConfigError(f"irlas: irl_every is 'phase' or a number of told blocks >= 1, got {irl_every!r}")
        for name, v in (("irl_window", irl_window), ("irl_init", irl_init), ("norm_window", norm_window)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"irlas: {name} must be an int >= 1, got {v!r}")
        if not isinstance(lam, (int, float)) or lam < 0:
            raise ConfigError(f"irlas: lam (the MSF weight) must be >= 0, got {lam!r}")
        self.features = TopologyFeatures(space, gamma=feature_gamma, pad=pad)
        self.expert = self.features.expert(expert)
        self.lam, self.irl_every, self.irl_window, self.norm_window = float(lam), irl_every, irl_window, norm_window
        rng = random.Random(f"irlas-init-{seed}")
        mu0 = np.mean([self.features.counts(space.sample(rng)) for _ in range(irl_init)], axis=0)
        self.msf = MirrorStimuli(self.features.counts(self.expert), mu0)
        self._told_mu: list[np.ndarray] = []  # every told block, for the policy's feature expectation
        self._mem_mu = np.zeros((0, self.features.dim))  # one row per memory entry
        self._mem_ok: list[bool] = []
        self.irl_steps: list[int] = []  # told blocks at each projection step
        counts = [n for _, n in self.phases]
        self._bounds = [sum(counts[: k + 1]) for k in range(len(counts)) if counts[k]]
        self._period = next((n for n in reversed(counts) if n), 1)

    def mirror_stimuli(self, sample: Sample) -> float:
        """The current MSF wᵀμ of a sample (not normalised)."""
        return self.msf(self.features.counts(sample))

    def _irl_due(self, told: int) -> bool:
        if self.irl_every != "phase":
            return told % self.irl_every == 0  # type: ignore[operator]
        if told <= self._bounds[-1]:
            return told in self._bounds
        return (told - self._bounds[-1]) % self._period == 0

    def tell(self, sample: Sample, result: Result) -> None:
        self._told_mu.append(self.features.counts(sample))
        if self._irl_due(len(self._told_mu)):
            self.msf.step(np.mean(self._told_mu[-self.irl_window :], axis=0))
            self.irl_steps.append(len(self._told_mu))
        super().tell(sample, result)

    def _learn(self, sample: Sample, result: Result) -> None:
        if self._base_reward(result) is not None:  # one feature row per replay-memory entry
            self._mem_mu = np.vstack([self._mem_mu, self.features.counts(sample)])
            self._mem_ok.append(ok(result))
        super()._learn(sample, result)

    def _rewards(self) -> list[float]:
        values = self.msf(self._mem_mu)
        recent = values[-self.norm_window :]
        lo, hi = float(recent.min()), float(recent.max())
        norm = np.clip((values - lo) / (hi - lo), 0.0, 1.0) if hi - lo > 1e-12 else np.full_like(values, 0.5)
        base = np.array([r for _, r in self.memory])
        lam = self.lam
        if self.lam_scale == "range":  # λ in units of the objective's spread, so the MSF cannot swamp it
            ok_base = base[-self.norm_window :][np.array(self._mem_ok[-self.norm_window :], dtype=bool)]
            lam *= float(ok_base.max() - ok_base.min()) if len(ok_base) else 0.0
        return (base + lam * norm * np.array(self._mem_ok, dtype=float)).tolist()

    def state_dict(self) -> dict[str, Any]:
        """The Q table plus the MSF: w, μ_E, μ̄, the margins and the projection steps."""
        return {**super().state_dict(), "features": list(self.features.names), "w": self.msf.w.tolist(),
                "mu_expert": self.msf.mu_expert.tolist(), "mu_bar": self.msf.mu_bar.tolist(),
                "margins": list(self.msf.margins), "irl_steps": list(self.irl_steps)}  # fmt: skip
