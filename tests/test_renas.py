"""ReNAS (arXiv 1910.01523) on NAS-Bench-201: cell tensors, ranking loss, predictor training and the strategy."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from search_helpers import conv_count, resumed_after_kill, trace

from leanvision.errors import ConfigError
from leanvision.search import create_space, create_strategy, search
from leanvision.search.evaluators.tabular import arch_code, load_nb201
from leanvision.search.predictors import (
    ReNASPredictor,
    encode_cell,
    encode_cells,
    fit_predictor,
    kendall_tau,
    nb201_encodings,
    pairwise_ranking_loss,
)
from leanvision.search.predictors.renas import ADJACENCY
from leanvision.search.spaces.nasbench201 import BEST_CIFAR10_ARCH, EDGES, cell_ops, params_macs, parse_arch

# e(0->1) e(0->2) e(1->2) e(0->3) e(1->3) e(2->3) = conv3 conv3 conv3 skip conv3 conv1
CELL_A = BEST_CIFAR10_ARCH
# e(0->1) e(0->2) e(1->2) e(0->3) e(1->3) e(2->3) = none pool conv1 skip none conv3
CELL_B = "|none~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"
SMALL_OPS = ["none", "nor_conv_3x3", "avg_pool_3x3"]  # 3^6 = 729 cells: the strategy tests score few cells


def _matrix(entries: dict[tuple[int, int], float]) -> np.ndarray:
    m = np.zeros((8, 8))
    for (u, v), x in entries.items():
        m[u, v] = x
    return m


# --- the encoding ------------------------------------------------------------------------------------------------


def test_adjacency_links_each_edge_op_to_the_ops_around_its_nodes() -> None:
    # nodes: 0 input, 1 e(0->1), 2 e(0->2), 3 e(1->2), 4 e(0->3), 5 e(1->3), 6 e(2->3), 7 output
    expected = {(0, 1), (0, 2), (0, 4), (1, 3), (1, 5), (2, 6), (3, 6), (4, 7), (5, 7), (6, 7)}
    assert {(int(u), int(v)) for u, v in zip(*np.nonzero(ADJACENCY), strict=True)} == expected


def test_encoding_by_hand_on_two_cells() -> None:
    a, b = encode_cell(CELL_A), encode_cell(parse_arch(CELL_B))
    assert a.shape == b.shape == (7, 8, 8) and a.dtype == np.float32
    # Type codes: input 1, none 2, skip 3, conv1x1 4, conv3x3 5, pool 6, output 7, at the edge's destination.
    out = {(4, 7): 7, (5, 7): 7, (6, 7): 7}
    type_a = _matrix({(0, 1): 5, (0, 2): 5, (0, 4): 3, (1, 3): 5, (1, 5): 5, (2, 6): 4, (3, 6): 4, **out})
    type_b = _matrix({(0, 1): 2, (0, 2): 6, (0, 4): 3, (1, 3): 4, (1, 5): 2, (2, 6): 5, (3, 6): 5, **out})
    np.testing.assert_array_equal(a[0], type_a)
    np.testing.assert_array_equal(b[0], type_b)
    # MACs, stage 1 (16 channels at 32x32): conv3x3 9*16*16*1024, conv1x1 16*16*1024; skip, pool, none: 0.
    c3, c1 = 9 * 16 * 16 * 1024, 16 * 16 * 1024
    macs_a = _matrix({(0, 1): c3, (0, 2): c3, (1, 3): c3, (1, 5): c3, (2, 6): c1, (3, 6): c1})
    np.testing.assert_array_equal(a[1], macs_a)
    # MACs, stage 2 (32 channels at 16x16): the same per-pixel work x a quarter of the area.
    c3, c1 = 9 * 32 * 32 * 256, 32 * 32 * 256
    np.testing.assert_array_equal(b[2], _matrix({(1, 3): c1, (2, 6): c3, (3, 6): c3}))
    # Parameters, stage 3 (64 channels): conv weight + BatchNorm weight and bias.
    p3, p1 = 9 * 64 * 64 + 2 * 64, 64 * 64 + 2 * 64
    np.testing.assert_array_equal(b[6], _matrix({(1, 3): p1, (2, 6): p3, (3, 6): p3}))
    np.testing.assert_array_equal(a[6], _matrix({(0, 1): p3, (0, 2): p3, (1, 3): p3, (1, 5): p3, (2, 6): p1,
                                                 (3, 6): p1}))  # fmt: skip


def _node_costs(m: np.ndarray) -> np.ndarray:
    return m.max(axis=0)  # column v holds node v's cost on each of its incoming edges


@pytest.mark.parametrize("C, resolution", [(16, 32), (8, 16)])
def test_node_costs_add_up_to_the_analytic_network_counts(C: int, resolution: int) -> None:
    rng = random.Random(0)
    space = create_space("nasbench201")
    empty = params_macs(dict.fromkeys(EDGES, "none"), C=C, resolution=resolution)
    for _ in range(20):
        s = space.sample(rng)
        x = encode_cell(s, C=C, resolution=resolution)
        params, macs = params_macs(s, C=C, resolution=resolution)
        # N = 5 cells per stage; everything but the cells (stem, reductions, head) is the all-none network's.
        assert 5 * sum(_node_costs(x[1 + k]).sum() for k in range(3)) == macs - empty[1]
        assert 5 * sum(_node_costs(x[4 + k]).sum() for k in range(3)) == params - empty[0]


def test_cached_encodings_match_encode_cell_and_are_read_only() -> None:
    X = nb201_encodings()
    assert X.shape == (15_625, 7, 8, 8) and nb201_encodings() is X
    rng = random.Random(1)
    samples = [create_space("nasbench201").sample(rng) for _ in range(30)] + [parse_arch(CELL_A)]
    np.testing.assert_array_equal(X[[arch_code(s) for s in samples]], encode_cells(samples))
    with pytest.raises(ValueError):
        X[0, 0, 0, 0] = 1


def test_encoding_rejects_bad_cells_and_geometry() -> None:
    with pytest.raises(ConfigError, match="unknown op 'conv_5x5'"):
        encode_cell(CELL_A.replace("nor_conv_1x1", "conv_5x5"))
    with pytest.raises(ConfigError, match="resolution must be a positive multiple of 4"):
        encode_cell(CELL_A, resolution=30)
    with pytest.raises(ConfigError, match="C must be an integer >= 1"):
        encode_cell(CELL_A, C=0)


# --- the loss and the predictor ----------------------------------------------------------------------------------


def test_pairwise_loss_matches_a_double_loop_with_ties() -> None:
    s = torch.tensor([0.3, -1.2, 2.0, 0.7, 0.0], dtype=torch.float64)
    y = torch.tensor([90.0, 85.0, 90.0, 70.0, 93.0], dtype=torch.float64)  # cells 0 and 2 tie
    sl, yl, n, total = s.tolist(), y.tolist(), len(s), 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                sign = (yl[i] > yl[j]) - (yl[i] < yl[j])
                total += math.log(1 + math.exp(-(sl[i] - sl[j]) * sign))
    assert pairwise_ranking_loss(s, y).item() == pytest.approx(total / (n * (n - 1)), rel=1e-12)
    # All tied: every pair costs log 2, whatever the scores.
    assert pairwise_ranking_loss(s, torch.ones(n)).item() == pytest.approx(math.log(2))


def test_pairwise_loss_gradient_raises_the_better_cell() -> None:
    s = torch.zeros(3, requires_grad=True)
    pairwise_ranking_loss(s, torch.tensor([3.0, 1.0, 2.0])).backward()
    assert s.grad[0] < 0 < s.grad[1]  # descent raises the best cell's score and lowers the worst's
    assert s.grad[2] == pytest.approx(0.0)  # the middle cell is pulled both ways equally
    with pytest.raises(ConfigError, match="need >= 2 scores"):
        pairwise_ranking_loss(torch.zeros(1), torch.zeros(1))


def test_predictor_shape_and_parameters() -> None:
    net = ReNASPredictor()
    assert net(torch.zeros(4, 7, 8, 8)).shape == (4,)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.bias) for c in convs] == [(7, 38, None), (38, 128, None)]
    linears = [(m.in_features, m.out_features) for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert linears == [(128 * 8 * 8, 120), (120, 84), (84, 1)]


def _toy(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = random.Random(seed)
    space = create_space("nasbench201")
    samples = [space.sample(rng) for _ in range(n)]
    return encode_cells(samples), np.array([conv_count(s)["objective"] for s in samples])


def test_scaler_is_fitted_on_the_training_cells_only() -> None:
    X, y = _toy(40, 0)
    test, other_a, other_b = _toy(30, 1)[0], _toy(200, 2)[0], _toy(5, 3)[0]
    model = fit_predictor(X, y, epochs=3)
    np.testing.assert_allclose(model.scaler.mean_, X.reshape(40, -1).mean(axis=0), rtol=1e-6)
    alone = model.predict(test)
    # equal up to float rounding (a GEMM's blocking, hence its summation order, may follow the batch size); a scaler
    # refitted on the scored batch would move the scores by far more
    np.testing.assert_allclose(model.predict(np.concatenate([test, other_a]))[:30], alone, rtol=1e-6)
    np.testing.assert_allclose(model.predict(np.concatenate([other_b, test]))[5:], alone, rtol=1e-6)


def test_fit_is_deterministic_per_seed_and_leaves_the_global_rng_alone() -> None:
    X, y = _toy(30, 0)
    state = torch.get_rng_state()
    runs = [fit_predictor(X, y, epochs=5, seed=s, loss=loss, batch_size=8).predict(X)
            for s, loss in ((0, "pairwise"), (0, "pairwise"), (1, "pairwise"), (0, "mse"))]  # fmt: skip
    assert torch.equal(torch.get_rng_state(), state)
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2]) and not np.array_equal(runs[0], runs[3])
    type_only = fit_predictor(X, y, epochs=2, features="type")
    assert type_only.net.features[0].in_channels == 1 and type_only.predict(X).shape == (30,)


def test_fit_refuses_bad_inputs() -> None:
    X, y = _toy(5, 0)
    with pytest.raises(ConfigError, match=">= 2 training cells"):
        fit_predictor(X[:1], y[:1])
    with pytest.raises(ConfigError, match="loss must be one of pairwise, mse"):
        fit_predictor(X, y, loss="hinge")
    with pytest.raises(ConfigError, match="features must be one of full, type"):
        fit_predictor(X, y, features="flops")
    with pytest.raises(ConfigError, match=r"shape \(n, 7, 8, 8\)"):
        fit_predictor(X[:, :3], y)
    with pytest.raises(ConfigError, match="same length"):
        kendall_tau([1, 2, 3], [1, 2])


def test_kendall_tau() -> None:
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([4, 3, 2, 1], [10, 20, 30, 40]) == pytest.approx(-1.0)


@pytest.fixture(scope="module")
def nb201_dir(shared_data: Path) -> Path:
    if not (shared_data / "nasbench201" / "nasbench201.csv").is_file():
        pytest.skip("nasbench201/nasbench201.csv not found under the data directory")
    return shared_data


def test_pairwise_predictor_ranks_held_out_nb201_cells(nb201_dir: Path) -> None:
    table = load_nb201(nb201_dir)
    y = np.zeros(len(table))
    for arch, row in table.items():
        y[arch_code(parse_arch(arch))] = row["cifar10_test_200ep"]
    rng = np.random.default_rng(0)
    cells = rng.permutation(len(y))
    train, held_out = cells[:100], cells[100:2100]
    X = nb201_encodings()
    model = fit_predictor(X[train], y[train], epochs=100, seed=0)
    assert kendall_tau(model.predict(X[held_out]), y[held_out]) > 0.3


# --- the strategy -------------------------------------------------------------------------------------------------


def _search(seed: int, budget: int = 30, evaluator=conv_count, **kw):
    space = create_space("nasbench201", ops=SMALL_OPS)
    strategy = create_strategy("renas", space, seed=seed, **{"epochs": 5, **kw})
    return space, strategy, search(space, strategy, evaluator, budget=budget)


def test_strategy_asks_distinct_cells_of_its_space_and_is_seeded() -> None:
    space, strategy, a = _search(0)
    keys = [space.key(t.sample) for t in a.trials]
    for t in a.trials:
        space.validate(t.sample)
    assert len(set(keys)) == len(keys) == 30
    assert strategy.fits == 2  # two rounds of 10 after the 10 random cells
    assert trace(_search(0)[2]) == trace(a)
    assert trace(_search(1)[2]) != trace(a)
    random_search = search(space, create_strategy("random", space, seed=0), conv_count, budget=10)
    assert trace(random_search) == trace(a)[:10]  # the first n_init asks are a random search's
    # The ranked rounds find better cells than the random start (3x3 convs are what the objective rewards).
    assert max(t.objective for t in a.trials[10:]) > max(t.objective for t in a.trials[:10])


def test_strategy_ignores_failed_trials() -> None:
    def flaky(sample):
        if sample["1<-0"] == "avg_pool_3x3":
            raise ValueError("no result for this cell")
        return conv_count(sample)

    _, strategy, h = _search(0, evaluator=flaky)
    assert len(h) == 30 and h.failed() and all(t.sample["1<-0"] == "avg_pool_3x3" for t in h.failed())
    assert len(strategy._told) == len(h.ok())


def test_strategy_resumes_to_the_uninterrupted_history(tmp_path: Path) -> None:
    _, _, full = _search(2, budget=25, batch=5)
    space = create_space("nasbench201", ops=SMALL_OPS)
    resumed = resumed_after_kill(space, lambda: create_strategy("renas", space, seed=2, epochs=5, batch=5), conv_count,
                                 budget=25, kill_at=18, path=tmp_path / "j.jsonl")  # fmt: skip
    assert trace(resumed) == trace(full)


def test_strategy_refuses_other_spaces_and_bad_options() -> None:
    with pytest.raises(ConfigError, match="only 'nasbench201' can list"):
        create_strategy("renas", create_space("synthetic"))
    space = create_space("nasbench201")
    with pytest.raises(ConfigError, match="batch must be an integer >= 1"):
        create_strategy("renas", space, batch=0)
    with pytest.raises(ConfigError, match="loss must be one of pairwise, mse"):
        create_strategy("renas", space, loss="hinge")


# --- the one-hot / live-edge encoding and the exploring acquisition ----------------------------------------------


def test_onehot_encoding_by_hand_and_round_trip() -> None:
    from leanvision.search.predictors.renas import ONEHOT_DIM, encode_onehot, live_edges, nb201_onehot
    from leanvision.search.spaces.nasbench201 import OPS, format_arch

    # CELL_B: 0 -pool-> 2 -conv3-> 3 and 0 -skip-> 3 are live; 1 is never reached (0->1 is none), so 1->2 is dead
    assert live_edges(CELL_B) == [False, True, False, True, False, True]
    assert live_edges(CELL_A) == [True] * 6
    # the effective cell: CELL_B's dead 1->2 conv_1x1 is encoded as none; effective=False keeps every op
    CELL_B_EFFECTIVE = "|none~0|+|avg_pool_3x3~0|none~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"
    for effective, want in ((True, [CELL_A, CELL_B_EFFECTIVE]), (False, [CELL_A, CELL_B])):
        X = encode_onehot([CELL_A, CELL_B], effective=effective)
        assert X.shape == (2, ONEHOT_DIM) == (2, 36) and X.dtype == np.float32
        for arch, row in zip(want, X, strict=True):
            blocks = row[:30].reshape(6, 5)
            assert (blocks.sum(1) == 1).all()
            assert format_arch({e: OPS[int(b.argmax())] for e, b in zip(EDGES, blocks, strict=True)}) == arch
        assert list(X[1, 30:]) == [0, 1, 0, 1, 0, 1]
    # every cell of one isomorphism class that differs only in dead edges gets one encoding
    assert np.array_equal(encode_onehot([CELL_B]), encode_onehot([CELL_B_EFFECTIVE]))
    table = nb201_onehot()
    assert table.shape == (15625, 36) and not table.flags.writeable
    for arch in (CELL_A, CELL_B):
        assert np.array_equal(table[arch_code(parse_arch(arch))], encode_onehot([arch])[0])
    model = fit_predictor(table[:40], np.arange(40.0), epochs=2)
    assert type(model.net).__name__ == "ReNASMLP" and model.predict(table[:5]).shape == (5,)


@pytest.mark.parametrize("explore, want", [(0.0, 0), (0.5, 5), (1.0, 10)])
def test_acquisition_mixes_predictor_picks_with_neighbours_of_the_incumbent(explore, want) -> None:
    _, strategy, h = _search(0, budget=20, explore=explore)
    assert strategy.explored == want and strategy.fits == 1
    best = max(h.trials[:10], key=lambda t: t.objective).sample
    near = [sum(t.sample[e] != best[e] for e in EDGES) == 1 for t in h.trials[10:]]
    assert near[10 - want :] == [True] * want  # the round's last `want` asks are one edge from the incumbent
    assert trace(_search(0, budget=20, explore=explore)[2]) == trace(h)


def test_predicted_neighbours_are_the_best_scored_neighbours_of_the_incumbent(monkeypatch) -> None:
    import leanvision.search.predictors.renas as renas_predictors

    class ByRow:  # a stand-in predictor with known scores: a fixed weighted sum of the encoding (higher = better)
        def predict(self, X):
            return X @ (np.arange(X.shape[1], dtype=np.float64) + 1) ** 2

    monkeypatch.setattr(renas_predictors, "fit_predictor", lambda *a, **k: ByRow())
    space, strategy, h = _search(0, budget=14, explore=0.4, batch=4, neighbours="predicted")
    assert strategy.explored == 2 and strategy.fits == 1
    best = max(h.trials[:10], key=lambda t: t.objective).sample
    table = renas_predictors.nb201_onehot()
    asked = {arch_code(cell_ops(t.sample)) for t in h.trials[:10]}
    near = [arch_code(cell_ops({**best, e: o})) for e in EDGES for o in SMALL_OPS if o != best[e]]
    near = sorted([c for c in dict.fromkeys(near) if c not in asked], key=lambda c: -ByRow().predict(table[[c]])[0])
    got = [arch_code(cell_ops(t.sample)) for t in h.trials[12:]]
    assert got == near[:2]  # the round's last two asks: the two best-scored unasked neighbours, best first
    with pytest.raises(ConfigError, match="neighbours must be one of random, predicted"):
        create_strategy("renas", space, neighbours="best")


def test_strategy_encoding_options_and_canonical_space() -> None:
    from leanvision.models.nasbench201_arch import canonical_arch, is_connected

    space = create_space("nasbench201", canonical=True)
    strategy = create_strategy("renas", space, seed=0, epochs=2, n_init=5, batch=5, encoding="paper")
    h = search(space, strategy, conv_count, budget=10)
    assert all(canonical_arch(space.key(t.sample)) == space.key(t.sample) for t in h.trials)
    assert all(is_connected(space.key(t.sample)) for t in h.trials)
    with pytest.raises(ConfigError, match="encoding must be one of onehot, paper"):
        create_strategy("renas", space, encoding="lenet")
    with pytest.raises(ConfigError, match=r"explore must be a fraction in \[0, 1\]"):
        create_strategy("renas", space, explore=1.5)
