"""One initialisation rule for every conv of a comparison, static and dynamic alike.

Kaiming-normal with fan-out (He et al., arXiv 1502.01852; torch's convention fan_out = out_channels * k_h * k_w):
a static conv's kernel, a dynamic conv's combined kernel at init and a full-stack conv's applied kernel all start
with the same variance for the same fan. BatchNorm follows these convs, so a kernel's norm sets its effective step
size: nets started at different scales are not trained alike, whatever the method.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from leanvision.ops.dynamic_conv import DynamicConv2d
from leanvision.ops.fullstack import MaskConv2d


def kaiming_std(out_chs: int, kernel_size: int | tuple[int, ...]) -> float:
    """Standard deviation of the rule for a kernel with ``out_chs`` outputs: sqrt(2 / (out_chs * k_h * k_w))."""
    k = math.prod(kernel_size) if isinstance(kernel_size, tuple) else kernel_size * kernel_size
    return math.sqrt(2.0 / (out_chs * k))


@torch.no_grad()
def init_convs(model: nn.Module) -> nn.Module:
    """Re-initialise every conv of ``model`` by the rule (biases to 0); returns ``model``.

    ``nn.Conv2d``: N(0, kaiming_std). ``DynamicConv2d``: its bank, scaled so the combined kernel at init has that
    variance. ``MaskConv2d``: its full-stack filters (the applied kernel is +-1 times them; mask proxies are kept).
    Binary convs keep their own latent-weight init: their kernel is sign(W) times a scale, not W.
    """
    for m in model.modules():
        if isinstance(m, DynamicConv2d):
            m.reset_parameters()
        elif isinstance(m, (nn.Conv2d, MaskConv2d)):
            w = m.basis if isinstance(m, MaskConv2d) else m.weight
            nn.init.normal_(w, 0.0, kaiming_std(m.out_channels, m.kernel_size))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model
