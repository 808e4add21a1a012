"""Deploy-time BatchNorm folding: a plain, readable nn.Module with every foldable BN merged into its conv."""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

# Exact types only: subclasses such as timm's BatchNormAct2d carry an activation that folding would drop.
_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def fuse_bn(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Return the eval-mode deploy form of ``model`` with each BatchNorm folded into the conv before it.

    The input is left untouched unless ``inplace=True``. Folded are: modules that implement ``fold_bn()``
    (e.g. ``ConvBnAct``; called after their children were folded, returning their replacement), conv ->
    BatchNorm pairs that are adjacent in a plain ``nn.Sequential`` (so many third-party models fold too), and
    torchvision ResNets' blocks and stem. A BatchNorm with no conv right before it is kept, so outputs are always
    unchanged.
    """
    out = model if inplace else copy.deepcopy(model)
    out.eval()
    return _fuse(out)


def _fuse(module: nn.Module) -> nn.Module:
    for name, child in list(module.named_children()):
        new = _fuse(child)
        if new is not child:
            setattr(module, name, new)
    # Subclasses that keep Sequential's forward (torchvision's Conv2dNormActivation) run their children in order too.
    if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
        module = _fold_sequential(module)
    if type(module) is BasicBlock:
        return FusedBasicBlock(module)
    if type(module) is ResNet and foldable(module.conv1, module.bn1):  # torchvision's stem: conv1 -> bn1 attributes
        module.conv1, module.bn1 = fold_conv_bn(module.conv1, module.bn1), nn.Identity()
    fold = getattr(module, "fold_bn", None)
    return fold() if callable(fold) else module


class FusedBasicBlock(nn.Module):
    """torchvision's ResNet ``BasicBlock`` with both BatchNorms folded: relu(conv2(relu(conv1(x))) + shortcut)."""

    def __init__(self, block: BasicBlock) -> None:
        super().__init__()
        self.conv1, self.conv2 = _folded(block.conv1, block.bn1), _folded(block.conv2, block.bn2)
        self.relu, self.downsample = block.relu, block.downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.relu(self.conv1(x)))
        out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


def _folded(conv: nn.Module, bn: nn.Module) -> nn.Module:
    return fold_conv_bn(conv, bn) if foldable(conv, bn) else nn.Sequential(conv, bn)


@torch.no_grad()
def plain_conv2d(layer: nn.Module) -> nn.Conv2d:
    """A plain ``nn.Conv2d`` with ``layer``'s geometry and its current ``weight``/``bias`` (for reparameterised
    convs whose weight is computed: same outputs, for export and deployment)."""
    weight = layer.weight
    conv = nn.Conv2d(
        layer.in_channels,
        layer.out_channels,
        layer.kernel_size,
        layer.stride,
        layer.padding,
        layer.dilation,
        layer.groups,
        layer.bias is not None,
        layer.padding_mode,
        device=weight.device,
        dtype=weight.dtype,
    )
    conv.weight.copy_(weight)
    if layer.bias is not None:
        conv.bias.copy_(layer.bias)
    return conv.train(layer.training)


def foldable(conv: nn.Module | None, bn: nn.Module | None) -> bool:
    """Whether ``bn`` (exactly a torch BatchNorm with running stats) can be folded into the conv before it."""
    return (
        isinstance(conv, nn.modules.conv._ConvNd)
        and type(bn) in _BN_TYPES
        and bn.track_running_stats
        and bn.running_mean is not None
        and conv.out_channels == bn.num_features
    )


@torch.no_grad()
def bn_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` in float64 with ``bn(y) = scale * y + shift`` per channel (eval mode, running stats)."""
    scale = bn.running_var.double().add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight.detach().double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.detach().double()
    return scale, shift


@torch.no_grad()
def fold_conv_bn(conv: nn.modules.conv._ConvNd, bn: nn.modules.batchnorm._BatchNorm) -> nn.modules.conv._ConvNd:
    """A copy of ``conv`` (any dims, grouped, transposed) with the eval-mode ``bn`` after it folded in.

    ``bn(conv(x)) = s * (conv(x) - mean) + beta`` with ``s = gamma / sqrt(var + eps)`` per output channel, so the
    weight is scaled by ``s`` along its output-channel axis and the bias becomes ``s * (bias - mean) + beta``.
    The arithmetic runs in float64 and is cast back, so folding adds no more than one rounding.
    """
    fused = copy.deepcopy(conv)
    w = conv.weight.detach().double()
    scale, shift = bn_affine(bn)
    bias = torch.zeros_like(shift) if conv.bias is None else conv.bias.detach().double()
    if conv.transposed:
        # torch stores a transposed conv's weight as [in, out / groups, *k]: output channel g * (out / groups) + j
        # is column j of group g's block of input rows, so the scale is laid out per group.
        g = conv.groups
        w = (w.unflatten(0, (g, -1)) * scale.view(g, 1, -1, *[1] * (w.dim() - 2))).flatten(0, 1)
    else:
        w = w * scale.view(-1, *[1] * (w.dim() - 1))
    fused.weight = nn.Parameter(w.to(conv.weight.dtype), conv.weight.requires_grad)
    fused.bias = nn.Parameter((bias * scale + shift).to(conv.weight.dtype), conv.weight.requires_grad)
    return fused


def _fold_sequential(seq: nn.Sequential) -> nn.Sequential:
    items = list(seq._modules.items())
    kept: OrderedDict[str, nn.Module] = OrderedDict()
    i = 0
    while i < len(items):
        name, mod = items[i]
        nxt = items[i + 1][1] if i + 1 < len(items) else None
        if foldable(mod, nxt):
            kept[name] = fold_conv_bn(mod, nxt)
            i += 2
            continue
        kept[name] = mod
        i += 1
    if len(kept) == len(items):
        return seq
    return nn.Sequential(kept).train(seq.training)
