"""leanvision.ops: Ghost module/bottleneck against the paper's formulas and naive references, SE, BN folding."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from leanvision.errors import ConfigError
from leanvision.ops import ConvBnAct, GhostBottleneck, GhostModule, SqueezeExcite, fuse_bn, make_divisible


def hook_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Reference MAC counter of the spec: Conv2d out.numel()/B * k*k*C_in/groups, Linear in*out.

    A module that declares its own cost (``profile_macs``, e.g. a dynamic convolution) is counted by that
    declaration and the convs/linears inside it are not, as the papers count such operators.
    """
    total, inside = 0, 0

    def conv_hook(m: nn.Conv2d, _inp, out) -> None:
        nonlocal total
        if not inside:
            k = m.kernel_size[0] * m.kernel_size[1]
            total += out.numel() // out.shape[0] * k * m.in_channels // m.groups

    def linear_hook(m: nn.Linear, _inp, _out) -> None:
        nonlocal total
        if not inside:
            total += m.in_features * m.out_features

    def enter(_m: nn.Module, _inp) -> None:
        nonlocal inside
        inside += 1

    def leave(m: nn.Module, inp, out) -> None:
        nonlocal inside, total
        inside -= 1
        if not inside:
            cost = m.profile_macs(inp, out)
            total += cost.get("macs", 0) if isinstance(cost, dict) else cost

    handles = []
    for m in model.modules():
        if callable(getattr(m, "profile_macs", None)):
            handles += [m.register_forward_pre_hook(enter), m.register_forward_hook(leave)]
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            handles.append(m.register_forward_hook(conv_hook if isinstance(m, nn.Conv2d) else linear_hook))
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return total


def randomize_bn(model: nn.Module) -> nn.Module:
    """Non-trivial running stats and affine params so that folding is actually exercised."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model


# --- GhostModule ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [127, 128])
@pytest.mark.parametrize("s", [2, 3])
def test_ghost_module_macs_and_channels(n: int, s: int) -> None:
    c, d, hw = 64, 3, 8 * 8
    m = GhostModule(c, n, kernel_size=1, ratio=s, dw_size=d)
    x = torch.randn(2, c, 8, 8)
    assert m.eval()(x).shape == (2, n, 8, 8)
    init = math.ceil(n / s)
    # spec 1d E1: n/s*c + (s-1)*n/s*d^2 per output pixel (n/s rounded up)
    assert hook_macs(m, x) == (init * c + (s - 1) * init * d * d) * hw


def test_ghost_module_spec_example() -> None:
    m = GhostModule(64, 128, kernel_size=1, ratio=2, dw_size=3)
    assert hook_macs(m, torch.randn(1, 64, 5, 5)) == (64 * 64 + 64 * 9) * 25
    assert m.cheap.conv.groups == 64 and m.cheap.conv.out_channels == 64


def test_ghost_module_ratio_one_is_plain_conv() -> None:
    m = randomize_bn(GhostModule(8, 12, kernel_size=3, ratio=1)).eval()
    assert m.cheap is None
    ref = randomize_bn(ConvBnAct(8, 12, 3)).eval()
    ref.load_state_dict({k.removeprefix("primary."): v for k, v in m.state_dict().items()})
    x = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(m(x), ref(x))


def test_ghost_module_rejects_bad_ratio() -> None:
    with pytest.raises(ConfigError, match="ratio >= 1"):
        GhostModule(8, 8, ratio=0)


def naive_ghost(m: GhostModule, x: torch.Tensor, *, relu: bool) -> torch.Tensor:
    """Paper definition with an explicit loop: ghost y_ij = Phi_ij(y'_i), one d x d filter per ghost."""

    def bn(t: torch.Tensor, b: nn.BatchNorm2d) -> torch.Tensor:
        scale = b.weight / torch.sqrt(b.running_var + b.eps)
        return (t - b.running_mean[None, :, None, None]) * scale[None, :, None, None] + b.bias[None, :, None, None]

    act = F.relu if relu else (lambda t: t)
    pc = m.primary.conv
    y = act(bn(F.conv2d(x, pc.weight, None, pc.stride, pc.padding), m.primary.bn))
    maps = list(y.unbind(1))
    w, init = m.cheap.conv.weight, y.shape[1]
    per = w.shape[0] // init  # s - 1 ghosts per intrinsic map
    ghosts = []
    for i in range(init):
        for j in range(per):
            o = i * per + j
            g = F.conv2d(y[:, i : i + 1], w[o : o + 1], padding=w.shape[-1] // 2)
            b = m.cheap.bn
            g = (g - b.running_mean[o]) / torch.sqrt(b.running_var[o] + b.eps) * b.weight[o] + b.bias[o]
            ghosts.append(act(g)[:, 0])
    return torch.stack(maps + ghosts, 1)[:, : m.out_chs]


@pytest.mark.parametrize(("in_chs", "out_chs", "k", "s", "d", "stride", "relu"), [
    (6, 10, 1, 2, 3, 1, True),
    (6, 11, 3, 3, 3, 2, False),
    (4, 7, 3, 2, 5, 1, True),
])  # fmt: skip
def test_ghost_module_equals_naive_reference(in_chs, out_chs, k, s, d, stride, relu) -> None:
    m = randomize_bn(GhostModule(in_chs, out_chs, kernel_size=k, ratio=s, dw_size=d, stride=stride, relu=relu))
    x = torch.randn(2, in_chs, 9, 9)
    with torch.no_grad():
        out = m.eval()(x)
        torch.testing.assert_close(out, naive_ghost(m, x, relu=relu), atol=1e-5, rtol=1e-5)
    assert out.shape[1] == out_chs
    assert (out.min() < 0) == (not relu)


# --- GhostBottleneck ------------------------------------------------------------------------------------------


def test_bottleneck_shortcut_rules() -> None:
    ident = GhostBottleneck(16, 48, 16)
    assert ident.shortcut is None and ident.conv_dw is None and ident.se is None
    widen = GhostBottleneck(80, 480, 112, se_ratio=0.25)  # stride 1 but width changes: projection
    assert isinstance(widen.shortcut, nn.Sequential) and widen.conv_dw is None
    assert widen.shortcut[0].conv.groups == 80 and widen.shortcut[0].conv.stride == (1, 1)
    down = GhostBottleneck(24, 72, 40, dw_kernel_size=5, stride=2, se_ratio=0.25)
    assert down.conv_dw.conv.stride == (2, 2) and down.conv_dw.act is None  # DW conv: BN, no ReLU
    assert down.shortcut[0].conv.kernel_size == (5, 5) and down.shortcut[0].conv.stride == (2, 2)
    assert down.se.conv_reduce.out_channels == 20  # make_divisible(72 * 0.25, 4)
    assert down.ghost1.primary.act is not None and down.ghost2.primary.act is None
    out = down.eval()(torch.randn(2, 24, 16, 16))
    assert out.shape == (2, 40, 8, 8) and out.min() < 0  # no activation after the sum


def test_bottleneck_identity_shortcut_adds_input() -> None:
    blk = GhostBottleneck(8, 16, 8).eval()
    for p in blk.ghost2.parameters():  # zero projection -> output is exactly the input
        nn.init.zeros_(p)
    x = torch.randn(2, 8, 5, 5)
    torch.testing.assert_close(blk(x), x)


@pytest.mark.parametrize(("in_chs", "mid", "out", "k", "stride", "se"), [
    (16, 48, 24, 3, 2, 0.0), (24, 72, 40, 5, 2, 0.25), (80, 480, 112, 3, 1, 0.25), (40, 120, 40, 5, 1, 0.25),
])  # fmt: skip
def test_bottleneck_matches_timm(in_chs, mid, out, k, stride, se) -> None:
    timm_ghost = pytest.importorskip("timm.models.ghostnet")
    ref = randomize_bn(timm_ghost.GhostBottleneck(in_chs, mid, out, k, stride, se_ratio=se)).eval()
    from leanvision.models.ghostnet import timm_to_leanvision_key

    ours = GhostBottleneck(in_chs, mid, out, dw_kernel_size=k, stride=stride, se_ratio=se).eval()
    sd = {
        timm_to_leanvision_key(f"blocks.0.0.{key}", 99)[len("blocks.0.0.") :]: v for key, v in ref.state_dict().items()
    }
    ours.load_state_dict(sd)
    x = torch.randn(2, in_chs, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x.clone()), atol=1e-6, rtol=1e-5)


# --- SqueezeExcite --------------------------------------------------------------------------------------------


def test_make_divisible() -> None:
    assert [make_divisible(c * 0.25, 4) for c in (72, 120, 480, 672, 960)] == [20, 32, 120, 168, 240]
    assert make_divisible(16 * 1.3, 4) == 20 and make_divisible(16 * 0.5, 4) == 8
    assert make_divisible(10, 8) == 16  # 8 would lose more than 10%
    assert make_divisible(3, 8) == 8


def test_squeeze_excite_hard_sigmoid_gate() -> None:
    se = SqueezeExcite(12, rd_ratio=0.25).eval()
    x = torch.randn(2, 12, 4, 4)
    s = F.relu(se.conv_reduce(x.mean((2, 3), keepdim=True)))
    gate = F.relu6(se.conv_expand(s) + 3) / 6
    torch.testing.assert_close(se(x), x * gate)


# --- ConvBnAct and fuse_bn ------------------------------------------------------------------------------------


def test_conv_bn_act_group_error() -> None:
    with pytest.raises(ConfigError, match="divisible by groups=4"):
        ConvBnAct(6, 8, 3, groups=4)


def _check_fused(model: nn.Module, x: torch.Tensor) -> nn.Module:
    model = randomize_bn(model).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = fuse_bn(model)
    assert model.training, "input model must be untouched"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not fused.training
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model.eval()(x), atol=1e-5, rtol=1e-5)
    return fused


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("groups", [1, 2, 8])
def test_fuse_sequential_conv_bn(bias: bool, groups: int) -> None:
    seq = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, groups=groups, bias=bias), nn.BatchNorm2d(16), nn.ReLU())
    fused = _check_fused(seq, torch.randn(2, 8, 6, 6))
    assert [type(m) for m in fused] == [nn.Conv2d, nn.ReLU] and fused[0].bias is not None


def test_fuse_other_conv_kinds_and_leftover_bn() -> None:
    _check_fused(nn.Sequential(nn.Conv1d(4, 6, 3), nn.BatchNorm1d(6)), torch.randn(2, 4, 10))
    tconv = _check_fused(
        nn.Sequential(nn.ConvTranspose2d(4, 6, 2, stride=2), nn.BatchNorm2d(6)), torch.randn(2, 4, 5, 5)
    )
    assert len(tconv) == 1
    # a BN with no conv before it (here: first, and after a ReLU) is kept, so outputs stay equal
    seq = nn.Sequential(nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), nn.ReLU(), nn.BatchNorm2d(4))
    fused = _check_fused(seq, torch.randn(2, 4, 3, 3))
    assert sum(isinstance(m, nn.BatchNorm2d) for m in fused) == 2


def test_fuse_skips_bn_subclasses() -> None:
    class BnRelu(nn.BatchNorm2d):  # like timm's BatchNormAct2d: folding would drop the activation
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.relu(super().forward(x))

    fused = _check_fused(nn.Sequential(nn.Conv2d(3, 4, 1), BnRelu(4)), torch.randn(2, 3, 4, 4))
    assert isinstance(fused[1], BnRelu)


def test_fuse_conv_bn_act_and_ghost_modules() -> None:
    cba = _check_fused(ConvBnAct(4, 8, 3, stride=2, groups=4), torch.randn(2, 4, 7, 7))
    assert cba.bn is None and cba.conv.bias is not None
    blk = _check_fused(GhostBottleneck(8, 24, 16, stride=2, se_ratio=0.25), torch.randn(2, 8, 9, 9))
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.Identity)) for m in blk.modules())
    g = _check_fused(GhostModule(5, 9, kernel_size=3, ratio=3), torch.randn(2, 5, 6, 6))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in g.modules())


def test_fuse_inplace() -> None:
    m = randomize_bn(nn.Sequential(ConvBnAct(3, 4, 3)))
    x = torch.randn(1, 3, 5, 5)
    ref = m.eval()(x)
    out = fuse_bn(m, inplace=True)
    assert out is m and m[0].bn is None
    torch.testing.assert_close(m(x), ref, atol=1e-5, rtol=1e-5)


def _randomize_bn64(bn: nn.modules.batchnorm._BatchNorm, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    n = bn.num_features
    bn.running_mean.copy_(torch.rand(n, generator=g, dtype=torch.float64) - 0.5)
    bn.running_var.copy_(torch.rand(n, generator=g, dtype=torch.float64) + 0.5)
    if bn.affine:
        bn.weight.data.copy_(torch.rand(n, generator=g, dtype=torch.float64) + 0.5)
        bn.bias.data.copy_(torch.rand(n, generator=g, dtype=torch.float64) - 0.5)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize(
    ("make", "shape"),
    [
        (lambda b: (nn.Conv2d(4, 6, 3, padding=1, bias=b), nn.BatchNorm2d(6)), (2, 4, 5, 5)),
        (lambda b: (nn.Conv2d(4, 6, 3, groups=2, bias=b), nn.BatchNorm2d(6)), (2, 4, 5, 5)),
        (lambda b: (nn.Conv2d(6, 6, 3, groups=6, stride=2, bias=b), nn.BatchNorm2d(6)), (2, 6, 7, 7)),
        (lambda b: (nn.ConvTranspose2d(4, 6, 3, stride=2, bias=b), nn.BatchNorm2d(6)), (2, 4, 5, 5)),
        (lambda b: (nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2, bias=b), nn.BatchNorm2d(6)), (2, 4, 5, 5)),
        (lambda b: (nn.ConvTranspose2d(6, 6, 4, 2, 1, groups=6, bias=b), nn.BatchNorm2d(6)), (2, 6, 5, 5)),
        (lambda b: (nn.ConvTranspose1d(4, 8, 3, groups=4, bias=b), nn.BatchNorm1d(8)), (2, 4, 9)),
        (lambda b: (nn.Conv1d(3, 5, 3, bias=b), nn.BatchNorm1d(5)), (2, 3, 9)),
        (lambda b: (nn.Conv3d(2, 4, 3, groups=2, bias=b), nn.BatchNorm3d(4, affine=False)), (1, 2, 5, 5, 5)),
    ],
    ids=["conv2d", "conv2d-g2", "conv2d-dw", "tconv2d", "tconv2d-g2", "tconv2d-dw", "tconv1d-g4", "conv1d", "conv3d"],
)
def test_fuse_bn_is_exact_for_every_conv_kind(make, shape, bias: bool) -> None:
    # torch's fuse_conv_bn_eval assumes a transposed weight is [in, out, ...] and crashes on grouped ones.
    torch.manual_seed(0)
    seq = nn.Sequential(*make(bias)).double()
    _randomize_bn64(seq[1], seed=1)
    x = torch.randn(*shape, dtype=torch.float64)
    fused = fuse_bn(seq)
    assert len(fused) == 1 and fused[0].bias is not None
    with torch.no_grad():
        torch.testing.assert_close(fused(x), seq.eval()(x), atol=1e-12, rtol=1e-12)


def test_conv_bn_act_keeps_bn_subclass_that_does_more() -> None:
    class BnRelu(nn.BatchNorm2d):  # a BN that is not only a BN: folding it would drop the ReLU
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.relu(super().forward(x))

    m = ConvBnAct(3, 4, 3, act_layer=None, norm_layer=BnRelu)
    fused = _check_fused(nn.Sequential(m), torch.randn(2, 3, 6, 6))
    assert isinstance(fused[0].bn, BnRelu)
    assert m.fold_bn().bn is not None


def test_sign_packing_round_trips_at_one_bit_per_value() -> None:
    from leanvision.ops.bitpack import pack_signs, unpack_signs

    torch.manual_seed(0)
    for shape in [(1,), (7,), (8,), (3, 5, 3, 3), (64, 27)]:
        x = torch.randn(shape)
        x.view(-1)[0] = 0.0  # zero counts as +1, like the binarisers' sign
        packed = pack_signs(x)
        assert packed.dtype == torch.uint8 and packed.numel() == (x.numel() + 7) // 8
        assert torch.equal(unpack_signs(packed, x.shape), torch.where(x >= 0, 1.0, -1.0))
    with pytest.raises(ConfigError, match="must be a 1-d uint8 tensor of 17 bytes"):
        unpack_signs(torch.zeros(3, dtype=torch.uint8), (3, 5, 3, 3))


@pytest.mark.parametrize("build", [torchvision.models.resnet18, torchvision.models.mobilenet_v2])
def test_fuse_bn_folds_torchvision_blocks(build) -> None:
    """BasicBlocks, Conv2dNormActivation (a Sequential subclass) and ResNet's stem (conv1/bn1 attributes) fold:
    a baseline timed beside a folded candidate must be in its deploy form too."""
    torch.manual_seed(0)
    model = randomize_bn(build(num_classes=5)).eval()
    fused = fuse_bn(model)
    left = [n for n, m in fused.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert left == []
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-4)
