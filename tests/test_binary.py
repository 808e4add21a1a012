"""BBG binary ops and models (arXiv 1909.12117): balance (spec E1), STEs, gate, OPs, packed 1-bit inference."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from test_ops import hook_macs, randomize_bn  # shared reference helpers (tests/ is on sys.path)
from torch import nn

from leanvision.engine import make_optimizer, standard_step
from leanvision.engine.fit import fit
from leanvision.errors import ConfigError
from leanvision.models import BinaryVGG, create_model, model_card, render_model_table
from leanvision.ops import fuse_bn
from leanvision.ops.binary import (
    BinaryConv2d,
    BinaryGatedLayer,
    ChannelGate,
    PackedBinaryConv2d,
    ShapeShortcut,
    balance_error,
    binarize_weight,
    clip_latent_weights,
    pack_binary_conv,
    sign_balance,
    sign_pm1,
    sign_ste,
    xnor_conv2d_reference,
)
from leanvision.profile import profile


def entropy_bits(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-12, 1 - 1e-12)
    return -(p * p.log2() + (1 - p) * (1 - p).log2())


# --- sign and STE ---------------------------------------------------------------------------------------------


def test_sign_maps_zero_to_plus_one_and_keeps_dtype() -> None:
    x = torch.tensor([-2.0, -1e-30, -0.0, 0.0, 1e-30, 3.0], dtype=torch.float64)
    assert sign_pm1(x).tolist() == [-1, -1, 1, 1, 1, 1] and sign_pm1(x).dtype == torch.float64
    assert torch.sign(torch.zeros(1)).item() == 0  # why sign_pm1 exists


def test_sign_ste_is_exact_forward_and_clip_mask_backward() -> None:
    x = torch.tensor([-3.0, -1.0, -0.3, 0.0, 0.3, 1.0, 1.7], requires_grad=True)
    y = sign_ste(x)
    assert y.tolist() == [-1, -1, -1, 1, 1, 1, 1]  # exactly +-1, not 0.3 + (-1.3)
    y.backward(torch.arange(1.0, 8.0))
    assert x.grad.tolist() == [0, 2, 3, 4, 5, 6, 0]  # gradient where |x| <= 1 (boundary included)
    x.grad = None
    sign_ste(x, clip=False).sum().backward()
    assert x.grad.tolist() == [1] * 7


# --- balanced binarisation (spec E1) --------------------------------------------------------------------------


def biased_weight(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.05 + 0.02 * torch.randn(64, 32, 3, 3, generator=g)  # W ~ N(0.05, 0.02): biased filters


def test_plain_sign_of_biased_filters_is_unbalanced() -> None:
    signs, _ = binarize_weight(biased_weight(), balanced=False)
    p_plus = (signs > 0).flatten(1).double().mean(1)
    assert p_plus.min() > 0.95  # p+ >> 0.5
    assert entropy_bits(p_plus).max() < 0.5


def test_balanced_binariser_gives_half_plus_per_filter() -> None:
    signs, alpha = binarize_weight(biased_weight(), balanced=True)
    p_plus = (signs > 0).flatten(1).double().mean(1)
    assert p_plus.min() >= 0.45 and p_plus.max() <= 0.55
    assert entropy_bits(p_plus).min() >= 0.99
    w_hat = biased_weight() - biased_weight().mean((1, 2, 3), keepdim=True)
    torch.testing.assert_close(alpha, w_hat.abs().mean((1, 2, 3)))  # alpha = mean |W_hat| per output channel
    assert set(signs.unique().tolist()) == {-1.0, 1.0}


def test_balance_helpers_on_a_conv() -> None:
    conv = BinaryConv2d(32, 64, balanced=True)
    conv.weight.data.copy_(biased_weight())
    assert (sign_balance(conv) - 0.5).abs().max() <= 0.05
    plain = BinaryConv2d(32, 64, balanced=False)
    plain.weight.data.copy_(biased_weight())
    assert balance_error(plain) > 0.45 > 0.05 > balance_error(nn.Sequential(conv))
    with pytest.raises(ConfigError, match="no BinaryConv2d"):
        balance_error(nn.Linear(2, 2))


@pytest.mark.parametrize("detach_alpha", [False, True])
def test_centred_binariser_gradient_sums_to_zero_per_filter(detach_alpha: bool) -> None:
    w = (biased_weight() * 10).double().requires_grad_()  # some |W_hat| > 1: the clip mask is active too
    signs, alpha = binarize_weight(w, balanced=True, detach_alpha=detach_alpha)
    upstream = torch.randn(w.shape, dtype=torch.float64)
    (alpha.view(-1, 1, 1, 1) * signs * upstream).sum().backward()
    sums = w.grad.sum((1, 2, 3))
    assert w.grad.abs().sum((1, 2, 3)).min() > 1e-3  # a real gradient, not a trivial zero
    assert sums.abs().max() < 1e-10
    w.grad = None
    signs, alpha = binarize_weight(w, balanced=False, detach_alpha=detach_alpha)
    (alpha.view(-1, 1, 1, 1) * signs * upstream).sum().backward()
    assert w.grad.sum((1, 2, 3)).abs().max() > 1e-3  # the plain binariser has no such constraint


def test_weight_ste_mask_and_alpha_gradient() -> None:
    w = torch.tensor([[[[0.5]], [[-2.0]], [[1.0]], [[-0.25]]]]).requires_grad_()  # one filter, 4 weights
    signs, alpha = binarize_weight(w, balanced=False, detach_alpha=True)
    (signs * torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 4, 1, 1)).sum().backward()
    assert w.grad.flatten().tolist() == [1, 0, 3, 4]  # |W| > 1 gets no gradient through the sign
    assert alpha.item() == pytest.approx((0.5 + 2 + 1 + 0.25) / 4)
    w.grad = None
    _, alpha = binarize_weight(w, balanced=False)  # differentiated alpha: d mean|W| / dW = sign(W) / n
    alpha.sum().backward()
    assert w.grad.flatten().tolist() == [0.25, -0.25, 0.25, -0.25]


# --- BinaryConv2d ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("balanced", [True, False])
def test_binary_conv_matches_naive_reference_in_train_and_eval(balanced: bool) -> None:
    conv = BinaryConv2d(6, 8, 3, stride=2, balanced=balanced)
    x = torch.randn(2, 6, 9, 9)
    w = conv.weight.detach()
    w_hat = w - w.mean((1, 2, 3), keepdim=True) if balanced else w
    b = w_hat.abs().mean((1, 2, 3), keepdim=True) * torch.where(w_hat >= 0, 1.0, -1.0)
    ref = F.conv2d(torch.where(x >= 0, 1.0, -1.0), b, stride=2, padding=1)
    torch.testing.assert_close(conv.train()(x), ref)
    torch.testing.assert_close(conv.eval()(x), ref)


def test_binary_conv_gradients_flow_to_input_and_weight() -> None:
    conv = BinaryConv2d(4, 4, 3)
    x = (torch.randn(1, 4, 5, 5) * 2).requires_grad_()
    conv(x).sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert (x.grad[x.detach().abs() > 1] == 0).all() and x.grad.abs().sum() > 0  # clip-STE on activations


def test_binary_conv_macs_are_bops() -> None:
    conv = BinaryConv2d(8, 16, 3, stride=2)
    prof = profile(conv, torch.zeros(1, 8, 10, 10))
    assert prof.bops == 16 * 5 * 5 * 8 * 9 and prof.macs == 0 and not prof.unsupported
    assert prof.ops == prof.bops / 64
    assert hook_macs(conv, torch.zeros(1, 8, 10, 10)) == 0  # not an nn.Conv2d: float MAC counters skip it


# --- gated residual layer -------------------------------------------------------------------------------------


def test_shape_shortcut_pools_and_repeats_or_pads() -> None:
    x = torch.randn(2, 4, 7, 7)
    y = ShapeShortcut(4, 8, 2)(x)
    assert y.shape == (2, 8, 4, 4)  # ceil(7 / 2), like a padded stride-2 conv
    torch.testing.assert_close(y[:, :4, 0, 0], x[:, :, :2, :2].mean((2, 3)))
    torch.testing.assert_close(y[:, :4], y[:, 4:])  # channel repeat
    z = ShapeShortcut(4, 6, 1)(x)
    torch.testing.assert_close(z[:, :4], x)
    assert z[:, 4:].abs().sum() == 0  # non-multiple widths: zero-padded
    with pytest.raises(ConfigError, match="out_chs >= in_chs"):
        ShapeShortcut(8, 4)


def test_gated_layer_forward_is_bn_of_binary_conv_plus_gated_shortcut() -> None:
    layer = randomize_bn(BinaryGatedLayer(4, 8, stride=2)).eval()
    assert isinstance(layer.gate, ChannelGate) and (layer.gate.weight == 1).all()  # gate init 1
    with torch.no_grad():
        layer.gate.weight.copy_(torch.linspace(-1, 2, 8).view(8, 1, 1, 1))
        x = torch.randn(2, 4, 8, 8)
        s = ShapeShortcut(4, 8, 2)(x)
        expected = layer.bn(layer.conv(x)) + torch.linspace(-1, 2, 8).view(1, 8, 1, 1) * s
        torch.testing.assert_close(layer(x), expected)
        none = BinaryGatedLayer(4, 8, stride=2, residual="none").eval()
        assert none.gate is None and none.shortcut is None
        torch.testing.assert_close(none(x), none.bn(none.conv(x)))
        ident = BinaryGatedLayer(8, 8, residual="identity").eval()
        torch.testing.assert_close(ident(s), ident.bn(ident.conv(s)) + s)
    with pytest.raises(ConfigError, match="residual must be one of"):
        BinaryGatedLayer(4, 4, residual="gated")


def test_gate_costs_float_macs_and_conv_costs_bops() -> None:
    x = torch.zeros(1, 16, 8, 8)
    prof = profile(BinaryGatedLayer(16, 32, stride=2), x)
    assert prof.bops == 32 * 4 * 4 * 16 * 9
    assert prof.macs == 32 * 4 * 4 and not prof.unsupported  # gate: C*H*W float MACs
    assert hook_macs(BinaryGatedLayer(16, 32, stride=2), x) == prof.macs  # the reference counter agrees
    se = profile(BinaryGatedLayer(16, 32, stride=2, residual="se_gate"), x)
    assert se.macs == 16 * 32 + 32 * 4 * 4 and se.bops == prof.bops and not se.unsupported
    assert profile(BinaryGatedLayer(16, 32, stride=2, residual="none"), x).macs == 0


def test_se_gate_is_input_dependent_and_trains() -> None:
    layer = BinaryGatedLayer(4, 4, residual="se_gate")
    x = torch.randn(3, 4, 6, 6)
    layer(x).sum().backward()
    assert all(p.grad is not None for p in layer.parameters())


def test_fold_bn_keeps_outputs_and_bn_before_sign_is_left_alone() -> None:
    layer = randomize_bn(BinaryGatedLayer(8, 16, stride=2)).eval()
    x = torch.randn(2, 8, 9, 9)
    with torch.no_grad():
        ref = layer(x)
        fused = fuse_bn(layer)
        assert fused.bn is None and fused.conv.out_scale is not None and layer.bn is not None
        torch.testing.assert_close(fused(x), ref, atol=1e-5, rtol=1e-5)
        # BN -> sign -> conv: the BN sits before a sign, it cannot be folded into the conv after it.
        pre = randomize_bn(nn.Sequential(nn.BatchNorm2d(8), BinaryConv2d(8, 8))).eval()
        assert isinstance(fuse_bn(pre)[0], nn.BatchNorm2d)
        torch.testing.assert_close(fuse_bn(pre)(x), pre(x), atol=0, rtol=0)
        # conv -> BN in a plain Sequential: generic folding must not rescale binary latent weights.
        post = randomize_bn(nn.Sequential(BinaryConv2d(8, 8), nn.BatchNorm2d(8))).eval()
        assert isinstance(fuse_bn(post)[1], nn.BatchNorm2d)
        torch.testing.assert_close(fuse_bn(post)(x), post(x), atol=0, rtol=0)


def test_clip_latent_weights() -> None:
    m = nn.Sequential(BinaryConv2d(2, 2), nn.Conv2d(2, 2, 1))
    with torch.no_grad():
        m[0].weight.mul_(100)
        m[1].weight.mul_(100)
    clip_latent_weights(m)
    assert m[0].weight.abs().max() <= 1 and m[1].weight.abs().max() > 1  # only binary latent weights


# --- packed 1-bit storage -------------------------------------------------------------------------------------


def trained_conv(**kw) -> BinaryConv2d:
    """A binary conv after a few Adam steps on a toy regression, latent weights clipped (the BNN recipe)."""
    torch.manual_seed(0)
    conv = BinaryConv2d(16, 8, 3, **kw)
    target = nn.Conv2d(16, 8, 3, padding=conv.padding, stride=conv.stride, dilation=conv.dilation, groups=conv.groups)
    opt = torch.optim.Adam(conv.parameters(), lr=1e-2)
    for _ in range(20):
        x = torch.randn(4, 16, 8, 8)
        loss = (conv(x) - target(x).detach()).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        clip_latent_weights(conv)
    return conv.eval()


@pytest.mark.parametrize(
    "kw",
    [{}, {"padding": 0}, {"stride": 2}, {"groups": 4, "balanced": False}, {"dilation": 2, "padding": 2}],
    ids=["pad1", "pad0", "stride2", "groups-xnor", "dilated"],
)
def test_packed_weights_reproduce_the_float_binary_conv_exactly(kw: dict, tmp_path) -> None:
    conv = trained_conv(**kw)
    x = torch.randn(3, 16, 9, 9)
    x[0, :, 0, 0] = 0.0  # exact zeros map to +1 in both
    state = pack_binary_conv(conv)
    torch.save(state, tmp_path / "conv.pt")
    state = torch.load(tmp_path / "conv.pt", weights_only=True)
    assert state["bits"].dtype == torch.uint8 and state["bits"].numel() == math.ceil(conv.weight.numel() / 8)
    with torch.no_grad():
        expected = conv(x)
        ref = xnor_conv2d_reference(x, state)  # XNOR + popcount on packed bytes, integer arithmetic
        assert torch.equal(ref, expected)  # bit-exact, not approximately equal
        assert torch.equal(PackedBinaryConv2d(state)(x), expected)


def test_packed_weights_of_a_folded_conv_and_storage_size() -> None:
    conv = trained_conv()
    bn = randomize_bn(nn.BatchNorm2d(8)).eval()
    folded = conv.folded(bn)
    x = torch.randn(2, 16, 8, 8)
    state = pack_binary_conv(folded)
    with torch.no_grad():
        assert torch.equal(xnor_conv2d_reference(x, state), folded(x))
        torch.testing.assert_close(folded(x), bn(conv(x)), atol=1e-5, rtol=1e-5)
    packed_bytes = state["bits"].numel() + 4 * state["alpha"].numel()
    assert packed_bytes * 25 < 4 * conv.weight.numel()  # ~30x smaller than float32 latent weights here
    assert profile(PackedBinaryConv2d(state), x[:1]).bops == profile(conv, x[:1]).bops


def test_zero_padding_is_not_minus_one() -> None:
    # Why the reference masks padded positions: a popcount over raw bits reads a padded 0 as the bit of -1.
    conv = trained_conv()
    x = torch.randn(1, 16, 5, 5)
    as_minus_one = copy.deepcopy(conv)
    as_minus_one.padding = (0, 0)
    with torch.no_grad():
        naive = as_minus_one(F.pad(x, (1, 1, 1, 1), value=-1.0))
        zero_padded = conv(x)
    torch.testing.assert_close(naive[..., 1:-1, 1:-1], zero_padded[..., 1:-1, 1:-1])  # interior unaffected
    assert not torch.equal(naive, zero_padded)  # the border differs
    assert torch.equal(xnor_conv2d_reference(x, pack_binary_conv(conv)), zero_padded)
    with pytest.raises(ConfigError, match="expects 16"):
        xnor_conv2d_reference(torch.zeros(1, 3, 5, 5), pack_binary_conv(conv))


# --- models ---------------------------------------------------------------------------------------------------


def test_registered_models_bops_and_float_macs() -> None:
    vgg, xnor, res = (model_card(n) for n in ("bbg_vgg_cifar", "xnor_vgg_cifar", "bbg_resnet20_cifar"))
    vgg_bops = 9 * (32 * 32 * (64 * 64 * 2) + 16 * 16 * (64 * 128 + 128 * 128) + 8 * 8 * (128 * 256 + 256 * 256))
    assert vgg.bops == xnor.bops == vgg_bops == 188_743_680
    gates = 32 * 32 * 64 * 2 + 16 * 16 * 128 * 2 + 8 * 8 * 256 * 2
    assert xnor.macs == 32 * 32 * 64 * 27 + 256 * 10 and vgg.macs == xnor.macs + gates
    assert res.bops == 40_108_032 and res.macs == 32 * 32 * 16 * 27 + 6 * (16 * 1024 + 32 * 256 + 64 * 64) + 640
    assert vgg.paper == res.paper == "1909.12117" and "BOPs" in render_model_table(["bbg_vgg_cifar"])
    assert model_card("resnet20").bops == 0 and "BOPs" not in render_model_table(["resnet20"])


def test_model_flags() -> None:
    vgg = create_model("bbg_vgg_cifar")
    convs = [m for m in vgg.modules() if isinstance(m, BinaryConv2d)]
    assert len(convs) == 6 and all(c.balanced for c in convs)
    assert sum(isinstance(m, ChannelGate) for m in vgg.modules()) == 6
    xnor = create_model("xnor_vgg_cifar")
    assert not any(isinstance(m, ChannelGate) for m in xnor.modules())
    assert not any(m.balanced for m in xnor.modules() if isinstance(m, BinaryConv2d))
    res = create_model("bbg_resnet20_cifar", residual="identity", balanced=False)
    convs = [m for m in res.modules() if isinstance(m, BinaryConv2d)]
    assert len(convs) == 18 and not any(c.balanced for c in convs)
    assert not any(isinstance(m, ChannelGate) for m in res.modules())
    assert isinstance(res.stem.conv, nn.Conv2d) and isinstance(res.classifier, nn.Linear)  # float ends
    with pytest.raises(ConfigError, match="widths must be"):
        BinaryVGG(widths=(16, "P"))


def test_fuse_folds_every_bn_of_a_binary_model() -> None:
    model = randomize_bn(create_model("bbg_vgg_cifar")).eval()
    fused = model.fuse()
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.modules())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), atol=1e-5, rtol=1e-4)
    assert profile(fused, x[:1]).bops == profile(model, x[:1]).bops


def test_fit_with_latent_weight_clipping_step() -> None:
    def clipped_step(model, inputs, targets, ctx):
        loss, outputs = standard_step(model, inputs, targets, ctx)
        clip_latent_weights(model)
        return loss, outputs

    torch.manual_seed(0)
    model = BinaryVGG(num_classes=3, in_chans=1, stem_chs=8, widths=(8, "M", 16))
    with torch.no_grad():  # latent weights far outside [-1, 1] so the clipping is visible
        for m in model.modules():
            if isinstance(m, BinaryConv2d):
                m.weight.mul_(200)
    data = [(torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))) for _ in range(3)]
    res = fit(
        model, data, epochs=1, optimizer=make_optimizer(model, "adam", lr=1e-3), train_step=clipped_step, progress=False
    )
    assert math.isfinite(res.final["train_loss"])
    assert all(m.weight.abs().max() <= 1 for m in model.modules() if isinstance(m, BinaryConv2d))
