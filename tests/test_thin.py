"""The thin control: a width multiplier bisected until the plain net's MACs match a target."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from leanvision.errors import ConfigError
from leanvision.models import create_model, match_width
from leanvision.profile import profile


def two_convs(width: float) -> nn.Sequential:
    """16 -> c -> 16 channels of 1x1 convs on a 1x1 image: 32 * c MACs, c = round(64 * width)."""
    c = max(1, round(64 * width))
    return nn.Sequential(nn.Conv2d(16, c, 1, bias=False), nn.Conv2d(c, 16, 1, bias=False))


def test_hand_checkable_match() -> None:
    m = match_width(two_convs, 32 * 20, input_size=(16, 1, 1))
    assert m.model[0].out_channels == 20 and m.cost == 640 and m.ratio == 1.0
    assert round(64 * m.width) == 20
    # Between two steps (20 channels = 640, 21 = 672) the nearer one wins: 650 -> 20, 660 -> 21.
    assert match_width(two_convs, 650, input_size=(16, 1, 1)).model[0].out_channels == 20
    assert match_width(two_convs, 660, input_size=(16, 1, 1)).model[0].out_channels == 21


def test_thin_resnet20_at_ghost_resnet20_macs() -> None:
    x = torch.zeros(1, 3, 32, 32)
    target = profile(create_model("ghost_resnet20"), x).macs

    def thin(w: float) -> nn.Module:
        return create_model("resnet20", widths=tuple(max(1, round(c * w)) for c in (16, 32, 64)))

    m = match_width(thin, target)
    assert abs(m.ratio - 1) < 0.03 and 0.6 < m.width < 0.8  # half a channel step; MACs grow as width^2
    assert m.cost == profile(m.model, x).macs


def test_any_monotone_cost_and_errors() -> None:
    m = match_width(two_convs, 10, cost=lambda model: model[0].out_channels)  # e.g. a measured latency instead
    assert m.model[0].out_channels == 10
    with pytest.raises(ConfigError, match="outside what widths"):
        match_width(two_convs, 10**6, input_size=(16, 1, 1))
    with pytest.raises(ConfigError, match="0 < low < high"):
        match_width(two_convs, 640, low=1.0, high=0.5)


def test_latency_cost_times_the_deploy_form_and_bisects_like_any_cost(monkeypatch) -> None:
    import leanvision.models.thin as thin

    seen = []

    def fake_latency(model, x, **kw):  # no timing in tests: a cost that is monotone in the width
        seen.append((tuple(x.shape), kw, any(isinstance(m, nn.BatchNorm2d) for m in model.modules())))
        return type("Stats", (), {"median_ms": float(sum(p.numel() for p in model.parameters()))})()

    monkeypatch.setattr(thin, "latency", fake_latency)
    cost = thin.latency_at((16, 1, 1), batch_size=4, threads=2, iters=3)

    def with_bn(width: float) -> nn.Sequential:
        c = max(1, round(64 * width))
        return nn.Sequential(nn.Conv2d(16, c, 1, bias=False), nn.BatchNorm2d(c), nn.Conv2d(c, 16, 1, bias=False))

    m = match_width(with_bn, 33.0 * 20, cost=cost)  # BN folded into a bias: 16 + 1 + 16 params per channel
    assert m.model[0].out_channels == 20 and m.cost == 660.0
    assert seen[0] == ((4, 16, 1, 1), {"backend": "eager", "threads": 2, "iters": 3}, False)
