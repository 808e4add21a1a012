"""BlockQNN: tabular Q-learning over NSC blocks with epsilon-greedy episodes and experience replay.

Zhong et al., "Practical Block-wise Neural Network Architecture Generation", arXiv 1708.05552 (after MetaQNN,
Baker et al., arXiv 1611.02167). A block is an episode: the state is the NSC of the last layer (the block input
at the start), an action is the NSC of the next layer, and the episode ends with the terminal or when the block
reaches ``max_layers`` entries.

On a space of categorical choices (``space.params()``, e.g. ``nasbench201`` or ``synthetic``) the decisions in
``params()`` order make the episode, MetaQNN-style: the state before decision t is ``(t, value of decision t-1)``
(``(0, None)`` at the start), the action is ``(t + 1, value of decision t)``, and every episode has one step per
decision.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

from leanvision.errors import ConfigError
from leanvision.search.space import Result, Sample, SearchSpace
from leanvision.search.spaces.nsc import CONV, TERMINAL, Layer, canonical_layers
from leanvision.search.strategies.base import STRATEGIES, Strategy, ok

# Iterations per epsilon value (1.0, 0.9, ..., 0.1) as in BlockQNN; identical in the Keras re-implementation
# elenathfgs/BlockQNN_Keras. The paper samples a mini-batch of 64 blocks per iteration (178 x 64 = 11,392 blocks).
SCHEDULE = (95, 7, 7, 7, 10, 10, 10, 10, 10, 12)
EPSILONS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)
START: Layer = (0, 0, 0, 0, 0)  # the state before the first layer: the block input
CHOICE_START = (0, None)  # the state before the first decision of a choice space


class NSCEpisodes:
    """Episodes over an ``nsc`` space: an action is a layer tuple, the state is the last layer (``START`` first)."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.start: tuple = START
        self.max_steps: int = space.max_layers  # type: ignore[attr-defined]

    def actions(self, index: int) -> tuple[tuple, ...]:
        return self.space.actions(index)  # type: ignore[attr-defined]

    def allowed(self, index: int, layers: Sequence[tuple]) -> tuple[tuple, ...]:
        """The actions at ``index`` after ``layers`` that can still end in a valid block: while the space requires
        a convolution and none is there yet, no terminal, and only convolutions at the last index."""
        acts = self.actions(index)
        if not getattr(self.space, "require_conv", False) or any(a[1] == CONV for a in layers):
            return acts
        if index >= self.max_steps:
            return tuple(a for a in acts if a[1] == CONV)
        return tuple(a for a in acts if a[1] != TERMINAL)

    @staticmethod
    def is_terminal(action: tuple) -> bool:
        return action[1] == TERMINAL

    @staticmethod
    def to_actions(sample: Sample) -> list[tuple]:
        return canonical_layers(sample)

    @staticmethod
    def to_sample(actions: Sequence[tuple]) -> Sample:
        return {"layers": [list(a) for a in actions]}


class ChoiceEpisodes:
    """Episodes over a space of categorical choices: one step per decision in ``params()`` order; the action of
    step t (1-based) is ``(t, value)`` and is the next state, so a state is ``(step, previous decision's value)``."""

    def __init__(self, space: SearchSpace) -> None:
        params = space.params()
        self.names = list(params)
        self.start: tuple = CHOICE_START
        self.max_steps = len(self.names)
        self._actions = {i: tuple((i, o) for o in params[k].options) for i, k in enumerate(self.names, 1)}

    def actions(self, index: int) -> tuple[tuple, ...]:
        return self._actions.get(index, ())

    def allowed(self, index: int, layers: Sequence[tuple]) -> tuple[tuple, ...]:
        return self.actions(index)

    @staticmethod
    def is_terminal(action: tuple) -> bool:
        return False

    def to_actions(self, sample: Sample) -> list[tuple]:
        return [(i, sample[k]) for i, k in enumerate(self.names, 1)]

    def to_sample(self, actions: Sequence[tuple]) -> Sample:
        return {k: a[1] for k, a in zip(self.names, actions, strict=True)}


def episodes_for(space: SearchSpace, who: str = "blockqnn") -> NSCEpisodes | ChoiceEpisodes:
    """How Q-learning walks ``space``: layer by layer for an ``nsc`` space, decision by decision for a space of
    categorical choices; anything else is a ``ConfigError``."""
    if callable(getattr(space, "actions", None)) and hasattr(space, "max_layers"):
        return NSCEpisodes(space)
    params = space.params() if callable(getattr(space, "params", None)) else {}
    if params:
        return ChoiceEpisodes(space)
    raise ConfigError(f"{who} searches an 'nsc' space (blocks of layers) or a space of categorical choices "
                      f"(params(), e.g. 'nasbench201'); '{space.name}' is neither")  # fmt: skip


def exploit_share(phases: Sequence[tuple[float, int]]) -> float:
    """The expected share of greedy (exploiting) decisions over a schedule: sum(n·(1 - epsilon)) / sum(n)."""
    return sum(n * (1 - e) for e, n in phases) / sum(n for _, n in phases)


def _round(exact: Sequence[float], total: int) -> list[int]:
    counts = [math.floor(x) for x in exact]
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def epsilon_schedule(budget: int | None = None, schedule: Sequence[int] = SCHEDULE,
                     epsilons: Sequence[float] = EPSILONS, *,
                     exploit: float | None = None) -> list[tuple[float, int]]:  # fmt: skip
    """``[(epsilon, number of blocks), ...]``: ``schedule`` as given, or rescaled to sum to ``budget`` keeping its
    proportions (largest-remainder rounding, ties to the earlier phase).

    With ``exploit`` (a share in (0, 0.9]) and a budget, the paper's shape is kept (a random warm-up, then steps
    down to the last epsilon, every phase but the last in the paper's proportions) but all phases before the last
    are shrunk by one factor, the last one taking the rest, until :func:`exploit_share` >= ``exploit``. BlockQNN's
    own 95:7:...:12 schedule exploits 25% of its decisions, so at 178 blocks ``exploit=0.6`` leaves 46 blocks to
    the phases from 1.0 to 0.2 (44 at 1.0) and 101 to 0.1.
    """
    if len(schedule) != len(epsilons) or not schedule:
        raise ConfigError(f"blockqnn: schedule and epsilons need the same, non-zero length; got {len(schedule)} "
                          f"counts and {len(epsilons)} epsilons")  # fmt: skip
    if any(not isinstance(n, int) or n < 0 for n in schedule) or sum(schedule) == 0:
        raise ConfigError(f"blockqnn: schedule holds block counts >= 0 (not all 0), got {list(schedule)}")
    if any(not 0 <= e <= 1 for e in epsilons):
        raise ConfigError(f"blockqnn: epsilons must lie in [0, 1], got {list(epsilons)}")
    if budget is None:
        return list(zip(epsilons, schedule, strict=True))
    if not isinstance(budget, int) or budget < 1:
        raise ConfigError(f"blockqnn: budget must be a number of blocks >= 1, got {budget!r}")
    total = sum(schedule)
    counts = _round([budget * n / total for n in schedule], budget)
    if exploit is None:
        return list(zip(epsilons, counts, strict=True))
    last = 1 - epsilons[-1]
    if not 0 < exploit <= last:
        raise ConfigError(f"blockqnn: exploit must be a share in (0, {last:g}] (1 - the last epsilon), got {exploit}")
    head = schedule[:-1]
    greedy = sum(n * (1 - e) for e, n in zip(epsilons, head, strict=False))
    # share(s) = last - s·(last·sum(head) - greedy) / budget for head counts s·head: solve share(s) = exploit
    slope = last * sum(head) - greedy
    s = budget / total if slope <= 0 else min(budget / total, (last - exploit) * budget / slope)
    exact = [s * n for n in head]
    counts = _round([*exact, budget - sum(exact)], budget)
    phases = list(zip(epsilons, counts, strict=True))
    while exploit_share(phases) < exploit:  # rounding pushed it under: move one block from the most random phase
        i = next(k for k, (_, n) in enumerate(phases[:-1]) if n)
        phases[i] = (phases[i][0], phases[i][1] - 1)
        phases[-1] = (phases[-1][0], phases[-1][1] + 1)
    return phases


@STRATEGIES.register("blockqnn")
class BlockQNN(Strategy):
    """Q-learning over blocks of an ``nsc`` space (arXiv 1708.05552), or over the decisions of a space of
    categorical choices (see the module docstring; ``max_layers`` is then the number of decisions).

    Q is a dict ``state -> {action: value}`` of layer tuples (``(step, value)`` tuples on a choice space);
    unvisited pairs read ``q_init`` (0.5, MetaQNN's convention). After each told result the episode joins the
    replay memory and ``min(len(memory), replay)`` episodes drawn at random (with replacement, as in the Keras
    re-implementation) are replayed through the update; ``replay=0`` updates only the new episode. The update
    runs backwards over an episode of n steps:
    ``Q(s_n-1, a_n) <- (1-alpha) Q + alpha r``, then ``Q(s_t-1, a_t) <- (1-alpha) Q + alpha (r_t + gamma max_a'
    Q(s_t, a'))`` with the max over the valid actions at the next index. With ``shaping`` the intermediate
    rewards are r_t = r / T, else 0; T is the episode's number of steps (``shaping_steps="episode"``, the reading
    "spread the reward over the steps") or ``max_layers`` (``"max"``, as the Keras re-implementation does).

    Epsilon follows ``schedule`` (blocks per epsilon in ``epsilons``; default BlockQNN's 95:7:7:7:10:10:10:10:10:12
    over 1.0..0.1), rescaled to ``budget`` blocks when given, then (``exploit_share``, default 0.6) shrunk before
    the last phase so that share of the decisions exploits (:func:`epsilon_schedule`; ``None``: the plain
    rescale, 25% exploitation); asks past the schedule use the last epsilon.
    Exploration picks a uniformly random valid layer; exploitation the best one (ties broken at random).

    The reward is ``objective_scale * result["objective"]`` (BlockQNN's rewards are accuracies as fractions, near
    the initial Q of 0.5; ``objective_scale=0.01`` brings accuracies in percent there). A failed trial is skipped
    (not learnt from) unless ``failure_reward`` is set, in which case it is learnt with that reward.

    ``reuse_results`` (default): an episode that yields a block already told is learnt again from its stored
    result (it joins the replay memory and the replay runs, as MetaQNN's code does with its replay dictionary) and
    another episode is drawn, so a query is never spent on a repeat; one still being evaluated is redrawn without
    learning. After ``max_redraws`` repeats in a row the repeat is asked anyway. Asks count unique blocks, so the
    epsilon schedule advances per new block. ``False``: every episode is asked, repeats included. Deterministic
    given the seed and the asks and tells.
    """

    def __init__(self, space: SearchSpace, *, seed: int = 0, budget: int | None = None,
                 schedule: Sequence[int] = SCHEDULE, epsilons: Sequence[float] = EPSILONS, alpha: float = 0.01,
                 gamma: float = 1.0, q_init: float = 0.5, shaping: bool = True, shaping_steps: str = "episode",
                 replay: int = 64, failure_reward: float | None = None,
                 objective_scale: float = 1.0, exploit_share: float | None = 0.6, reuse_results: bool = True,
                 max_redraws: int = 100) -> None:  # fmt: skip
        episodes = episodes_for(space, type(self).__name__.lower())
        if not 0 < alpha <= 1:
            raise ConfigError(f"blockqnn: alpha (the Q learning rate) must be in (0, 1], got {alpha}")
        if not 0 <= gamma <= 1:
            raise ConfigError(f"blockqnn: gamma must be in [0, 1], got {gamma}")
        if shaping_steps not in ("episode", "max"):
            raise ConfigError(f"blockqnn: shaping_steps is 'episode' or 'max', got {shaping_steps!r}")
        if not isinstance(replay, int) or replay < 0:
            raise ConfigError(f"blockqnn: replay must be an int >= 0 (episodes replayed per result), got {replay!r}")
        super().__init__(space, seed=seed)
        self.phases = epsilon_schedule(budget, schedule, epsilons, exploit=exploit_share)
        self.alpha, self.gamma, self.q_init = float(alpha), float(gamma), float(q_init)
        self.shaping, self.shaping_steps, self.replay = shaping, shaping_steps, replay
        if not isinstance(objective_scale, (int, float)) or not objective_scale > 0:
            raise ConfigError(f"blockqnn: objective_scale must be > 0, got {objective_scale!r}")
        self.failure_reward, self.objective_scale = failure_reward, float(objective_scale)
        self.episodes = episodes
        self.max_layers: int = episodes.max_steps
        self.Q: dict[tuple, dict[tuple, float]] = {}
        self._max: dict[tuple, float] = {}  # max_a Q(s, a) over the valid actions, kept up to date
        self._n_actions = {i: len(episodes.actions(i)) for i in range(1, self.max_layers + 2)}
        self.memory: list[tuple[list[tuple], float]] = []
        self.asked = 0
        self._replay_rng = random.Random(f"blockqnn-replay-{seed}")
        if not isinstance(max_redraws, int) or isinstance(max_redraws, bool) or max_redraws < 0:
            raise ConfigError(f"blockqnn: max_redraws must be an int >= 0, got {max_redraws!r}")
        self.reuse_results, self.max_redraws = bool(reuse_results), max_redraws
        self._results: dict[str, Result] = {}  # space key -> the told result (MetaQNN's replay dictionary)
        self._pending: set[str] = set()  # asked, not yet told
        self.reused = 0  # episodes learnt from a stored result instead of being asked

    # --- Q table ---------------------------------------------------------------------------------------------

    def q(self, state: tuple, action: tuple) -> float:
        """Q(state, action); ``q_init`` for a pair never updated."""
        row = self.Q.get(tuple(state))
        return row.get(tuple(action), self.q_init) if row else self.q_init

    def max_q(self, state: tuple) -> float:
        """max over the valid next layers of Q(state, a); 0 after the last index (no further action)."""
        state = tuple(state)
        if state in self._max:
            return self._max[state]
        return self.q_init if self._n_actions.get(state[0] + 1, 0) else 0.0

    def _set(self, state: tuple, action: tuple, value: float) -> None:
        row = self.Q.setdefault(state, {})
        old = row.get(action, self.q_init)
        row[action] = value
        cur = self._max.get(state, self.q_init)
        if value >= cur:
            self._max[state] = value
        elif old >= cur:  # the (or a) maximum went down: recompute
            best = max(row.values())
            if len(row) < self._n_actions[state[0] + 1]:
                best = max(best, self.q_init)
            self._max[state] = best

    def epsilon(self, n: int | None = None) -> float:
        """The epsilon of the ``n``-th ask (0-based; default the next one)."""
        n = self.asked if n is None else n
        for eps, count in self.phases:
            if n < count:
                return eps
            n -= count
        return self.phases[-1][0]

    # --- episodes --------------------------------------------------------------------------------------------

    def _episode(self, eps: float, rng: random.Random) -> list[tuple]:
        state, layers = self.episodes.start, []
        for index in range(1, self.max_layers + 1):
            acts = self.episodes.allowed(index, layers)
            if rng.random() < eps:
                action = rng.choice(acts)
            else:
                best = max(self.q(state, a) for a in acts)  # over the allowed actions only
                action = rng.choice([a for a in acts if self.q(state, a) >= best])
            layers.append(action)
            if self.episodes.is_terminal(action):
                break
            state = action
        return layers

    def _ask_one(self) -> Sample:
        eps = self.epsilon()
        sample = self.episodes.to_sample(self._episode(eps, self.rng))
        if self.reuse_results:
            for _ in range(self.max_redraws):
                key = self.space.key(sample)
                if key not in self._results and key not in self._pending:
                    break
                if key in self._results:  # known: learn it again from the stored result, spend no query
                    self._learn(sample, self._results[key])
                    self.reused += 1
                sample = self.episodes.to_sample(self._episode(eps, self.rng))
            self._pending.add(self.space.key(sample))
        self.asked += 1
        return sample

    def greedy(self) -> Sample:
        """The block the current Q table prefers (epsilon 0; ties broken by a fixed seed, not the ask stream)."""
        return self.episodes.to_sample(self._episode(0.0, random.Random(f"blockqnn-greedy-{self.seed}")))

    def update(self, sample: Sample, reward: float) -> None:
        """One backward Q update over the episode of ``sample`` with final reward ``reward``."""
        self._update(self.episodes.to_actions(sample), reward)

    def _update(self, actions: list[tuple], reward: float) -> None:
        n = len(actions)
        steps = n if self.shaping_steps == "episode" else self.max_layers
        r_mid = reward / steps if self.shaping else 0.0
        states = [self.episodes.start, *actions[:-1]]
        a = self.alpha
        s, act = states[-1], actions[-1]
        self._set(s, act, (1 - a) * self.q(s, act) + a * reward)
        for t in range(n - 2, -1, -1):
            s, act = states[t], actions[t]
            target = r_mid + self.gamma * self.max_q(states[t + 1])
            self._set(s, act, (1 - a) * self.q(s, act) + a * target)

    def _base_reward(self, result: Result) -> float | None:
        """The told objective, ``failure_reward`` for a failed trial, or None (not learnt from)."""
        if ok(result):
            return self.objective_scale * float(result["objective"])
        return None if self.failure_reward is None else float(self.failure_reward)

    def _rewards(self) -> Sequence[float] | None:
        """Rewards to learn the memory with instead of the stored ones (None: the stored ones; IRLAS's hook)."""
        return None

    def tell(self, sample: Sample, result: Result) -> None:
        key = self.space.key(sample)
        self._pending.discard(key)
        self._results[key] = result
        self._learn(sample, result)

    def _learn(self, sample: Sample, result: Result) -> None:
        """Add the episode to the replay memory with its reward and replay (a failure without a reward: nothing)."""
        reward = self._base_reward(result)
        if reward is None:
            return
        self.memory.append((self.episodes.to_actions(sample), reward))
        rewards = self._rewards()
        if self.replay == 0:
            self._update(self.memory[-1][0], reward if rewards is None else rewards[-1])
            return
        for _ in range(min(len(self.memory), self.replay)):
            i = self._replay_rng.randrange(len(self.memory))
            layers, r = self.memory[i]
            self._update(layers, r if rewards is None else rewards[i])

    def state_dict(self) -> dict[str, Any]:
        """The Q table as JSON-able rows ``[state, action, value]`` (for saving or inspection)."""
        return {"Q": [[list(s), list(act), v] for s, row in self.Q.items() for act, v in row.items()]}
