"""Dynamic convolution (DyNet 2004.10694, CondConv 1904.04971, DY-CNN 1912.03458): exact forms, MACs, models."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from test_ops import randomize_bn  # shared reference helper (tests/ is on sys.path)
from torch import nn

from leanvision.engine import make_optimizer, make_scheduler
from leanvision.errors import ConfigError
from leanvision.export import check_onnx, export_onnx
from leanvision.models import create_model, model_card
from leanvision.models.dynamic import DyBasicBlock, DynamicLayers, DynamicNet, dynamic
from leanvision.ops import (
    ConvBnAct,
    DynamicCoefficients,
    DynamicConv2d,
    DynamicConvBnAct,
    DynamicStep,
    MaskConv2d,
    anneal_temperature,
    attention_active_units,
    coefficient_spread,
    dynamic_conv_macs,
    fuse_bn,
    init_convs,
    kaiming_std,
    set_form,
)
from leanvision.ops.dynamic_conv import coefficient_macs
from leanvision.profile import profile

MODES = ("dynet", "condconv", "dycnn")


def randomize_coefs(model: nn.Module) -> nn.Module:
    """Non-trivial coefficient FCs: they start at zero (equal coefficients), which would hide layout errors."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, DynamicCoefficients):
                for p in m.fc.parameters():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model


def naive_fused(conv: DynamicConv2d, coefs: torch.Tensor, b: int) -> torch.Tensor:
    """Sample b's kernel by explicit loops over channels t and kernels i (bank laid out [t][i], i fastest)."""
    kernels = []
    for t in range(conv.out_chs):
        row = t if coefs.shape[1] > 1 else 0
        kernels.append(sum(coefs[b, row, i] * conv.weight[t * conv.g + i] for i in range(conv.g)))
    return torch.stack(kernels)


def naive_forward(conv: DynamicConv2d, x: torch.Tensor, coefs: torch.Tensor) -> torch.Tensor:
    outs = [
        F.conv2d(x[b : b + 1], naive_fused(conv, coefs, b), conv.bias, conv.stride, conv.padding, 1, conv.groups)
        for b in range(x.shape[0])
    ]
    return torch.cat(outs)


# --- E1: the three forms are exact -----------------------------------------------------------------------------

# (B, C_in, C_out, k, stride, depthwise): depthwise convs have C_out = C_in * multiplier (1 or 2).
E1_SHAPES = [
    (b, cin, cout if not dw else cin * (1 if cout == 5 else 2), k, s, dw)
    for b, cin, cout, k, s, dw in itertools.product((1, 3), (3, 8, 17), (5, 16), (1, 3, 5), (1, 2), (False, True))
]


@pytest.mark.parametrize("mode", MODES)
def test_forms_agree_exactly_forward_and_backward(mode: str) -> None:
    torch.manual_seed(0)
    for b, cin, cout, k, stride, dw in E1_SHAPES:
        conv = DynamicConv2d(cin, cout, k, stride=stride, groups=cin if dw else 1, g=3, mode=mode, bias=True).double()
        with torch.no_grad():
            conv.bias.normal_()
        x = torch.randn(b, cin, 9, 11, dtype=torch.float64, requires_grad=True)
        results = []
        for fn in (conv.forward_features_form, conv.forward_per_sample, conv.forward_batched):
            conv.zero_grad()
            x.grad = None
            y = fn(x, conv.coef(x))
            y.mul(torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
            grads = [x.grad.clone()] + [p.grad.clone() for p in conv.parameters()]
            results.append((y.detach(), grads))
        with torch.no_grad():
            expected = naive_forward(conv, x, conv.coef(x))
        assert results[0][0].shape == expected.shape
        case = (mode, b, cin, cout, k, stride, dw)
        for y, grads in results:
            assert (y - expected).abs().max() <= 1e-10, case
            for g_ref, g in zip(results[0][1], grads, strict=True):
                assert (g - g_ref).abs().max() <= 1e-10, case


def test_gradcheck_tiny_case() -> None:
    conv = randomize_coefs(DynamicConv2d(3, 4, 3, stride=2, g=2).double())
    conv.grad_scale = 1.0  # the true gradient (training scales the bank's on purpose: see test_sgd_step_...)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    for fn in (conv.forward_features_form, conv.forward_per_sample, conv.forward_batched):
        assert torch.autograd.gradcheck(
            lambda x, w, fc, fn=fn: fn(x, conv.coef(x)), (x, conv.weight, conv.coef.fc.weight)
        )


def test_condconv_is_dynet_with_tied_coefficients() -> None:
    dy = DynamicConv2d(8, 6, 3, g=4, mode="dynet").double().eval()
    cc = randomize_coefs(DynamicConv2d(8, 6, 3, g=4, mode="condconv")).double().eval()
    cc.weight.data.copy_(dy.weight.data)
    x = torch.randn(2, 8, 7, 7, dtype=torch.float64)
    tied = cc.coef(x)  # (B, 1, g): one scalar per expert
    assert tied.shape == (2, 1, 4)
    torch.testing.assert_close(cc(x, tied), dy(x, tied.expand(-1, 6, -1)), rtol=0, atol=1e-12)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.trace is deprecated; the ONNX exporter still uses it
def test_auto_form_by_mode_batch_and_export() -> None:
    conv = randomize_coefs(DynamicConv2d(4, 8, 3))
    assert conv.train().chosen_form(1) == "features"
    assert conv.eval().chosen_form(1) == "per_sample" and conv.chosen_form(32) == "batched"
    # cuDNN's groups=B conv is slower than the g-times wider static conv: a GPU batch takes the features form
    assert conv.chosen_form(32, "cuda") == "features" and conv.chosen_form(1, "cuda") == "per_sample"
    set_form(conv, "features")
    assert conv.chosen_form(1) == "features"
    set_form(conv, "auto")
    seen = []
    torch.jit.trace(
        _Probe(conv, seen), torch.randn(1, 4, 6, 6), check_trace=False
    )  # tracing must get the batch-generic form
    assert seen == ["features"]
    x = torch.randn(3, 4, 6, 6)
    with torch.no_grad():
        y = conv(x)
        torch.testing.assert_close(y, conv.forward_features_form(x, conv.coef(x)), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(conv(x[:1]), y[:1], atol=1e-5, rtol=1e-5)


class _Probe(nn.Module):
    def __init__(self, conv: DynamicConv2d, seen: list) -> None:
        super().__init__()
        self.conv, self.seen = conv, seen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(self.conv.chosen_form(x.shape[0]))
        return self.conv(x)


# --- initialisation ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "g"), [("dynet", 4), ("dynet", 6), ("condconv", 4), ("dycnn", 4)])
def test_fused_kernel_starts_with_kaiming_variance(mode: str, g: int) -> None:
    torch.manual_seed(0)
    conv = DynamicConv2d(64, 96, 3, g=g, mode=mode)
    x = torch.randn(8, 64, 12, 12).relu()
    with torch.no_grad():
        fused = conv.fused_kernels(conv.coef(x))
    kaiming = 2.0 / (96 * 9)  # fan_out of the equivalent static conv
    assert fused.var().item() == pytest.approx(kaiming, rel=0.05)
    bank = conv.weight.var().item()
    assert bank == pytest.approx(kaiming * (g if mode == "dycnn" else 4 / g), rel=0.05)  # scaled bank, not Kaiming


# --- MACs --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("cin", "cout", "k", "stride", "groups", "g"), [
    (8, 16, 3, 1, 1, 4), (17, 5, 5, 2, 1, 2), (8, 16, 3, 2, 8, 6), (16, 16, 1, 1, 1, 3),
])  # fmt: skip
def test_profiler_count_equals_formula_and_executed_ops(mode, cin, cout, k, stride, groups, g) -> None:
    conv = DynamicConv2d(cin, cout, k, stride=stride, groups=groups, g=g, mode=mode)
    x = torch.randn(1, cin, 13, 10)
    hw = (math.ceil(13 / stride), math.ceil(10 / stride))
    formula = dynamic_conv_macs(cin, cout, k, hw, groups=groups, g=g, coefficient_in=cin, mode=mode)
    kernel = cout * cin // groups * k * k
    fc = cin * (cout if mode == "dynet" else 1) * g
    if mode == "dycnn":
        hidden = max(16, cin // 4)  # the floor that keeps narrow layers' attention alive
        fc = cin * hidden + hidden * g
    assert formula == kernel * hw[0] * hw[1] + g * kernel + fc  # the spec's three terms, written out
    prof = profile(conv, x)
    assert prof.macs == formula and not prof.unsupported
    assert profile(conv, torch.randn(2, cin, 13, 10)).macs == 2 * formula  # per sample, times the batch

    class Undeclared(DynamicConv2d):
        profile_macs = None  # the profiler then counts the ops the batch-1 inference form really runs

    plain = Undeclared(cin, cout, k, stride=stride, groups=groups, g=g, mode=mode)
    assert profile(plain, x).macs == formula


@pytest.mark.parametrize("mode", MODES)
def test_shared_coefficients_are_counted_once(mode: str) -> None:
    layers = [
        DynamicConvBnAct(8, 16, 3, g=4, mode=mode, coefficients="external"),
        DynamicConvBnAct(16, 16, 3, g=4, mode=mode, coefficients="external"),
    ]
    chain = DynamicLayers(layers, share=True, g=4, mode=mode)
    rows = 32 if mode == "dynet" else 1
    assert chain.coef.rows == rows
    x = torch.randn(1, 8, 6, 7)
    expected = (
        dynamic_conv_macs(8, 16, 3, (6, 7), g=4, mode=mode)
        + dynamic_conv_macs(16, 16, 3, (6, 7), g=4, mode=mode)
        + coefficient_macs(8, rows, g=4, mode=mode)
    )
    prof = profile(chain, x)
    assert prof.macs == expected and not prof.unsupported
    assert sum(1 for m in chain.modules() if isinstance(m, DynamicCoefficients)) == 1
    with pytest.raises(ConfigError, match="coefficients='external'"):
        layers[0](x)


# --- BN folding / deploy -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_fold_bn_is_exact(mode: str) -> None:
    unit = randomize_coefs(randomize_bn(DynamicConvBnAct(6, 10, 3, stride=2, g=3, mode=mode))).double().eval()
    x = torch.randn(3, 6, 9, 11, dtype=torch.float64)
    with torch.no_grad():
        expected = unit(x)
        folded = fuse_bn(unit)
        assert folded.bn is None and folded.conv.bias is not None
        for form in ("features", "per_sample", "batched"):
            set_form(folded, form)
            assert (folded(x) - expected).abs().max() <= 1e-10
            assert (folded(x[:1]) - expected[:1]).abs().max() <= 1e-10
    assert unit.bn is not None  # fuse_bn copies


def test_fused_dynamic_net_has_no_bn_and_same_outputs() -> None:
    # float64: random BN statistics over 18 layers amplify float32 rounding past any fixed tolerance
    model = randomize_coefs(randomize_bn(dynamic(create_model("resnet20"), width=1.0, g=2))).double().eval()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    deploy = model.fuse()
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.Identity)) for m in deploy.modules())
    with torch.no_grad():
        torch.testing.assert_close(deploy(x), model(x), atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(deploy(x[:1]), model(x[:1]), atol=1e-9, rtol=1e-9)


def _onnx_error(model: nn.Module, path: Path, x: torch.Tensor) -> float:
    with torch.no_grad():
        scale = float(model(x).abs().max())
    return check_onnx(model, path, x, threads=1) / max(1.0, scale)  # float32 rounding grows with the outputs


def test_onnx_export_has_dynamic_batch(tmp_path: Path) -> None:
    model = randomize_coefs(randomize_bn(dynamic(create_model("resnet20"), width=0.5, g=2, mode="dycnn"))).fuse()
    path = export_onnx(model, torch.randn(1, 3, 16, 16), tmp_path / "dy.onnx", check=True)
    for batch in (1, 3):
        assert _onnx_error(model, path, torch.randn(batch, 3, 16, 16)) < 1e-4
    single = set_form(randomize_coefs(dynamic(create_model("resnet20"), width=0.5, g=2)).fuse(), "per_sample")
    path = export_onnx(single, torch.randn(1, 3, 16, 16), tmp_path / "bs1.onnx", dynamic_batch=False)
    assert _onnx_error(single, path, torch.randn(1, 3, 16, 16)) < 1e-4


# --- temperature (DY-CNN) ----------------------------------------------------------------------------------------


def test_temperature_is_a_buffer_honoured_in_eval() -> None:
    conv = randomize_coefs(DynamicConv2d(4, 6, 3, g=4, mode="dycnn")).eval()
    assert "coef.temperature" in conv.state_dict() and float(conv.coef.temperature) == 30.0
    x = torch.randn(2, 4, 5, 5)
    assert anneal_temperature(conv, 5, 10) == pytest.approx(15.5)
    with torch.no_grad():
        logits = conv.coef.fc(x.mean((2, 3))).view(2, 1, 4)
        torch.testing.assert_close(conv.coef(x), (logits / 15.5).softmax(-1))
    assert anneal_temperature(conv, 0, 10) == 30.0 and anneal_temperature(conv, 99, 10) == 1.0
    fresh = DynamicConv2d(4, 6, 3, g=4, mode="dycnn")
    fresh.load_state_dict(conv.state_dict())
    assert float(fresh.coef.temperature) == 1.0
    with pytest.raises(ConfigError, match="mode='dycnn'"):
        anneal_temperature(DynamicConv2d(4, 6, 3), 0, 10)
    with pytest.raises(ConfigError, match="total_steps"):
        anneal_temperature(conv, 0, 0)


def _toy_run(out: Path, *, epochs: int, resume: Path | None = None) -> nn.Module:
    from leanvision.engine import fit, standard_step

    def step(model, inputs, targets, ctx):
        anneal_temperature(model, ctx.step, total_steps=20)
        return standard_step(model, inputs, targets, ctx)

    torch.manual_seed(0)
    model = nn.Sequential(
        DynamicConvBnAct(1, 4, 3, g=4, mode="dycnn"), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(96, 1, 8, 8, generator=g), torch.randint(0, 3, (96,), generator=g)
    batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 96, 32)]
    fit(model, batches, epochs=epochs, train_step=step, out_dir=out, resume=resume, seed=0, progress=False)
    return model


def test_temperature_after_resume_equals_uninterrupted(tmp_path: Path) -> None:
    straight = _toy_run(tmp_path / "a", epochs=3)
    _toy_run(tmp_path / "b", epochs=2)
    saved = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["model"]
    assert float(saved["0.conv.coef.temperature"]) == pytest.approx(30 - 29 * 5 / 20)  # last step of epoch 2
    resumed = _toy_run(tmp_path / "b", epochs=3, resume=tmp_path / "b" / "last.pt")
    temp = float(resumed[0].conv.coef.temperature)
    assert temp == float(straight[0].conv.coef.temperature) == pytest.approx(30 - 29 * 8 / 20)
    sa, sb = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


# --- converter and registered models -----------------------------------------------------------------------------


def _convs_of(model: nn.Module) -> list[DynamicConv2d]:
    return [m for m in model.modules() if isinstance(m, DynamicConv2d)]


@pytest.mark.parametrize(
    ("source", "divisor"),
    [
        (torchvision.models.resnet18, 16),
        (torchvision.models.mobilenet_v2, 8),
        (torchvision.models.shufflenet_v2_x1_0, 16),
    ],
)
def test_converter_on_torchvision_models(source, divisor: int) -> None:
    with torch.device("meta"):
        src = source()
    model = dynamic(src, width=0.5, divisor=divisor, g=2, num_classes=7)
    assert isinstance(model, DynamicNet) and model.classifier.out_features == 7
    assert type(model.stem) is ConvBnAct or type(model.stem[0]) is ConvBnAct  # first conv static
    convs = _convs_of(model)
    assert convs and all(c.g == 2 for c in convs)
    assert all(c.out_chs % divisor == 0 for c in convs if c.groups == 1)
    model.train()
    out = model(torch.randn(2, 3, 64, 64))  # residuals and concatenations line up
    assert out.shape == (2, 7)


def test_converter_on_cifar_resnets_and_errors() -> None:
    for shortcut in ("A", "B"):
        model = dynamic(create_model("resnet20", shortcut=shortcut), width=0.5, divisor=8, mode="condconv")
        assert len(_convs_of(model)) == 18 and model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)
        assert isinstance(model.blocks[3], DyBasicBlock) and model.blocks[3].shortcut is not None
    widths = {c.out_chs for c in _convs_of(dynamic(create_model("resnet20"), widths={64: 48}, divisor=8))}
    assert widths == {8, 16, 48}
    with pytest.raises(ConfigError, match="converts torchvision ResNet"):
        dynamic(nn.Sequential(nn.Conv2d(3, 3, 1)))
    with torch.device("meta"):
        r50 = torchvision.models.resnet50()
    with pytest.raises(ConfigError, match="BasicBlock"):
        dynamic(r50)
    with pytest.raises(ConfigError, match="mode must be one of"):
        dynamic(create_model("resnet20"), mode="dynamic")
    with pytest.raises(ConfigError, match="Ghost-ResNets"):
        dynamic(create_model("ghost_resnet20"))


def test_operator_errors() -> None:
    with pytest.raises(ConfigError, match="divisible by groups"):
        DynamicConv2d(6, 8, 3, groups=4)
    with pytest.raises(ConfigError, match="mode must be one of"):
        DynamicConv2d(6, 8, 3, mode="softmax")
    with pytest.raises(ConfigError, match=r"g .* must be an int >= 1"):
        DynamicConv2d(6, 8, 3, g=0)
    with pytest.raises(ConfigError, match=r"shape \(B, 8, 4\)"):
        DynamicConv2d(6, 8, 3)(torch.randn(1, 6, 5, 5), torch.rand(1, 4, 4))


PAPER_CUTS = {  # DyNet abstract (2004.10694): MAC reduction vs the static original
    "dy_resnet18": (torchvision.models.resnet18, 67.2),
    "dy_mobilenet_v2": (torchvision.models.mobilenet_v2, 54.7),
    "dy_shufflenet_v2": (torchvision.models.shufflenet_v2_x1_0, 37.0),
}


@pytest.mark.parametrize("name", sorted(PAPER_CUTS))
def test_registered_models_hit_the_paper_mac_cuts(name: str) -> None:
    source, paper_cut = PAPER_CUTS[name]
    card = model_card(name)
    base = profile(source(), torch.zeros(1, 3, 224, 224))
    cut = 100 * (1 - card.macs / base.macs)
    assert abs(cut - paper_cut) <= 2.0, f"{name}: {cut:.1f}% vs paper {paper_cut}%"
    assert f"−{cut:.1f}% MACs" in card.notes and f"{card.params / 1e6:.2f}M params" in card.notes
    assert card.params > base.params  # DyNet trades parameters for MACs; the card says so
    assert card.unsupported == {} and card.paper == "2004.10694"


@pytest.mark.parametrize("form", ["per_sample", "batched"])
def test_inference_through_onednn_matches_the_autograd_path(form: str) -> None:
    """CPU float32 inference calls oneDNN's conv directly; with gradients on, F.conv2d runs: same outputs."""
    torch.manual_seed(0)
    conv = set_form(randomize_coefs(DynamicConv2d(12, 10, 3, stride=2, g=4)).eval(), form)
    x = torch.randn(3 if form == "batched" else 1, 12, 7, 7)
    reference = conv(x).detach()
    with torch.no_grad():
        fast = conv(x)
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)
    assert profile(conv, x).unsupported == {}  # the profiler counts oneDNN's conv like any conv


# --- training on equal terms with a static conv (init rule, expert step, coefficient layer, spread) -----------------


@pytest.mark.parametrize(
    ("cin", "cout", "groups", "mode", "g"),
    [(48, 96, 1, "dynet", 4), (48, 96, 1, "condconv", 8), (48, 96, 1, "dycnn", 4), (128, 512, 128, "dynet", 2)],
)
def test_init_rule_gives_static_and_dynamic_convs_the_same_kernel_norm(cin, cout, groups, mode, g) -> None:
    torch.manual_seed(0)
    static = nn.Conv2d(cin, cout, 3, padding=1, groups=groups, bias=False)
    model = init_convs(nn.Sequential(static, DynamicConv2d(cin, cout, 3, groups=groups, g=g, mode=mode)))
    dyn = model[1]
    with torch.no_grad():  # coefficients at init: equal for every image (zero-initialised last FC)
        combined = dyn.fused_kernels(dyn.coef(torch.randn(2, cin, 6, 6)))
    assert torch.equal(combined[0], combined[1])
    # >= 4608 iid entries: the norms sit within ~1% (one standard deviation) of the rule's
    expected = kaiming_std(cout, 3) * math.sqrt(static.weight.numel())
    assert static.weight.norm().item() == pytest.approx(expected, rel=0.04)
    assert combined[0].norm().item() == pytest.approx(expected, rel=0.04)


def test_init_rule_covers_full_stack_filters_and_is_what_the_compared_models_use() -> None:
    torch.manual_seed(0)
    mask = init_convs(nn.Sequential(MaskConv2d(64, 128, 3, ratio=4, bias=False)))[0]
    assert mask.weight.norm().item() == pytest.approx(kaiming_std(128, 3) * math.sqrt(128 * 64 * 9), rel=0.03)
    for model in (create_model("vgg8_cifar"), create_model("fsf_vgg8_cifar"), create_model("ghost_resnet20")):
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.weight.numel() >= 4096]
        for conv in convs:  # big enough for the sample std to sit within 10% of the rule's
            rule = kaiming_std(conv.out_channels, conv.kernel_size)
            assert conv.weight.detach().std().item() == pytest.approx(rule, rel=0.1), type(model).__name__


@pytest.mark.parametrize(("mode", "g"), [("dynet", 4), ("dynet", 2), ("condconv", 6), ("dycnn", 4)])
def test_sgd_step_moves_the_combined_kernel_as_far_as_a_static_convs(mode: str, g: int) -> None:
    torch.manual_seed(0)
    dyn = DynamicConv2d(5, 7, 3, g=g, mode=mode).double().train()
    c0 = 1 / g if mode == "dycnn" else 0.5  # every coefficient at init
    bank = dyn.weight.detach().unflatten(0, (7, g))
    static = nn.Conv2d(5, 7, 3, padding=1, bias=False).double()
    with torch.no_grad():
        static.weight.copy_((c0 * bank).sum(1))  # the dynamic conv's combined kernel
    x, r = torch.randn(3, 5, 6, 6, dtype=torch.float64), torch.randn(3, 7, 6, 6, dtype=torch.float64)
    for conv in (dyn, static):
        (conv(x) * r).sum().backward()
    # SGD moves each expert by -lr * grad, so the combined kernel by -lr * sum_i c0 * grad_i.
    combined_step = (c0 * dyn.weight.grad.unflatten(0, (7, g))).sum(1)
    torch.testing.assert_close(combined_step, static.weight.grad, rtol=1e-10, atol=1e-12)
    assert dyn.grad_scale == (g if mode == "dycnn" else 4 / g)  # DY-CNN: the expert learning rate scaled by g


def test_coefficient_layer_is_not_decayed_and_has_its_own_learning_rate() -> None:
    model = nn.Sequential(DynamicConvBnAct(4, 8, 3, g=4), nn.Flatten(), nn.LazyLinear(3))
    model(torch.randn(2, 4, 6, 6))
    model[0].conv.coef.lr_mult = 10.0
    opt = make_optimizer(model, "sgd", lr=0.1, weight_decay=5e-4)
    coef = {id(p) for p in model[0].conv.coef.parameters()}
    for group in opt.param_groups:
        mine = [id(p) in coef for p in group["params"]]
        assert all(mine) or not any(mine)  # the coefficient layer has groups of its own
        if any(mine):
            assert group["weight_decay"] == 0 and group["lr"] == pytest.approx(1.0)
        else:
            assert group["lr"] == pytest.approx(0.1)
    bank = next(g for g in opt.param_groups if any(p is model[0].conv.weight for p in g["params"]))
    assert bank["weight_decay"] == 5e-4
    sched = make_scheduler(opt, "cosine", total_steps=4)
    opt.step()
    sched.step()
    lrs = {round(g["lr"] / g.get("lr_scale", 1.0), 12) for g in opt.param_groups}
    assert len(lrs) == 1  # the schedule keeps the ratio


def test_dycnn_learning_rate_multiple_is_on_the_logits_layer_only() -> None:
    coef = DynamicCoefficients(64, 1, g=4, mode="dycnn", lr_mult=10.0)
    assert coef.lr_scale() == {"fc.2.weight": 10.0, "fc.2.bias": 10.0}  # FC1 (fc.0) at the base rate
    opt = make_optimizer(coef, "sgd", lr=0.1)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert lr_of[id(coef.fc[0].weight)] == pytest.approx(0.1) and lr_of[id(coef.fc[2].weight)] == pytest.approx(1.0)
    assert DynamicCoefficients(64, 8, g=4, lr_mult=3.0).lr_scale() == {"fc.weight": 3.0, "fc.bias": 3.0}


def test_coefficient_spread_is_std_over_mean_across_images() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(DynamicConvBnAct(3, 4, 3, g=2, mode="condconv"), DynamicConvBnAct(4, 4, 3, g=2))
    x = torch.randn(6, 3, 5, 5)
    assert coefficient_spread(model, [x]) == {"0.conv.coef": 0.0, "1.conv.coef": 0.0}  # zero-init: static
    randomize_coefs(model)
    spread = coefficient_spread(model, [(x[:4], None), (x[4:], None)])
    with torch.no_grad():
        c = [model[0].conv.coef(x[:4]).flatten(1), model[0].conv.coef(x[4:]).flatten(1)]
    per_batch = [(ci.std(0, correction=0) / ci.mean(0)).mean().item() for ci in c]
    assert spread["0.conv.coef"] == pytest.approx((4 * per_batch[0] + 2 * per_batch[1]) / 6, rel=1e-6)
    assert set(spread) == {"0.conv.coef", "1.conv.coef"} and spread["1.conv.coef"] > 0


def test_attention_active_units_counts_the_hidden_units_that_fire_on_enough_images() -> None:
    model = nn.Sequential(DynamicConvBnAct(3, 8, 3, g=2, mode="dycnn"), DynamicConvBnAct(8, 4, 3, g=2))
    fc1 = model[0].conv.coef.fc[0]
    assert fc1.out_features == 16  # the floor: 3 // 4 channels would give no unit at all
    with torch.no_grad():
        fc1.weight.zero_()
        fc1.bias.fill_(-1.0)  # dead on every image
        fc1.bias[0] = 1.0  # live on every image
        fc1.weight[1, 0] = 1.0  # live where channel 0's mean is positive: 3 of the 10 images
        fc1.bias[1] = 0.0
    x = torch.randn(10, 3, 5, 5)
    x[:, 0] = torch.tensor([1.0] * 3 + [-1.0] * 7)[:, None, None]
    model.train()
    assert attention_active_units(model, [x[:4], (x[4:], None)]) == {"0.conv.coef": (2, 16)}  # DyNet's: no FC1
    assert attention_active_units(model, [x], min_fraction=0.5) == {"0.conv.coef": (1, 16)}
    assert model.training and not fc1._forward_hooks  # mode restored, hooks removed


def test_dynamic_step_logs_the_spread_and_anneals_over_its_steps(tmp_path: Path) -> None:
    from leanvision.engine import fit

    torch.manual_seed(0)
    model = nn.Sequential(DynamicConvBnAct(1, 4, 3, g=4, mode="dycnn"), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3))  # fmt: skip
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 1, 8, 8, generator=g), torch.randint(0, 3, (64,), generator=g)
    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
    res = fit(model, batches, epochs=2, train_step=DynamicStep(anneal_steps=2), out_dir=tmp_path, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [set(r["coefficient_spread"]) for r in rows] == [{"0.conv.coef"}] * 2
    assert rows[0]["coefficient_spread"]["0.conv.coef"] > 0  # the coefficient layer learned within epoch 1
    assert res.history[1]["coefficient_spread"] == rows[1]["coefficient_spread"]
    assert float(model[0].conv.coef.temperature) == 1.0  # annealed within the first 2 of 8 steps


@pytest.mark.parametrize(("form", "batch"), [("per_sample", 1), ("batched", 3)])
def test_onnx_mixes_kernels_with_a_batched_matmul_equal_to_eager(tmp_path: Path, form: str, batch: int) -> None:
    onnx = pytest.importorskip("onnx")
    for mode in ("dynet", "dycnn"):
        model = randomize_coefs(randomize_bn(dynamic(create_model("resnet20"), width=0.5, g=2, mode=mode))).fuse()
        set_form(model, form)
        x = torch.randn(batch, 3, 16, 16)
        path = export_onnx(model, x, tmp_path / f"{mode}_{form}.onnx", dynamic_batch=False)
        ops = {n.op_type for n in onnx.load(str(path)).graph.node}
        assert "MatMul" in ops and "Einsum" not in ops, ops
        if batch == 1:  # the kernel is used as the MatMul left it: no per-sample Gather copies it
            assert "Gather" not in ops, ops
        assert _onnx_error(model, path, x) < 1e-4
