"""Squeeze-and-excitation with a hard-sigmoid gate (arXiv 1709.01507; gate from MobileNetV3, 1905.02244)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from leanvision.ops.conv_bn_act import make_act


def make_divisible(v: float, divisor: int = 8, *, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Round ``v`` to the nearest multiple of ``divisor``, never going below ``round_limit * v`` (MobileNet rule)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:  # rounding down must not remove more than 10% of the channels
        new_v += divisor
    return new_v


class SqueezeExcite(nn.Module):
    """Channel gate: global mean -> 1x1 reduce -> ReLU -> 1x1 expand -> hard-sigmoid, times the input."""

    def __init__(
        self,
        in_chs: int,
        *,
        rd_ratio: float = 0.25,
        rd_divisor: int = 4,
        act_layer: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        rd_chs = make_divisible(in_chs * rd_ratio, rd_divisor)
        self.conv_reduce = nn.Conv2d(in_chs, rd_chs, 1, bias=True)
        self.act = make_act(act_layer)
        self.conv_expand = nn.Conv2d(rd_chs, in_chs, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        # adaptive_avg_pool2d exports as GlobalAveragePool, which onnxruntime runs in its blocked layout
        # (a ReduceMean would force two layout conversions around every SE).
        s = self.act(self.conv_reduce(F.adaptive_avg_pool2d(x, 1)))
        return x * F.hardsigmoid(self.conv_expand(s))
