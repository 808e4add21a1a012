"""BlockQNN: the NSC space, the tabular Q-learner and the short-training evaluator (arXiv 1708.05552)."""

from __future__ import annotations

import json
import math
import pickle
import random
import statistics
from pathlib import Path

import pytest
import torch

from leanvision.errors import ConfigError
from leanvision.profile import profile
from leanvision.search import create_evaluator, create_space, create_strategy, search
from leanvision.search.evaluators.train import calibrate_reward, redefined_reward
from leanvision.search.spaces.nsc import (
    RESNEXT_EXPERT,
    NSCBlock,
    density,
    expert_block,
    flops,
    leaves,
    synthetic_reward,
)
from leanvision.search.strategies.qlearning import START, epsilon_schedule, exploit_share


@pytest.fixture
def space():
    return create_space("nsc", max_layers=6)


# --- the space -------------------------------------------------------------------------------------------------

BAD = [
    ([], "non-empty"),
    ([[1, 1, 3, 0, 0]] * 7, "at most max_layers=6"),
    ([[1, 1, 3, 0]], "5 integers"),
    ([[1, 1, True, 0, 0]], "5 integers"),
    ([[1, 1, 3, 0, 0], [3, 1, 3, 1, 0]], "index must be 2"),
    ([[1, 8, 0, 0, 0]], "type 8"),
    ([[1, 7, 0, 0, 0]], "cannot come first"),
    ([[1, 1, 3, 0, 0], [2, 7, 0, 0, 0], [3, 1, 3, 0, 0]], "must be the last"),
    ([[1, 1, 3, 0, 0], [2, 7, 0, 1, 0]], "a terminal is"),
    ([[1, 1, 2, 0, 0]], "kernel 2 is not allowed for a conv"),
    ([[1, 2, 5, 0, 0]], "kernel 5 is not allowed for a max-pool"),
    ([[1, 4, 3, 0, 0]], "kernel 3 is not allowed for a identity"),
    ([[1, 1, 3, 1, 0]], "pred1 must be an earlier layer"),
    ([[1, 1, 3, -1, 0]], "pred1 must be an earlier layer"),
    ([[1, 1, 3, 0, 0], [2, 5, 0, 0, 2]], "pred2 must be an earlier layer"),
    ([[1, 1, 3, 0, 0], [2, 6, 0, 1, 1]], "two different inputs"),
    ([[1, 1, 3, 0, 1]], "set pred2 to 0"),
    ([[1, 5, 0, 0, 0]], "two different inputs"),  # an add at index 1 has only the block input
]


@pytest.mark.parametrize(("layers", "message"), BAD)
def test_validate_names_the_broken_rule(space, layers, message) -> None:
    with pytest.raises(ConfigError, match=message):
        space.validate({"layers": layers})


def test_validate_shape_of_the_sample(space) -> None:
    with pytest.raises(ConfigError, match="a sample is"):
        space.validate({"layers": [[1, 1, 3, 0, 0]], "extra": 1})
    with pytest.raises(ConfigError, match="a sample is"):
        space.validate([[1, 1, 3, 0, 0]])
    with pytest.raises(ConfigError, match="type 5 is not one of"):
        create_space("nsc", types=[1, 2, 3, 4, 7]).validate({"layers": [[1, 1, 3, 0, 0], [2, 5, 0, 0, 1]]})
    with pytest.raises(ConfigError, match="kernel 5"):
        create_space("nsc", kernels=[1, 3]).validate({"layers": [[1, 1, 5, 0, 0]]})


def test_space_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="max_layers"):
        create_space("nsc", max_layers=0)
    with pytest.raises(ConfigError, match="kernels"):
        create_space("nsc", kernels=[7])
    with pytest.raises(ConfigError, match="include one of 1-4"):
        create_space("nsc", types=[5, 6, 7])


def test_valid_blocks_pass(space) -> None:
    blocks = [
        RESNEXT_EXPERT,
        {"layers": [[1, 1, 3, 0, 0], [2, 5, 0, 1, 0]]},  # pred order free, no terminal needed
        {"layers": [[1, 1, 3, 0, 0]] + [[i, 6, 0, 0, i - 1] for i in range(2, 7)]},  # T layers
    ]
    for block in blocks:
        assert space.validate(block) is None  # accepted: validate raises ConfigError on a bad block


def test_actions_follow_the_index(space) -> None:
    assert space.actions(1) == tuple(a for a in space.actions(1) if a[1] in (1, 2, 3, 4))  # no add, concat, end
    assert len(space.actions(1)) == 3 + 2 + 2 + 1
    structural = create_space("nsc", max_layers=6, require_conv=False)
    for i in range(1, 7):
        acts = space.actions(i)
        assert len(set(acts)) == len(acts)
        assert all(a[0] == i and a[3] < i and a[4] < i for a in acts)
        assert all(a[3] < a[4] for a in acts if a[1] in (5, 6))
        assert ((i, 7, 0, 0, 0) in acts) == (i >= 2)
        for a in acts:  # the actions' structure: the conv rule is checked on its own below
            structural.validate({"layers": [[j, 4, 0, 0, 0] for j in range(1, i)] + [list(a)]})
    assert space.actions(7) == ()


def test_sample_is_always_valid(space) -> None:
    rng = random.Random(0)
    lengths, types = set(), set()
    for _ in range(2000):
        s = space.sample(rng)
        space.validate(s)
        lengths.add(len(s["layers"]))
        types.update(row[1] for row in s["layers"])
    assert {2, 6} <= lengths  # terminals anywhere from index 2, and full T-layer blocks
    assert types == set(range(1, 8))


def test_mutate_stays_valid_and_changes_one_index(space) -> None:
    rng = random.Random(1)
    s = space.sample(rng)
    changed = 0
    for _ in range(2000):
        child = space.mutate(s, rng)
        space.validate(child)
        a, b = s["layers"], child["layers"]
        diff = [i for i in range(min(len(a), len(b))) if a[i] != b[i]]
        assert len(diff) == 1  # one entry changed; a new terminal only cuts or extends the tail
        changed += space.key(child) != space.key(s)
        s = child
    assert changed > 1500


def test_key_ignores_terminal_and_input_order(space) -> None:
    a = {"layers": [[1, 1, 3, 0, 0], [2, 5, 0, 1, 0], [3, 7, 0, 0, 0]]}
    b = {"layers": [[1, 1, 3, 0, 0], [2, 5, 0, 0, 1]]}
    assert space.key(a) == space.key(b)
    assert space.key(a) != space.key({"layers": [[1, 1, 5, 0, 0], [2, 5, 0, 0, 1]]})
    assert space.params() == {}


BLOCKS = [
    {"layers": [[1, 1, 3, 0, 0], [2, 7, 0, 0, 0]]},
    {"layers": [[1, 1, 3, 0, 0], [2, 1, 5, 0, 0], [3, 6, 0, 1, 2], [4, 2, 3, 0, 0], [5, 3, 1, 3, 0]]},
    {"layers": [[1, 4, 0, 0, 0], [2, 2, 3, 0, 0], [3, 5, 0, 1, 2], [4, 1, 1, 0, 0]]},
    {"layers": [[1, 3, 3, 0, 0]]},  # no convolution at all
    RESNEXT_EXPERT,
]


@pytest.mark.parametrize("block", BLOCKS)
def test_build_forward_backward(block) -> None:
    space = create_space("nsc", max_layers=6, require_conv=False)  # the conv-free block builds when allowed
    net = space.build(block, channels=4, N=2, num_classes=7, in_chans=1)
    x = torch.randn(2, 1, 16, 16)
    y = net(x)
    assert y.shape == (2, 7)
    y.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("in_chs", [8, 3])
def test_flops_equal_the_profilers_macs(block, in_chs) -> None:
    blk = NSCBlock(block, in_chs, 8)
    macs = profile(blk, torch.randn(1, in_chs, 12, 12)).macs
    assert flops(block, 8, 12, in_channels=in_chs) == macs


def test_flops_by_hand() -> None:
    # conv3x3 + conv5x5 + concat (1x1 from 2F) + max-pool + avg-pool; leaves: the avg-pool (5) and the max-pool (4).
    f, hw = 8, 12 * 12
    want = f * f * 9 * hw + f * f * 25 * hw + 2 * f * f * hw + 2 * f * f * hw
    assert leaves(BLOCKS[1]) == [4, 5]
    assert flops(BLOCKS[1], 8, 12) == want
    assert flops(BLOCKS[3], 8, 12) == 0


def test_density_by_hand() -> None:
    # nodes: input + 3 layers = 4; edges: conv 1 + add 2 + concat 2 = 5
    block = {"layers": [[1, 1, 3, 0, 0], [2, 5, 0, 0, 1], [3, 6, 0, 1, 2], [4, 7, 0, 0, 0]]}
    assert density(block) == pytest.approx(5 / 4)
    assert density(RESNEXT_EXPERT) == pytest.approx(5 / 5)


def test_expert_block_is_a_copy() -> None:
    e = expert_block()
    e["layers"][0][2] = 5
    assert RESNEXT_EXPERT["layers"][0][2] == 1


def test_synthetic_reward_optimum() -> None:
    best = {"layers": [[1, 1, 3, 0, 0], [2, 5, 0, 0, 1], [3, 1, 1, 0, 0], [4, 6, 0, 1, 3], [5, 7, 0, 0, 0]]}
    assert synthetic_reward(best) == pytest.approx(1.0)
    assert synthetic_reward({"layers": [[1, 1, 3, 0, 0], [2, 5, 0, 0, 1]]}) == pytest.approx((0.3 - 0.1 + 0.3) / 0.6)
    worst = {"layers": [[i, 4, 0, 0, 0] for i in range(1, 7)]}
    assert synthetic_reward(worst) == pytest.approx(0.0)


# --- the Q-learner ---------------------------------------------------------------------------------------------

EPISODE = {"layers": [[1, 1, 3, 0, 0], [2, 7, 0, 0, 0]]}


@pytest.mark.parametrize(
    ("opts", "first"),
    [
        # Q(s1, end) = 0.99*0.5 + 0.01*1 = 0.505; Q(s0, a1) = 0.99*0.5 + 0.01*(r1 + max_a Q(s1, a))
        ({"shaping": True}, 0.495 + 0.01 * (1 / 2 + 0.505)),  # r1 = r / 2 steps
        ({"shaping": True, "shaping_steps": "max"}, 0.495 + 0.01 * (1 / 6 + 0.505)),  # r1 = r / T
        ({"shaping": False}, 0.495 + 0.01 * 0.505),
    ],
)
def test_q_update_by_hand(space, opts, first) -> None:
    q = create_strategy("blockqnn", space, seed=0, replay=0, **opts)
    q.tell(EPISODE, {"status": "ok", "objective": 1.0})
    s1, a1, end = (1, 1, 3, 0, 0), (1, 1, 3, 0, 0), (2, 7, 0, 0, 0)
    assert q.q(s1, end) == pytest.approx(0.505)
    assert q.q(START, a1) == pytest.approx(first)
    assert q.max_q(s1) == pytest.approx(0.505)
    assert q.q(START, (1, 1, 1, 0, 0)) == 0.5  # untouched pairs keep the initial value
    # a second update reads the first one's values
    q.tell(EPISODE, {"status": "ok", "objective": 1.0})
    assert q.q(s1, end) == pytest.approx(0.99 * 0.505 + 0.01)


def test_max_q_tracks_decreases(space) -> None:
    q = create_strategy("blockqnn", space, seed=0, replay=0, shaping=False)
    for _ in range(3):
        q.tell(EPISODE, {"status": "ok", "objective": 0.0})
    s1 = (1, 1, 3, 0, 0)
    assert q.q(s1, (2, 7, 0, 0, 0)) < 0.5
    assert q.max_q(s1) == 0.5  # the other actions are still at 0.5
    small = create_space("nsc", max_layers=2, kernels=[3], types=[1, 7])
    q = create_strategy("blockqnn", small, seed=0, replay=0, shaping=False)
    for a in small.actions(2):
        q.update({"layers": [[1, 1, 3, 0, 0], list(a)]}, 0.1)
    assert q.max_q(s1) == pytest.approx(max(q.q(s1, a) for a in small.actions(2)))
    assert q.max_q(s1) < 0.5


def test_epsilon_schedule_lengths() -> None:
    phases = epsilon_schedule(2000)
    assert [e for e, _ in phases] == pytest.approx([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    counts = [n for _, n in phases]
    assert sum(counts) == 2000
    assert counts == [1068, 79, 79, 79, 112, 112, 112, 112, 112, 135]
    assert [n for _, n in epsilon_schedule()] == [95, 7, 7, 7, 10, 10, 10, 10, 10, 12]
    assert sum(n for _, n in epsilon_schedule(40)) == 40
    with pytest.raises(ConfigError, match="same, non-zero length"):
        epsilon_schedule(10, [1, 2], [1.0])


def test_epsilon_follows_the_asks(space) -> None:
    q = create_strategy("blockqnn", space, seed=0, budget=178, exploit_share=None)
    assert q.epsilon(0) == 1.0 and q.epsilon(94) == 1.0 and q.epsilon(95) == 0.9
    assert q.epsilon(177) == pytest.approx(0.1) and q.epsilon(10_000) == pytest.approx(0.1)
    q.ask(96)
    assert q.epsilon() == 0.9


def _drive(strategy, n: int) -> list[str]:
    keys = []
    for _ in range(n):
        s = strategy.ask(1)[0]
        strategy.space.validate(s)
        keys.append(strategy.space.key(s))
        strategy.tell(s, {"status": "ok", "objective": synthetic_reward(s)})
    return keys


def test_seeded_determinism(space) -> None:
    a = _drive(create_strategy("blockqnn", space, seed=3, budget=60), 60)
    b = _drive(create_strategy("blockqnn", space, seed=3, budget=60), 60)
    c = _drive(create_strategy("blockqnn", space, seed=4, budget=60), 60)
    assert a == b
    assert a != c


def test_failed_results(space) -> None:
    q = create_strategy("blockqnn", space, seed=0)
    q.tell(EPISODE, {"status": "failed", "objective": None})
    assert q.memory == [] and q.Q == {}
    q = create_strategy("blockqnn", space, seed=0, failure_reward=0.0)
    q.tell(EPISODE, {"status": "failed", "objective": None})
    assert len(q.memory) == 1 and q.q((1, 1, 3, 0, 0), (2, 7, 0, 0, 0)) < 0.5


def test_blockqnn_needs_blocks_or_choices() -> None:
    class Opaque:
        name = "opaque"

        def params(self):
            return {}

    with pytest.raises(ConfigError, match=r"'nsc' space .* or a space of categorical choices"):
        create_strategy("blockqnn", Opaque())
    with pytest.raises(ConfigError, match="shaping_steps"):
        create_strategy("blockqnn", create_space("nsc"), shaping_steps="all")


# --- the Q-learner on a space of categorical choices ------------------------------------------------------------


def _choice_run(strategy: str, seed: int, budget: int, **ev):
    space = create_space("synthetic")
    opts = {"budget": budget} if strategy == "blockqnn" else {}
    strat = create_strategy(strategy, space, seed=seed, **opts)
    return search(space, strat, create_evaluator("synthetic", seed=seed, **ev), budget=budget)


def test_choice_space_episode_by_hand() -> None:
    space = create_space("synthetic", dims=2, options=3)
    q = create_strategy("blockqnn", space, seed=0, replay=0)
    assert q.max_layers == 2 and q.episodes.actions(1) == ((1, 0), (1, 1), (1, 2))
    q.tell({"x0": 2, "x1": 0}, {"status": "ok", "objective": 1.0})
    # state (step, previous value): Q((1, 2), (2, 0)) = 0.505; Q((0, None), (1, 2)) = 0.495 + 0.01 (1/2 + 0.505)
    assert q.q((1, 2), (2, 0)) == pytest.approx(0.505)
    assert q.q((0, None), (1, 2)) == pytest.approx(0.495 + 0.01 * (0.5 + 0.505))
    assert q.max_q((2, 0)) == 0.0  # after the last decision
    assert [0, None] in [row[0] for row in q.state_dict()["Q"]]
    json.dumps(q.state_dict())


def test_choice_space_respected_and_seeded() -> None:
    space = create_space("synthetic")
    a, b, c = (_choice_run("blockqnn", s, 60) for s in (0, 0, 1))
    for t in a.trials:
        space.validate(t.sample)
    trace = [[(t.trial, json.dumps(t.sample), t.objective) for t in h.trials] for h in (a, b, c)]
    assert trace[0] == trace[1] and trace[0] != trace[2]
    nb = create_space("nasbench201")
    strat = create_strategy("blockqnn", nb, seed=0, budget=20)
    for s in strat.ask(20):
        nb.validate(s)
    nb.validate(strat.greedy())


def _drive_choices(strategy, n: int) -> list[str]:
    keys = []
    for _ in range(n):
        s = strategy.ask(1)[0]
        keys.append(strategy.space.key(s))
        strategy.tell(s, {"status": "ok", "objective": float(sum(s.values()))})
    return keys


def test_repeats_are_learnt_from_the_stored_result_not_asked() -> None:
    """MetaQNN's replay dictionary: a block already told is learnt again, never asked twice; pending ones redrawn."""
    space = create_space("synthetic", dims=2, options=3)  # 9 cells: repeats are frequent
    q = create_strategy("blockqnn", space, seed=0, budget=9, max_redraws=10_000)
    keys = _drive_choices(q, 9)
    assert len(set(keys)) == len(keys) == space.size()  # every cell once
    assert q.reused > 0 and len(q.memory) == 9 + q.reused  # each reuse joined the replay memory
    pending = create_strategy("blockqnn", space, seed=1, budget=9, max_redraws=10_000).ask(9)  # nothing told yet
    assert len({space.key(x) for x in pending}) == 9
    old = create_strategy("blockqnn", space, seed=0, budget=9, reuse_results=False)
    assert len(set(_drive_choices(old, 9))) < 9 and old.reused == 0  # the plain rule spends queries on repeats


def test_repeats_are_asked_after_max_redraws() -> None:
    space = create_space("synthetic", dims=1, options=2)
    q = create_strategy("blockqnn", space, seed=0, max_redraws=5)
    keys = _drive_choices(q, 2)
    before = q.reused
    keys += _drive_choices(q, 1)  # only 2 cells exist: the third ask is a repeat, after 5 redraws learnt again
    assert len(set(keys)) == 2 and len(keys) == 3 and q.reused - before == 5
    with pytest.raises(ConfigError, match="max_redraws"):
        create_strategy("blockqnn", space, max_redraws=-1)


def test_choice_space_failed_trials() -> None:
    h = _choice_run("blockqnn", 0, 40, raise_on={"x0": 1})
    assert len(h) == 40 and h.failed() and all(t.sample["x0"] == 1 for t in h.failed())
    assert h.best().objective is not None


def test_choice_space_beats_random() -> None:
    """Median over 5 seeds at 150 trials: the best objective, and the mean objective of the last 50 trials."""
    runs = {name: [_choice_run(name, s, 150) for s in range(5)] for name in ("blockqnn", "random")}
    best = {n: statistics.median(h.best().objective for h in hs) for n, hs in runs.items()}
    last = {n: statistics.median(statistics.mean(t.objective for t in h.trials[-50:]) for h in hs)
            for n, hs in runs.items()}  # fmt: skip
    assert best["blockqnn"] > best["random"]
    assert last["blockqnn"] > last["random"] + 3


def test_qlearning_beats_random_on_the_synthetic_mdp(space) -> None:
    n = 400
    last_q, last_r = [], []
    for seed in (0, 1):
        q = create_strategy("blockqnn", space, seed=seed, budget=n)
        rnd = create_strategy("blockqnn", space, seed=seed, schedule=[1], epsilons=[1.0], replay=0)
        got_q, got_r = [], []
        for _ in range(n):
            for strat, got in ((q, got_q), (rnd, got_r)):
                s = strat.ask(1)[0]
                r = synthetic_reward(s)
                got.append(r)
                strat.tell(s, {"status": "ok", "objective": r})
        last_q.append(statistics.mean(got_q[-100:]))
        last_r.append(statistics.mean(got_r[-100:]))
        assert synthetic_reward(q.greedy()) > statistics.mean(got_r)
    assert min(last_q) > max(last_r) + 0.1


def test_search_driver_runs_blockqnn(space) -> None:
    strat = create_strategy("blockqnn", space, seed=0, budget=30)
    hist = search(space, strat, lambda s: {"objective": synthetic_reward(s)}, budget=30)
    assert len(hist) == 30 and len(strat.memory) == 30 + strat.reused  # repeats learnt again, not asked
    assert len({space.key(t.sample) for t in hist.trials}) == 30
    assert math.isfinite(hist.best().objective)


# --- the evaluator ---------------------------------------------------------------------------------------------


def test_short_training_evaluator_on_a_tiny_subset(space) -> None:
    ev = create_evaluator("train_cifar", dataset="digits", subset=200, val_size=0.2, val_subset=100, epochs=1,
                          channels=4, report_test=True, test_subset=100)  # fmt: skip
    ev = pickle.loads(pickle.dumps(ev))
    threads = torch.get_num_threads()
    out = ev(RESNEXT_EXPERT)
    assert torch.get_num_threads() == threads
    assert set(out) == {"objective", "val_acc", "flops", "density", "params", "train_s", "report"}
    assert 0 <= out["val_acc"] <= 1 and 0 <= out["report"]["test_acc"] <= 1
    assert out["flops"] == flops(RESNEXT_EXPERT, 4, 8) and out["density"] == density(RESNEXT_EXPERT)
    ref = space.median_flops(4, 8)
    want = out["val_acc"] - math.log(out["flops"] / ref) - 8 * math.log(out["density"])
    assert out["objective"] == pytest.approx(want)
    assert out["params"] == sum(p.numel() for p in space.build(RESNEXT_EXPERT, channels=4, in_chans=1).parameters())
    again = ev(RESNEXT_EXPERT)  # seeded: the same numbers
    assert again["val_acc"] == out["val_acc"]
    # a block without convolutions is refused before any training (the space's require_conv, on by default)
    with pytest.raises(ConfigError, match="no convolution"):
        ev({"layers": [[1, 3, 3, 0, 0]]})


def test_evaluator_options_are_checked() -> None:
    with pytest.raises(Exception, match="unknown search space"):
        create_evaluator("train_cifar", space="nope")
    with pytest.raises(ConfigError, match="val_size"):
        create_evaluator("train_cifar", val_size=0)
    with pytest.raises(ConfigError, match="no option"):
        create_evaluator("train_cifar", epoch=1)
    ev = create_evaluator("train_cifar", data_dir=Path("/data"), space_kwargs={"max_layers": 4})
    assert json.loads(json.dumps(ev.config))["data_dir"] == "/data"  # journal headers store it


# --- the reward, the validity rule, the exploitation share ---------------------------------------------------


def test_redefined_reward_matches_a_hand_computation_in_each_unit() -> None:
    # acc 62% = 0.62; a block of 4.0 MMACs against a 1.0 MMAC reference; density 1.5 edges per node
    percent = redefined_reward(0.62, 4.0e6, 1.5, flops_ref=1.0e6, acc_scale=100.0)
    assert percent == pytest.approx(62.0 - 1.3862944 - 8 * 0.4054651)  # 57.3700 points
    assert percent == pytest.approx(57.36999, abs=1e-4)
    fraction = redefined_reward(0.62, 4.0e6, 1.5, flops_ref=1.0e6)
    assert fraction == pytest.approx(0.62 - 1.3862944 - 3.2437209)
    # the FLOPs unit cancels: MACs in G with the reference in G give the same reward
    assert redefined_reward(0.62, 4.0e-3, 1.5, flops_ref=1.0e-3, acc_scale=100.0) == pytest.approx(percent)
    assert redefined_reward(0.5, 2.0, None, mu=0.5, rho=99.0) == pytest.approx(0.5 - 0.5 * math.log(2.0))


def test_calibration_recovers_known_constants_with_either_sign() -> None:
    rng = random.Random(0)
    acc = [rng.uniform(0.3, 0.6) for _ in range(16)]
    fl = [rng.uniform(1e6, 3e7) for _ in range(16)]
    dens = [rng.uniform(1.0, 1.8) for _ in range(16)]
    # the target rewards FLOPs (mu < 0) and penalises density (rho > 0), on a scale of 2 with an offset
    target = [
        2.0 * (100 * a + 3.0 * math.log(f / 1e6) - 5.0 * math.log(d)) + 7.0
        for a, f, d in zip(acc, fl, dens, strict=True)
    ]
    fit = calibrate_reward(acc, fl, dens, target, flops_ref=1e6, acc_scale=100.0)
    assert fit.mu == pytest.approx(-3.0) and fit.rho == pytest.approx(5.0) and fit.acc_weight == pytest.approx(2.0)
    assert fit.spearman_fit == pytest.approx(1.0) and (fit.paper_mu, fit.paper_rho) == (1.0, 8.0)
    assert fit.spearman_paper < fit.spearman_fit
    # predictions are on the target's scale (intercept 7, weight 2), whatever the fit's reward scale
    assert fit.predict(acc[0], fl[0], dens[0]) == pytest.approx(target[0])
    with pytest.raises(ConfigError, match=">= 5 blocks"):
        calibrate_reward(acc[:3], fl[:3], dens[:3], target[:3])


def test_blocks_without_a_convolution_are_refused(space) -> None:
    with pytest.raises(ConfigError, match=r"no convolution.*require_conv=False"):
        space.validate({"layers": [[1, 2, 3, 0, 0], [2, 5, 0, 0, 1], [3, 7, 0, 0, 0]]})
    create_space("nsc", require_conv=False).validate({"layers": [[1, 2, 3, 0, 0], [2, 7, 0, 0, 0]]})
    with pytest.raises(ConfigError, match="require_conv needs type 1"):
        create_space("nsc", types=[2, 4, 7])
    rng = random.Random(0)
    samples = [space.sample(rng) for _ in range(300)]
    for s in samples:
        space.validate(s)
    mutated = [space.mutate(s, rng) for s in samples]
    for s in mutated:
        space.validate(s)
    q = create_strategy("blockqnn", space, seed=0, budget=300, exploit_share=None)  # all random at first
    for s in q.ask(300):
        space.validate(s)
    free = create_space("nsc", require_conv=False)
    assert any(all(r[1] != 1 for r in free.sample(rng)["layers"]) for _ in range(300))


@pytest.mark.parametrize("budget", [5, 12, 40, 60, 100, 178, 200, 2000])
def test_epsilon_schedule_leaves_most_decisions_to_exploitation(budget) -> None:
    phases = epsilon_schedule(budget, exploit=0.6)
    counts = [n for _, n in phases]
    assert sum(counts) == budget and exploit_share(phases) >= 0.6
    assert [e for e, _ in phases] == pytest.approx([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    assert counts[0] >= 1 and counts[0] == max(counts[:-1]) and counts[-1] == max(counts)  # the paper's shape
    assert exploit_share(epsilon_schedule(budget)) < 0.35  # the paper's own proportions exploit ~25%
    nsc_q = create_strategy("blockqnn", create_space("nsc"), budget=budget)
    cells = create_strategy("blockqnn", create_space("nasbench201"), budget=budget)
    assert nsc_q.phases == cells.phases == phases
    with pytest.raises(ConfigError, match="exploit must be a share"):
        epsilon_schedule(budget, exploit=0.95)
