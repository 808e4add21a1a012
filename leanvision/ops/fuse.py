"""Deploy-time BatchNorm folding: a plain, readable nn.Module with every foldable BN merged into its conv."""

from __future__ import annotations

import copy
from collections import OrderedDict

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

# Exact types only: subclasses such as timm's BatchNormAct2d carry an activation that folding would drop.
_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def fuse_bn(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Return the eval-mode deploy form of ``model`` with each BatchNorm folded into the conv before it.

    The input is left untouched unless ``inplace=True``. Folded are: modules that implement ``fold_bn()``
    (e.g. ``ConvBnAct``; called after their children were folded, returning their replacement) and
    conv -> BatchNorm pairs that are adjacent in a plain ``nn.Sequential`` (so many third-party models fold
    too). A BatchNorm with no conv right before it is kept, so outputs are always unchanged.
    """
    out = model if inplace else copy.deepcopy(model)
    out.eval()
    return _fuse(out)


def _fuse(module: nn.Module) -> nn.Module:
    for name, child in list(module.named_children()):
        new = _fuse(child)
        if new is not child:
            setattr(module, name, new)
    if type(module) is nn.Sequential:
        module = _fold_sequential(module)
    fold = getattr(module, "fold_bn", None)
    return fold() if callable(fold) else module


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (
        isinstance(conv, nn.modules.conv._ConvNd)
        and type(bn) in _BN_TYPES
        and bn.track_running_stats
        and bn.running_mean is not None
        and conv.out_channels == bn.num_features
    )


def _fold_sequential(seq: nn.Sequential) -> nn.Sequential:
    items = list(seq._modules.items())
    kept: OrderedDict[str, nn.Module] = OrderedDict()
    i = 0
    while i < len(items):
        name, mod = items[i]
        nxt = items[i + 1][1] if i + 1 < len(items) else None
        if nxt is not None and _foldable(mod, nxt):
            kept[name] = fuse_conv_bn_eval(mod, nxt, transpose=mod.transposed)
            i += 2
            continue
        kept[name] = mod
        i += 1
    if len(kept) == len(items):
        return seq
    return nn.Sequential(kept).train(seq.training)
