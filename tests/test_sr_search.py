"""ESR-EA: the esrn space (constraints, repair with a cap, crossover), block credit, NSGA elites, journal resume."""

from __future__ import annotations

import random

import numpy as np
import pytest

from leanvision.errors import ConfigError
from leanvision.search import Journal, create_space, create_strategy, search
from leanvision.search.strategies.esr_ea import crowding_distance

PROXY = {"node_num": 8, "min_active": 4, "convs": [2, 3, 4], "growths": [8, 16], "outs": [8, 16], "G0": 16,
         "min_params": 15_000, "max_params": 30_000}  # fmt: skip


def proxy_space(**changes):
    return create_space("esrn", **{**PROXY, **changes})


def fake_psnr(space):
    """A cheap deterministic objective that prefers shrink blocks of growth 16 (a known 'good block')."""

    def evaluate(sample):
        arch = space.arch(sample)
        good = sum(b.startswith("S_") and b.split("_")[2] == "16" for b in arch)
        return {"objective": 30.0 + good + 0.001 * len(arch), "report": {"Set5_psnr": 0.0}}

    return evaluate


def test_samples_meet_the_constraints_and_build():
    space = proxy_space()
    rng = random.Random(0)
    for _ in range(20):
        s = space.sample(rng)
        space.validate(s)
        assert sum(a for a, _ in s["genes"]) >= 4 and 15_000 <= space.cost(s)[0] <= 30_000
    assert sum(p.numel() for p in space.build(s).parameters()) == space.cost(s)[0]


def test_repair_terminates_with_a_one_line_error_on_an_impossible_window():
    space = proxy_space(min_params=10**9, max_params=2 * 10**9, max_repairs=20, max_restarts=3)
    with pytest.raises(ConfigError, match=r"no chromosome met the constraints after 3 restarts.*widen"):
        space.sample(random.Random(0))
    narrow = proxy_space(min_params=20_000, max_params=20_500)  # narrow but feasible: found by repair
    assert 20_000 <= narrow.cost(narrow.sample(random.Random(1)))[0] <= 20_500


def test_mutation_changes_the_network_and_crossover_keeps_both_feasible():
    space, rng = proxy_space(), random.Random(2)
    a, b = space.sample(rng), space.sample(rng)
    child = space.mutate(a, rng)
    assert space.key(child) != space.key(a) and space.feasible(child)
    c, d = space.crossover(a, b, rng)
    assert space.feasible(c) and space.feasible(d)
    with pytest.raises(ConfigError, match="breaks the constraints"):
        space.validate({"genes": [[0, 0]] * 8})
    with pytest.raises(ConfigError, match="a sample is"):
        space.validate({"genes": [[1, 999]] * 8})


def test_block_credit_bookkeeping():
    space = proxy_space()
    strat = create_strategy("esr_ea", space, seed=0, population=2, elites=1)
    s1, s2 = strat.ask(1)[0], strat.ask(1)[0]
    strat.tell(s1, {"status": "ok", "objective": 30.0})
    strat.tell(s2, {"status": "ok", "objective": 32.0})
    strat.tell(s2, {"status": "failed", "objective": None})  # a failure credits nothing
    # generation 0: mean 31, std 1 -> z = -1 for s1's blocks and +1 for s2's; shared blocks average to 0
    b1, b2 = space.block_ids(s1), space.block_ids(s2)
    expected = {b: ((-1.0 if b in b1 else 0) + (1.0 if b in b2 else 0)) / ((b in b1) + (b in b2)) for b in b1 | b2}
    assert strat.credits() == pytest.approx(expected)
    w = strat.mutation_weights()
    assert sum(w) == pytest.approx(1) and min(w) >= 0.2 / len(space.blocks) - 1e-12
    assert max(w) == max(w[b] for b in b2 - b1)  # the best network's own blocks are favoured
    assert create_strategy("esr_ea", space, mutation="uniform").mutation_weights() is None


def test_elites_by_psnr_and_by_nsga():
    space = proxy_space()
    strat = create_strategy("esr_ea", space, seed=0, population=4, elites=2)
    samples = strat.ask(4)
    for s, v in zip(samples, [30.0, 33.0, 31.0, 32.0], strict=True):
        strat.tell(s, {"status": "ok", "objective": v})
    assert [f for _, f in strat.elites()] == [33.0, 32.0]
    nsga = create_strategy("esr_ea", space, seed=0, population=4, elites=2, objective="nsga")
    for s, v in zip(samples, [30.0, 33.0, 31.0, 32.0], strict=True):
        nsga.tell(s, {"status": "ok", "objective": v})
    assert 33.0 in [f for _, f in nsga.elites()]  # the best PSNR is always non-dominated
    assert list(crowding_distance(np.array([[0.0, 3], [1, 1], [2, 0], [0.5, 2]]))[[1, 3]]) == \
        pytest.approx([1.5 / 2 + 2 / 3, 1 / 2 + 2 / 3])  # fmt: skip


def test_wrong_space_and_options_are_config_errors():
    with pytest.raises(ConfigError, match="esr_ea searches the esrn space"):
        create_strategy("esr_ea", create_space("synthetic"))
    with pytest.raises(ConfigError, match="mutation is one of"):
        create_strategy("esr_ea", proxy_space(), mutation="greedy")


def test_credit_search_beats_random_on_a_known_objective_and_resumes(tmp_path):
    space = proxy_space()
    best = {}
    for name, kw in (("credit", {"mutation": "credit"}), ("random", {})):
        strat = create_strategy("esr_ea" if name == "credit" else "random", space, seed=3, **kw)
        best[name] = search(space, strat, fake_psnr(space), budget=32).best().objective
    assert best["credit"] >= best["random"]
    # a search stopped after 12 trials and resumed from its journal equals one uninterrupted run
    config = {"space": "esrn", "strategy": "esr_ea"}
    journal = Journal.create(tmp_path / "j.jsonl", config)
    search(space, create_strategy("esr_ea", space, seed=5), fake_psnr(space), budget=12, journal=journal)
    resumed = search(space, create_strategy("esr_ea", space, seed=5), fake_psnr(space), budget=20,
                     journal=Journal.open(tmp_path / "j.jsonl", config))  # fmt: skip
    straight = search(space, create_strategy("esr_ea", space, seed=5), fake_psnr(space), budget=20)
    assert [t.sample for t in resumed.trials] == [t.sample for t in straight.trials]
    assert "Set5_psnr" not in resumed.trials[0].visible()  # report-only numbers never reach the strategy
