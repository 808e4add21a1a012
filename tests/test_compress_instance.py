"""Instance-wise feature sparsity (arXiv 1907.11840): ℓ2,1 decay, CV selection, per-instance masks, MACs, gather."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from test_ops import randomize_bn  # shared reference helper (tests/ is on sys.path)
from torch import nn

from leanvision.compress.instance import (
    FeatureDecayStep,
    GatheredConv2d,
    InstanceSparsity,
    channel_norms,
    feature_cv,
    keep_mask,
    l21_penalty,
    layer_cv,
    prunable_layers,
    select_layers,
)
from leanvision.engine import StepContext, cross_entropy, fit, make_scheduler, standard_step
from leanvision.errors import ConfigError
from leanvision.models import create_model
from leanvision.ops import MaskConv2d
from leanvision.profile import profile


def constant_maps(values: list[list[float]], size: int = 4) -> torch.Tensor:
    """(N, C, size, size) inputs whose channel c of instance i is the constant values[i][c]."""
    v = torch.tensor(values, dtype=torch.float64)
    return v[:, :, None, None].expand(-1, -1, size, size).clone()


def identity_net() -> nn.Sequential:
    """1x1 identity conv (4 ch) -> ReLU -> 3x3 conv 4->2 -> GAP -> linear 2->3: the feature is the input itself."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(4, 4, 1, bias=False),
        nn.ReLU(),
        nn.Conv2d(4, 2, 3, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2, 3),
    ).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(4)[:, :, None, None])
    return net


def small_cnn() -> nn.Sequential:
    """Two prunable convs ('2' after a ReLU, '5' after a max-pool), float64."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 5),
    ).double()


def no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_pre_hooks for m in model.modules())


# --- per-instance quantities ---------------------------------------------------------------------------------


@pytest.mark.parametrize("normalize", [False, True])
def test_l21_in_batch_equals_per_instance_loop(normalize):
    x = torch.randn(4, 5, 3, 2, dtype=torch.float64)
    loop = torch.stack([sum(x[i, c].pow(2).sum().sqrt() for c in range(5)) for i in range(4)])
    if normalize:
        loop = loop / (5 * math.sqrt(6))
    torch.testing.assert_close(l21_penalty(x, normalize=normalize), loop, rtol=1e-14, atol=0)
    assert channel_norms(x).shape == (4, 5)


def test_keep_mask_rules_on_known_norms():
    n = torch.tensor([[1.0, 2.0, 3.0, 10.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 5.0, 5.0]])
    assert keep_mask(n, 1.0, "mean").tolist() == [[0, 0, 0, 1], [1, 1, 1, 1], [0, 0, 1, 1]]
    assert keep_mask(n, 0.25, "max").tolist() == [[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 1, 1]]
    # top: drop floor(0.5 * 4) = 2 weakest; ties go by index (the lower one is dropped first)
    assert keep_mask(n, 0.5, "top").tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1]]
    assert keep_mask(torch.ones(1, 100), 0.29, "top").sum() == 71  # 0.29 * 100 is 28.999... in floats
    for rule in ("mean", "max", "top"):
        assert keep_mask(n, 0.0, rule).all()  # theta = 0 prunes nothing, whatever the rule


def test_thresholds_never_reduce_over_the_batch():
    g = torch.Generator().manual_seed(0)
    n = torch.rand(5, 16, generator=g, dtype=torch.float64)
    loud = torch.cat([n, 1e6 * torch.rand(1, 16, generator=g, dtype=torch.float64)])  # one huge instance more
    for rule, theta in [("mean", 0.9), ("max", 0.5), ("top", 0.4)]:
        alone = torch.cat([keep_mask(n[i : i + 1], theta, rule) for i in range(5)])
        assert torch.equal(keep_mask(n, theta, rule), alone)
        assert torch.equal(keep_mask(loud, theta, rule)[:5], alone)


@pytest.mark.parametrize(
    ("theta", "rule", "match"),
    [(-0.1, "mean", "theta must be a finite number >= 0"), (math.nan, "mean", "finite"),
     (1.5, "max", r"theta must be in \[0, 1\] with rule='max'"), (1.5, "top", "rule='top'"),
     (0.5, "median", "rule must be one of 'mean', 'max', 'top'"), (True, "mean", "finite number")],
)  # fmt: skip
def test_bad_thresholds_are_refused(theta, rule, match):
    with pytest.raises(ConfigError, match=match):
        keep_mask(torch.ones(1, 3), theta, rule)


# --- coefficient of variation --------------------------------------------------------------------------------


def test_feature_cv_both_definitions_on_known_norms():
    static = torch.tensor([[1.0, 3.0], [1.0, 3.0]])  # the same channels matter for every instance
    assert feature_cv(static) == {"across_instances": 0.0, "within_instance": 0.5}
    uniform = torch.tensor([[1.0, 1.0], [3.0, 3.0]])  # channels equal inside each instance, scale varies
    assert feature_cv(uniform) == {"across_instances": 0.5, "within_instance": 0.0}
    swap = torch.tensor([[1.0, 3.0], [3.0, 1.0], [2.0, 2.0]])
    cv = feature_cv(swap)  # per channel: mean 2, population std sqrt(2/3); per instance: 0.5, 0.5, 0
    assert cv["across_instances"] == pytest.approx(math.sqrt(2 / 3) / 2, abs=1e-15)
    assert cv["within_instance"] == pytest.approx(1 / 3, abs=1e-15)
    dead = torch.tensor([[0.0, 1.0], [0.0, 3.0]])  # a channel that is zero everywhere counts as CV 0, not 0/0
    assert feature_cv(dead) == {"across_instances": 0.25, "within_instance": 1.0}
    with pytest.raises(ConfigError, match="norms must be an"):
        feature_cv(torch.ones(3))


def test_layer_cv_measures_the_fed_feature():
    net = identity_net()
    x = constant_maps([[1, 3, 0, 2], [3, 1, 0, 2], [2, 2, 0, 2]])
    data = [(x[:2], torch.zeros(2)), (x[2:], torch.zeros(1))]
    cv = layer_cv(net, data)
    # norms are the values x 4 (4x4 constant maps); a CV does not change with the scale
    assert list(cv) == ["2"]
    assert cv["2"] == pytest.approx(feature_cv(torch.tensor([[1, 3, 0, 2], [3, 1, 0, 2], [2, 2, 0, 2]]).double()))
    assert cv["2"]["across_instances"] == pytest.approx((2 * math.sqrt(2 / 3) / 2) / 4, abs=1e-12)
    assert no_hooks(net) and net.training  # the eval-mode pass restored the training flag


def test_select_layers_by_either_definition():
    cv = {
        "a": {"across_instances": 0.1, "within_instance": 0.9},
        "b": {"across_instances": 0.5, "within_instance": 0.2},
        "c": {"across_instances": 0.3, "within_instance": 0.4},
    }
    assert select_layers(cv, top_k=2) == ["b", "c"]  # the model's order, not the CV order
    assert select_layers(cv, top_k=1, by="within_instance") == ["a"]
    assert select_layers(cv, min_cv=0.3) == ["b", "c"]
    assert select_layers(cv, top_k=2, lowest=True) == ["a", "c"]
    with pytest.raises(ConfigError, match="give top_k"):
        select_layers(cv)
    with pytest.raises(ConfigError, match="by must be one of"):
        select_layers(cv, top_k=1, by="instances")


# --- which layers ---------------------------------------------------------------------------------------------


def test_prunable_layers_of_cifar_and_torchvision_nets():
    assert prunable_layers(create_model("vgg8_cifar")) == [
        "features.3", "features.7", "features.10", "features.14", "features.17", "features.21"
    ]  # fmt: skip
    # residual nets: only the inner conv of each block (its input feeds nothing else)
    r20 = prunable_layers(create_model("resnet20"))
    assert r20 == [f"stages.{s}.{b}.conv2.conv" for s in range(3) for b in range(3)]
    assert prunable_layers(create_model("resnet20", shortcut="B")) == r20
    r18 = prunable_layers(torchvision.models.resnet18(num_classes=10))
    assert r18 == [f"layer{s}.{b}.conv2" for s in range(1, 5) for b in range(2)]


def test_unprunable_layers_are_refused_with_the_reason():
    r18 = torchvision.models.resnet18(num_classes=10)
    with pytest.raises(ConfigError, match=r"'layer1.0.conv1': its input feature map also feeds add\(\)"):
        InstanceSparsity(r18, ["layer1.0.conv1"], theta=0.5)
    with pytest.raises(ConfigError, match=r"'layer2.0.downsample.0': its input feature map also feeds module"):
        InstanceSparsity(r18, ["layer2.0.downsample.0"], theta=0.5)
    with pytest.raises(ConfigError, match="'conv1': it takes the model's input"):
        InstanceSparsity(r18, ["conv1"], theta=0.5)
    with pytest.raises(ConfigError, match=r"'layer1.0.conv3' is not a module.*did you mean 'layer1.0.conv2'"):
        InstanceSparsity(r18, ["layer1.0.conv3"], theta=0.5)
    with pytest.raises(ConfigError, match=r"'fc' is not an nn.Conv2d run in forward"):
        InstanceSparsity(r18, ["fc"], theta=0.5)
    with pytest.raises(ConfigError, match="lists a name twice"):
        InstanceSparsity(r18, ["layer1.0.conv2", "layer1.0.conv2"], theta=0.5)
    with pytest.raises(ConfigError, match="non-empty list"):
        InstanceSparsity(r18, "layer1.0.conv2", theta=0.5)
    dw = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=8), nn.ReLU(), nn.Conv2d(8, 4, 1))
    with pytest.raises(ConfigError, match=r"'2': it is a grouped conv \(groups=8\)"):
        InstanceSparsity(dw, ["2"], theta=0.5)
    assert prunable_layers(dw) == ["4"]
    masked = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), MaskConv2d(8, 8, 3, ratio=2))
    with pytest.raises(ConfigError, match=r"'2': it is a MaskConv2d, not a plain nn.Conv2d"):
        InstanceSparsity(masked, ["2"], theta=0.5)
    with pytest.raises(ConfigError, match="Sequential has no conv whose input channels can be pruned"):
        InstanceSparsity(masked, theta=0.5)


class Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.conv = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(self.conv(torch.relu(self.stem(x))))


class Branchy(nn.Module):
    """relu is in place, so the conv's input is the memory bn's output: the add reads it too."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.relu, self.conv = nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        h = self.bn(self.stem(x))
        return self.conv(self.relu(h)) + h


def test_shared_convs_and_in_place_aliases_are_refused():
    with pytest.raises(ConfigError, match="'conv': it is called 2 times in forward"):
        InstanceSparsity(Shared(), ["conv"], theta=0.5)
    with pytest.raises(ConfigError, match=r"'conv': its input feature map also feeds add\(\)"):
        InstanceSparsity(Branchy(), ["conv"], theta=0.5)


def test_untraceable_models_are_refused():
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1)

        def forward(self, x):
            h = self.a(x)
            return self.b(h) if h.sum() > 0 else h

    with pytest.raises(ConfigError, match=r"cannot trace DataDependent with torch\.fx.*instance-wise pruning needs"):
        InstanceSparsity(DataDependent(), theta=0.5)


# --- masks ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vgg8_cifar", "resnet20"])
def test_batch_of_one_and_batch_give_identical_masks(name):
    model = randomize_bn(create_model(name)).double().eval()
    sp = InstanceSparsity(model, theta=0.8)
    x = torch.randn(6, 3, 32, 32, dtype=torch.float64)
    batch = sp.masks(x)
    for i in range(6):
        one = sp.masks(x[i : i + 1])
        assert all(torch.equal(one[k][0], batch[k][i]) for k in sp.layers)
    kept = torch.stack([m.sum(1) for m in batch.values()])
    assert (kept < torch.tensor([m.shape[1] for m in batch.values()])[:, None]).any()  # something was pruned
    assert (kept.double().std(1) > 0).any()  # and instances keep different channels (not static pruning)
    assert no_hooks(model)


def test_theta_zero_is_bit_identical_to_the_unpruned_model():
    model = randomize_bn(create_model("vgg8_cifar")).eval()
    x = torch.randn(4, 3, 32, 32)
    sp = InstanceSparsity(model, theta=0.0)
    with torch.no_grad():
        ref = model(x)
        with sp.active():
            out = model(x)
    assert torch.equal(out, ref)
    assert all(m.all() for m in sp.masks(x).values())


def test_active_masks_exactly_the_pruned_input_channels():
    net = identity_net().eval()
    sp = InstanceSparsity(net, theta=1.0)
    x = constant_maps([[1, 2, 3, 10], [1, 1, 1, 1]])
    with torch.no_grad(), sp.active():
        out = net(x)
    keep = torch.tensor([[0, 0, 0, 1], [1, 1, 1, 1]], dtype=torch.float64)
    ref = net[2:](x * keep[:, :, None, None])
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    with pytest.raises(ConfigError, match="already active"), sp.active():
        sp.masks(x)
    assert no_hooks(net)


def test_theta_and_rule_can_change_and_are_checked():
    sp = InstanceSparsity(identity_net(), theta=0.5)
    sp.theta, sp.rule = 0.9, "max"
    assert (sp.theta, sp.rule) == (0.9, "max")
    with pytest.raises(ConfigError, match="rule='max'"):
        sp.theta = 1.5
    sp.rule = "mean"
    sp.theta = 1.5  # fine for the mean rule
    with pytest.raises(ConfigError, match="rule='top'"):
        sp.rule = "top"


# --- MACs -----------------------------------------------------------------------------------------------------


def test_macs_per_instance_hand_computed():
    # MACs: 1x1 conv 16 px * 4 out * 4 in = 256; 3x3 conv 16 px * 2 out * 9 * 4 in = 1152 (288 per input
    # channel); linear 2 * 3 = 6. Dense: 1414. theta = 1 (mean rule) keeps the channels >= the instance's mean:
    #   [1, 2, 3, 10] -> keeps 1 (3 pruned): 1414 - 3 * 288 = 550; [1, 1, 1, 1] -> keeps 4: 1414;
    #   [0, 0, 5, 5] -> keeps 2 (2 pruned): 1414 - 2 * 288 = 838.
    net = identity_net()
    sp = InstanceSparsity(net, theta=1.0)
    x = constant_maps([[1, 2, 3, 10], [1, 1, 1, 1], [0, 0, 5, 5]])
    macs = sp.macs_per_instance([(x[:2], torch.zeros(2)), (x[2:], torch.zeros(1))])
    assert macs.dense == 1414 and macs.layers_dense == 1152
    assert macs.per_instance.tolist() == [550, 1414, 838]
    assert (macs.mean, macs.min, macs.max) == (934.0, 550, 1414)
    assert macs.reduction == pytest.approx(1 - 934 / 1414, abs=1e-15)
    assert macs.layers_reduction == pytest.approx((1414 - 934) / 1152, abs=1e-15)
    assert macs.kept["2"].tolist() == [1, 4, 2]
    d = json.loads(json.dumps(macs.to_dict()))
    assert d["n"] == 3 and d["layers"]["2"] == {
        "channels": 4,
        "kept_mean": pytest.approx(7 / 3),
        "kept_std": pytest.approx(math.sqrt(14 / 9)),
    }
    # the same numbers from the profiler running the gathered path instance by instance
    fast = sp.fast_module()
    assert [profile(fast, x[i : i + 1]).macs for i in range(3)] == [550, 1414, 838]


def test_macs_per_instance_match_the_profiled_fast_path_on_vgg():
    model = randomize_bn(create_model("vgg8_cifar")).double()
    sp = InstanceSparsity(model, theta=0.9)
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    macs = sp.macs_per_instance([x])
    assert macs.dense == profile(model, x[:1]).macs
    fast = sp.fast_module()
    profiles = [profile(fast, x[i : i + 1]) for i in range(4)]
    assert [p.macs for p in profiles] == macs.per_instance.tolist()
    assert not any(p.unsupported for p in profiles)
    assert macs.max < macs.dense and 0 < macs.reduction < macs.layers_reduction < 1


def test_macs_per_instance_input_checks():
    sp = InstanceSparsity(identity_net(), theta=1.0)
    x = constant_maps([[1, 2, 3, 10], [1, 1, 1, 1]])
    assert sp.macs_per_instance([x, x, x], max_batches=2).per_instance.tolist() == [550, 1414] * 2
    with pytest.raises(ConfigError, match="no batches"):
        sp.macs_per_instance([])
    with pytest.raises(ConfigError, match="one size"):
        sp.macs_per_instance([x, constant_maps([[1, 2, 3, 4]], size=5)])
    with pytest.raises(ConfigError, match="max_batches must be a positive int"):
        sp.macs_per_instance([x], max_batches=0)
    with pytest.raises(ConfigError, match=r"\(B, C, H, W\) image tensors"):
        sp.macs_per_instance([torch.ones(3)])


# --- the gathered batch-1 path --------------------------------------------------------------------------------


def _masked_and_fast(sp: InstanceSparsity, x: torch.Tensor) -> int:
    """Each instance through the gathered path equals the masked dense batch; the kept channels agree.

    Returns how many (instance, channel) pairs were pruned, so a test can check that pruning was exercised."""
    model = sp.model.eval()
    with torch.no_grad(), sp.active():
        dense = model(x)
    masks = sp.masks(x)
    fast = sp.fast_module()
    gathered = {name: fast.get_submodule(name) for name in sp.layers}
    for i in range(x.shape[0]):
        with torch.no_grad():
            out = fast(x[i : i + 1])
        tol = 1e-10 if x.dtype == torch.float64 else 1e-4
        torch.testing.assert_close(out, dense[i : i + 1], rtol=0, atol=tol)
        for name, conv in gathered.items():
            assert conv.last_kept.tolist() == masks[name][i].nonzero().squeeze(1).tolist()
    return int(sum((~m).sum() for m in masks.values()))


@pytest.mark.parametrize("rule", ["mean", "max", "top"])
def test_fast_path_equals_masked_dense_vgg8(rule):
    model = randomize_bn(create_model("vgg8_cifar")).double()
    theta = {"mean": 0.9, "max": 0.3, "top": 0.4}[rule]
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    assert _masked_and_fast(InstanceSparsity(model, theta=theta, rule=rule), x) > 0


@pytest.mark.parametrize("name", ["resnet20", "torchvision_resnet18"])
def test_fast_path_equals_masked_dense_resnets(name):
    tv = name.startswith("torchvision")
    model = torchvision.models.resnet18(num_classes=10) if tv else create_model(name)
    model = randomize_bn(model).double()
    assert _masked_and_fast(InstanceSparsity(model, theta=0.9), torch.randn(3, 3, 32, 32, dtype=torch.float64)) > 0


def test_fast_path_on_torchvision_vgg16_bn():
    model = randomize_bn(torchvision.models.vgg16_bn(num_classes=10))
    sp = InstanceSparsity(model, theta=0.9)
    assert sp.layers == tuple(f"features.{i}" for i in (3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40))
    assert _masked_and_fast(sp, torch.randn(2, 3, 32, 32)) > 0


def test_fast_module_shares_the_weights_and_refuses_batches():
    model = randomize_bn(create_model("vgg8_cifar")).double()
    sp = InstanceSparsity(model, theta=0.9)
    fast = sp.fast_module()
    assert {id(p) for p in fast.parameters()} == {id(p) for p in model.parameters()}
    assert type(model.features[3]) is nn.Conv2d and isinstance(fast.features[3], GatheredConv2d)
    with torch.no_grad():
        model.features[3].weight.mul_(2)  # trained further: the fast module sees it
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad(), sp.active():
        ref = model.eval()(x)
    torch.testing.assert_close(fast(x), ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(sp.fast_forward(x), ref, rtol=0, atol=1e-10)
    with pytest.raises(ConfigError, match="one instance at a time, got a batch of 2"):
        fast(torch.randn(2, 3, 32, 32, dtype=torch.float64))
    with pytest.raises(ConfigError, match="outside"), sp.active():
        sp.fast_module()


def test_gathered_conv_with_every_channel_pruned_is_its_bias():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 3, 3, stride=2, padding=1)
    x = torch.ones(1, 4, 7, 7)  # equal norms: theta 1.5 x mean prunes all of them
    out = GatheredConv2d(conv, theta=1.5)(x)
    torch.testing.assert_close(out, conv(torch.zeros_like(x)), rtol=0, atol=0)
    with pytest.raises(ConfigError, match=r"plain nn.Conv2d with groups=1"):
        GatheredConv2d(nn.Conv2d(4, 4, 3, groups=2), theta=0.5)


# --- training -------------------------------------------------------------------------------------------------


def _ctx(model: nn.Module, lr: float = 0.1) -> StepContext:
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    return StepContext(optimizer=opt, loss_fn=cross_entropy, grad_clip=None, epoch=0, step=0, params=[])


@pytest.mark.parametrize("normalize", [False, True])
def test_feature_decay_step_matches_the_reference_loss(normalize):
    x, y = torch.randn(4, 3, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 3])
    net, ref = small_cnn(), small_cnn()
    lam = 0.05
    step = InstanceSparsity(net, theta=0.5).train_step(lam, normalize=normalize)
    assert isinstance(step, FeatureDecayStep)
    task, _ = step(net, x, y, _ctx(net))
    # reference: the features fed to conv '2' (ReLU output) and conv '5' (max-pool output), by slicing the net
    f1, f2 = ref[:2](x), ref[:5](x)
    scale = [8 * 8, 8 * 4] if normalize else [1, 1]
    penalty = l21_penalty(f1) / scale[0] + l21_penalty(f2) / scale[1]
    ref_task = F.cross_entropy(ref(x), y)
    ref_ctx = _ctx(ref)
    ref_ctx.update(ref_task + lam * penalty.mean())
    torch.testing.assert_close(task, ref_task, rtol=0, atol=1e-14)
    for p, q in zip(net.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-13)
    assert step.penalty_by_epoch[0] == pytest.approx(penalty.mean().item(), rel=1e-14)
    assert no_hooks(net)


def _digits_like(n: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, 16, 16, generator=g)
    y = (x[:, 0].mean((1, 2)) > 0.5).long()
    return [(x[i : i + 16], y[i : i + 16]) for i in range(0, n, 16)]


def test_lambda_zero_trains_exactly_like_the_standard_step():
    data = _digits_like()
    runs = []
    for make_step in (lambda m: standard_step, lambda m: InstanceSparsity(m, theta=0.5).train_step(0.0)):
        torch.manual_seed(0)
        model = create_model("vgg8_cifar", width=0.25)
        fit(model, data, epochs=2, train_step=make_step(model), progress=False, seed=3)
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_feature_decay_shrinks_the_features():
    data = _digits_like()
    penalties = {}
    for lam in (0.0, 0.05):
        torch.manual_seed(0)
        model = create_model("vgg8_cifar", width=0.25)
        step = InstanceSparsity(model, theta=0.5).train_step(lam)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        fit(model, data, epochs=4, optimizer=opt, train_step=step, progress=False, seed=0)
        penalties[lam] = step.penalty_by_epoch
    assert sorted(penalties[0.05]) == [0, 1, 2, 3]
    assert penalties[0.05][3] < 0.5 * penalties[0.05][0]
    assert penalties[0.05][3] < 0.5 * penalties[0.0][3]


def test_pruned_fine_tuning_is_straight_through():
    net = identity_net()
    x, y = constant_maps([[1, 2, 3, 10]]), torch.tensor([1])
    sp = InstanceSparsity(net, theta=1.0)  # channels 0, 1, 2 are pruned for this instance
    task, _ = sp.train_step(0.0, prune=True)(net, x, y, _ctx(net, lr=0.0))
    with sp.active():
        masked = F.cross_entropy(net(x), y)
    assert task.item() == masked.item()  # the forward saw the pruned features
    ste_grad = net[0].weight.grad[:3].clone()
    net.zero_grad()
    masked.backward()
    assert net[0].weight.grad[:3].abs().sum() == 0  # a hard mask blocks the gradient of pruned channels
    assert ste_grad.abs().sum() > 0  # straight-through lets it pass


def test_step_checks_its_arguments_and_model():
    sp = InstanceSparsity(small_cnn(), theta=0.5)
    with pytest.raises(ConfigError, match="lam must be a number >= 0"):
        sp.train_step(-1.0)
    with pytest.raises(ConfigError, match="lam must be finite"):
        sp.train_step(math.inf)
    other = small_cnn()
    with pytest.raises(ConfigError, match="saw 0 of the 2 pruned layers"):
        sp.train_step(0.1)(other, torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.tensor([0, 1]), _ctx(other))
    assert no_hooks(sp.model)


# --- where the gather pays, and the static control ---------------------------------------------------------------


def test_layers_that_pay_follow_the_cost_table():
    from leanvision.compress.instance import layers_that_pay

    table = {  # the gather's mask and index_select cost more than they save in the small late layer
        "features.3": {"dense_ms": 1.00, "gathered_ms": 0.60},
        "features.7": {"dense_ms": 0.30, "gathered_ms": 0.29},
        "features.10": {"dense_ms": 0.10, "gathered_ms": 0.14},
    }
    assert layers_that_pay(table) == ["features.3", "features.7"]
    assert layers_that_pay(table, margin=0.1) == ["features.3"]  # a 3% gain is within the noise margin
    with pytest.raises(ConfigError, match="margin"):
        layers_that_pay(table, margin=1.0)


def test_gather_costs_time_each_layer_on_its_own_features():
    from leanvision.compress.instance import gather_costs

    net = identity_net()
    xs = [constant_maps([[1.0, 2.0, 0.1, 3.0]]), constant_maps([[0.1, 0.1, 4.0, 0.2]])]
    costs = gather_costs(net, ["2"], xs, theta=0.5, iters=1)
    assert set(costs) == {"2"} and set(costs["2"]) == {"dense_ms", "gathered_ms", "kept_fraction"}
    assert costs["2"]["dense_ms"] > 0 and costs["2"]["gathered_ms"] > 0
    assert costs["2"]["kept_fraction"] == pytest.approx((3 / 4 + 1 / 4) / 2)  # >= 0.5 x mean: 3 kept, then 1


def test_static_control_keeps_the_strongest_inputs_for_every_image_and_surgery_removes_their_producers():
    from leanvision.compress import apply_plan, make_plan, static_masks

    net = identity_net()
    data = [constant_maps([[1.0, 2.0, 0.1, 3.0], [1.2, 0.1, 0.2, 2.0]])]  # mean norms order: 3, 0, 1, 2
    masks = static_masks(net, data, ["2"], keep=0.5)
    assert masks["2"].tolist() == [[True, False, False, True]] * 2
    plan = make_plan(net, masks)
    assert plan["layers"]["0"]["out_channels_after"] == 2  # nothing reads channels 1 and 2 any more
    x = constant_maps([[0.5, 0.7, 0.9, 1.1]])
    with torch.no_grad():
        masked = net[2](x * torch.tensor([1.0, 0, 0, 1.0], dtype=torch.float64)[None, :, None, None])
        torch.testing.assert_close(apply_plan(net, plan)[:3](x), masked)
    with pytest.raises(ConfigError, match="keep"):
        static_masks(net, data, ["2"], keep=0)


def test_a_resumed_feature_decay_run_keeps_the_whole_penalty_record(tmp_path):
    data = _digits_like()

    def run(epochs: int, out: Path, resume: Path | None = None) -> tuple[dict, dict[int, float]]:
        torch.manual_seed(0)
        model = create_model("vgg8_cifar", width=0.25)
        step = InstanceSparsity(model, theta=0.5).train_step(0.05)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        sched = make_scheduler(opt, "cosine", total_steps=3 * len(data))
        fit(model, data, epochs=epochs, optimizer=opt, scheduler=sched, train_step=step, out_dir=out, resume=resume,
            progress=False, seed=0)  # fmt: skip
        return model.state_dict(), step.penalty_by_epoch

    whole, whole_penalty = run(3, tmp_path / "a")
    assert torch.load(tmp_path / "a" / "last.pt", weights_only=True)["train_step"]["penalty_by_epoch"] == whole_penalty
    run(2, tmp_path / "b")  # stopped after its second epoch (the scheduler is the 3-epoch run's)
    resumed, penalty = run(3, tmp_path / "b", resume=tmp_path / "b" / "last.pt")
    assert penalty == whole_penalty and sorted(penalty) == [0, 1, 2]
    assert all(torch.equal(resumed[k], whole[k]) for k in whole)
