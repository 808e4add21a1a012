"""Synaptic Strength pruning (arXiv 1811.02454): exact re-parameterisation, L1 step, masks, plans and surgery."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torchvision
from torch import nn

from leanvision.compress.plan import apply_plan, decode_mask, encode_mask, make_plan
from leanvision.compress.synaptic import SynapticConv2d, SynapticStrength
from leanvision.engine import fit, make_optimizer
from leanvision.engine.step import standard_step
from leanvision.errors import ConfigError, UnknownNameError
from leanvision.export import export_onnx
from leanvision.models import arch_of, create_from_arch, create_model
from leanvision.profile import count_params, profile


def _randomise_bn(model: nn.Module, *, negative: bool = False) -> nn.Module:
    """Non-trivial BN scales, shifts and running stats, so an exactness check cannot pass by accident."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                gamma = torch.rand(n, generator=g) + 0.5
                if negative:
                    gamma[::3] *= -1
                m.weight.copy_(gamma)
                m.bias.copy_(torch.randn(n, generator=g))
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return model


def _cifar_resnet18() -> nn.Module:
    m = torchvision.models.resnet18(num_classes=10)
    m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    m.maxpool = nn.Identity()
    return m


class _SmallHeadVGG16BN(torchvision.models.VGG):
    """torchvision's VGG-16-BN (its layers and forward: features, 7x7 pooling, flatten, classifier) with one linear
    layer instead of the 4096-wide classifier (120M parameters), so the test stays fast and small in memory."""

    def __init__(self) -> None:
        nn.Module.__init__(self)
        self.features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"], batch_norm=True)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Linear(512 * 7 * 7, 10)


MODELS = {
    "resnet20": lambda: create_model("resnet20"),
    "resnet18": _cifar_resnet18,
    "mobilenet_v2": lambda: torchvision.models.mobilenet_v2(num_classes=10),
    "vgg16_bn": _SmallHeadVGG16BN,
}


def _weaken_rows(ss: SynapticStrength, frac: float, seed: int = 0) -> None:
    """Make a fraction of each layer's output channels weak, as L1 training does, so pruning removes channels."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in ss.layers.values():
            rows = torch.rand(layer.out_channels, generator=g) < frac
            layer.strength[rows] *= 1e-3


def _tiny() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )


# --- re-parameterisation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"bias": True, "stride": 2},
        {"groups": 2, "dilation": 2, "padding": 2},
        {"groups": 8, "padding_mode": "reflect"},  # depthwise, reflect padding
        {"kernel_size": 1, "padding": 0},
    ],
)
def test_layer_reproduces_the_conv_exactly(kw):
    args = {"kernel_size": 3, "padding": 1, "bias": False} | kw
    conv = nn.Conv2d(8, 16 if args.get("groups", 1) != 8 else 8, **args).double()
    layer = SynapticConv2d(conv)
    x = torch.randn(2, 8, 9, 9, dtype=torch.float64)
    assert (layer(x) - conv(x)).abs().max() <= 1e-10
    # s[j, i] = ||K[j, i]||_F and the kernel is the conv's own
    assert torch.allclose(layer.strength, conv.weight.flatten(2).norm(dim=2), rtol=0, atol=1e-12)
    assert layer.strength.shape == (conv.out_channels, conv.in_channels // conv.groups)
    back = layer.as_conv2d()
    assert type(back) is nn.Conv2d and (back(x) - conv(x)).abs().max() <= 1e-10


def test_bn_scale_moves_into_the_next_convs_strengths_exactly():
    # BN(γ) -> ReLU -> conv: relu(γx̂ + β) = |γ| relu(sign γ x̂ + β/|γ|), so |s_ij| must equal |γ_i|·||K_ij||.
    model = _randomise_bn(_tiny(), negative=True).double()
    gamma, head_gamma = model[1].weight.detach().clone(), model[4].weight.detach().clone()
    kernel_norm = model[3].weight.detach().flatten(2).norm(dim=2)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    expected_eval = model.eval()(x)
    expected_train = copy.deepcopy(model).train()(x)  # batch statistics: the identity holds there too
    ss = SynapticStrength(model)
    assert ss.absorbed == ["1"]  # BN "4" feeds the linear head, not a conv: it is only frozen
    assert (model.eval()(x) - expected_eval).abs().max() <= 1e-10
    assert (model.train()(x) - expected_train).abs().max() <= 1e-10
    torch.testing.assert_close(ss.layers["3"].strength.abs(), gamma.abs()[None, :] * kernel_norm, rtol=1e-12, atol=0)
    assert torch.equal(model[1].weight, gamma.sign())
    assert not model[1].weight.requires_grad and not model[4].weight.requires_grad  # no BN scale is learnt
    assert torch.equal(model[4].weight, head_gamma)  # frozen where it is, not reset


def test_keep_bn_scale_option_leaves_batchnorm_alone():
    model = _randomise_bn(_tiny())
    before = model[1].weight.detach().clone()
    ss = SynapticStrength(model, bn_scale="keep")
    assert ss.absorbed == [] and model[1].weight.requires_grad and torch.equal(model[1].weight, before)
    with pytest.raises(UnknownNameError, match=r"bn_scale 'drop'.*remove, keep"):
        SynapticStrength(_tiny(), bn_scale="drop")


@pytest.mark.parametrize("name", ["resnet20", "resnet18", "mobilenet_v2"])
def test_conversion_keeps_registered_and_torchvision_models_exact(name):
    model = _randomise_bn(MODELS[name]()).double().eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    expected = model(x)
    ss = SynapticStrength(model, prune_depthwise=True)
    assert not any(type(m) is nn.Conv2d for m in model.modules())
    assert ss.absorbed  # e.g. every block's inner BN, followed by ReLU and a conv
    assert (model(x) - expected).abs().max() <= 1e-10


def test_depthwise_convs_are_skipped_unless_asked():
    model = torchvision.models.mobilenet_v2(num_classes=10)
    ss = SynapticStrength(model)
    dw = model.features[1].conv[0][0]
    assert type(dw) is nn.Conv2d and dw.groups == dw.in_channels == 32
    assert len(ss.layers) == 35  # 52 convs minus 17 depthwise
    assert all(m.groups == 1 for m in ss.layers.values())


def test_errors_are_clear():
    with pytest.raises(ConfigError, match=r"no nn\.Conv2d to re-parameterise"):
        SynapticStrength(nn.Sequential(nn.Linear(3, 3)))

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(x) if x.sum() > 0 else x  # data-dependent: torch.fx cannot trace it

    branchy = Branchy()
    with pytest.raises(ConfigError, match=r"cannot trace Branchy with torch\.fx"):
        SynapticStrength(branchy)
    assert type(branchy.conv) is nn.Conv2d  # refused before anything was converted
    ss = SynapticStrength(_tiny())
    with pytest.raises(ConfigError, match="exactly one of sparsity"):
        ss.plan()
    with pytest.raises(ConfigError, match=r"in \[0, 1\); got 1.0"):
        ss.plan(1.0)
    with pytest.raises(UnknownNameError, match="did you mean 'layer'"):
        ss.plan(0.5, scope="layers")
    with pytest.raises(ConfigError, match="must be a number >= 0"):
        ss.train_step(-1.0)


# --- L1 step and masks ----------------------------------------------------------------------------------------


def _batches(n: int = 4, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 4, (8,), generator=g)) for _ in range(n)]


def test_penalty_is_the_l1_norm_of_live_strengths():
    ss = SynapticStrength(_tiny())
    expected = sum(layer.strength.abs().sum() for layer in ss.layers.values())
    assert torch.equal(ss.penalty(), expected)
    ss.layers["3"].mask[0] = False
    assert torch.allclose(ss.penalty(), expected - ss.layers["3"].strength[0].abs().sum())


def test_train_step_adds_lam_times_sign_of_strength_to_the_gradient():
    # Plain SGD (no momentum, no decay): the two runs differ by exactly lr * lam * sign(s) on every strength.
    lam, lr = 0.01, 0.1
    results = []
    for use_lam in (0.0, lam):
        torch.manual_seed(0)
        model = _tiny()
        ss = SynapticStrength(model)
        start = {n: m.strength.detach().clone() for n, m in ss.layers.items()}
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        fit(model, _batches(1), epochs=1, optimizer=opt, train_step=ss.train_step(use_lam), progress=False)
        results.append({n: m.strength.detach() for n, m in ss.layers.items()})
    for n, s0 in start.items():
        torch.testing.assert_close(results[0][n] - results[1][n], lr * lam * s0.sign(), rtol=0, atol=1e-6)


def test_pruned_connections_stay_exactly_zero_under_momentum_and_weight_decay():
    torch.manual_seed(0)
    model = _tiny()
    ss = SynapticStrength(model)
    opt = make_optimizer(model, "sgd", lr=0.1, momentum=0.9, weight_decay=5e-4)
    fit(model, _batches(3), epochs=1, optimizer=opt, train_step=ss.train_step(1e-3), progress=False)
    assert all(opt.state[m.strength]["momentum_buffer"].abs().sum() > 0 for m in ss.layers.values())
    plan = ss.plan(0.6)
    ss.prune(plan)
    pruned = {n: ~m.mask.clone() for n, m in ss.layers.items()}
    assert (
        sum(int(p.sum()) for p in pruned.values())
        == plan["summary"]["connections"] - plan["summary"]["connections_kept"]
    )
    # Without re-applying the masks, the momentum left from before pruning regrows the pruned strengths.
    control = copy.deepcopy((model, opt))
    fit(control[0], _batches(2, seed=1), epochs=1, optimizer=control[1], train_step=standard_step, progress=False)
    regrown = control[0][3].strength[pruned["3"]]
    assert regrown.abs().max() > 0
    fit(model, _batches(2, seed=1), epochs=3, optimizer=opt, train_step=ss.train_step(1e-3), progress=False)
    for n, layer in ss.layers.items():
        dead = pruned[n]
        assert torch.all(layer.strength[dead] == 0) and torch.all(layer.weight[dead] == 0)
        assert torch.all(opt.state[layer.strength]["momentum_buffer"][dead] == 0)
        assert torch.all(layer.strength.grad[dead] == 0)
        assert torch.all(layer.strength[~dead] != 0)  # the rest kept training


def test_global_pruning_is_by_rank_and_ignores_the_overall_scale():
    ss = SynapticStrength(_tiny())
    n = sum(m.strength.numel() for m in ss.layers.values())  # 3*8 + 8*8 = 88
    masks = ss.masks(0.75)
    assert sum(int((~m).sum()) for m in masks.values()) == round(0.75 * n)
    scores = torch.cat([s.flatten() for s in ss.scores().values()])
    kept = torch.cat([m.flatten() for m in masks.values()])
    assert scores[kept].min() >= scores[~kept].max()  # exactly the weakest connections go
    with torch.no_grad():  # the L1 term shrinks everything: a rank-based cut must not care
        for m in ss.layers.values():
            m.strength.mul_(1e-6)
    assert all(torch.equal(masks[k], v) for k, v in ss.masks(0.75).items())
    per_layer = ss.masks(0.5, scope="layer")
    assert {k: int((~v).sum()) for k, v in per_layer.items()} == {"0": 12, "3": 32}
    rel = ss.masks(threshold=0.5)
    scores = torch.cat([s.flatten() for s in ss.scores().values()])
    assert sum(int(v.sum()) for v in rel.values()) == int((scores >= 0.5 * scores.max()).sum())


def test_pruned_connections_stay_pruned_in_a_later_plan():
    ss = SynapticStrength(_tiny())
    ss.prune(ss.plan(0.5))
    first = {n: m.mask.clone() for n, m in ss.layers.items()}
    again = ss.masks(0.2)  # a lower sparsity never revives a pruned connection
    assert all(torch.equal(again[n] & ~first[n], torch.zeros_like(first[n])) for n in first)


# --- plans and surgery ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cols", [1, 3, 8, 9, 17, 64])
def test_mask_encoding_round_trips(cols):
    mask = torch.rand(5, cols, generator=torch.Generator().manual_seed(cols)) < 0.5
    rows = encode_mask(mask)
    assert all(isinstance(r, str) and len(r) == 2 * ((cols + 7) // 8) for r in rows)
    assert torch.equal(decode_mask(json.loads(json.dumps(rows)), (5, cols)), mask)


def test_mask_encoding_is_documented_bit_order():
    assert encode_mask(torch.tensor([[True, False, False, False, False, False, False, False, False, True]])) == ["0102"]


@pytest.mark.parametrize("name", ["resnet20", "resnet18"])
def test_keep_all_plan_is_the_identity(name):
    model = _randomise_bn(MODELS[name]()).eval()
    plan = make_plan(model)
    assert plan["summary"]["connections_kept"] == plan["summary"]["connections"]
    assert plan["summary"]["params_after"] == plan["summary"]["params"] == count_params(model)
    out = apply_plan(model, plan)
    before, after = model.state_dict(), out.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(out(x), model(x))
    assert arch_of(out) == arch_of(model)  # nothing was resized: still the registered build


@pytest.mark.parametrize(
    ("name", "depthwise"),
    [("resnet20", False), ("resnet18", False), ("mobilenet_v2", False), ("mobilenet_v2", True), ("vgg16_bn", False)],
)
def test_pruned_model_is_smaller_exact_and_matches_its_prediction(name, depthwise):
    model = _randomise_bn(MODELS[name]()).eval()
    dense = count_params(model)
    ss = SynapticStrength(model, prune_depthwise=depthwise)
    _weaken_rows(ss, 0.3)
    plan = json.loads(json.dumps(ss.plan(0.5)))  # what a saved plan gives back
    ss.prune(plan)
    x = torch.randn(2, 3, 32, 32)
    masked = model(x)
    pruned = apply_plan(model, plan)
    assert not any(isinstance(m, SynapticConv2d) for m in pruned.modules())
    n = count_params(pruned)
    assert n == plan["summary"]["params_after"] == profile(pruned, x).params
    assert plan["summary"]["params"] == dense and n < dense
    zeros = sum(int((m.weight == 0).sum()) for m in pruned.modules() if isinstance(m, nn.Conv2d))
    assert plan["summary"]["params_nonzero_after"] == n - zeros
    torch.testing.assert_close(pruned(x), masked, rtol=1e-4, atol=1e-5)
    # physically smaller: fewer channels in the saved weights, same names
    shapes = {k: v.shape for k, v in pruned.state_dict().items()}
    fresh = {k: v.shape for k, v in MODELS[name]().state_dict().items()}
    assert shapes.keys() == fresh.keys()
    assert sum(shapes[k][0] < fresh[k][0] for k in fresh if k.endswith("weight") and len(fresh[k]) == 4) >= 3


def _kill(plan_masks: dict[str, torch.Tensor], model: nn.Module, name: str, *, rows=(), cols=()) -> None:
    """Drop every kernel into output channels ``rows`` / out of input channels ``cols`` of conv ``name``."""
    conv = dict(model.named_modules())[name]
    mask = plan_masks.setdefault(name, torch.ones(conv.out_channels, conv.in_channels // conv.groups, dtype=bool))
    mask[list(rows)] = False
    mask[:, list(cols)] = False


def _prune_exactly(model: nn.Module, masks: dict[str, torch.Tensor], **kw) -> tuple[nn.Module, dict]:
    """Plan from ``masks``, fixed on the re-parameterised model, then surgery; asserts the surgery is exact."""
    ss = SynapticStrength(model, **kw)
    plan = make_plan(model, masks)
    ss.prune(plan)
    x = torch.randn(2, 3, 32, 32)
    pruned = apply_plan(model.eval(), plan)
    torch.testing.assert_close(pruned(x), model(x), rtol=1e-4, atol=1e-5)
    return pruned, plan


def test_residual_channel_is_removed_only_when_every_producer_lost_it():
    model = _randomise_bn(_cifar_resnet18())
    stream = ["conv1", "layer1.0.conv2", "layer1.1.conv2"]  # all add into the layer1 stream
    masks: dict[str, torch.Tensor] = {}
    _kill(masks, model, "layer1.0.conv2", rows=[5])
    pruned, _ = _prune_exactly(copy.deepcopy(model), masks)
    assert pruned.layer1[0].conv2.weight.shape[0] == 64 and pruned.layer1[0].bn2.num_features == 64
    assert torch.all(pruned.layer1[0].conv2.weight[5] == 0)  # kernels pruned, channel kept (others write it)
    for name in stream:
        _kill(masks, model, name, rows=[5])
    pruned, plan = _prune_exactly(copy.deepcopy(model), masks)
    assert pruned.conv1.out_channels == pruned.bn1.num_features == 63
    for blk in pruned.layer1:
        assert blk.conv1.in_channels == blk.conv2.out_channels == blk.bn2.num_features == 63
    assert pruned.layer2[0].conv1.in_channels == pruned.layer2[0].downsample[0].in_channels == 63
    assert plan["layers"]["layer1.1.conv1"]["in_channels_after"] == 63
    # the last stream feeds the classifier: removing one of its channels shrinks fc's input
    for name in ["layer4.0.conv2", "layer4.0.downsample.0", "layer4.1.conv2"]:
        _kill(masks, model, name, rows=[7])
    pruned, _ = _prune_exactly(copy.deepcopy(model), masks)
    assert pruned.fc.in_features == 511 and pruned.layer4[1].bn2.num_features == 511


def test_unread_channel_is_removed_from_its_producer():
    model = _randomise_bn(_cifar_resnet18())
    masks: dict[str, torch.Tensor] = {}
    _kill(masks, model, "layer2.0.conv2", cols=[3, 4])  # nobody reads layer2.0.conv1's channels 3 and 4
    pruned, plan = _prune_exactly(model, masks)
    assert pruned.layer2[0].conv1.out_channels == pruned.layer2[0].bn1.num_features == 126
    assert pruned.layer2[0].conv2.in_channels == 126
    # the kernels that wrote the removed channels are gone too
    assert plan["layers"]["layer2.0.conv1"]["kept"] == 126 * 64


def test_zero_padding_shortcut_keeps_the_stream_and_prunes_inside_blocks():
    model = _randomise_bn(create_model("resnet20"))
    masks: dict[str, torch.Tensor] = {}
    for name in ["stem.conv", "stages.0.0.conv2.conv", "stages.0.1.conv2.conv", "stages.0.2.conv2.conv"]:
        _kill(masks, model, name, rows=[2])  # dead everywhere, but F.pad/slicing reads the stream
    _kill(masks, model, "stages.1.0.conv1.conv", rows=[0, 1])
    pruned, _ = _prune_exactly(model, masks)
    assert pruned.stem.conv.out_channels == 16 and pruned.stages[0][2].conv2.conv.out_channels == 16
    assert torch.all(pruned.stem.conv.weight[2] == 0)
    assert pruned.stages[1][0].conv1.conv.out_channels == pruned.stages[1][0].conv2.conv.in_channels == 30
    assert arch_of(pruned) is None  # no longer the registered build


@pytest.mark.parametrize("depthwise", [True, False])
def test_depthwise_channel_goes_with_its_kernel(depthwise):
    # block 2 of MobileNetV2: 1x1 expand (16 -> 96) -> depthwise 3x3 -> 1x1 project (96 -> 24)
    model = _randomise_bn(torchvision.models.mobilenet_v2(num_classes=10))
    masks: dict[str, torch.Tensor] = {}
    if depthwise:  # a depthwise kernel is its channel's only connection
        _kill(masks, model, "features.2.conv.1.0", rows=[3])
    else:  # depthwise convs are not pruned, but a channel whose expansion kernels are all gone is all-zero
        _kill(masks, model, "features.2.conv.0.0", rows=[3])
    pruned, _ = _prune_exactly(model, masks, prune_depthwise=depthwise)
    expand, dw, project = pruned.features[2].conv[0][0], pruned.features[2].conv[1][0], pruned.features[2].conv[2]
    assert expand.out_channels == dw.in_channels == dw.out_channels == dw.groups == project.in_channels == 95
    assert pruned.features[2].conv[1][1].num_features == 95


def test_global_average_pooled_head_loses_the_removed_inputs():
    # leanvision's CIFAR VGG pools with x.mean((2, 3)) before its linear classifier
    model = _randomise_bn(create_model("vgg8_cifar"))
    masks: dict[str, torch.Tensor] = {}
    _kill(masks, model, "features.21", rows=[0, 5])
    pruned, plan = _prune_exactly(model, masks)
    assert pruned.features[21].out_channels == pruned.features[22].num_features == 254
    assert pruned.classifier.in_features == 254
    assert plan["summary"]["params"] - plan["summary"]["params_after"] == 2 * (128 * 9 + 2 + 10)


def test_masks_are_saved_with_the_model():
    model = _tiny()
    ss = SynapticStrength(model)
    ss.prune(ss.plan(0.5))
    state = model.state_dict()
    assert state["3.mask"].dtype == torch.bool and not state["3.mask"].all()
    rebuilt = _tiny()
    again = SynapticStrength(rebuilt)
    rebuilt.load_state_dict(state)
    assert all(torch.equal(again.layers[n].mask, m.mask) for n, m in ss.layers.items())
    assert SynapticStrength(rebuilt).layers.keys() == again.layers.keys()  # an already converted model is adopted


class _Mixed(nn.Module):
    """Two branches concatenated (an op surgery does not resize) and a grouped conv."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU())
        self.grouped = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.c = nn.Sequential(nn.Conv2d(8, 6, 1, bias=True), nn.ReLU())
        self.d = nn.Conv2d(6, 5, 1)

    def forward(self, x):
        return self.d(self.c(self.grouped(torch.cat([self.a(x), self.b(x)], 1)))).mean((2, 3))


def test_channels_reaching_unknown_ops_or_grouped_convs_are_kept():
    model = _randomise_bn(_Mixed())
    masks: dict[str, torch.Tensor] = {}
    _kill(masks, model, "a.0", rows=[1])  # dead, but it goes into torch.cat
    _kill(masks, model, "grouped.0", rows=[0])  # dead, but a grouped conv ties its channels
    _kill(masks, model, "c.0", rows=[2])  # an ordinary conv -> conv channel: removed, bias included
    pruned, plan = _prune_exactly(model, masks, prune_depthwise=True)
    assert pruned.a[0].out_channels == 4 and pruned.grouped[0].out_channels == 8
    assert torch.all(pruned.a[0].weight[1] == 0) and torch.all(pruned.grouped[0].weight[0] == 0)
    assert pruned.c[0].out_channels == 5 and pruned.c[0].bias.shape == (5,) and pruned.d.in_channels == 5
    assert plan["layers"]["grouped.0"]["shape"] == [8, 4, 3, 3]  # a connection: out x (in / groups)
    assert pruned.d.out_channels == 5  # the model output is never resized


def test_plan_replays_on_a_fresh_model():
    trained = _randomise_bn(_cifar_resnet18())
    ss = SynapticStrength(trained)
    _weaken_rows(ss, 0.4)
    plan = json.loads(json.dumps(ss.plan(0.6)))
    fresh = _cifar_resnet18()
    from_trained, from_fresh = apply_plan(trained, plan), apply_plan(fresh, plan)
    shapes = {k: v.shape for k, v in from_trained.state_dict().items()}
    assert shapes == {k: v.shape for k, v in from_fresh.state_dict().items()}
    assert count_params(from_fresh) == plan["summary"]["params_after"] < count_params(fresh)
    assert type(fresh.conv1) is nn.Conv2d and fresh.conv1.out_channels == 64  # the input is left untouched
    # the fresh model keeps its own weights: the result is the fresh model with the plan's masks
    masked_fresh = copy.deepcopy(fresh).eval()
    SynapticStrength(masked_fresh).prune(plan)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(from_fresh.eval()(x), masked_fresh(x), rtol=1e-4, atol=1e-5)


def test_plan_that_does_not_fit_is_refused():
    plan = make_plan(create_model("resnet20"))
    with pytest.raises(ConfigError, match=r"plan layers not in the model: none; model convs not in the plan: stages"):
        apply_plan(create_model("resnet32"), plan)
    with pytest.raises(ConfigError, match=r"layer 'stem.conv' is shape \[8, 3, 3, 3\] with groups=1 here"):
        apply_plan(create_model("resnet20", widths=(8, 16, 32)), plan)
    with pytest.raises(ConfigError, match="not a pruning plan"):
        apply_plan(create_model("resnet20"), {"layers": {}})
    bad = copy.deepcopy(plan)
    bad["layers"]["stem.conv"]["mask"][0] = "zz"
    with pytest.raises(ConfigError, match="not a hex string"):
        apply_plan(create_model("resnet20"), bad)
    bad["layers"]["stem.conv"]["mask"] = bad["layers"]["stem.conv"]["mask"][:3]
    with pytest.raises(ConfigError, match="needs 16 rows"):
        apply_plan(create_model("resnet20"), bad)
    with pytest.raises(ConfigError, match=r"mask for 'stem\.bn', which is not a Conv2d"):
        make_plan(create_model("resnet20"), {"stem.bn": torch.ones(16, 3, dtype=bool)})


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_pruned_model_exports_to_onnx_and_matches(name, tmp_path):
    model = _randomise_bn(MODELS[name]()).eval()
    ss = SynapticStrength(model)
    _weaken_rows(ss, 0.3)
    pruned = apply_plan(model, ss.plan(0.5))
    x = torch.randn(2, 3, 32, 32)
    path = export_onnx(pruned, x, tmp_path / "pruned.onnx", check=True)  # raises unless onnxruntime matches
    import onnx

    sizes = {i.name: list(i.dims) for i in onnx.load(str(path)).graph.initializer}
    assert sum(map(_numel, sizes.values())) < count_params(MODELS[name]())


def _numel(dims: list[int]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def test_user_flow_train_prune_finetune_surgery():
    torch.manual_seed(0)
    model = _tiny()
    ss = SynapticStrength(model)
    opt = make_optimizer(model, "sgd", lr=0.05)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert not any(id(m.strength) in decayed for m in ss.layers.values())  # strengths: L1 only, no weight decay
    fit(model, _batches(4), epochs=2, optimizer=opt, train_step=ss.train_step(1e-3), progress=False)
    plan = ss.plan(0.7)
    ss.prune(plan)
    fit(model, _batches(4, seed=2), epochs=2, optimizer=opt, train_step=ss.train_step(0.0), progress=False)
    pruned = apply_plan(model.eval(), plan)
    x = torch.randn(5, 3, 8, 8)
    torch.testing.assert_close(pruned(x), model(x), rtol=1e-5, atol=1e-6)
    assert count_params(pruned) == plan["summary"]["params_after"]


@pytest.mark.slow  # builds the 134M-parameter model four times (about 2.4 GB)
def test_full_vgg16_bn_prunes_to_its_predicted_size():
    model = _randomise_bn(torchvision.models.vgg16_bn(num_classes=10)).eval()
    ss = SynapticStrength(model)
    _weaken_rows(ss, 0.3)
    plan = ss.plan(0.5)
    ss.prune(plan)
    x = torch.randn(2, 3, 32, 32)
    pruned = apply_plan(model, plan)
    assert count_params(pruned) == plan["summary"]["params_after"] < plan["summary"]["params"]
    assert pruned.classifier[0].in_features < 512 * 49 and pruned.classifier[0].in_features % 49 == 0
    torch.testing.assert_close(pruned(x), model(x), rtol=1e-4, atol=1e-5)


# --- rankings that aim at channels where time is spent ---------------------------------------------------------


def _two_layer_toy() -> tuple[SynapticStrength, dict]:
    """conv a (1->2, 3x3) at 4x4, max-pool, conv b (2->2, 3x3) at 2x2: 144 and 36 MACs per connection."""
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(2, 2, 3, padding=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2),
    )  # fmt: skip
    ss = SynapticStrength(model)
    with torch.no_grad():  # a small early layer (as wide layers are initialised), a strong late one
        ss.layers["0"].strength.copy_(torch.tensor([[0.4], [0.2]]))
        ss.layers["3"].strength.copy_(torch.tensor([[1.0, 0.5], [3.0, 2.5]]))
    return ss, {"input_size": (1, 4, 4)}


def _kept(masks: dict) -> dict:
    return {n: m.int().tolist() for n, m in masks.items()}


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        # raw |s|: 0.2 and 0.4 are the smallest -> the early layer is emptied
        ({"rank": "strength"}, {"0": [[0], [0]], "3": [[1, 1], [1, 1]]}),
        # |s| / layer median (0.3 and 1.75): a 1.33, 0.67; b 0.57, 0.29, 1.71, 1.43 -> b's 0.29 and 0.57
        ({"rank": "normalized"}, {"0": [[1], [1]], "3": [[0, 0], [1, 1]]}),
        # |s| * sqrt(fan_in): a (fan_in 9) 1.2, 0.6; b (fan_in 18) 4.24, 2.12, 12.7, 10.6 -> a's two
        ({"rank": "normalized", "norm": "fan_in"}, {"0": [[0], [0]], "3": [[1, 1], [1, 1]]}),
        # normalised / (MACs per connection / mean 72): a x 1/2 -> 0.67, 0.33; b x 2 -> 1.14, 0.57, 3.43, 2.86
        ({"rank": "cost"}, {"0": [[1], [0]], "3": [[1, 0], [1, 1]]}),
        # raw |s| with at most half of a layer pruned: a loses 0.2 only, then b's 0.5
        ({"rank": "strength", "max_layer_sparsity": 0.5}, {"0": [[1], [0]], "3": [[1, 0], [1, 1]]}),
    ],
)
def test_rankings_select_the_hand_worked_connections(kw, expected):
    ss, size = _two_layer_toy()
    assert _kept(ss.masks(2 / 6, **kw, **size)) == expected
    plan = ss.plan(2 / 6, **kw, **size)
    assert plan["selection"]["rank"] == kw["rank"]


def test_normalized_and_cost_scores_are_the_hand_worked_numbers():
    ss, size = _two_layer_toy()
    norm = ss.rank_scores("normalized")
    torch.testing.assert_close(norm["0"], torch.tensor([[0.4], [0.2]]) / 0.3)
    torch.testing.assert_close(norm["3"], torch.tensor([[1.0, 0.5], [3.0, 2.5]]) / 1.75)
    cost = ss.rank_scores("cost", **size)
    torch.testing.assert_close(cost["0"], norm["0"] / 2)
    torch.testing.assert_close(cost["3"], norm["3"] * 2)
    fan_in = ss.rank_scores("normalized", norm="fan_in")
    torch.testing.assert_close(fan_in["3"], torch.tensor([[1.0, 0.5], [3.0, 2.5]]) * 18**0.5)


def test_ranking_errors_are_clear():
    ss, _ = _two_layer_toy()
    with pytest.raises(ConfigError, match="input_size"):
        ss.masks(0.5, rank="cost")
    with pytest.raises(UnknownNameError, match="rank"):
        ss.masks(0.5, rank="magnitude")
    with pytest.raises(ConfigError, match="max_layer_sparsity"):
        ss.masks(0.5, max_layer_sparsity=0)


# --- hardware-friendly widths ------------------------------------------------------------------------------------


def _vgg(widths=(8, 8, "M", 16, 16)) -> nn.Module:
    from leanvision.models.fsf import CifarVGG

    return _randomise_bn(CifarVGG(widths, num_classes=4)).eval()


@pytest.mark.parametrize("multiple", [4, 8])
def test_rounded_widths_are_multiples_and_surgery_stays_exact(multiple):
    model = _vgg()
    ss = SynapticStrength(model)
    _weaken_rows(ss, 0.4, seed=3)
    plain = ss.plan(0.6)
    plan = ss.plan(0.6, round_to=multiple)
    sizes = {n: e["shape"][0] for n, e in plan["layers"].items()}
    widths = {n: e["out_channels_after"] for n, e in plan["layers"].items()}
    assert all(w % multiple == 0 or w == sizes[n] for n, w in widths.items()), widths
    assert all(widths[n] >= e["out_channels_after"] for n, e in plain["layers"].items())  # rounded up, never down
    assert any(widths[n] > e["out_channels_after"] for n, e in plain["layers"].items())
    assert plan["selection"]["round_to"] == multiple
    ss.prune(plan)
    x = torch.randn(3, 3, 32, 32)
    pruned = apply_plan(model, plan)
    assert [m.out_channels for m in pruned.modules() if isinstance(m, nn.Conv2d)] == list(widths.values())
    torch.testing.assert_close(pruned(x), model(x), rtol=1e-4, atol=1e-5)


def test_rounding_changes_nothing_where_nothing_was_dropped():
    model = _vgg()
    ss = SynapticStrength(model)
    plan = ss.plan(threshold=0.0, round_to=16)
    assert plan["layers"] == make_plan(model)["layers"]
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(apply_plan(model, plan)(x), model(x))


def test_rounding_up_keeps_the_strongest_removed_channels():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.ReLU(),
        nn.Conv2d(4, 2, 3, padding=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2),
    )  # fmt: skip
    keep_only_0 = {"0": torch.tensor([[True], [False], [False], [False]])}
    scores = {"0": torch.tensor([[1.0], [0.5], [0.9], [0.1]])}  # channel 2 is the strongest removed one
    plan = make_plan(model, keep_only_0, round_to=2, channel_scores=scores)
    assert plan["layers"]["0"]["out_channels_after"] == 2
    assert decode_mask(plan["layers"]["0"]["mask"], (4, 1)).flatten().tolist() == [True, False, True, False]
    # the returned channel is read again by the next conv
    assert decode_mask(plan["layers"]["2"]["mask"], (2, 4)).tolist() == [[True, False, True, False]] * 2
    assert make_plan(model, keep_only_0, round_to=4)["layers"]["0"]["out_channels_after"] == 4
    with pytest.raises(ConfigError, match="round_to"):
        make_plan(model, keep_only_0, round_to=0)


def test_sparsity_for_a_mac_target_is_the_smallest_that_reaches_it():
    model = _vgg()
    ss = SynapticStrength(model)
    _weaken_rows(ss, 0.4, seed=3)
    x = torch.zeros(1, 3, 32, 32)
    dense = profile(model, x).macs
    kw = {"rank": "cost", "round_to": 4}
    s = ss.sparsity_for_macs(0.5, input_size=(3, 32, 32), **kw)
    macs = [profile(apply_plan(model, ss.plan(v, input_size=(3, 32, 32), **kw)), x).macs for v in (s, s - 0.001)]
    assert macs[0] <= 0.5 * dense < macs[1]
    with pytest.raises(ConfigError, match="fraction"):
        ss.sparsity_for_macs(1.5, input_size=(3, 32, 32))


def test_thin_builder_uses_the_family_width_else_uniform_surgery():
    from leanvision.compress.plan import thin_builder, uniform_plan

    convs = lambda m: [c.out_channels for c in m.modules() if isinstance(c, nn.Conv2d)]  # noqa: E731
    assert convs(thin_builder({"name": "resnet20", "kwargs": {}})(0.5))[:3] == [8, 8, 8]  # its widths argument
    assert convs(thin_builder({"name": "vgg8_cifar", "kwargs": {}})(0.5))[:3] == [16, 16, 32]  # its width argument
    thin = thin_builder({"name": "tv_resnet18_cifar", "kwargs": {}})(0.5)  # no width argument: surgery
    assert convs(thin)[:6] == [32, 32, 32, 32, 32, 64] and arch_of(thin)["plan"]["selection"]["method"] == "uniform"
    x = torch.randn(1, 3, 32, 32)
    assert thin(x).shape == (1, 10)
    with pytest.raises(ConfigError, match="width"):
        uniform_plan(create_model("resnet20"), 1.5)


# --- channel granularity -------------------------------------------------------------------------------------------


def _channel_toy() -> SynapticStrength:
    """conv a (2->3, 1x1) -> BN -> ReLU -> conv b (3->2, 3x3) -> ReLU -> conv c (2->4, 3x3, the output), at 4x4.

    Prunable channels: a's 3 (row 32 + column 288 MACs each) and b's 2 (432 + 576); c's output is the model's.
    """
    model = nn.Sequential(
        nn.Conv2d(2, 3, 1, bias=False), nn.BatchNorm2d(3), nn.ReLU(),
        nn.Conv2d(3, 2, 3, padding=1, bias=False), nn.ReLU(), nn.Conv2d(2, 4, 3, padding=1, bias=False),
    )  # fmt: skip
    ss = SynapticStrength(model)
    with torch.no_grad():
        ss.layers["0"].strength.copy_(torch.tensor([[1.0, 1.0], [4.0, 4.0], [3.0, 2.0]]))
        ss.layers["3"].strength.copy_(torch.tensor([[0.5, 0.5, 0.5], [0.3, 0.3, 0.4]]))
    return ss


@pytest.mark.parametrize(
    ("rank", "expected", "first"),
    [
        # row means of |s| (not sums, which grow with the fan-in): a 1, 4, 2.5; b 0.5, 1/3 -> b's channel 1
        ("strength", {"0": [1.0, 4.0, 2.5], "3": [0.5, 1 / 3]}, ("3", 1)),
        # row means over the layer medians 2.5 and 0.45 -> a's channel 0
        ("normalized", {"0": [0.4, 1.6, 1.0], "3": [0.5 / 0.45, 1 / 3 / 0.45]}, ("0", 0)),
        # normalised / (MACs per channel / mean): a 320, b 1008, mean (3*320 + 2*1008)/5 = 595.2 -> b's channel 1
        ("cost", {"0": [0.4 * 1.86, 1.6 * 1.86, 1.0 * 1.86], "3": [v / 0.45 * 595.2 / 1008 for v in (0.5, 1 / 3)]},
         ("3", 1)),
    ],
)  # fmt: skip
def test_channel_scores_and_the_first_channel_pruned_are_hand_worked(rank, expected, first):
    ss = _channel_toy()
    scores, producers = ss.channel_scores(rank, input_size=(2, 4, 4))
    assert producers == {"0": ["0"], "3": ["3"]}  # c's output is the model's: never resized
    for k, v in expected.items():
        torch.testing.assert_close(scores[k], torch.tensor(v, dtype=torch.float64))
    masks = ss.masks(1 / 5, rank=rank, input_size=(2, 4, 4), granularity="channel")
    unit, channel = first
    rows = {n: (~m.any(1)).nonzero().flatten().tolist() for n, m in masks.items()}
    assert rows == {"0": [channel] if unit == "0" else [], "3": [channel] if unit == "3" else [], "5": []}
    plan = ss.plan(1 / 5, rank=rank, input_size=(2, 4, 4), granularity="channel")
    assert plan["selection"]["granularity"] == "channel"
    assert plan["layers"][unit]["out_channels_after"] == len(expected[unit]) - 1
    assert plan["layers"]["5"]["in_channels_after"] == (1 if unit == "3" else 2)


def test_channel_scores_do_not_grow_with_the_fan_in():
    # a (3 -> 4) and b (4 -> 8) with every |s| = 1: all channels score alike, so neither layer is emptied first
    # (a sum over the fan-in scored a's channels 3 against b's 4, and a 3-input first conv always went first)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.ReLU(), nn.Conv2d(4, 8, 3, bias=False), nn.ReLU(),
                          nn.Conv2d(8, 2, 1))  # fmt: skip
    ss = SynapticStrength(model)
    with torch.no_grad():
        for m in ss.layers.values():
            m.strength.fill_(1.0)
    scores, _ = ss.channel_scores("strength")
    assert {k: v.tolist() for k, v in scores.items()} == {"0": [1.0] * 4, "2": [1.0] * 8}


class _ResidualToy(nn.Module):
    """stem s (2->2) -> + o(relu(i(.))) with inner i (2->3) and o (3->2) -> head h (2->4); all 1x1."""

    def __init__(self) -> None:
        super().__init__()
        self.s, self.i, self.o, self.h = (nn.Conv2d(a, b, 1, bias=False) for a, b in ((2, 2), (2, 3), (3, 2), (2, 4)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.s(x)
        return self.h(x + self.o(torch.relu(self.i(x))))


@pytest.mark.parametrize(
    ("writers", "stream", "first"),
    [("sum", [2.0, 4.0], ("i", 1)), ("mean", [1.0, 2.0], ("s", 0))],  # the stream's row means: s 1, 2 and o 1, 2
)
def test_a_residual_channel_scores_the_sum_or_the_mean_over_its_writers(writers, stream, first):
    ss = SynapticStrength(_ResidualToy())
    with torch.no_grad():
        for name, rows in {"s": [1.0, 2.0], "o": [1.0, 2.0], "i": [1.5, 1.2, 3.0]}.items():
            ss.layers[name].strength.copy_(torch.tensor(rows)[:, None].expand_as(ss.layers[name].strength))
    scores, producers = ss.channel_scores("strength", writers=writers)
    assert producers == {"s": ["s", "o"], "i": ["i"]}
    torch.testing.assert_close(scores["s"], torch.tensor(stream, dtype=torch.float64))
    torch.testing.assert_close(scores["i"], torch.tensor([1.5, 1.2, 3.0], dtype=torch.float64))
    # one channel of five: the sum keeps the stream ahead of every inner channel; the mean ranks them on one scale
    masks = ss.masks(1 / 5, granularity="channel", writers=writers)
    unit, channel = first
    assert {n: (~masks[n].any(1)).nonzero().flatten().tolist() for n in ("s", "o", "i")} == {
        "s": [channel] if unit == "s" else [],
        "o": [channel] if unit == "s" else [],  # a stream channel leaves every conv that writes it
        "i": [channel] if unit == "i" else [],
    }
    assert ss.plan(1 / 5, granularity="channel", writers=writers)["selection"]["writers"] == writers
    with pytest.raises(UnknownNameError, match=r"writers 'max'.*sum, mean"):
        ss.channel_scores(writers="max")


def test_channel_pruning_keeps_one_channel_per_space_and_obeys_the_cap():
    ss = _channel_toy()
    widths = lambda plan: [plan["layers"][n]["out_channels_after"] for n in ("0", "3")]  # noqa: E731
    assert widths(ss.plan(0.8, granularity="channel")) == [1, 1]  # 4 of 5 asked; each space keeps one
    assert widths(ss.plan(0.99, scope="layer", granularity="channel")) == [1, 1]
    assert widths(ss.plan(threshold=1.0, granularity="channel")) == [1, 1]
    assert widths(ss.plan(0.8, max_layer_sparsity=0.5, granularity="channel")) == [2, 1]  # floor(1.5), floor(1.0)
    assert widths(ss.plan(0.2, granularity="connection")) == [3, 2]  # connections: no channel loses them all
    with pytest.raises(UnknownNameError, match=r"granularity 'chanel'; did you mean 'channel'.*connection, channel"):
        ss.masks(0.5, granularity="chanel")


def _prune_channels_exactly(model: nn.Module, sparsity: float, **kw) -> tuple[nn.Module, dict]:
    """A channel plan fixed on the re-parameterised model, then surgery; asserts the surgery is exact."""
    ss = SynapticStrength(model, prune_depthwise=kw.pop("prune_depthwise", False))
    plan = json.loads(json.dumps(ss.plan(sparsity, granularity="channel", **kw)))
    ss.prune(plan)
    x = torch.randn(2, 3, 32, 32)
    pruned = apply_plan(model.eval(), plan)
    torch.testing.assert_close(pruned(x), model(x), rtol=1e-4, atol=1e-5)
    assert count_params(pruned) == plan["summary"]["params_after"]
    return pruned, plan


def _stream_widths(plan: dict) -> list[int]:
    return [plan["layers"][f"stages.{i}.0.conv2.conv"]["out_channels_after"] for i in range(3)]


def test_channel_granularity_reaches_a_mac_target_on_resnet20_by_shrinking_the_residual_streams():
    # Shortcut B: the streams are written by the stem / 1x1 projections and every block's conv2 (one space per
    # stage). Stage 1 alone is 36% of the MACs at width 16, so round_to=16 cannot reach 30%: 8 is used.
    torch.manual_seed(0)
    model = create_model("resnet20", shortcut="B")
    ss = SynapticStrength(model)
    kw = {"rank": "cost", "input_size": (3, 32, 32), "round_to": 8, "granularity": "channel"}
    s = ss.sparsity_for_macs(0.3, **kw)
    plan = ss.plan(s, **kw)
    x = torch.zeros(1, 3, 32, 32)
    assert profile(apply_plan(model, plan), x).macs <= 0.3 * profile(model, x).macs
    assert any(w < full for w, full in zip(_stream_widths(plan), (16, 32, 64), strict=True))
    assert all(e["out_channels_after"] % 8 == 0 for e in plan["layers"].values())
    with pytest.raises(ConfigError, match=r"99\.9% of the channels"):
        ss.sparsity_for_macs(0.3, **{**kw, "round_to": 16})


@pytest.mark.parametrize(
    ("name", "depthwise"),
    [("resnet20_b", False), ("vgg", False), ("mobilenet_v2", False), ("mobilenet_v2", True)],
)
def test_channel_plans_are_exact_after_surgery(name, depthwise):
    torch.manual_seed(0)
    build = {"resnet20_b": lambda: create_model("resnet20", shortcut="B"), "vgg": lambda: create_model("vgg8_cifar"),
             "mobilenet_v2": MODELS["mobilenet_v2"]}[name]  # fmt: skip
    model = _randomise_bn(build()).eval()
    kw = {"rank": "cost", "input_size": (3, 32, 32), "prune_depthwise": depthwise}
    pruned, plan = _prune_channels_exactly(model, 0.4, **kw)
    assert plan["summary"]["params_after"] < plan["summary"]["params"]
    if name == "resnet20_b":
        assert any(w < full for w, full in zip(_stream_widths(plan), (16, 32, 64), strict=True))
    if name == "mobilenet_v2":  # a depthwise conv keeps the channels of its expansion conv
        dws = [m for m in pruned.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)][1:]  # no stem
        assert all(dw.in_channels == dw.out_channels == dw.groups == dw.weight.shape[0] for dw in dws)
        assert sum(dw.groups for dw in dws) < sum(m.groups for m in build().modules() if isinstance(m, nn.Conv2d)
                                                  and m.groups > 1)  # fmt: skip


@pytest.mark.parametrize(
    ("name", "granularity", "depthwise"),
    [("vgg", "channel", False), ("vgg", "connection", False), ("resnet20_b", "channel", False),
     ("resnet20_b", "connection", False), ("mobilenet_v2", "channel", True)],
)  # fmt: skip
def test_fine_tuning_the_cut_model_equals_fine_tuning_the_masked_model(name, granularity, depthwise):
    # SynapticStrength.cut removes the freed channels before fine-tuning: the same updates, a smaller model.
    torch.manual_seed(0)
    build = {"resnet20_b": lambda: create_model("resnet20", shortcut="B"), "vgg": lambda: create_model("vgg8_cifar"),
             "mobilenet_v2": MODELS["mobilenet_v2"]}[name]  # fmt: skip
    model = _randomise_bn(build()).double()
    for m in model.modules():
        if isinstance(m, nn.Dropout):  # its random mask depends on the width: fewer channels, other draws
            m.p = 0.0
    ss = SynapticStrength(model, prune_depthwise=depthwise)
    plan = ss.plan(0.5, rank="normalized", granularity=granularity, input_size=(3, 32, 32))
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(6, 3, 32, 32, generator=g, dtype=torch.float64), torch.randint(0, 10, (6,), generator=g))
            for _ in range(3)]  # fmt: skip
    deployed = []
    for cut in (False, True):
        ref = copy.deepcopy(ss)
        if cut:
            tuned = ref.cut(plan)
            assert count_params(tuned.model) < count_params(ref.model)
        else:
            ref.prune(plan)
            tuned = ref
        opt = make_optimizer(tuned.model, "sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, nesterov=True)
        fit(tuned.model, data, epochs=2, optimizer=opt, train_step=tuned.train_step(0.0), progress=False, seed=0)
        deployed.append(apply_plan(tuned.model.eval(), tuned.held_plan))
    masked, small = deployed
    assert [p.shape for p in small.parameters()] == [p.shape for p in masked.parameters()]
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    # Not bit-equal: sums over fewer channels round differently (1e-16), and six steps on these random-BN nets
    # amplify that to ~1e-10 (MobileNetV2 the most). Re-wrapping a plain cut model instead (new strengths and
    # kernels: another parameterisation) differs by 3e-6 (MobileNetV2) to 7e-2 here.
    torch.testing.assert_close(small(x), masked(x), rtol=1e-7, atol=1e-7)
    assert count_params(small) == plan["summary"]["params_after"]


def _tuned_cut(ss: SynapticStrength, plan: dict, seed: int) -> SynapticStrength:
    """cut(plan), then three SGD steps on random batches (so the written-back values differ from the cut ones)."""
    small = ss.cut(plan)
    g = torch.Generator().manual_seed(seed)
    data = [(torch.randn(6, 3, 32, 32, generator=g, dtype=torch.float64), torch.randint(0, 10, (6,), generator=g))
            for _ in range(3)]  # fmt: skip
    opt = make_optimizer(small.model, "sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    fit(small.model, data, epochs=1, optimizer=opt, train_step=small.train_step(0.0), progress=False, seed=seed)
    return small


@pytest.mark.parametrize(
    ("name", "granularity", "depthwise"),
    [("vgg", "channel", False), ("resnet20_b", "connection", False), ("mobilenet_v2", "channel", True)],
)
def test_uncut_writes_a_fine_tuned_cut_model_back(name, granularity, depthwise):
    torch.manual_seed(0)
    build = {"resnet20_b": lambda: create_model("resnet20", shortcut="B"), "vgg": lambda: create_model("vgg8_cifar"),
             "mobilenet_v2": MODELS["mobilenet_v2"]}[name]  # fmt: skip
    ss = SynapticStrength(_randomise_bn(build()).double(), prune_depthwise=depthwise)
    plan = ss.plan(0.5, rank="normalized", granularity=granularity, input_size=(3, 32, 32))
    small = _tuned_cut(ss, plan, seed=1)
    ss.uncut(small)
    assert ss.held_plan == plan
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    torch.testing.assert_close(ss.model.eval()(x), small.model.eval()(x), rtol=1e-9, atol=1e-9)
    # Surgery after writing back gives the cut model's tensors bit for bit: the scatter inverts the slicing.
    back, deployed = apply_plan(ss.model, plan).state_dict(), apply_plan(small.model, small.held_plan).state_dict()
    assert back.keys() == deployed.keys()
    assert all(torch.equal(back[k], deployed[k]) for k in back)


def test_gradual_pruning_ends_with_one_plan_for_the_registered_build():
    # Cut, fine-tune, write back, prune further: the second plan keeps none of what the first removed, and the
    # final cut model loads into the registered build replayed with that one plan.
    torch.manual_seed(0)
    model = _randomise_bn(create_model("vgg8_cifar")).double()
    ss = SynapticStrength(model)
    kw = {"rank": "normalized", "granularity": "channel", "input_size": (3, 32, 32)}
    first = ss.plan(0.3, **kw)
    ss.uncut(_tuned_cut(ss, first, seed=1))
    second = ss.plan(0.6, **kw)
    for name, layer in second["layers"].items():
        shape = tuple(layer["shape"][:2])
        assert not (decode_mask(layer["mask"], shape) & ~decode_mask(first["layers"][name]["mask"], shape)).any()
    assert second["summary"]["params_after"] < first["summary"]["params_after"]
    small = _tuned_cut(ss, second, seed=2)
    deployed = apply_plan(small.model.eval(), small.held_plan)
    rebuilt = create_from_arch({**arch_of(create_model("vgg8_cifar")), "plan": second}).double().eval()
    rebuilt.load_state_dict(deployed.state_dict())
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    torch.testing.assert_close(rebuilt(x), deployed(x), rtol=0, atol=0)


def test_uncut_refuses_a_model_it_did_not_cut():
    torch.manual_seed(0)
    ss = SynapticStrength(create_model("vgg8_cifar"))
    with pytest.raises(ConfigError, match=r"uncut writes back a model made by cut\(plan\)"):
        ss.uncut(SynapticStrength(create_model("vgg8_cifar")))
    other = SynapticStrength(create_model("vgg8_cifar"))
    small = other.cut(other.plan(0.5, granularity="channel", input_size=(3, 32, 32)))
    mine = ss.plan(0.2, granularity="channel", input_size=(3, 32, 32))
    small.cut_from = mine  # a plan of this model, but not the one the tensors were cut with
    with pytest.raises(ConfigError, match="was not cut from this one"):
        ss.uncut(small)
