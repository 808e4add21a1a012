"""Channel layouts padded with zero channels, so runtimes with blocked layouts (onnxruntime's NCHWc) keep them.

onnxruntime's CPU provider runs convolutions in a blocked ``NCHWc`` layout (block 16 with AVX-512, 8 with
AVX2) but converts back to plain NCHW around any channel ``Concat`` whose inputs are not each a multiple of
the block: two reorders per concat. A *layout* here is where each logical channel of a tensor sits among its
physical channels (``idx``) and how many physical channels there are (``phys``); the others are exactly zero.
A conv is re-laid by placing its weight rows (outputs) and columns (inputs); zero rows keep pads at zero and
zero columns ignore them, so the padded network computes exactly the same logical channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from leanvision.errors import ConfigError


def round_up(n: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= ``n``."""
    return -(-n // multiple) * multiple


@dataclass(frozen=True)
class Layout:
    """Logical channel ``i`` of a tensor lives at physical channel ``idx[i]`` of ``phys``; the rest are zero."""

    idx: tuple[int, ...]
    phys: int

    @classmethod
    def dense(cls, n: int, multiple: int = 1) -> Layout:
        """Channels ``0..n-1`` in order, padded at the end to a multiple of ``multiple``."""
        return cls(tuple(range(n)), round_up(n, multiple))

    def index(self) -> Tensor:
        return torch.tensor(self.idx, dtype=torch.long)


def _new_conv(conv: nn.Conv2d, in_chs: int, out_chs: int, groups: int, bias: bool) -> nn.Conv2d:
    new = nn.Conv2d(in_chs, out_chs, conv.kernel_size, conv.stride, conv.padding, conv.dilation, groups, bias=bias)
    new = new.to(device=conv.weight.device, dtype=conv.weight.dtype)
    nn.init.zeros_(new.weight)
    if bias:
        nn.init.zeros_(new.bias)
    return new.train(conv.training)


@torch.no_grad()
def relayout_conv(conv: nn.Conv2d, src: Layout, dst: Layout) -> nn.Conv2d:
    """``conv`` re-laid to read inputs in ``src`` and write outputs in ``dst``; exact on the logical channels.

    Dense convs (``groups=1``) place rows and columns anywhere. Grouped convs (depthwise, with or without a
    channel multiplier) keep their grouping, so input channel ``c`` must sit at ``src.idx[c]`` and output
    channel ``o`` at ``dst.idx[o]`` with the same group arithmetic on the physical side: the physical
    groups then are ``src.phys // (in_chs // groups)``.
    """
    if type(conv) is not nn.Conv2d:
        raise ConfigError(f"relayout_conv: expected a plain nn.Conv2d, got {type(conv).__name__}")
    if len(src.idx) != conv.in_channels or len(dst.idx) != conv.out_channels:
        raise ConfigError(
            f"relayout_conv: layouts of {len(src.idx)} -> {len(dst.idx)} channels do not fit a conv of "
            f"{conv.in_channels} -> {conv.out_channels}"
        )
    w, g = conv.weight, conv.groups
    rows, cols = dst.index().to(w.device), src.index().to(w.device)
    if g == 1:
        new = _new_conv(conv, src.phys, dst.phys, 1, conv.bias is not None)
        new.weight[rows.unsqueeze(1), cols.unsqueeze(0)] = w
    else:
        cin, cout = conv.in_channels // g, conv.out_channels // g  # per group
        groups = src.phys // cin
        if src.phys % cin or dst.phys != groups * cout:
            raise ConfigError(f"relayout_conv: {src.phys} -> {dst.phys} physical channels break groups of {cin}")
        in_group = cols.view(g, cin) // cin
        out_group = rows.view(g, cout) // cout
        if not (in_group == in_group[:, :1]).all() or not torch.equal(in_group[:, 0], out_group[:, 0]):
            raise ConfigError("relayout_conv: the layouts move channels out of their conv group")
        new = _new_conv(conv, src.phys, dst.phys, groups, conv.bias is not None)
        # A grouped weight row only sees its group's inputs: their order within the group is kept.
        if not torch.equal(cols.view(g, cin) % cin, torch.arange(cin, device=w.device).expand(g, cin)):
            raise ConfigError("relayout_conv: the layouts reorder channels inside a conv group")
        new.weight[rows] = w
    if conv.bias is not None:
        new.bias[rows] = conv.bias
    return new
