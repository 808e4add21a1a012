"""Dynamic-convolution networks (DyNet, arXiv 2004.10694): narrower torchvision / CIFAR nets with dynamic convs.

``dynamic(model, width=..., g=..., mode=...)`` reads the layout of a torchvision ResNet (BasicBlock),
MobileNetV2 or ShuffleNetV2, or of a leanvision ``CifarResNet``, and builds the narrower dynamic version: every
block conv becomes a ``DynamicConv2d`` (fixed-kernel bank of g per output channel), channel widths are scaled by
``width`` and rounded to multiples of ``divisor``; the stem conv, projection shortcuts, the last 1x1 feature
conv and the classifier stay static. Weights are not copied (the kernels change shape): the result is trained
from scratch.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torchvision
from torch import Tensor, nn

from leanvision.errors import ConfigError
from leanvision.models._base import Classifier, make_classifier
from leanvision.models._registry import IMAGENET_MEAN, IMAGENET_STD, register_model
from leanvision.models.resnet_cifar import CifarResNet, ZeroPadShortcut
from leanvision.ops import ConvBnAct, init_convs, make_divisible
from leanvision.ops.dynamic_conv import MODES, DynamicCoefficients, DynamicConvBnAct

# --- blocks ---------------------------------------------------------------------------------------------------


class DynamicLayers(nn.Module):
    """A chain of ``DynamicConvBnAct`` fed, when ``share``, by ONE coefficient module on the chain's input.

    Shared DyNet coefficients are sliced per layer (rows = each layer's C_out); CondConv / DY-CNN share one
    routing vector across the chain, as timm's CondConv blocks do (arXiv 1904.04971).
    """

    def __init__(self, layers: list[DynamicConvBnAct], *, share: bool, g: int, mode: str) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        rows = [layer.conv.rows for layer in layers]
        self.rows = rows if mode == "dynet" else None
        n = sum(rows) if mode == "dynet" else 1
        self.coef = DynamicCoefficients(layers[0].conv.in_chs, n, g=g, mode=mode) if share else None

    def forward(self, x: Tensor) -> Tensor:
        if self.coef is None:
            coefs: list[Tensor | None] | tuple[Tensor, ...] = [None] * len(self.layers)
        else:
            c = self.coef(x)
            coefs = c.split(self.rows, 1) if self.rows is not None else [c] * len(self.layers)
        for layer, c in zip(self.layers, coefs, strict=True):
            x = layer(x, c)
        return x


def _dyn(
    in_chs: int,
    out_chs: int,
    k: int,
    *,
    stride: int = 1,
    groups: int = 1,
    act: type[nn.Module] | None,
    share: bool,
    g: int,
    mode: str,
) -> DynamicConvBnAct:
    return DynamicConvBnAct(
        in_chs,
        out_chs,
        k,
        stride=stride,
        groups=groups,
        g=g,
        mode=mode,
        coefficients="external" if share else "own",
        act_layer=act,
    )


class DyBasicBlock(nn.Module):
    """ResNet basic block with dynamic 3x3 convs: relu(dconv-BN-ReLU -> dconv-BN + shortcut) (2004.10694)."""

    def __init__(
        self, in_chs: int, out_chs: int, *, stride: int, shortcut: str | None, g: int, mode: str, share: bool
    ) -> None:
        super().__init__()
        kw = {"share": share, "g": g, "mode": mode}
        self.convs = DynamicLayers(
            [
                _dyn(in_chs, out_chs, 3, stride=stride, act=nn.ReLU, **kw),
                _dyn(out_chs, out_chs, 3, act=None, **kw),
            ],
            **kw,
        )
        if shortcut is None:
            self.shortcut: nn.Module | None = None
        elif shortcut == "zeropad":
            self.shortcut = ZeroPadShortcut(in_chs, out_chs, stride)
        else:  # the projection stays static: a 1x1 linear map on the residual path
            self.shortcut = ConvBnAct(in_chs, out_chs, 1, stride=stride, act_layer=None)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return self.act(self.convs(x) + shortcut)


class DyInvertedResidual(nn.Module):
    """MobileNetV2 block with dynamic convs: [1x1 expand] -> 3x3 depthwise -> 1x1 linear (+ identity)."""

    def __init__(
        self, in_chs: int, hidden: int, out_chs: int, *, stride: int, expand: bool, g: int, mode: str, share: bool
    ) -> None:
        super().__init__()
        kw = {"share": share, "g": g, "mode": mode}
        layers = [_dyn(in_chs, hidden, 1, act=nn.ReLU6, **kw)] if expand else []
        layers += [
            _dyn(hidden, hidden, 3, stride=stride, groups=hidden, act=nn.ReLU6, **kw),
            _dyn(hidden, out_chs, 1, act=None, **kw),
        ]
        self.convs = DynamicLayers(layers, **kw)
        self.residual = stride == 1 and in_chs == out_chs

    def forward(self, x: Tensor) -> Tensor:
        y = self.convs(x)
        return x + y if self.residual else y


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """ShuffleNet's channel shuffle without the batch size in a shape (ONNX keeps a dynamic batch)."""
    return x.unflatten(1, (groups, -1)).transpose(1, 2).flatten(1, 2)


class DyShuffleBlock(nn.Module):
    """ShuffleNetV2 unit with dynamic convs: split (or two branches at stride 2), concat, channel shuffle."""

    def __init__(self, in_chs: int, out_chs: int, *, stride: int, g: int, mode: str, share: bool) -> None:
        super().__init__()
        if out_chs % 2 or (stride == 1 and in_chs != out_chs):
            raise ConfigError(
                f"ShuffleNetV2 unit needs an even out_chs (= in_chs at stride 1), got {in_chs}->{out_chs}"
            )
        kw = {"share": share, "g": g, "mode": mode}
        b = out_chs // 2
        self.stride = stride
        src = in_chs if stride == 2 else b
        self.branch1 = (
            DynamicLayers(
                [
                    _dyn(in_chs, in_chs, 3, stride=2, groups=in_chs, act=None, **kw),
                    _dyn(in_chs, b, 1, act=nn.ReLU, **kw),
                ],
                **kw,
            )
            if stride == 2
            else None
        )
        self.branch2 = DynamicLayers(
            [
                _dyn(src, b, 1, act=nn.ReLU, **kw),
                _dyn(b, b, 3, stride=stride, groups=b, act=None, **kw),
                _dyn(b, b, 1, act=nn.ReLU, **kw),
            ],
            **kw,
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.branch1 is None:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), 1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), 1)
        return channel_shuffle(out, 2)


# --- the network ----------------------------------------------------------------------------------------------


class DynamicNet(Classifier):
    """stem (static) -> dynamic blocks -> optional static 1x1 head conv -> GAP -> [dropout] -> linear."""

    def __init__(
        self,
        stem: nn.Module,
        blocks: list[nn.Module],
        head: nn.Module | None,
        *,
        head_chs: int,
        num_classes: int,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.stem, self.blocks, self.head = stem, nn.Sequential(*blocks), head
        self.head_chs = self.num_features = head_chs
        self.drop_rate = drop_rate
        self.num_classes = num_classes
        self.classifier = make_classifier(head_chs, num_classes)
        init_convs(self)  # static and dynamic convs by one rule

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.blocks(self.stem(x))
        return x if self.head is None else self.head(x)

    def forward_head(self, x: Tensor, *, pre_logits: bool = False) -> Tensor:
        x = x.mean((2, 3))
        if self.drop_rate > 0:
            x = nn.functional.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.classifier(x)


# --- the converter --------------------------------------------------------------------------------------------


def dynamic(
    model: nn.Module,
    *,
    width: float = 0.5,
    g: int = 4,
    mode: str = "dynet",
    divisor: int = 16,
    share: bool = True,
    widths: Mapping[int, int] | None = None,
    num_classes: int | None = None,
    in_chans: int | None = None,
) -> DynamicNet:
    """The narrower dynamic version of ``model`` (DyNet arXiv 2004.10694; CondConv 1904.04971; DY-CNN 1912.03458).

    ``model``: a torchvision ResNet with BasicBlocks (resnet18/34), MobileNetV2, ShuffleNetV2, or a leanvision
    ``CifarResNet``. Every block conv becomes a ``DynamicConv2d`` with ``g`` fixed kernels per output channel
    (``mode="dynet"``) or ``g`` experts (``"condconv"``, ``"dycnn"``); widths are ``width`` times the original,
    rounded to multiples of ``divisor`` (16 suits oneDNN's kernels; ShuffleNet's concatenated halves are rounded
    each). ``widths`` maps original channel counts to explicit new ones (e.g. ``{256: 160, 512: 320}``), taking
    precedence over ``width`` for those counts. ``share=True`` gives each block (branch) one coefficient module on
    its input instead of one per conv.
    ``num_classes`` / ``in_chans`` default to the source model's. Weights are not copied.
    """
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
    if not (isinstance(width, (int, float)) and width > 0) or not (isinstance(divisor, int) and divisor >= 1):
        raise ConfigError(f"width must be > 0 and divisor an int >= 1, got width={width!r}, divisor={divisor!r}")
    kw = {"g": g, "mode": mode, "share": share}

    explicit = dict(widths or {})
    if not all(isinstance(v, int) and v >= 1 for v in explicit.values()):
        raise ConfigError(f"widths must map channel counts to positive ints, got {explicit!r}")

    def w(c: int) -> int:
        return explicit.get(c) or make_divisible(c * width, divisor)

    tv = torchvision.models
    if isinstance(model, tv.ResNet):
        return _from_resnet(model, w, kw, num_classes, in_chans)
    if isinstance(model, tv.MobileNetV2):
        return _from_mobilenet_v2(model, w, kw, num_classes, in_chans)
    if isinstance(model, tv.ShuffleNetV2):
        return _from_shufflenet_v2(model, w, kw, num_classes, in_chans)
    if isinstance(model, CifarResNet):
        return _from_cifar_resnet(model, w, kw, num_classes, in_chans)
    raise ConfigError(
        f"dynamic() converts torchvision ResNet (BasicBlock), MobileNetV2, ShuffleNetV2 and leanvision CifarResNet; "
        f"got {type(model).__name__}"
    )


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def _classes(fc: nn.Module, num_classes: int | None) -> int:
    if num_classes is not None:
        return num_classes
    linear = [m for m in fc.modules() if isinstance(m, nn.Linear)] if isinstance(fc, nn.Module) else []
    return linear[-1].out_features if linear else 0


def _from_resnet(model, w, kw, num_classes, in_chans) -> DynamicNet:
    stem_conv = model.conv1
    prev = w(stem_conv.out_channels)
    stem = nn.Sequential(
        ConvBnAct(in_chans or stem_conv.in_channels, prev, stem_conv.kernel_size[0], stride=stem_conv.stride[0]),
        nn.MaxPool2d(3, 2, 1),
    )
    blocks = []
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        for blk in layer:
            if not isinstance(blk, torchvision.models.resnet.BasicBlock):
                raise ConfigError(f"dynamic() supports BasicBlock ResNets (resnet18/34), got {type(blk).__name__}")
            out = w(blk.conv2.out_channels)
            stride = blk.conv1.stride[0]
            sc = "conv" if blk.downsample is not None else None
            blocks.append(DyBasicBlock(prev, out, stride=stride, shortcut=sc, **kw))
            prev = out
    return DynamicNet(stem, blocks, None, head_chs=prev, num_classes=_classes(model.fc, num_classes))


def _from_cifar_resnet(model, w, kw, num_classes, in_chans) -> DynamicNet:
    stem_conv = model.stem.conv
    prev = w(stem_conv.out_channels)
    stem = ConvBnAct(in_chans or stem_conv.in_channels, prev, 3)
    blocks = []
    for stage in model.stages:
        for blk in stage:
            if not isinstance(blk.conv1, ConvBnAct):
                raise ConfigError("dynamic() converts the plain CIFAR ResNets (resnet20/32/56), not Ghost-ResNets")
            out, stride = w(blk.conv2.conv.out_channels), blk.conv1.conv.stride[0]
            zero_pad = isinstance(blk.shortcut, ZeroPadShortcut)
            sc = None if blk.shortcut is None else ("zeropad" if zero_pad else "conv")
            blocks.append(DyBasicBlock(prev, out, stride=stride, shortcut=sc, **kw))
            prev = out
    return DynamicNet(stem, blocks, None, head_chs=prev, num_classes=_classes(model.classifier, num_classes))


def _from_mobilenet_v2(model, w, kw, num_classes, in_chans) -> DynamicNet:
    stem_conv = _convs(model.features[0])[0]
    prev = w(stem_conv.out_channels)
    stem = ConvBnAct(in_chans or stem_conv.in_channels, prev, 3, stride=stem_conv.stride[0], act_layer=nn.ReLU6)
    blocks = []
    for blk in list(model.features)[1:-1]:
        convs = _convs(blk)
        dw, project = convs[-2], convs[-1]
        hidden = prev if len(convs) == 2 else w(dw.out_channels)
        out = w(project.out_channels)
        blocks.append(DyInvertedResidual(prev, hidden, out, stride=dw.stride[0], expand=len(convs) == 3, **kw))
        prev = out
    # torchvision keeps the last 1x1 conv at 1280 channels for width < 1; so do we (static).
    last = _convs(model.features[-1])[0]
    head = ConvBnAct(prev, last.out_channels, 1, act_layer=nn.ReLU6)
    drop = next((m.p for m in model.classifier.modules() if isinstance(m, nn.Dropout)), 0.0)
    return DynamicNet(
        stem, blocks, head, head_chs=last.out_channels, num_classes=_classes(model.classifier, num_classes),
        drop_rate=drop,
    )  # fmt: skip


def _from_shufflenet_v2(model, w, kw, num_classes, in_chans) -> DynamicNet:
    stem_conv = _convs(model.conv1)[0]
    prev = w(stem_conv.out_channels)
    stem = nn.Sequential(
        ConvBnAct(in_chans or stem_conv.in_channels, prev, 3, stride=stem_conv.stride[0]), nn.MaxPool2d(3, 2, 1)
    )
    blocks = []
    for stage in (model.stage2, model.stage3, model.stage4):
        for blk in stage:
            out = 2 * w(_convs(blk.branch2)[-1].out_channels)  # two rounded halves keep the concat valid
            blocks.append(DyShuffleBlock(prev, out, stride=blk.stride, **kw))
            prev = out
    last = _convs(model.conv5)[0]
    head = ConvBnAct(prev, last.out_channels, 1)
    return DynamicNet(stem, blocks, head, head_chs=last.out_channels, num_classes=_classes(model.fc, num_classes))


def _source(fn) -> nn.Module:
    with torch.device("meta"):  # only the layout is read: no memory, no init time
        return fn()


# --- registered models ----------------------------------------------------------------------------------------

_IMAGENET = {"input_size": (3, 224, 224), "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "num_classes": 1000}
_TRADE = "DyNet buys MACs with parameters: fewer MACs than the original, more params"


@register_model(
    **_IMAGENET,
    paper="2004.10694",
    notes="stages 32/64/160/320, g=4, block-shared coefficients; −66.3% MACs vs torchvision resnet18 (paper: "
    "−67.2%); 18.68M params vs 11.69M. " + _TRADE,
)
def dy_resnet18(*, num_classes: int = 1000, in_chans: int = 3, g: int = 4, mode: str = "dynet") -> DynamicNet:
    """Dy-ResNet18 (DyNet arXiv 2004.10694): ResNet-18 with dynamic 3x3 convs at 0.5x / 0.625x width."""
    src = _source(torchvision.models.resnet18)
    return dynamic(
        src, width=0.5, widths={256: 160, 512: 320}, g=g, mode=mode, num_classes=num_classes, in_chans=in_chans
    )


@register_model(
    **_IMAGENET,
    paper="2004.10694",
    notes="width 0.6 (multiples of 8), g=4, block-shared coefficients, last 1x1 conv static at 1280; −53.7% MACs "
    "vs torchvision mobilenet_v2 (paper: −54.7%); 6.64M params vs 3.50M. " + _TRADE,
)
def dy_mobilenet_v2(*, num_classes: int = 1000, in_chans: int = 3, g: int = 4, mode: str = "dynet") -> DynamicNet:
    """Dy-MobileNetV2 (DyNet arXiv 2004.10694): MobileNetV2 at 0.6x width with dynamic convs."""
    src = _source(torchvision.models.mobilenet_v2)
    return dynamic(src, width=0.6, divisor=8, g=g, mode=mode, num_classes=num_classes, in_chans=in_chans)


@register_model(
    **_IMAGENET,
    paper="2004.10694",
    notes="stem 16, units 96/160/352 (0.75x, multiples of 16), g=4, branch-shared coefficients, conv5 static at "
    "1024; −37.3% MACs vs torchvision shufflenet_v2_x1_0 (paper: −37.0%); 5.55M params vs 2.28M. " + _TRADE,
)
def dy_shufflenet_v2(*, num_classes: int = 1000, in_chans: int = 3, g: int = 4, mode: str = "dynet") -> DynamicNet:
    """Dy-ShuffleNetV2 (DyNet arXiv 2004.10694): ShuffleNetV2 1.0x at 0.75x width with dynamic convs."""
    src = _source(torchvision.models.shufflenet_v2_x1_0)
    return dynamic(src, width=0.75, widths={24: 16}, g=g, mode=mode, num_classes=num_classes, in_chans=in_chans)
