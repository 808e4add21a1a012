"""Efficient operators: pure nn.Modules with no knowledge of models, plus deploy-time BN folding."""

from __future__ import annotations

from leanvision.ops.binary import BinaryConv2d, BinaryGatedLayer, PackedBinaryConv2d
from leanvision.ops.conv_bn_act import ConvBnAct, make_act
from leanvision.ops.dynamic_conv import (
    CoefficientSpread,
    DynamicCoefficients,
    DynamicConv2d,
    DynamicConvBnAct,
    DynamicStep,
    anneal_temperature,
    attention_active_units,
    coefficient_spread,
    dynamic_conv_macs,
    set_form,
)
from leanvision.ops.fullstack import (
    FSFStep,
    MaskConv2d,
    StorageReport,
    clip_mask_proxies,
    fold_masks,
    freeze_masks,
    load_fsf,
    ortho_loss,
    save_fsf,
    storage_report,
)
from leanvision.ops.fuse import fold_conv_bn, fuse_bn
from leanvision.ops.ghost import GhostBottleneck, GhostModule
from leanvision.ops.init import init_convs, kaiming_std
from leanvision.ops.squeeze_excite import SqueezeExcite, make_divisible

__all__ = [
    "BinaryConv2d",
    "BinaryGatedLayer",
    "CoefficientSpread",
    "ConvBnAct",
    "DynamicCoefficients",
    "DynamicConv2d",
    "DynamicConvBnAct",
    "DynamicStep",
    "FSFStep",
    "GhostBottleneck",
    "GhostModule",
    "MaskConv2d",
    "PackedBinaryConv2d",
    "SqueezeExcite",
    "StorageReport",
    "anneal_temperature",
    "attention_active_units",
    "clip_mask_proxies",
    "coefficient_spread",
    "dynamic_conv_macs",
    "fold_conv_bn",
    "fold_masks",
    "freeze_masks",
    "fuse_bn",
    "init_convs",
    "kaiming_std",
    "load_fsf",
    "make_act",
    "make_divisible",
    "ortho_loss",
    "save_fsf",
    "set_form",
    "storage_report",
]
