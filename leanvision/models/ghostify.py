"""Ghostify any CNN: its convolutions become Ghost modules (arXiv 1911.11907); plus the Ghost-ResNet-50 it defines."""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from leanvision.errors import ConfigError
from leanvision.models._base import Classifier, resnet_stages
from leanvision.models._registry import IMAGENET_MEAN, IMAGENET_STD, register_model
from leanvision.models.surgery import replace_modules, trace
from leanvision.ops import ConvBnAct, GhostModule

# Activations recognised right after a conv's BatchNorm, mapped to "applying it twice equals applying it once".
# An idempotent one can stay in place after the Ghost module (which applies it inside); any other must be moved
# inside, which needs a module of its own that nothing else calls.
_ACT_MODULES: dict[type[nn.Module], bool] = {
    nn.ReLU: True,
    nn.ReLU6: True,
    nn.Hardswish: False,
    nn.SiLU: False,
    nn.Mish: False,
}
# Functional activations cannot be removed from a traced forward, so only idempotent ones are recognised.
_ACT_FUNCTIONS: dict[Callable[..., Tensor], type[nn.Module]] = {
    F.relu: nn.ReLU,
    torch.relu: nn.ReLU,
    torch.relu_: nn.ReLU,
    F.relu6: nn.ReLU6,
}


@dataclass(frozen=True)
class GhostStep:
    """What ``ghostify`` does with one ``nn.Conv2d``: converted (taking over its BN and activation) or kept, and why.

    ``bn`` is the BatchNorm whose role the Ghost module's two BNs take over (it becomes ``nn.Identity``); ``act``
    is the activation class applied inside both halves (``None``: a linear Ghost module); ``act_module`` names an
    outer activation that moved inside and was replaced by ``nn.Identity`` (only for non-idempotent ones).
    """

    conv: str
    converted: bool
    reason: str = ""
    bn: str | None = None
    act: str | None = None
    act_module: str | None = None


def _check_args(ratio: object, dw_size: object, include: object) -> None:
    if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 1:
        raise ConfigError(f"ghostify: ratio must be an integer >= 1 (the paper's s; 2 halves the cost), got {ratio!r}")
    if isinstance(dw_size, bool) or not isinstance(dw_size, int) or dw_size < 1 or dw_size % 2 == 0:
        raise ConfigError(
            f"ghostify: dw_size must be an odd integer >= 1 (the cheap depthwise kernel; the paper uses 3), "
            f"got {dw_size!r}"
        )
    if include is not None and not callable(include):
        raise ConfigError(f"ghostify: include must be a predicate (name, conv) -> bool or None, got {include!r}")


def ghostify_plan(
    model: nn.Module,
    *,
    ratio: int = 2,
    keep_stem: bool = True,
    keep_head: bool = False,
    include: Callable[[str, nn.Conv2d], bool] | None = None,
) -> list[GhostStep]:
    """What ``ghostify`` would do with each conv of ``model``, in forward order; the model is not changed.

    Rules (arXiv 1911.11907 replaces a conv layer by a Ghost module with the same inputs, outputs, kernel and
    stride): a ``Conv2d`` is converted when its output feeds only its own ``BatchNorm2d``; the activation right
    after that BN (ReLU, ReLU6, Hardswish, SiLU, Mish) is applied inside both halves, as in the paper's module.
    Kept dense: depthwise convs, convs without a BN after them, shared or subclassed convs, grouped convs whose
    ``ceil(out/ratio)`` intrinsic maps do not split into their groups, the stem (first conv) when ``keep_stem``,
    the last conv when ``keep_head``, and convs for which ``include(name, conv)`` is false.
    """
    _check_args(ratio, 3, include)
    why = "ghostify needs the graph to see which BatchNorm and activation follow each conv (or convert by hand "
    why += "with replace_modules and GhostModule)"
    graph = trace(model, why=why)
    modules = dict(model.named_modules())
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    conv_nodes = [n for n in graph.nodes if n.op == "call_module" and isinstance(modules[n.target], nn.Conv2d)]
    if not conv_nodes:
        raise ConfigError(f"ghostify: {type(model).__name__} has no Conv2d layer to convert into Ghost modules")
    steps = []
    for i, node in enumerate(conv_nodes):
        name, conv = node.target, modules[node.target]

        def keep(reason: str, name: str = name) -> GhostStep:
            return GhostStep(name, False, reason)

        init = math.ceil(conv.out_channels / ratio)
        if calls[name] > 1:
            steps.append(keep(f"called {calls[name]} times in forward (shared weights)"))
        elif type(conv) is not nn.Conv2d:
            steps.append(keep(f"{type(conv).__name__} is a Conv2d subclass with its own behaviour"))
        elif conv.groups > 1 and conv.groups == conv.in_channels:
            # A Ghost module's primary conv would be a conv over the same input: no cheaper than the depthwise one.
            steps.append(keep("depthwise: a Ghost module cannot make it cheaper"))
        elif keep_stem and i == 0:
            steps.append(keep("stem (keep_stem=True)"))
        elif keep_head and i == len(conv_nodes) - 1:
            steps.append(keep("last conv (keep_head=True)"))
        elif include is not None and not include(name, conv):
            steps.append(keep("excluded by include"))
        elif init % conv.groups:
            steps.append(keep(f"grouped (groups={conv.groups}): ceil(out/ratio)={init} maps do not split into groups"))
        else:
            steps.append(_absorb(node, conv, modules, calls, ratio))
    return steps


def _absorb(node: fx.Node, conv: nn.Conv2d, modules: dict[str, nn.Module], calls: Counter, ratio: int) -> GhostStep:
    users = list(node.users)
    bn_node = users[0] if len(users) == 1 else None
    bn = modules.get(bn_node.target) if bn_node is not None and bn_node.op == "call_module" else None
    if type(bn) is not nn.BatchNorm2d or bn.num_features != conv.out_channels or calls[bn_node.target] > 1:
        # The paper's Ghost module normalises both halves; adding BNs to a net that had none changes what it is.
        return GhostStep(node.target, False, "not followed by its own BatchNorm2d")
    users = list(bn_node.users)
    act_node = users[0] if len(users) == 1 else None
    act_cls, idempotent, movable = None, False, False
    if act_node is not None and act_node.op == "call_module":
        act = modules[act_node.target]
        if type(act) in _ACT_MODULES:
            act_cls, idempotent = type(act), _ACT_MODULES[type(act)]
            movable = calls[act_node.target] == 1
    elif act_node is not None and act_node.op == "call_function" and act_node.target in _ACT_FUNCTIONS:
        act_cls, idempotent = _ACT_FUNCTIONS[act_node.target], True
    bn_name = bn_node.target
    # ratio=1 is conv-BN with no ghosts: the outer activation alone gives the same function.
    if act_cls is None or ratio == 1 or not (idempotent or movable):
        return GhostStep(node.target, True, bn=bn_name)
    # An idempotent activation stays where it is (f(f(x)) = f(x), e.g. ResNet's one ReLU module used three
    # times per block); another one moves inside and its module becomes an Identity, so it is applied once.
    return GhostStep(
        node.target, True, bn=bn_name, act=act_cls.__name__, act_module=None if idempotent else act_node.target
    )


def _ghost_module(conv: nn.Conv2d, bn: nn.BatchNorm2d, act: str | None, *, ratio: int, dw_size: int) -> GhostModule:
    act_cls = next((c for c in _ACT_MODULES if c.__name__ == act), nn.ReLU)
    ghost = GhostModule(
        conv.in_channels, conv.out_channels, ratio=ratio, dw_size=dw_size, relu=act is not None, act_layer=act_cls
    )
    # The primary conv is the original conv with ceil(out/ratio) outputs: same kernel, stride (the paper puts the
    # stride on the primary conv; the cheap op then runs at the output resolution), padding, dilation and groups.
    ghost.primary.conv = nn.Conv2d(
        conv.in_channels,
        ghost.primary.conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=False,  # the BN after it cancels any bias
        padding_mode=conv.padding_mode,
    )
    init = ghost.primary.conv.out_channels
    halves = [(ghost.primary.bn, slice(0, init))]
    if ghost.cheap is not None:
        halves.append((ghost.cheap.bn, slice(init, conv.out_channels)))
    with torch.no_grad():
        for m in ghost.modules():
            if isinstance(m, nn.Conv2d):  # torchvision's CNN init, which the replaced conv most likely had
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # Output channel c of the Ghost module is channel c of the concat, so the replaced BN's settings and affine
        # parameters carry over channel by channel (e.g. torchvision's zero_init_residual survives).
        for new, channels in halves:
            new.eps, new.momentum = bn.eps, bn.momentum
            if bn.affine:
                n = channels.stop - channels.start
                new.weight[:n].copy_(bn.weight[channels])
                new.bias[:n].copy_(bn.bias[channels])
    return ghost.to(device=conv.weight.device, dtype=conv.weight.dtype)


def ghostify(
    model: nn.Module,
    *,
    ratio: int = 2,
    dw_size: int = 3,
    keep_stem: bool = True,
    keep_head: bool = False,
    include: Callable[[str, nn.Conv2d], bool] | None = None,
) -> nn.Module:
    """Replace, in place, the convs of ``model`` by Ghost modules (arXiv 1911.11907); returns ``model``.

    Each converted conv -> BN (-> activation) becomes ``GhostModule``: the primary conv (same kernel, stride,
    padding, groups) makes ``ceil(out/ratio)`` intrinsic maps, a ``dw_size`` depthwise conv makes the ghosts,
    each half has its own BN (and the activation), and the output is trimmed to ``out`` channels. The replaced BN
    becomes ``nn.Identity``: keeping it would normalise the concat a second time and, after a ReLU, would change
    the function form (an affine map between the ReLU and the next conv) instead of reproducing the paper's
    conv-BN-ReLU halves. See ``ghostify_plan`` for which convs are converted and why the others are kept.
    Linear layers (the classifier) are never touched: on a pooled vector a cheap spatial op has nothing to reuse.
    """
    _check_args(ratio, dw_size, include)
    steps = ghostify_plan(model, ratio=ratio, keep_stem=keep_stem, keep_head=keep_head, include=include)
    todo = {s.conv: s for s in steps if s.converted}
    if not todo:
        reasons = Counter(s.reason for s in steps)
        raise ConfigError(
            f"ghostify: none of the {len(steps)} convs of {type(model).__name__} can be converted "
            f"({'; '.join(f'{n}x {r}' for r, n in reasons.items())}); pass keep_stem=False / include=... "
            "or use a model with conv -> BatchNorm layers"
        )
    modules = dict(model.named_modules())
    absorbed = {s.bn for s in todo.values()} | {s.act_module for s in todo.values() if s.act_module}

    def make(name: str, module: nn.Module) -> nn.Module:
        if name in absorbed:
            return nn.Identity()
        step = todo[name]
        return _ghost_module(module, modules[step.bn], step.act, ratio=ratio, dw_size=dw_size)

    replace_modules(model, lambda name, _m: name in todo or name in absorbed, make)
    return model


# --- Ghost-ResNet-50 ------------------------------------------------------------------------------------------


class GhostResNetBottleneck(nn.Module):
    """ResNet-50 bottleneck (torchvision v1.5: stride on the 3x3) with every conv, shortcut included, a GhostModule."""

    def __init__(self, in_chs: int, width: int, *, stride: int = 1, ratio: int = 2, dw_size: int = 3) -> None:
        super().__init__()
        out_chs = width * 4
        kw = {"ratio": ratio, "dw_size": dw_size}
        self.conv1 = GhostModule(in_chs, width, kernel_size=1, relu=True, **kw)
        self.conv2 = GhostModule(width, width, kernel_size=3, stride=stride, relu=True, **kw)
        self.conv3 = GhostModule(width, out_chs, kernel_size=1, relu=False, **kw)
        self.downsample = (
            GhostModule(in_chs, out_chs, kernel_size=1, stride=stride, relu=False, **kw)
            if stride != 1 or in_chs != out_chs
            else None
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.act(self.conv3(self.conv2(self.conv1(x))) + shortcut)


class GhostResNet(Classifier):
    """Ghost-ResNet (arXiv 1911.11907): torchvision's ResNet-50 layout with GhostModule block and shortcut convs.

    The 7x7 stem conv and the linear classifier stay dense. Same function as ``ghostify(resnet50())`` with its
    defaults (a test loads one's weights into the other), but with no Identity left where the BNs were, so the
    deploy form (``fuse()``) is conv and activation only.
    """

    def __init__(
        self,
        layers: tuple[int, ...] = (3, 4, 6, 3),
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        ratio: int = 2,
        dw_size: int = 3,
    ) -> None:
        super().__init__()
        _check_args(ratio, dw_size, None)
        self.stem = nn.Sequential(ConvBnAct(in_chans, 64, 7, stride=2), nn.MaxPool2d(3, 2, 1))
        widths = [64 * 2**i for i in range(len(layers))]
        block = functools.partial(GhostResNetBottleneck, ratio=ratio, dw_size=dw_size)
        self.stages = resnet_stages(64, widths, layers, block, expansion=4)
        self.head_chs = self.num_features = widths[-1] * 4
        self.reset_classifier(num_classes)
        # PyTorch's default init, as the official GhostNet code (no custom init). torchvision's fan_out Kaiming
        # init multiplies the variance by c_in/c_out at each reducing 1x1 conv, which an untrained (or
        # BN-folded) net in eval mode never undoes: its logits reach ~1e3, where float32 rounding alone moves
        # them by ~1e-3.

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))


_GHOST_RESNET50_NOTES = (
    "every bottleneck conv and 1x1 shortcut conv = GhostModule(s=2, d=3; stride on the primary conv, BN in both "
    "halves); 7x7 stem and fc dense. MACs match the paper at s=2 and s=4 (2.151G / 1.182G vs 2.2B / 1.2B); "
    "dense shortcuts, a converted stem or d=1/5 miss one. Params +0.95M: the fc (2.05M) is dense here, the "
    "paper's s=2 to s=4 drop (6.5M) needs it shrunk by s too"
)


@register_model(
    input_size=(3, 224, 224),
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    num_classes=1000,
    paper="1911.11907",
    paper_params=13_000_000,
    paper_macs=2_200_000_000,
    notes=_GHOST_RESNET50_NOTES,
    family="ghost_resnet",
)
def ghost_resnet50(*, num_classes: int = 1000, in_chans: int = 3, ratio: int = 2, dw_size: int = 3) -> GhostResNet:
    """Ghost-ResNet-50 (arXiv 1911.11907): ResNet-50 whose block and shortcut convs are Ghost modules."""
    return GhostResNet((3, 4, 6, 3), num_classes=num_classes, in_chans=in_chans, ratio=ratio, dw_size=dw_size)
