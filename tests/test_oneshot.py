"""The NAS-Bench-201 supernet (arXiv 2001.00326), SPOS (1904.00420) and BETANAS (1912.11191) on real CIFAR-10."""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from leanvision.errors import ConfigError
from leanvision.search.oneshot import (
    BETANAS,
    SPOS,
    GreedyAlpha,
    NB201Supernet,
    SupernetTrainer,
    balanced_paths,
    create_oneshot,
    drop_ops,
    list_oneshot,
    load_supernet_data,
    op_scores,
    recalibrate_bn,
    score_paths,
    uniform_sampler,
)
from leanvision.search.oneshot.betanas import final_cells, stage_sizes, stage_steps
from leanvision.search.oneshot.train import canonical_cell
from leanvision.search.spaces.nasbench201 import (
    EDGES,
    OPS,
    NB201Space,
    canonical_arch,
    format_arch,
    is_connected,
    params_macs,
)

# Tiny real-data setting shared by every data test (one cached load): 8x8 CIFAR-10, 256 train / 200 val images.
TINY = {"C": 4, "N": 1, "resolution": 8, "subset": 256, "val_size": 200, "batch_size": 32, "bn_images": 64,
        "eval_images": 100}  # fmt: skip

ALL_NONE = dict.fromkeys(EDGES, "none")
# Node 1 gets only 'none' (zeros), node 2 and the output still get conv inputs.
DEAD_NODE = {**dict.fromkeys(EDGES, "nor_conv_3x3"), "1<-0": "none", "2<-0": "avg_pool_3x3", "3<-1": "skip_connect"}


@pytest.fixture(scope="module")
def tiny(shared_data: Path) -> dict[str, Any]:
    return {**TINY, "data_dir": str(shared_data)}


def _warm_bn(net: NB201Supernet, rng: random.Random) -> None:
    """Some train-mode forwards of random paths so every BatchNorm holds non-trivial statistics."""
    space = NB201Space()
    net.train()
    with torch.no_grad():
        for _ in range(20):
            net.set_arch(space.sample(rng))
            net(torch.randn(8, 3, 8, 8) * 2 + 0.5)


@pytest.mark.parametrize("N", [1, 2])
def test_subnet_inherits_weights_and_reproduces_the_path(N: int) -> None:
    torch.manual_seed(0)
    net = NB201Supernet(C=4, N=N)
    rng = random.Random(0)
    _warm_bn(net, rng)
    space = NB201Space()
    x = torch.randn(6, 3, 8, 8)
    net.eval()
    for arch in [ALL_NONE, DEAD_NODE, dict.fromkeys(EDGES, "nor_conv_1x1")] + [space.sample(rng) for _ in range(4)]:
        net.set_arch(arch)
        child = net.subnet(arch)
        assert type(child).__name__ == "NB201Net" and not child.training
        assert sum(p.numel() for p in child.parameters()) == params_macs(arch, C=4, N=N, resolution=8)[0]
        with torch.no_grad():
            assert torch.equal(child(x), net(x))


def test_subnet_of_restricted_supernet_and_refusals() -> None:
    net = NB201Supernet(C=4, N=1, ops=["nor_conv_3x3", "skip_connect"])
    assert net.ops == ("skip_connect", "nor_conv_3x3")
    assert set(net.cells[0].edges["e1_0"].ops) == {"skip_connect", "nor_conv_3x3"}
    arch = {**dict.fromkeys(EDGES, "skip_connect"), "3<-0": "nor_conv_3x3"}
    child = net.subnet(arch)
    assert torch.equal(child.state_dict()["cells.0.edges.e3_0.1.weight"],
                       net.state_dict()["cells.0.edges.e3_0.ops.nor_conv_3x3.1.weight"])  # fmt: skip
    with pytest.raises(ConfigError, match="not candidates"):
        net.set_arch(dict.fromkeys(EDGES, "none"))
    with pytest.raises(ConfigError, match="set_arch"):
        NB201Supernet(C=4, N=1)(torch.zeros(1, 3, 8, 8))


def test_recalibrate_bn_gives_the_true_statistics_of_the_data() -> None:
    torch.manual_seed(0)
    net = NB201Supernet(C=4, N=1)
    _warm_bn(net, random.Random(1))
    net.set_arch({**dict.fromkeys(EDGES, "nor_conv_3x3"), "1<-0": "nor_conv_1x1"})
    net.eval()
    off_path = net.cells[0].edges["e1_0"].ops["nor_conv_3x3"][2]  # this edge runs its 1x1 conv instead
    before = off_path.running_mean.clone()
    stem_bn = net.stem[1]
    seen: list[torch.Tensor] = []
    hook = stem_bn.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
    batches = [torch.randn(10, 3, 8, 8) * 3 + k for k in range(3)]  # equal sizes, different means
    recalibrate_bn(net, batches)
    hook.remove()
    inputs = torch.cat(seen)
    assert torch.allclose(stem_bn.running_mean, inputs.mean((0, 2, 3)), atol=1e-5)
    per_batch_var = torch.stack([s.var((0, 2, 3), unbiased=True) for s in seen])
    assert torch.allclose(stem_bn.running_var, per_batch_var.mean(0), rtol=1e-5)
    assert int(stem_bn.num_batches_tracked) == 3 and stem_bn.momentum == 0.1
    assert torch.equal(off_path.running_mean, before)  # a layer the batches never reach keeps its statistics
    assert not net.training


def test_balanced_paths_give_each_remaining_op_one_path_per_step() -> None:
    rng = random.Random(0)
    full = {e: list(OPS) for e in EDGES}
    for _ in range(10):
        paths = balanced_paths(full, rng)
        assert len(paths) == 5
        assert all(sorted(p[e] for p in paths) == sorted(OPS) for e in EDGES)
    uneven = {**{e: list(OPS[:4]) for e in EDGES}, "3<-2": ["skip_connect", "nor_conv_3x3"]}
    paths = balanced_paths(uneven, rng)
    assert len(paths) == 4 and sorted(p["1<-0"] for p in paths) == sorted(OPS[:4])
    short = [p["3<-2"] for p in paths]  # padded by a second permutation: each of the 2 ops twice
    assert sorted(short) == ["nor_conv_3x3", "nor_conv_3x3", "skip_connect", "skip_connect"]


def test_drop_rule_on_a_hand_made_score_table() -> None:
    none, skip, conv, pool = "none", "skip_connect", "nor_conv_3x3", "avg_pool_3x3"
    remaining = {e: [none, skip, conv, pool] for e in EDGES}
    remaining["3<-2"] = [conv]  # the last op of an edge is never dropped
    # Four paths (one balanced super-step): each edge's column uses each of its ops once.
    columns = {"1<-0": [none, skip, conv, pool], "2<-0": [conv, pool, none, skip], "2<-1": [conv, pool, skip, none],
               "3<-0": [skip, none, pool, conv], "3<-1": [none, skip, conv, pool], "3<-2": [conv] * 4}  # fmt: skip
    paths = [{e: columns[e][k] for e in EDGES} for k in range(4)]
    scores = op_scores(paths, [90.0, 40.0, 60.0, 70.0], remaining)
    assert scores["1<-0"] == {none: 90.0, skip: 40.0, conv: 60.0, pool: 70.0}
    assert scores["3<-2"] == {conv: 65.0}
    dropped = drop_ops(remaining, scores, d=1)
    assert dropped == {"1<-0": [skip], "2<-0": [pool], "2<-1": [pool], "3<-0": [none], "3<-1": [skip], "3<-2": []}
    assert drop_ops(remaining, scores, d=2)["1<-0"] == [skip, conv]
    # Shared paths: an op's score is the mean over all the paths that contain it.
    twice = op_scores(paths * 2, [90.0, 40.0, 60.0, 70.0, 100.0, 50.0, 60.0, 70.0], remaining)
    assert twice["1<-0"] == {none: 95.0, skip: 45.0, conv: 60.0, pool: 70.0}
    tie = {e: dict.fromkeys(remaining[e], 50.0) for e in EDGES}
    assert drop_ops(remaining, tie)["1<-0"] == [none]  # ties: the earlier op in the benchmark's order
    with pytest.raises(ConfigError, match="no score"):
        drop_ops(remaining, op_scores(paths[:1], [1.0], remaining))


def test_data_split_loader_stream_and_bn_images(tiny: dict[str, Any]) -> None:
    data = load_supernet_data(tiny["data_dir"], resolution=8, subset=256, val_size=200, seed=0)
    assert data is load_supernet_data(tiny["data_dir"], resolution=8, subset=256, val_size=200, seed=0)  # cached
    assert data.train_x.shape == (256, 3, 8, 8) and data.val_x.shape == (200, 3, 8, 8) and data.num_classes == 10
    assert abs(float(data.train_x.mean())) < 0.5  # normalised
    # CIFAR-10 is stored sorted by class: the val split is interleaved so that any prefix is class-balanced.
    assert torch.bincount(data.val_y[:100]).tolist() == [10] * 10
    assert torch.bincount(data.val_y).tolist() == [20] * 10
    loader = data.loader(32)
    assert len(loader) == 8
    loader.set_epoch(1)
    epoch1 = list(loader)
    window = list(loader.window(6, 4))  # batches 6, 7 of epoch 0 and 0, 1 of epoch 1
    assert all(torch.equal(a[0], b[0]) for a, b in zip(window[2:], epoch1[:2], strict=True))
    assert not torch.equal(epoch1[0][1], next(iter(data.loader(32)))[1])  # another epoch, another order
    assert torch.equal(data.bn_images(16), data.bn_images(16))
    other = load_supernet_data(tiny["data_dir"], resolution=8, subset=256, val_size=200, seed=1)
    assert torch.equal(other.val_x, data.val_x) and not torch.equal(other.train_x, data.train_x)


def test_score_paths_is_the_standalone_accuracy_and_leaves_the_supernet_unchanged(tiny: dict[str, Any]) -> None:
    trainer = SupernetTrainer(NB201Space(), seed=0, total_epochs=1, **tiny)
    trainer.train(1, uniform_sampler(trainer.space))
    net, data = trainer.net, trainer.data
    archs = [DEAD_NODE, NB201Space().sample(random.Random(3))]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    scores = trainer.score(archs)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    for arch, score in zip(archs, scores, strict=True):
        child = net.subnet(arch)
        recalibrate_bn(child, [data.bn_images(64)])
        child.eval()
        with torch.no_grad():
            correct = int((child(data.val_x[:100]).argmax(1) == data.val_y[:100]).sum())
        assert score == 100.0 * correct / 100
    # An all-'none' cell outputs zeros whatever the input: one class for all, 10% on the class-balanced prefix.
    assert score_paths(net, [ALL_NONE], data, bn_images=64, eval_images=100) == [10.0]
    assert trainer.params(DEAD_NODE) == params_macs(DEAD_NODE, C=4, N=1, resolution=8)[0]


def test_trainer_resume_is_bitwise_identical(tiny: dict[str, Any]) -> None:
    space = NB201Space()
    a = SupernetTrainer(space, seed=3, total_epochs=2, **tiny)
    a.train(2, uniform_sampler(space))
    b = SupernetTrainer(space, seed=3, total_epochs=2, **tiny)
    b.train_steps(5, uniform_sampler(space))  # stop in the middle of the first epoch
    state = b.state_dict()
    b.train(1, uniform_sampler(space))  # the saved state is a copy: training on does not change it
    c = SupernetTrainer(space, seed=3, total_epochs=2, **tiny)
    c.load_state_dict(state)
    c.train_steps(2 * c.steps_per_epoch - 5, uniform_sampler(space))
    assert all(torch.equal(v, c.net.state_dict()[k]) for k, v in a.net.state_dict().items())
    assert a.op_counts == c.op_counts and a.passes_done == c.passes_done == 16
    assert a.scheduler.get_last_lr() == c.scheduler.get_last_lr()
    # CPU time is counted and carried by the state: the resumed total includes the time before the save
    assert state["cpu_s"]["train"] > 0 and c.cpu_s["train"] > state["cpu_s"]["train"] and c.cpu_s["score"] == 0
    with pytest.raises(ConfigError, match="steps_per_epoch"):
        SupernetTrainer(space, seed=3, total_epochs=2, **{**tiny, "batch_size": 64}).load_state_dict(state)


def _run(method: Any, rounds: range) -> list[list[dict[str, Any]]]:
    return [method.run_round(r) for r in rounds]


def _spos(tiny: dict[str, Any]) -> SPOS:
    return create_oneshot("spos", NB201Space(), seed=1, supernet=tiny, epochs=2, n_eval=6, eval_chunk=3)


def _betanas(tiny: dict[str, Any]) -> BETANAS:  # equal stages
    return create_oneshot("betanas", NB201Space(), seed=1, supernet=tiny, epochs=4, R=2, max_final=12,
                          eval_chunk=5, first_drop=None)  # fmt: skip


def _greedy(tiny: dict[str, Any]) -> GreedyAlpha:
    return create_oneshot("greedy", NB201Space(), seed=1, supernet=tiny, epochs=2, n_update=4)


@pytest.mark.parametrize("make, cut", [(_spos, 1), (_spos, 3), (_betanas, 3), (_betanas, 7), (_greedy, 1)])
def test_method_state_round_trip_equals_an_uninterrupted_run(make: Any, cut: int, tiny: dict[str, Any]) -> None:
    full = make(tiny)
    whole = _run(full, range(full.rounds()))
    part = make(tiny)
    first = _run(part, range(cut))
    resumed = make(tiny)
    resumed.load_state_dict(part.state_dict())
    rest = _run(resumed, range(cut, resumed.rounds()))
    assert first + rest == whole
    assert resumed.result() == full.result()
    with pytest.raises(ConfigError, match="in order"):
        resumed.run_round(0)


def test_spos_trains_the_budget_then_scores_distinct_cells(tiny: dict[str, Any]) -> None:
    assert {"spos", "betanas"} <= set(list_oneshot())
    spos = _spos(tiny)
    assert spos.rounds() == 2 + 2
    out = _run(spos, range(spos.rounds()))
    assert out[0] == [] and out[1] == []
    scored = out[2] + out[3]
    assert len({NB201Space().key(c["sample"]) for c in scored}) == 6
    assert all(c["params"] == spos.trainer.params(c["sample"]) and 0 <= c["objective"] <= 100 for c in scored)
    res = spos.result()
    assert res["path_passes"] == 2 * 8
    assert res["picks"][0] == max(scored, key=lambda c: c["objective"])["sample"]


def test_betanas_balances_training_drops_per_stage_and_scores_the_rest(tiny: dict[str, Any]) -> None:
    bn = _betanas(tiny)
    out = _run(bn, range(bn.rounds()))
    res = bn.result()
    assert bn.sizes == [5, 4, 3]
    # SPOS's budget (4 epochs x 8 batches = 32 path passes) split equally over the stages: 10, 11, 11 passes at
    # K = 5, 4, 3 paths per step -> 2, 3, 4 optimiser steps.
    assert res["budget_passes"] == 32 and res["stage_steps"] == [2, 3, 4] and res["path_passes"] == 10 + 12 + 12
    for stage, counts in enumerate(res["stage_op_counts"]):
        for e in EDGES:
            trained = {op: n for op, n in counts[e].items() if n}
            assert len(trained) == 5 - stage and len(set(trained.values())) == 1  # flat: same count for every op
            assert set(trained) == set(bn.remaining[e]) | {op for d in res["dropped"][stage:] for op in d[e]}
    assert all(len(d[e]) == 1 for d in res["dropped"] for e in EDGES)
    assert all(len(bn.remaining[e]) == 3 for e in EDGES)
    final = [c for r in out for c in r if c["stage"] == 3]
    assert len(final) == 12 and len({NB201Space().key(c["sample"]) for c in final}) == 12
    assert all(c["sample"][e] in bn.remaining[e] for c in final for e in EDGES)
    drops = [c for r in out for c in r if c["stage"] == 1]
    assert len(drops) == 2 * 5  # R balanced super-steps of K = 5 paths
    assert res["picks"][0] == max(final, key=lambda c: c["objective"])["sample"]


def test_training_paths_stay_uniform_per_edge_on_a_canonical_space() -> None:
    plain, canonical = uniform_sampler(NB201Space()), uniform_sampler(NB201Space(canonical=True))
    assert [canonical(random.Random(k)) for k in range(20)] == [plain(random.Random(k)) for k in range(20)]


def test_betanas_first_drop_after_half_the_budget(tiny: dict[str, Any]) -> None:
    # 32 path passes: at least 16 before the first drop (4 steps x K = 5 = 20), then the 12 left split 6 and 6
    # at K = 4, 3 paths per step
    bn = create_oneshot("betanas", NB201Space(), seed=1, supernet=tiny, epochs=4, R=2, max_final=12, eval_chunk=5)
    assert bn.stage_steps == [4, 2, 2]
    out = _run(bn, range(bn.rounds()))
    drop_round = next(k for k, r in enumerate(out) if r)  # the first round that scores: the first drop
    assert drop_round == 1 and bn.trainer.history[0]["passes"] == 20 >= 32 / 2
    with pytest.raises(ConfigError, match="first_drop is the share of the budget"):
        create_oneshot("betanas", NB201Space(), supernet=tiny, first_drop=1.0)


@pytest.mark.parametrize("first_drop", [0.5, 0.6, 0.3])
@pytest.mark.parametrize("budget", [7, 32, 100, 1_001, 36 * 351])
def test_stage_steps_never_drop_before_the_share_and_keep_the_budget(budget: int, first_drop: float) -> None:
    sizes = stage_sizes(5, 3, 1)
    steps = stage_steps(budget, sizes, first_drop)
    passes = [n * k for n, k in zip(steps, sizes, strict=True)]
    assert passes[0] >= first_drop * budget and passes[0] - sizes[0] < first_drop * budget  # the fewest such steps
    assert abs(sum(passes) - budget) <= sum(sizes) or budget < 2 * sum(sizes)  # rounding only (1 step per stage min)
    equal = stage_steps(budget, sizes, None)
    assert abs(sum(n * k for n, k in zip(equal, sizes, strict=True)) - budget) <= sum(sizes) or budget < 2 * sum(sizes)


def test_canonical_cell_maps_to_the_class_representative_and_rejects_disconnected() -> None:
    canonical, plain = NB201Space(canonical=True), NB201Space()
    reps = set(canonical.cells())
    rng = random.Random(0)
    for _ in range(300):
        cell = plain.sample(rng)
        got = canonical_cell(canonical, cell)
        if is_connected(format_arch(cell)):
            assert format_arch(got) == canonical_arch(cell) and format_arch(got) in reps
        else:
            assert got is None
        assert canonical_cell(plain, cell) == cell  # a plain space keeps every cell as drawn
    assert canonical_cell(canonical, ALL_NONE) is None


def test_betanas_final_cells_on_a_canonical_space_are_one_connected_cell_per_class() -> None:
    remaining = {e: ["none", "skip_connect", "nor_conv_3x3"] for e in EDGES}
    plain = final_cells(NB201Space(), remaining)
    assert len(plain) == 3**6
    cells = final_cells(NB201Space(canonical=True), remaining)
    classes = {canonical_arch(c) for c in plain if is_connected(format_arch(c))}
    assert len(cells) == len(classes) < len(plain)
    assert {canonical_arch(c) for c in cells} == classes
    assert all(c[e] in remaining[e] for c in cells for e in EDGES)  # only remaining ops, even when the
    # class's representative uses a dropped one
    assert all(is_connected(format_arch(c)) for c in cells)


def test_spos_scores_the_given_cells_in_order(tiny: dict[str, Any]) -> None:
    canonical = NB201Space(canonical=True)
    cells = random.Random(5).sample(canonical.cells(), 4)
    spos = create_oneshot("spos", canonical, seed=1, supernet=tiny, epochs=1, eval_cells=cells, eval_chunk=3)
    out = _run(spos, range(spos.rounds()))
    assert [format_arch(c["sample"]) for r in out for c in r] == cells
    with pytest.raises(ConfigError, match="distinct cells"):
        create_oneshot("spos", canonical, supernet=tiny, eval_cells=[cells[0], cells[0]])


def test_spos_and_greedy_pick_canonical_cells_on_a_canonical_space(tiny: dict[str, Any]) -> None:
    canonical = NB201Space(canonical=True)
    spos = create_oneshot("spos", canonical, seed=1, supernet=tiny, epochs=1, n_eval=30)
    assert all(format_arch(c) in set(canonical.cells()) for c in spos.eval_archs)
    greedy = create_oneshot("greedy", canonical, seed=1, supernet=tiny, epochs=1, n_update=2)
    # alpha favours a cell that is not its class's representative: node 1 feeds nothing, so its op is dead
    odd = {**dict.fromkeys(EDGES, "nor_conv_3x3"), "1<-0": "nor_conv_1x1", "2<-1": "none", "3<-1": "none"}
    for e in EDGES:
        greedy.alpha[e][odd[e]] = 1.0
    assert greedy.argmax() == odd
    assert format_arch(greedy.pick()) == canonical_arch(odd) != format_arch(odd)


def test_greedy_baseline_follows_its_alpha(tiny: dict[str, Any]) -> None:
    greedy = _greedy(tiny)
    out = _run(greedy, range(greedy.rounds()))
    assert [len(r) for r in out] == [4, 4, 1]  # two training rounds with their update paths, then the argmax
    res = greedy.result()
    assert res["picks"] == [out[-1][0]["sample"]]
    assert all(res["picks"][0][e] == max(res["alpha"][e], key=res["alpha"][e].get) for e in EDGES)
    assert any(a != 0 for e in EDGES for a in res["alpha"][e].values())
    assert res["path_passes"] == 2 * 8 and sum(res["op_counts"]["1<-0"].values()) == 16


def test_methods_never_read_the_ground_truth_table(tiny: dict[str, Any]) -> None:
    from leanvision.search.evaluators import tabular

    tabular._read.cache_clear()  # a cached table would be served without opening the file
    opened: list[str] = []
    watching = [True]

    def audit(event: str, args: tuple) -> None:
        if watching[0] and event == "open" and "nasbench201" in str(args[0]):
            opened.append(str(args[0]))

    sys.addaudithook(audit)  # audit hooks cannot be removed: the flag turns it off
    try:
        for make in (_spos, _betanas, _greedy):
            method = make(tiny)
            _run(method, range(method.rounds()))
            method.result()
    finally:
        watching[0] = False
    assert opened == []
    src = Path(__file__).resolve().parents[1] / "leanvision" / "search" / "oneshot"
    for name in ("supernet.py", "data.py", "train.py", "spos.py", "betanas.py"):
        text = (src / name).read_text()
        assert "tabular" not in text and "load_nb201" not in text and "nasbench201.csv" not in text


def test_method_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="set by the method"):
        create_oneshot("spos", NB201Space(), supernet={"total_epochs": 3})
    with pytest.raises(ConfigError, match="unknown supernet options"):
        create_oneshot("betanas", NB201Space(), supernet={"width": 3})
    with pytest.raises(ConfigError, match="rounds"):
        create_oneshot("spos", NB201Space(), epochs=2, rounds=3)
