"""IRLAS: topology features, feature counts, the projection IRL step, the mirror stimuli function and the strategy
(arXiv 1812.05285)."""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from leanvision.errors import ConfigError
from leanvision.search import Journal, create_evaluator, create_space, create_strategy, search
from leanvision.search.spaces.nasbench201 import parse_arch
from leanvision.search.spaces.nsc import RESNEXT_EXPERT, expert_block, synthetic_reward
from leanvision.search.strategies.irlas import (
    NB201_FEATURES,
    NSC_FEATURES,
    RESNET_CELL,
    MirrorStimuli,
    TopologyFeatures,
    branch_count,
    concat_count,
    depth_irregularity,
    feature_counts,
    has_skip,
    learn_msf,
    nb201_state_features,
    nsc_state_features,
    projection_step,
    top_blocks,
)

# conv3x3 <- in; concat(in, 1); add(1, 2); max-pool <- in; terminal
HAND = {"layers": [[1, 1, 3, 0, 0], [2, 6, 0, 1, 0], [3, 5, 0, 2, 1], [4, 2, 3, 0, 0], [5, 7, 0, 0, 0]]}


def _on(names: tuple[str, ...], row: np.ndarray) -> set[str]:
    return {n for n, v in zip(names, row, strict=True) if v}


@pytest.fixture
def nsc():
    return create_space("nsc", max_layers=6)


# --- features ----------------------------------------------------------------------------------------------------


def test_nsc_features_by_hand() -> None:
    phi = nsc_state_features(HAND, max_layers=6)
    assert phi.shape == (6, len(NSC_FEATURES)) and set(np.unique(phi)) <= {0.0, 1.0}
    want = [
        {"conv", "pred1 = previous layer", "pred1 = block input", "fan-out >= 2"},  # read by layers 2 and 3
        {"concat", "pred1 = block input", "pred2 = previous layer", "fan-out 1"},  # inputs ordered (0, 1)
        {"add", "pred2 = previous layer", "fan-out 0 (to the block output)"},  # (1, 2): 1 is not index 3 - 1
        {"pool", "pred1 = block input", "long skip (an input <= index - 3)", "fan-out 0 (to the block output)"},
        {"terminal"},
        {"terminal"},  # padding up to max_layers
    ]
    assert [_on(NSC_FEATURES, r) for r in phi] == want
    # a one-input layer's unused pred2 (0) is not "pred2 = block input"; kernels do not matter
    assert (
        nsc_state_features({"layers": [[1, 1, 5, 0, 0]]}).tolist()
        == nsc_state_features({"layers": [[1, 1, 1, 0, 0]]}).tolist()
    )
    assert not nsc_state_features({"layers": [[1, 1, 5, 0, 0], [2, 4, 0, 1, 0]]})[:, 9].any()


def test_feature_counts_of_a_two_layer_block_by_hand() -> None:
    block = {"layers": [[1, 1, 3, 0, 0], [2, 5, 0, 0, 1]]}  # conv, then add it back to the input
    conv = np.zeros(len(NSC_FEATURES))
    conv[[0, 6, 7, 12]] = 1  # conv, pred1 = previous (0) = block input, fan-out 1
    add = np.zeros(len(NSC_FEATURES))
    add[[3, 7, 8, 11]] = 1  # add, pred1 = block input, pred2 = previous, fan-out 0
    end = np.zeros(len(NSC_FEATURES))
    end[5] = 1
    mu = feature_counts(nsc_state_features(block), 0.9)
    np.testing.assert_allclose(mu, conv + 0.9 * add)
    padded = feature_counts(nsc_state_features(block, max_layers=4), 0.9)
    np.testing.assert_allclose(padded, conv + 0.9 * add + (0.81 + 0.729) * end)
    f = TopologyFeatures(create_space("nsc", max_layers=4), gamma=0.5)
    np.testing.assert_allclose(f.counts(block), conv + 0.5 * add + (0.25 + 0.125) * end)
    np.testing.assert_allclose(TopologyFeatures(create_space("nsc", max_layers=4), pad=False).counts(block),
                               conv + 0.9 * add)  # fmt: skip


def test_nb201_features_by_hand() -> None:
    phi = nb201_state_features(RESNET_CELL)
    assert phi.shape == (7, len(NB201_FEATURES))
    edges = [_on(NB201_FEATURES, r) for r in phi[:6]]
    assert edges == [{"conv", "live edge"}, {"none"}, {"conv", "live edge"}, {"skip", "live edge"}, {"none"},
                     {"skip", "live edge"}]  # fmt: skip
    assert _on(NB201_FEATURES, phi[6]) == {"residual (a skip-only path and a conv path to the output)", "conv depth 2"}
    # the conv chain of this cell never reaches the output: its edges are dead and the cell is a plain skip
    dead_chain = nb201_state_features("|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|")
    assert not dead_chain[0, 4] and not dead_chain[2, 4] and _on(NB201_FEATURES, dead_chain[6]) == {"conv depth 0"}
    nothing = nb201_state_features("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    assert _on(NB201_FEATURES, nothing[6]) == {"dead cell (no path to the output)"}
    assert not nothing[:, 4].any()
    # kernel sizes are not topology
    np.testing.assert_array_equal(nb201_state_features(RESNET_CELL.replace("3x3", "1x1")), phi)


def test_topology_statistics_by_hand() -> None:
    assert concat_count(HAND) == 1 + 1  # the concat layer and the output (layers 3 and 4)
    assert concat_count(RESNEXT_EXPERT) == 0
    assert branch_count(RESNEXT_EXPERT) == 1  # the input feeds layer 1 and the add
    assert branch_count(HAND) == 2 + 1  # the input feeds 1, 2 and 4; layer 1 feeds 2 and 3
    assert depth_irregularity(RESNEXT_EXPERT) == 0.0
    assert depth_irregularity(HAND) == pytest.approx(1.0)  # output layers at depths 3 and 1
    assert has_skip(RESNEXT_EXPERT) and has_skip(HAND)  # add(1, 2) with 2 computed from 1
    assert has_skip({"layers": [[1, 4, 0, 0, 0], [2, 1, 3, 0, 0], [3, 5, 0, 1, 2]]})  # identity(x) + conv(x)
    assert not has_skip({"layers": [[1, 1, 3, 0, 0], [2, 1, 1, 0, 0], [3, 5, 0, 1, 2]]})  # two parallel convs


# --- the projection method ---------------------------------------------------------------------------------------


def test_projection_step_on_a_2d_toy_by_hand() -> None:
    mu_e, mu_bar = np.array([1.0, 1.0]), np.array([0.0, 0.0])
    # c = (2, 0)·(1, 1) / |(2, 0)|^2 = 0.5: the foot of the perpendicular from mu_E is (1, 0)
    np.testing.assert_allclose(projection_step(mu_e, mu_bar, np.array([2.0, 0.0])), [1.0, 0.0])
    # c = 0.5 / 0.25 = 2 lies past the new point: clipped to the segment's end, or on the line without clipping
    np.testing.assert_allclose(projection_step(mu_e, mu_bar, np.array([0.5, 0.0])), [0.5, 0.0])
    np.testing.assert_allclose(projection_step(mu_e, mu_bar, np.array([0.5, 0.0]), clip=False), [1.0, 0.0])
    np.testing.assert_allclose(projection_step(mu_e, mu_bar, mu_bar), mu_bar)  # nothing new
    ms = MirrorStimuli(mu_e, mu_bar)
    np.testing.assert_allclose(ms.w, [1 / math.sqrt(2)] * 2)
    assert ms.margin == pytest.approx(math.sqrt(2))
    ms.step(np.array([2.0, 0.0]))
    np.testing.assert_allclose(ms.w, [0.0, 1.0])  # (mu_E - mu_bar) / |.| = (0, 1) / 1
    assert ms.margins == pytest.approx([math.sqrt(2), 1.0])
    assert ms(np.array([3.0, 2.0])) == pytest.approx(2.0)
    np.testing.assert_allclose(ms(np.array([[3.0, 2.0], [0.0, -1.0]])), [2.0, -1.0])


def test_learn_msf_finds_the_max_margin_direction() -> None:
    # candidates (0, 0), (2, 0), (0, 2); expert (2, 2): the nearest hull point is (1, 1), w = (1, 1) / sqrt 2
    # (Gilbert's algorithm zig-zags towards it: sublinear, hence the tolerance)
    cands = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    ms = learn_msf(np.array([2.0, 2.0]), cands, iterations=500)
    np.testing.assert_allclose(ms.w, [1 / math.sqrt(2)] * 2, atol=1e-2)
    assert ms.margin == pytest.approx(math.sqrt(2), abs=1e-2)
    assert min(ms(np.array([2.0, 2.0])) - ms(cands)) == pytest.approx(math.sqrt(2), abs=1e-2)  # the max margin
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(ms.margins))  # never worse


def test_expert_has_the_highest_msf_after_irl_against_random_blocks(nsc) -> None:
    """The validation plan's IRL sanity check: 500 random blocks (T = 6) and the ResNeXt expert."""
    f = TopologyFeatures(nsc)
    rng = random.Random(0)
    blocks = [nsc.sample(rng) for _ in range(500)]
    ms = learn_msf(f.counts(expert_block()), np.array([f.counts(b) for b in blocks]))
    expert = ms(f.counts(expert_block()))
    assert expert > max(ms(f.counts(b)) for b in blocks)
    assert np.linalg.norm(ms.w) == pytest.approx(1.0)


# --- the strategy ------------------------------------------------------------------------------------------------


def _drive(strategy, n: int, objective) -> list[str]:
    keys = []
    for _ in range(n):
        s = strategy.ask(1)[0]
        strategy.space.validate(s)
        keys.append(strategy.space.key(s))
        strategy.tell(s, {"status": "ok", "objective": objective(s)})
    return keys


def _convs(cell: dict) -> float:
    return sum(op.startswith("nor_conv") for op in cell.values()) / 6


def test_irlas_respects_the_space_and_is_seeded(nsc) -> None:
    a = _drive(create_strategy("irlas", nsc, seed=3, budget=60), 60, synthetic_reward)
    b = _drive(create_strategy("irlas", nsc, seed=3, budget=60), 60, synthetic_reward)
    c = _drive(create_strategy("irlas", nsc, seed=4, budget=60), 60, synthetic_reward)
    assert a == b and a != c
    nb = create_space("nasbench201")
    x = _drive(create_strategy("irlas", nb, seed=0, budget=40), 40, _convs)
    assert x == _drive(create_strategy("irlas", nb, seed=0, budget=40), 40, _convs)


def test_irlas_learns_w_on_the_schedule(nsc) -> None:
    strat = create_strategy("irlas", nsc, seed=0, budget=60)
    w0 = strat.msf.w.copy()
    assert np.linalg.norm(w0) == pytest.approx(1.0)  # from the random policy's feature expectation
    _drive(strat, 60, synthetic_reward)
    counts = [n for _, n in strat.phases]
    assert strat.irl_steps == [sum(counts[: k + 1]) for k in range(len(counts)) if counts[k]]
    assert len(strat.msf.margins) == 1 + len(strat.irl_steps)
    assert not np.allclose(strat.msf.w, w0)
    every = create_strategy("irlas", nsc, seed=0, budget=60, irl_every=7)
    _drive(every, 30, synthetic_reward)
    assert every.irl_steps == [7, 14, 21, 28]
    state = json.loads(json.dumps(strat.state_dict()))
    assert state["features"] == list(NSC_FEATURES) and len(state["w"]) == len(NSC_FEATURES)


def test_irlas_reward_is_objective_plus_normalised_msf(nsc) -> None:
    strat = create_strategy("irlas", nsc, seed=0, replay=0, lam=0.5, objective_scale=2.0)
    blocks = [expert_block(), {"layers": [[1, 4, 0, 0, 0], [2, 6, 0, 0, 1]]}, {"layers": [[1, 1, 3, 0, 0]]}]
    for b in blocks:
        strat.tell(b, {"status": "ok", "objective": 0.1})
    msf = [strat.mirror_stimuli(b) for b in blocks]
    lo, hi = min(msf), max(msf)
    want = [0.2 + 0.5 * (m - lo) / (hi - lo) for m in msf]
    assert strat._rewards() == pytest.approx(want)
    assert msf[0] == max(msf)  # the expert


def test_irlas_handles_failed_trials(nsc) -> None:
    strat = create_strategy("irlas", nsc, seed=0, irl_every=2)
    strat.tell(RESNEXT_EXPERT, {"status": "failed", "objective": None})
    assert strat.memory == [] and strat.Q == {}
    strat.tell(RESNEXT_EXPERT, {"status": "failed", "objective": None})
    assert strat.irl_steps == [2]  # failed blocks still show the policy
    strat = create_strategy("irlas", nsc, seed=0, failure_reward=0.0, replay=0)
    strat.tell(RESNEXT_EXPERT, {"status": "failed", "objective": None})
    assert strat._rewards() == [0.0]  # no MSF bonus for a failure

    def flaky(s):
        if len(s["layers"]) % 2:
            raise ValueError("odd block")
        return {"objective": synthetic_reward(s)}

    h = search(nsc, create_strategy("irlas", nsc, seed=1, budget=40), flaky, budget=40)
    assert len(h) == 40 and h.failed() and h.best() is not None


def test_irlas_on_nasbench201_and_resume(tmp_path: Path) -> None:
    nb = create_space("nasbench201")
    strat = create_strategy("irlas", nb, seed=0, budget=30)
    assert strat.expert == parse_arch(RESNET_CELL)
    # w points from the random policy's feature expectation to the expert's: MSF(expert) - MSF(mu_bar) = margin
    ms = strat.msf
    assert ms(ms.mu_expert) - ms(ms.mu_bar) == pytest.approx(ms.margin) and ms.margin > 0

    def objective(s):
        return {"objective": 100 * _convs(s)}

    full = search(nb, create_strategy("irlas", nb, seed=2, budget=30, objective_scale=0.01), objective, budget=30)
    path = tmp_path / "j.jsonl"
    search(nb, create_strategy("irlas", nb, seed=2, budget=30, objective_scale=0.01), objective, budget=12,
           journal=Journal.create(path, {}))  # fmt: skip
    resumed = search(nb, create_strategy("irlas", nb, seed=2, budget=30, objective_scale=0.01), objective,
                     budget=30, journal=Journal.open(path))  # fmt: skip
    assert [nb.key(t.sample) for t in resumed.trials] == [nb.key(t.sample) for t in full.trials]
    for t in full.trials:
        nb.validate(t.sample)


def test_irlas_on_the_nb201_table(shared_data: Path) -> None:
    if not (shared_data / "nasbench201" / "nasbench201.csv").is_file():
        pytest.skip("nasbench201/nasbench201.csv not found")
    nb = create_space("nasbench201")
    ev = create_evaluator("nasbench201_tabular", data_dir=shared_data)
    h = search(nb, create_strategy("irlas", nb, seed=0, budget=40, objective_scale=0.01), ev, budget=40)
    assert len(h) == 40 and not h.failed() and h.best().objective > 60


def test_irlas_options_are_checked(nsc) -> None:
    with pytest.raises(ConfigError, match="'nsc' blocks or 'nasbench201' cells"):
        create_strategy("irlas", create_space("synthetic"))
    with pytest.raises(ConfigError, match="expert is not in this search space"):
        create_strategy("irlas", create_space("nasbench201", ops=["none", "skip_connect", "avg_pool_3x3"]))
    with pytest.raises(ConfigError, match="expert is not in this search space"):
        create_strategy("irlas", create_space("nsc", types=[2, 3, 4, 5, 6, 7], require_conv=False))
    with pytest.raises(ConfigError, match="irl_every"):
        create_strategy("irlas", nsc, irl_every=0)
    with pytest.raises(ConfigError, match="norm_window"):
        create_strategy("irlas", nsc, norm_window=0)
    with pytest.raises(ConfigError, match="has no option"):
        create_strategy("irlas", nsc, lamda=1)
    # a space too short for the expert's terminal takes the expert without it
    short = create_strategy("irlas", create_space("nsc", max_layers=4))
    assert len(short.expert["layers"]) == 4
    custom = create_strategy("irlas", create_space("nasbench201"), expert=RESNET_CELL.replace("3x3", "1x1"))
    assert custom.expert["1<-0"] == "nor_conv_1x1"


def test_top_blocks_break_ties_by_macs_then_trial_order() -> None:
    scores = [0.5, 0.4, 0.5, 0.5, 0.5, 0.5]
    macs = [900, 10, 300, 300, 100, 300]
    keys = ["a", "b", "c", "d", "e", "c"]  # trial 5 repeats block c
    assert top_blocks(scores, macs, keys, 3) == [4, 2, 3]  # 0.5 at 100 MACs, then 300 (trial 2 before 3)
    assert top_blocks(scores, macs, keys, 10) == [4, 2, 3, 0, 1]  # each block once, at its first trial


def test_irlas_lambda_in_units_of_the_objectives_range(nsc) -> None:
    strat = create_strategy("irlas", nsc, seed=0, replay=0, lam=0.5, lam_scale="range")
    blocks = [expert_block(), {"layers": [[1, 4, 0, 0, 0], [2, 1, 1, 0, 1]]}, {"layers": [[1, 1, 3, 0, 0]]}]
    for b, r in zip(blocks, (0.1, 0.3, 0.5), strict=True):
        strat.tell(b, {"status": "ok", "objective": r})
    msf = [strat.mirror_stimuli(b) for b in blocks]
    lo, hi = min(msf), max(msf)
    want = [r + 0.5 * 0.4 * (m - lo) / (hi - lo) for r, m in zip((0.1, 0.3, 0.5), msf, strict=True)]
    assert strat._rewards() == pytest.approx(want)  # the MSF moves a block by at most half of 0.5 - 0.1
    with pytest.raises(ConfigError, match="lam_scale"):
        create_strategy("irlas", nsc, lam_scale="percent")
