"""NAS-Bench-201 (arXiv 2001.00326): the cell space, the network, analytic counts and the tabular evaluator."""

from __future__ import annotations

import itertools
import pickle
import random
from pathlib import Path

import pytest
import torch

from leanvision.errors import ConfigError, DataError, UnknownNameError
from leanvision.executors import ProcessExecutor, map_unordered
from leanvision.models import arch_of, create_model
from leanvision.models.nasbench201 import NB201Net
from leanvision.ops import fuse_bn
from leanvision.profile import profile
from leanvision.search import create_evaluator, create_space, create_strategy, search
from leanvision.search.evaluators.tabular import NB201Tabular, arch_code, load_nb201, optimum
from leanvision.search.spaces.nasbench201 import (
    BEST_CIFAR10_ARCH,
    EDGES,
    OPS,
    NB201Space,
    params_macs,
    parse_arch,
)

ALL_CONV3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


@pytest.fixture(scope="module")
def nb201_dir(shared_data: Path) -> Path:
    if not (shared_data / "nasbench201" / "nasbench201.csv").is_file():
        pytest.skip("nasbench201/nasbench201.csv not found under the data directory")
    return shared_data


@pytest.fixture(scope="module")
def table(nb201_dir: Path) -> dict[str, dict[str, float]]:
    return load_nb201(nb201_dir)


@pytest.fixture(scope="module")
def evaluator(nb201_dir: Path) -> NB201Tabular:
    return create_evaluator("nasbench201_tabular", data_dir=nb201_dir)


# --- the space ------------------------------------------------------------------------------------------------


def test_every_table_arch_round_trips(table) -> None:
    space = create_space("nasbench201")
    assert len(table) == space.size() == 15_625
    samples = [space.from_string(arch) for arch in table]
    assert [space.to_string(s) for s in samples] == list(table)
    assert [space.key(s) for s in samples] == list(table)
    every = {tuple(p) for p in itertools.product(OPS, repeat=len(EDGES))}
    assert {tuple(s[e] for e in EDGES) for s in samples} == every  # the table holds each cell exactly once
    assert sorted(arch_code(s) for s in samples) == list(range(15_625))


def test_space_sample_mutate_and_restrict() -> None:
    space, rng = NB201Space(), random.Random(0)
    s = space.sample(rng)
    space.validate(s)
    child = space.mutate(s, rng)
    assert sum(child[e] != s[e] for e in EDGES) == 1
    small = create_space("nasbench201", ops=["nor_conv_3x3", "none"])
    assert small.ops == ("none", "nor_conv_3x3") and small.size() == 64
    with pytest.raises(ConfigError, match=r"3<-2='skip_connect' is not one of \['none', 'nor_conv_3x3'\]"):
        small.from_string(ALL_CONV3.replace("nor_conv_3x3~2", "skip_connect~2"))
    with pytest.raises(ConfigError, match="choose a non-empty subset"):
        NB201Space(ops=["conv_5x5"])
    with pytest.raises(ConfigError, match="choose a non-empty subset"):
        NB201Space(ops=[])


@pytest.mark.parametrize(("arch", "match"), [
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|", "needs 3 nodes joined by '\\+', got 2"),
    ("nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", "node 1 'nor_conv_3x3~0\\|' must start and end"),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 needs 2 inputs .* got 1"),
    ("|none~0|+|none~1|none~0|+|none~0|none~1|none~2|", "input 0 of node 2 must be written 'op~0', got 'none~1'"),
    ("|none~0|+|none~0|none~1|+|none~0|none~1|conv_3x3~2|", "unknown op 'conv_3x3' on edge 3<-2; did you mean"),
    (42, "a NAS-Bench-201 arch is a string"),
])  # fmt: skip
def test_bad_arch_strings_say_what_is_wrong(arch, match) -> None:
    with pytest.raises(ConfigError, match=match):
        NB201Space().from_string(arch)


# --- the network ----------------------------------------------------------------------------------------------


def test_build_forward_and_registered_model() -> None:
    space = NB201Space()
    sample = space.from_string(BEST_CIFAR10_ARCH)
    model = space.build(sample, C=4, N=1)
    assert arch_of(model) == {"name": "nasbench201",
                              "kwargs": {"arch": BEST_CIFAR10_ARCH, "C": 4, "N": 1, "num_classes": 10}}  # fmt: skip
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert create_model("nasbench201").arch == BEST_CIFAR10_ARCH  # the default: index 6111
    # 'none' edges hold no module; a node whose inputs are all 'none' is zeros, and so is a cell without inputs.
    net = NB201Net(ALL_NONE.replace("none~0|+", "avg_pool_3x3~0|+", 1), C=4, N=1).eval()
    assert [list(c.edges) for c in net.cells if hasattr(c, "edges")] == [["e1_0"]] * 3
    cell = net.cells[0]
    assert torch.equal(cell(torch.randn(1, 4, 8, 8)), torch.zeros(1, 4, 8, 8))
    assert torch.isfinite(net(torch.randn(2, 3, 16, 16))).all()


def test_fused_form_matches_for_a_mixed_cell() -> None:
    net = NB201Net("|avg_pool_3x3~0|+|none~0|skip_connect~1|+|nor_conv_1x1~0|nor_conv_3x3~1|none~2|", C=4, N=1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 2)
    net.eval()
    fused, x = fuse_bn(net), torch.randn(2, 3, 16, 16)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    with torch.no_grad():
        torch.testing.assert_close(fused(x), net(x), atol=1e-5, rtol=1e-4)


# --- analytic params / MACs -----------------------------------------------------------------------------------


def _profiled(arch: str, **kw) -> tuple[int, int]:
    res = kw.pop("resolution", 32)
    prof = profile(NB201Net(arch, **kw), torch.zeros(1, 3, res, res))
    assert not prof.unsupported
    return prof.params, prof.macs


def test_params_macs_formula_equals_profiler() -> None:
    space, rng = NB201Space(), random.Random(1)
    for arch in (BEST_CIFAR10_ARCH, ALL_NONE):
        assert params_macs(arch) == _profiled(arch)
    for k in range(10):  # other shapes too: the formula is not fitted to the defaults
        arch = space.to_string(space.sample(rng))
        kw = {"C": (4, 8)[k % 2], "N": 1 + k % 2, "num_classes": (10, 100, 120)[k % 3], "resolution": (32, 16)[k % 2]}
        assert params_macs(arch, **kw) == _profiled(arch, **kw), arch


def test_params_macs_cross_check() -> None:
    # Derived by hand from NAS-Bench-201's TinyNetwork (AutoDL-Projects lib/models/cell_infers) at C=16, N=5,
    # CIFAR-10: the all-3x3-conv cell has 1,531,546 parameters (BN included), i.e. the benchmark's "1.53 MB", and
    # 220,119,680 MACs; the benchmark's counter (lib/utils/flop_benchmark.py) also counts the classifier's 10 bias
    # adds: 220.12 MFLOPs. The all-none cell: 73,306 parameters (0.07 MB) and 7,783,040 MACs (+10 = 7.78 MFLOPs).
    # These match the CIFAR-10 ranges the benchmark publishes (about 0.07-1.53 MB, 7.78-220 MFLOPs) as recalled
    # by the developers, not re-checked against the paper's table.
    assert params_macs(ALL_CONV3) == (1_531_546, 220_119_680)
    assert params_macs(ALL_NONE) == (73_306, 7_783_040)
    with pytest.raises(ConfigError, match="resolution must be divisible by 4"):
        params_macs(ALL_NONE, resolution=30)
    with pytest.raises(ConfigError, match="exactly the edges"):
        params_macs({"1<-0": "none"})


# --- the tabular evaluator ------------------------------------------------------------------------------------


def test_evaluator_objective_is_the_proxy_and_test_only_in_report(evaluator, table, nb201_dir) -> None:
    sample = parse_arch(BEST_CIFAR10_ARCH)
    out = evaluator(sample)
    assert out["objective"] == table[BEST_CIFAR10_ARCH]["cifar10_val_12ep"] == pytest.approx(84.384)
    assert out["report"] == {"test_200ep": table[BEST_CIFAR10_ARCH]["cifar10_test_200ep"]}
    assert set(out) == {"objective", "params", "macs", "report"}
    assert (out["params"], out["macs"]) == params_macs(sample)
    assert round(optimum("cifar10", data_dir=nb201_dir), 2) == 94.37 == round(out["report"]["test_200ep"], 2)


def test_evaluator_options(nb201_dir, table) -> None:
    arch = "|nor_conv_1x1~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|skip_connect~2|"
    ev = NB201Tabular(data_dir=nb201_dir, dataset="imagenet16", proxy="test_12ep", report=["test_200ep", "val_12ep"])
    out = ev(parse_arch(arch))
    row = table[arch]
    assert out["objective"] == row["imagenet16_test_12ep"]
    assert out["report"] == {"test_200ep": row["imagenet16_test_200ep"], "val_12ep": row["imagenet16_val_12ep"]}
    assert out["macs"] == params_macs(arch, num_classes=120, resolution=16)[1]
    with pytest.raises(ConfigError, match=r"proxy must be one of val_12ep, test_12ep.*never searched on"):
        NB201Tabular(data_dir=nb201_dir, proxy="test_200ep")
    with pytest.raises(UnknownNameError, match=r"did you mean .cifar100."):
        NB201Tabular(data_dir=nb201_dir, dataset="cifar-100")
    with pytest.raises(ConfigError, match="nor_conv_5x5"):
        ev(parse_arch(arch) | {"3<-2": "nor_conv_5x5"})
    with pytest.raises(ConfigError, match="exactly the edges"):
        ev({"1<-0": "none"})


def test_missing_table_is_a_data_error(tmp_path, monkeypatch) -> None:
    with pytest.raises(DataError, match=r"looked for .*nasbench201/nasbench201\.csv.*--data-dir DIR.*LEANVISION_DATA"):
        NB201Tabular(data_dir=tmp_path)
    monkeypatch.delenv("LEANVISION_DATA", raising=False)
    with pytest.raises(DataError, match=r"--data-dir.*LEANVISION_DATA"):
        NB201Tabular()


def test_evaluator_pickles_small_and_runs_in_a_worker(evaluator) -> None:
    assert len(pickle.dumps(evaluator)) < 3_000_000
    space, rng = NB201Space(), random.Random(2)
    samples = [space.sample(rng) for _ in range(3)]
    with ProcessExecutor(workers=1) as ex:
        got = {space.key(s): out for s, out in map_unordered(ex, evaluator, samples)}
    assert got == {space.key(s): evaluator(s) for s in samples}


def test_search_on_the_table_reports_test_accuracy(evaluator, table) -> None:
    space = create_space("nasbench201")
    history = search(space, create_strategy("evolution", space, seed=0, population=5, tournament=2), evaluator,
                     budget=12)  # fmt: skip
    assert len(history.ok()) == 12
    for t in history.trials:
        row = table[space.key(t.sample)]
        assert t.objective == row["cifar10_val_12ep"] and t.report == {"test_200ep": row["cifar10_test_200ep"]}
        assert "test_200ep" not in t.visible()


def test_canonical_classes_match_the_published_count() -> None:
    from leanvision.models.nasbench201_arch import canonical_archs, is_connected

    nats = set(canonical_archs().values())
    assert len(nats) == 6466  # NAS-Bench-201's unique cells on CIFAR-10 (arXiv 2001.00326)
    assert sum(not is_connected(a) for a in nats) == 5
    strict = set(canonical_archs(zero="strict").values())
    assert len(strict) == 5390 and sum(not is_connected(a) for a in strict) == 1


@pytest.mark.parametrize(
    "a, b",
    [  # skip on edge 1<-0 then conv on 2<-1 == conv on 2<-0 when the other inputs match
        ("|skip_connect~0|+|none~0|nor_conv_3x3~1|+|none~0|none~1|skip_connect~2|",
         "|nor_conv_1x1~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|skip_connect~2|"),
        # a conv whose node only feeds 'none' edges is dead
        ("|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|",
         "|avg_pool_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"),
    ],
)  # fmt: skip
def test_isomorphic_pairs_map_to_one_cell(a, b) -> None:
    from leanvision.models.nasbench201_arch import canonical_arch, unique_str

    assert unique_str(a) == unique_str(b)
    assert canonical_arch(a) == canonical_arch(b) == min(canonical_arch(a), a, b)
    assert unique_str(a) != unique_str(ALL_CONV3)


def test_strict_rule_drops_zero_terms_the_benchmark_keeps() -> None:
    from leanvision.models.nasbench201_arch import unique_str

    # nodes 1 and 2 swap roles: the same function, but the benchmark's string keeps node 2's zero term in place
    a = "|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|none~0|skip_connect~1|skip_connect~2|"
    b = "|nor_conv_1x1~0|+|nor_conv_3x3~0|none~1|+|none~0|skip_connect~1|skip_connect~2|"
    assert unique_str(a, zero="strict") == unique_str(b, zero="strict")
    assert unique_str(a) != unique_str(b)
    with pytest.raises(ConfigError, match="zero must be one of"):
        unique_str(a, zero="full")


def test_disconnected_cells_are_recognised() -> None:
    from leanvision.models.nasbench201_arch import is_connected

    assert not is_connected(ALL_NONE)
    assert not is_connected("|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|none~2|")
    assert is_connected("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|skip_connect~1|none~2|")
    assert is_connected("|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|")
    assert is_connected(ALL_CONV3)


def test_canonical_space_samples_connected_representatives() -> None:
    from leanvision.models.nasbench201_arch import canonical_arch, is_connected

    space = create_space("nasbench201", canonical=True)
    assert len(space.cells()) == 6461
    rng = random.Random(0)
    for _ in range(50):
        s = space.sample(rng)
        arch = space.to_string(s)
        assert is_connected(arch) and canonical_arch(arch) == arch
        child = space.to_string(space.mutate(s, rng))
        assert is_connected(child) and canonical_arch(child) == child != arch
    with pytest.raises(ConfigError, match="no connected cell"):
        NB201Space(ops=["none"], canonical=True)
