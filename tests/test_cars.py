"""CARS (arXiv 1909.04977): pNSGA-III survivor selection, hypervolume and the continuous evolution on a supernet."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from leanvision.errors import ConfigError, UnknownNameError
from leanvision.search.oneshot import create_oneshot
from leanvision.search.oneshot.cars import CARS, uniform_pareto_picks
from leanvision.search.oneshot.nsga import (
    acc_size_hypervolume,
    hypervolume,
    non_dominated_fronts,
    nsga3_select,
    pnsga3_select,
)
from leanvision.search.spaces.nasbench201 import NB201Space, format_arch, params_macs

# Nine hand-made individuals (accuracy %, size). Fronts worked out by hand:
#   F1 = sort(1/acc, size):   {0,1,3,6,7} {2,5} {4,8}
#   F2 = sort(1/acc, 1/size): {1} {4,6} {3} {0,5} {2,8} {7}
ACC = [90, 95, 85, 92, 80, 88, 93, 70, 75]
SIZE = [1, 5, 1, 3, 5, 2, 4, 0.5, 1.5]

# The small-model trap: small cells a-d score higher than large cells e-h (as early in weight sharing).
#   F1 = {a,b,c} {d} {e} {f,g} {h};  F2 = {c,e,g} ...
TRAP_ACC = [85, 88, 90, 80, 78, 74, 76, 70]
TRAP_SIZE = [1, 1.5, 2, 2, 8, 9, 10, 10]


def naive_fronts(F: np.ndarray) -> list[list[int]]:
    """Peel the non-dominated set off repeatedly, by the definition (O(n^2) per front)."""
    left, fronts = list(range(len(F))), []
    while left:
        front = [i for i in left if not any(np.all(F[j] <= F[i]) and np.any(F[j] < F[i]) for j in left)]
        fronts.append(sorted(front))
        left = [i for i in left if i not in front]
    return fronts


def test_fronts_match_hand_worked_example() -> None:
    inv = 1 / np.array(ACC)
    f1 = non_dominated_fronts(np.column_stack([inv, SIZE]))
    f2 = non_dominated_fronts(np.column_stack([inv, 1 / np.array(SIZE)]))
    assert [f.tolist() for f in f1] == [[0, 1, 3, 6, 7], [2, 5], [4, 8]]
    assert [f.tolist() for f in f2] == [[1], [4, 6], [3], [0, 5], [2, 8], [7]]


@pytest.mark.parametrize("seed", range(5))
def test_fronts_match_naive_reference_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    F = rng.integers(0, 6, size=(40, 2)).astype(float)  # a small grid: many ties and duplicate points
    F[-1] = F[0]
    got = [f.tolist() for f in non_dominated_fronts(F)]
    assert got == naive_fronts(F)
    assert any(0 in f and 39 in f for f in got)  # duplicates share a front
    three = rng.random((30, 3))
    assert [f.tolist() for f in non_dominated_fronts(three)] == naive_fronts(three)


def test_pnsga3_exact_sets_by_hand() -> None:
    rng = np.random.default_rng(0)
    # Stage 0 = F1[0] | F2[0] = {0,1,3,6,7}: exactly five places.
    assert pnsga3_select(ACC, SIZE, 5, rng).tolist() == [0, 1, 3, 6, 7]
    # Stage 1 = ({2,5} | {4,6}) - {6} = {2,4,5} fits the three places left; 8 (in no front <= 1) is out.
    assert pnsga3_select(ACC, SIZE, 8, rng).tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    # Everything fits: all kept.
    assert pnsga3_select(ACC, SIZE, 12, rng).tolist() == list(range(9))
    # One place left after stage 0: a random one of {2,4,5}.
    got = pnsga3_select(ACC, SIZE, 6, rng).tolist()
    assert set(got) - {0, 1, 3, 6, 7} <= {2, 4, 5} and len(got) == 6


def test_pnsga3_random_fill_is_seeded_and_uses_every_candidate() -> None:
    picks = [tuple(pnsga3_select(ACC, SIZE, 6, np.random.default_rng(s))) for s in range(30)]
    assert picks[3] == tuple(pnsga3_select(ACC, SIZE, 6, np.random.default_rng(3)))
    extra = {set(p).difference({0, 1, 3, 6, 7}).pop() for p in picks}
    assert extra == {2, 4, 5}  # the tie among the split stage is broken by the seed, every member can win


def test_pnsga3_keeps_large_models_that_nsga3_evicts() -> None:
    rng = np.random.default_rng(0)
    p = pnsga3_select(TRAP_ACC, TRAP_SIZE, 5, rng).tolist()
    n = nsga3_select(TRAP_ACC, TRAP_SIZE, 5, rng).tolist()
    assert p == [0, 1, 2, 4, 6]  # F1[0] | F2[0]: the accurate small ones and the accurate large ones (e, g)
    assert n == [0, 1, 2, 3, 4]  # F1's first fronts: small-model heavy, the largest accurate model g is gone
    assert 2 in p and 2 in n  # both keep the most accurate model
    assert max(TRAP_SIZE[i] for i in p) == 10 > max(TRAP_SIZE[i] for i in n)
    assert np.mean([TRAP_SIZE[i] for i in p]) > np.mean([TRAP_SIZE[i] for i in n])
    # With four places plain NSGA-III keeps only small models.
    assert max(TRAP_SIZE[i] for i in nsga3_select(TRAP_ACC, TRAP_SIZE, 4, rng)) <= 2


def test_nsga3_niching_spreads_the_split_front_and_is_seeded() -> None:
    # One front of 11 points on a line; 3 survivors with 3 reference directions: both extremes and the middle.
    acc = np.linspace(80, 90, 11)
    size = np.linspace(1, 2, 11)
    got = nsga3_select(acc, size, 3, np.random.default_rng(0)).tolist()
    assert got[0] == 0 and got[-1] == 10 and len(got) == 3
    again = [nsga3_select(acc, size, 5, np.random.default_rng(7)).tolist() for _ in range(2)]
    assert again[0] == again[1]


def test_hypervolume_of_known_sets() -> None:
    assert hypervolume([[1, 2], [2, 1]], [3, 3]) == pytest.approx(3.0)  # 2 + 2 - overlap 1
    assert hypervolume([[1, 2], [2, 1], [4, 0]], [3, 3]) == pytest.approx(3.0)  # outside the box: nothing
    assert hypervolume(np.zeros((0, 2)), [3, 3]) == 0.0
    # (90%, hi) -> (0.1, 1); (50%, lo) -> (0.5, 0); ref (1.1, 1.1): 1.0 x 0.1 + 0.6 x 1.1 - overlap 0.6 x 0.1.
    assert acc_size_hypervolume([90, 50], [20, 10], (10, 20)) == pytest.approx(0.70)
    assert acc_size_hypervolume([95], [10], (10, 20)) > acc_size_hypervolume([90], [10], (10, 20))


def test_bad_inputs_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="one length"):
        pnsga3_select([90, 80], [1], 1, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="size finite and > 0"):
        nsga3_select([90, 80], [1, 0], 1, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="hi > lo"):
        acc_size_hypervolume([90], [1], (2, 2))


# --- uniform-Pareto picks ----------------------------------------------------------------------------------------


def test_uniform_pareto_picks_by_hand() -> None:
    acc = [50, 90, 80, 85, 70, 95, 60]
    size = [1, 1, 2, 3, 4, 5, 5]
    # Normalised acc > 0.5 keeps acc > 72.5: indices 1,2,3,5 (sizes 1,2,3,5); bins over [1,5]: [1,2],(2,3],(3,4],(4,5].
    assert uniform_pareto_picks(acc, size, 4) == [5, 1, 3]  # bin (3,4] is empty: no pick; best first
    assert uniform_pareto_picks(acc, size, 1) == [5]
    assert uniform_pareto_picks([70, 70], [1, 2], 4) == [0]  # no accuracy spread: one pick
    assert uniform_pareto_picks([], [], 4) == []


# --- CARS on a real (tiny) supernet ------------------------------------------------------------------------------

TINY = {"subset": 256, "val_size": 256, "resolution": 8, "C": 4, "batch_size": 64, "bn_images": 64,
        "eval_images": 128}  # fmt: skip


@pytest.fixture(scope="module")
def supernet_opts(shared_data) -> dict:
    if not (shared_data / "cifar10").is_dir():
        pytest.skip("cifar10/ not found under the data directory")
    return dict(TINY, data_dir=str(shared_data))


def make(supernet_opts: dict, **kw) -> CARS:
    opts = {"seed": 0, "warmup_epochs": 1, "evolution_rounds": 3, "population": 6, **kw}
    return create_oneshot("cars", "nasbench201", supernet=supernet_opts, **opts)


def keys(samples) -> list[str]:
    return [format_arch(s) for s in samples]


def test_cars_rounds_keep_population_invariants(supernet_opts) -> None:
    m = make(supernet_opts)
    assert m.rounds() == 4
    previous = None
    for r in range(m.rounds()):
        records = m.run_round(r)
        json.dumps(records)  # the driver journals them as they are
        pop = [ind["sample"] for ind in m.population]
        assert len(pop) == 6 and len(set(keys(pop))) == 6  # population size kept, no duplicates
        assert len(set(keys(rec["sample"] for rec in records))) == len(records)  # parents and children all distinct
        assert sum(rec["survived"] for rec in records) == 6
        assert all(rec["round"] == r and 0 <= rec["objective"] <= 100 for rec in records)
        assert all(rec["params"] == params_macs(rec["sample"], C=4, N=1, resolution=8)[0] for rec in records)
        if r == 0:
            assert len(records) == 6 and {rec["origin"] for rec in records} == {"random"}
        else:
            assert len(records) == 12
            # The parents are re-scored (first six records) and the children are new cells.
            assert keys(rec["sample"] for rec in records[:6]) == previous
            assert {rec["origin"] for rec in records[6:]} <= {"mutation", "crossover", "random"}
            assert not set(keys(rec["sample"] for rec in records[6:])) & set(previous)
        previous = keys(pop)
    with pytest.raises(ConfigError, match="run the rounds in order"):
        m.run_round(4)
    res = m.result()
    json.dumps(res)
    assert 1 <= len(res["picks"]) <= 4
    assert set(keys(res["picks"])) <= set(previous)  # picks come from the survivors
    scores = [d["score"] for d in res["picks_detail"]]
    assert scores == sorted(scores, reverse=True)
    assert [h["round"] for h in res["population_history"]] == [0, 1, 2, 3]
    assert res["pareto"] and set(keys(p["sample"] for p in res["pareto"])) <= set(previous)
    # Warm-up 1 epoch + 3 rounds x 1 epoch of 4 steps (256 images / 64), one path per step.
    assert sum(m.trainer.op_counts["1<-0"].values()) == 4 * 4


def test_cars_resumed_equals_uninterrupted(supernet_opts) -> None:
    full = make(supernet_opts)
    ref = [full.run_round(r) for r in range(full.rounds())]
    part = make(supernet_opts)
    got = [part.run_round(r) for r in range(2)]
    buf = io.BytesIO()
    torch.save(part.state_dict(), buf)  # as the driver saves it
    buf.seek(0)
    resumed = make(supernet_opts)
    resumed.load_state_dict(torch.load(buf, weights_only=False))
    got += [resumed.run_round(r) for r in range(2, resumed.rounds())]
    assert got == ref
    assert resumed.result() == full.result()


def test_cars_fork_after_warmup_and_random_baseline(supernet_opts) -> None:
    a = make(supernet_opts)
    a.run_round(0)
    warm = a.state_dict()
    b = make(supernet_opts, selection="nsga3")
    b.load_state_dict(warm)
    c = make(supernet_opts, selection="random")
    c.load_state_dict(warm)
    assert keys(ind["sample"] for ind in b.population) == keys(ind["sample"] for ind in a.population)
    b.run_round(1)
    recs = c.run_round(1)
    # Random search: six fresh cells, scored and kept as they are; no children, no selection.
    assert len(recs) == 6 and all(rec["survived"] and rec["origin"] == "random" for rec in recs)
    assert keys(ind["sample"] for ind in c.population) == keys(rec["sample"] for rec in recs)
    with pytest.raises(ConfigError, match="only the state after round 0"):
        make(supernet_opts, selection="pnsga3").load_state_dict(b.state_dict())


def test_cars_offspring_follow_the_25_25_50_rule(supernet_opts) -> None:
    m = make(supernet_opts, population=16)
    parents = m._distinct_random(16, set())
    origins = [o for _ in range(40) for _, o in m._offspring(parents)]
    share = {o: origins.count(o) / len(origins) for o in ("mutation", "crossover", "random")}
    assert 0.2 < share["mutation"] < 0.3 and 0.2 < share["crossover"] < 0.3 and 0.45 < share["random"] < 0.55
    children = m._offspring(parents)
    assert len(children) == 16 and not set(keys(c for c, _ in children)) & set(keys(parents))


def test_cars_candidates_on_a_canonical_space_are_connected_class_representatives(supernet_opts) -> None:
    space = NB201Space(canonical=True)
    reps = set(space.cells())
    m = create_oneshot("cars", space, supernet=supernet_opts, seed=0, population=16)
    parents = m._distinct_random(16, set())
    children = [c for _ in range(20) for c, _ in m._offspring(parents)]
    assert {o for _ in range(5) for _, o in m._offspring(parents)} == {"mutation", "crossover", "random"}
    # mutations and crossovers of canonical parents often land on a non-representative or disconnected cell: all
    # are mapped to their class or redrawn
    assert set(keys(parents)) <= reps and set(keys(children)) <= reps


def test_cars_rejects_bad_options(supernet_opts) -> None:
    with pytest.raises(ConfigError, match="population must be an integer >= 2"):
        make(supernet_opts, population=1)
    with pytest.raises(UnknownNameError, match="did you mean 'nsga3'"):
        make(supernet_opts, selection="nsga")
    with pytest.raises(ConfigError, match="set by CARS itself"):
        make(dict(supernet_opts, total_epochs=5))
    with pytest.raises(ConfigError, match="unknown supernet options"):
        make(dict(supernet_opts, widht=8))
    with pytest.raises(ConfigError, match="too few"):
        create_oneshot("cars", NB201Space(ops=["none", "nor_conv_3x3"]), supernet=supernet_opts, population=40)
