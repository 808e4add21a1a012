"""Hardware-aware widths: the measured rule that picks the channel multiple pruned layers are rounded to."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from leanvision.compress.widths import MultipleChoice, choose_multiple, conv_shapes, pruned_widths, round_up
from leanvision.errors import ConfigError


def _cheap_multiples_of(block: int, penalty: float = 1.5):
    """A fake timer: latency proportional to channels, ``penalty`` times more off the ``block`` grid."""
    return lambda nets, x, backend: {k: int(k) * (1.0 if int(k) % block == 0 else penalty) for k in nets}


def test_round_up_never_exceeds_the_layer() -> None:
    assert [round_up(w, 16, 64) for w in (1, 16, 17, 50, 63)] == [16, 16, 32, 64, 64]
    assert round_up(59, 16, 60) == 60 and round_up(59, 1, 64) == 59


@pytest.mark.parametrize("channels", [2, 3, 8, 32, 100, 256])
def test_pruned_widths_are_off_every_block_and_below_the_layer(channels: int) -> None:
    widths = pruned_widths(channels)
    assert widths == sorted(set(widths)) and all(max(1, channels // 4 - 1) <= w < channels for w in widths)
    assert all(w % 8 for w in widths if w > 1)


def test_conv_shapes_ranks_dense_convs_by_macs() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                          nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.Conv2d(16, 16, 1),
                          nn.Conv2d(16, 32, 3, padding=1))  # fmt: skip
    # MACs: 8->16 at 8x8 out: 74k; 16->32 at 8x8: 295k; depthwise and 1x1 convs are not rounded, nor is the stem's
    # input, the image
    assert conv_shapes(model, (3, 16, 16)) == [(16, 8, 8), (8, 16, 16)]
    assert conv_shapes(model, (3, 16, 16), top=1) == [(16, 8, 8)]
    with pytest.raises(ConfigError, match="cannot be pruned to fewer"):
        pruned_widths(1)
    with pytest.raises(ConfigError, match="no dense 3x3"):
        conv_shapes(nn.Sequential(nn.Conv2d(3, 4, 1)), (3, 8, 8))


def test_the_multiple_whose_rounded_widths_run_fastest_wins() -> None:
    shapes = [(64, 8, 8), (32, 16, 16)]
    assert choose_multiple(shapes, timer=_cheap_multiples_of(16)).multiple == 16
    assert choose_multiple(shapes, timer=_cheap_multiples_of(8)).multiple == 8
    flat = choose_multiple(shapes, timer=_cheap_multiples_of(1))  # time grows with channels only: never round
    assert flat.multiple == 1 and flat.scores[1] == 1.0 and all(v > 1 for k, v in flat.scores.items() if k > 1)


def test_a_score_is_the_mean_latency_ratio_rounded_over_as_is() -> None:
    # One shape of 32 channels: widths 7, 13, 17, 22, 26, 31; x16 rounds them to 16, 16, 32, 32, 32, 32.
    choice = choose_multiple([(32, 4, 4)], candidates=[16], backends=["eager"], timer=_cheap_multiples_of(16))
    widths = choice.widths["32x4x4"]
    expected = sum(round_up(w, 16, 32) / (1.5 * w) for w in widths) / len(widths)
    assert widths == [7, 13, 17, 22, 26, 31] and choice.scores[16] == pytest.approx(expected)
    assert isinstance(choice, MultipleChoice) and choice.to_dict()["scores"].keys() == {"1", "16"}
    assert choice.by_backend == {"eager": choice.scores}


def test_the_score_averages_the_backends_and_keeps_each() -> None:
    # eager pays 1.5x off the 16-grid, onnxruntime nothing: x16 helps eager and costs onnxruntime its extra channels.
    timer = lambda nets, x, b: {k: int(k) * (1.5 if b == "eager" and int(k) % 16 else 1.0) for k in nets}  # noqa: E731
    choice = choose_multiple([(64, 4, 4)], candidates=[16], timer=timer)
    eager, ort = choice.by_backend["eager"][16], choice.by_backend["onnxruntime"][16]
    assert eager < 1 < ort and choice.scores[16] == pytest.approx((eager + ort) / 2)


def test_a_real_measurement_records_the_load_beside_it() -> None:
    torch.manual_seed(0)
    choice = choose_multiple([(16, 4, 4)], candidates=[8], backends=["eager"], widths_per_shape=2, rounds=1,
                             threads=1)  # fmt: skip
    assert choice.multiple in (1, 8) and choice.scores[1] == 1.0 and choice.threads == 1
    assert choice.other_cores is None or choice.other_cores >= 0


@pytest.mark.parametrize(("shapes", "candidates", "message"), [
    ([], (8,), "at least one conv shape"), ([(8, 4, 4)], (0, 8), "must be >= 1")])  # fmt: skip
def test_bad_arguments_are_one_line_errors(shapes, candidates, message) -> None:
    with pytest.raises(ConfigError, match=message):
        choose_multiple(shapes, candidates=candidates, timer=_cheap_multiples_of(8))
