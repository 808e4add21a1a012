"""Our fx surgery against Torch-Pruning's dependency graph: the same kept channels give the same pruned model.

Torch-Pruning (the ``compare`` extra) is only needed here; without it these tests are skipped.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from leanvision.compress.plan import ChannelGraph, _mask_shape, apply_plan, make_plan
from leanvision.models import create_model

tp = pytest.importorskip("torch_pruning")


def _randomise_bn(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g))
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return model


def _every_third_channel(model: nn.Module) -> tuple[dict[str, torch.Tensor], list[tuple[str, list[int]]]]:
    """Drop channels 1, 4, 7, ... of every channel set our surgery can resize: as masks for make_plan and as
    (one producing conv, channels) per set for Torch-Pruning, which removes the coupled layers itself."""
    graph = ChannelGraph(model)
    masks, jobs, seen = {}, [], set()
    for name, (_, out) in graph.conv_io.items():
        root, conv = graph.root(out), graph.modules[name]
        space = graph.space(root)
        if space.opaque or space.source or conv.groups > 1:
            continue
        drop = list(range(1, space.size, 3))
        masks[name] = torch.ones(_mask_shape(conv), dtype=torch.bool)
        masks[name][drop] = False
        if root not in seen:
            seen.add(root)
            jobs.append((name, drop))
    return masks, jobs


@pytest.mark.parametrize("name", ["tv_resnet18_cifar", "tv_vgg16_bn_cifar", "tv_mobilenet_v2_cifar", "resnet20"])
def test_same_kept_channels_give_the_same_model_as_torch_pruning(name):
    torch.manual_seed(0)
    model = _randomise_bn(create_model(name)).eval()
    x = torch.randn(2, 3, 32, 32)
    masks, jobs = _every_third_channel(model)
    assert jobs
    ours = apply_plan(model, make_plan(model, masks)).eval()
    theirs = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = tp.DependencyGraph().build_dependency(theirs, example_inputs=x)
        modules = dict(theirs.named_modules())
        for conv, drop in jobs:
            graph.get_pruning_group(modules[conv], tp.prune_conv_out_channels, idxs=drop).prune()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs.eval()(x), rtol=1e-5, atol=1e-5)
