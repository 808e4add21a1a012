"""Zero-cost proxies (arXiv 2101.08134, 2006.04647) against values worked by hand on tiny nets, and their evaluator."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from leanvision.errors import ConfigError, UnknownNameError
from leanvision.search.proxies import PROXIES, get_proxy, rank_aggregate


def _linear(w: list[list[float]]) -> nn.Linear:
    layer = nn.Linear(len(w[0]), len(w), bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(w))
    return layer


def two_layer() -> nn.Module:
    return nn.Sequential(_linear([[1, -2], [3, 4]]), nn.ReLU(), _linear([[1, 1], [-1, 2]]))


BATCH = (torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))


def test_synflow_by_hand_and_leaves_the_model_alone() -> None:
    # |W1| 1 = [3, 7], |W2| [3, 7] = [10, 17]: R = 27; each layer of a linear chain contributes R, so 2 R = 54
    net = two_layer()
    before = [p.clone() for p in net.parameters()]
    assert PROXIES["synflow"](net, BATCH) == pytest.approx(54.0)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    assert next(net.parameters()).dtype == torch.float32


def test_naswot_by_hand() -> None:
    # pre-activations [1, 3] and [-2, 4]: codes 11 and 01 agree on one unit, K = [[2, 1], [1, 2]], det 3
    assert PROXIES["naswot"](two_layer(), BATCH) == pytest.approx(math.log(3))


def test_snip_and_grad_norm_by_hand() -> None:
    # W = I, x = [1, 2], label 0: dL/dlogits = [-s, s] with s = sigmoid(1), dL/dW = outer([-s, s], x)
    net, batch = _linear([[1, 0], [0, 1]]), (torch.tensor([[1.0, 2.0]]), torch.tensor([0]))
    s = 1 / (1 + math.exp(-1))
    assert get_proxy("snip")(net, batch) == pytest.approx(3 * s)  # |W00 g00| + |W11 g11| = s + 2 s
    assert get_proxy("grad_norm")(net, batch) == pytest.approx(s * math.sqrt(10))


def test_jacov_by_hand() -> None:
    # every image has the same input gradient, so the correlation matrix is all ones: eigenvalues 0 and 2
    net, k = _linear([[1, 0], [0, 2]]), 1e-5
    want = -(math.log(k) + 1 / k + math.log(2 + k) + 1 / (2 + k))
    assert get_proxy("jacov")(net, BATCH) == pytest.approx(want, rel=1e-6)


def test_params_macs_and_rank_aggregation() -> None:
    assert get_proxy("params")(two_layer(), BATCH) == 8.0
    assert get_proxy("macs")(two_layer(), BATCH) == 8.0
    assert rank_aggregate({"a": [1, 3, 2], "b": [3, 1, 2]}) == [4.0, 4.0, 4.0]
    assert rank_aggregate({"a": [5, 5, 1], "b": [0.1, 0.3, 0.2]}) == [3.5, 5.5, 3.0]
    with pytest.raises(UnknownNameError, match="did you mean 'synflow'"):
        get_proxy("synflw")


def test_zerocost_evaluator_ranks_nb201_cells_and_hides_the_table(shared_data) -> None:
    from leanvision.search import create_evaluator, create_space, create_strategy, search

    if not (shared_data / "nasbench201" / "nasbench201.csv").is_file():
        pytest.skip("nasbench201/nasbench201.csv not found under the data directory")
    ev = create_evaluator("zerocost", proxy="synflow", data_dir=shared_data, batch_size=10, C=4, N=1)
    space = create_space("nasbench201", canonical=True)
    history = search(space, create_strategy("random", space, seed=0), ev, budget=4)
    assert len(history.ok()) == 4
    for t in history.trials:
        assert t.report["test_200ep"] > 0 and "test_200ep" not in t.visible()
        assert t.objective == ev(t.sample)["objective"]  # same batch and initialisation every call
    with pytest.raises(UnknownNameError, match="zero-cost proxy"):
        create_evaluator("zerocost", proxy="flops", report=())
    with pytest.raises(ConfigError, match="batch_size must be an integer >= 10"):
        create_evaluator("zerocost", batch_size=8, report=())
