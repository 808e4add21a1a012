"""Conv -> BatchNorm -> activation, the unit every leanvision model is built from."""

from __future__ import annotations

from torch import Tensor, nn

from leanvision.errors import ConfigError
from leanvision.ops.fuse import fold_conv_bn, foldable


def make_act(act_layer: type[nn.Module] | None) -> nn.Module | None:
    """Instantiate an activation class, in place where it supports it (ReLU, Hardswish, ...)."""
    if act_layer is None:
        return None
    try:
        return act_layer(inplace=True)
    except TypeError:
        return act_layer()


class ConvBnAct(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> activation; ``fold_bn()`` turns it into conv (+bias) -> activation.

    ``act_layer=None`` makes it linear. After folding, ``bn`` is ``None`` so the deploy form runs exactly two
    ops (conv, activation): at batch 1 on CPU the per-op overhead of a BatchNorm or an Identity call is
    comparable to a small conv.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 1,
        *,
        stride: int = 1,
        groups: int = 1,
        act_layer: type[nn.Module] | None = nn.ReLU,
        norm_layer: type[nn.Module] | None = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if in_chs % groups or out_chs % groups:
            raise ConfigError(
                f"ConvBnAct: in_chs={in_chs} and out_chs={out_chs} must both be divisible by groups={groups}; "
                "change the widths or the groups"
            )
        self.conv = nn.Conv2d(
            in_chs, out_chs, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=norm_layer is None
        )
        self.bn: nn.Module | None = norm_layer(out_chs) if norm_layer is not None else None
        self.act: nn.Module | None = make_act(act_layer)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.act is not None:
            x = self.act(x)
        return x

    def fold_bn(self) -> ConvBnAct:
        """Fold the (eval-mode) BatchNorm into the conv weights and drop it; returns self.

        Only an exact torch BatchNorm is folded: a subclass may do more (e.g. an activation) and is kept.
        """
        if foldable(self.conv, self.bn):
            self.conv = fold_conv_bn(self.conv, self.bn)
            self.bn = None
        return self
