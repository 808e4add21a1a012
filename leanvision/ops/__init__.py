"""Efficient operators: pure nn.Modules with no knowledge of models, plus deploy-time BN folding."""

from __future__ import annotations

from leanvision.ops.conv_bn_act import ConvBnAct, make_act
from leanvision.ops.fuse import fold_conv_bn, fuse_bn
from leanvision.ops.ghost import GhostBottleneck, GhostModule
from leanvision.ops.squeeze_excite import SqueezeExcite, make_divisible

__all__ = [
    "ConvBnAct",
    "GhostBottleneck",
    "GhostModule",
    "SqueezeExcite",
    "fold_conv_bn",
    "fuse_bn",
    "make_act",
    "make_divisible",
]
