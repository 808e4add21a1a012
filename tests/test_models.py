"""leanvision.models: exact paper counts, registry-generated protocol checks, timm equivalence, docs."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from test_ops import hook_macs, randomize_bn  # shared reference helpers (tests/ is on sys.path)
from torch import nn

from leanvision.errors import CheckpointError, ConfigError, UnknownNameError
from leanvision.models import (
    arch_of,
    create_model,
    ghostnet_from_timm,
    list_models,
    load_timm_state_dict,
    model_card,
    render_model_table,
    with_model_table,
)
from leanvision.models._registry import MODELS
from leanvision.ops import fuse_bn
from leanvision.registry import Registry

ALL = list_models()


def counts(model: nn.Module, size: tuple[int, ...]) -> tuple[int, int]:
    return sum(p.numel() for p in model.parameters()), hook_macs(model, torch.zeros(1, *size))


# --- exact counts against the paper / spec --------------------------------------------------------------------


@pytest.mark.parametrize(("name", "params_m", "macs_m"), [
    ("ghostnet_050", 2.587, 42.3), ("ghostnet_100", 5.183, 141.2), ("ghostnet_130", 7.359, 227.0),
    ("ghostnet_050_cifar", 1.319, 12.2), ("ghostnet_100_cifar", 3.914, 42.7),
])  # fmt: skip
def test_ghostnet_counts_match_paper(name: str, params_m: float, macs_m: float) -> None:
    card = model_card(name)
    params, macs = counts(create_model(name), card.input_size)
    assert abs(params / 1e6 - params_m) <= 0.0005  # spec: 4 significant digits, verified on the official code
    assert abs(macs / 1e6 - macs_m) <= 0.05
    if card.paper_params:  # paper: 5.2M / 141M for 1.0x (+-0.01M params, +-1M MACs)
        assert abs(params - card.paper_params) <= 0.07e6 and abs(macs - card.paper_macs) <= 1.01e6


@pytest.mark.parametrize(("name", "params_m", "macs_m"), [
    ("resnet20", 0.272, 40.8), ("ghost_resnet20", 0.142, 21.5), ("resnet56", 0.856, 125.7),
    ("ghost_resnet56", 0.441, 65.5),
])  # fmt: skip
def test_cifar_resnet_counts_option_b(name: str, params_m: float, macs_m: float) -> None:
    params, macs = counts(create_model(name, shortcut="B"), (3, 32, 32))
    assert params / 1e6 == pytest.approx(params_m, rel=0.005)
    assert macs / 1e6 == pytest.approx(macs_m, rel=0.005)


def test_cifar_resnet_counts_option_a_vs_paper() -> None:
    p56, m56 = counts(create_model("resnet56"), (3, 32, 32))
    g56, gm56 = counts(create_model("ghost_resnet56"), (3, 32, 32))
    assert p56 == pytest.approx(0.85e6, rel=0.01) and m56 == pytest.approx(125e6, rel=0.01)
    assert g56 == pytest.approx(0.43e6, rel=0.03)
    # paper's 63M = half of 125M; the depthwise cheap ops (~2.3M) are counted here, hence +3.6%
    assert gm56 == pytest.approx(63e6, rel=0.04)
    assert 0.50 <= g56 / p56 <= 0.58 and 0.50 <= gm56 / m56 <= 0.58


def test_option_a_shortcut_is_parameter_free_zero_padding() -> None:
    a, b = create_model("resnet20"), create_model("resnet20", shortcut="B")
    assert sum(p.numel() for p in b.parameters()) - sum(p.numel() for p in a.parameters()) == 2752
    sc = a.stages[1][0].shortcut
    x = torch.randn(2, 16, 8, 8)
    y = sc(x)
    assert y.shape == (2, 32, 4, 4)
    torch.testing.assert_close(y[:, 8:24], x[:, :, ::2, ::2])
    assert y[:, :8].abs().sum() == 0 and y[:, 24:].abs().sum() == 0


def test_ghost_resnet_structure() -> None:
    m = create_model("ghost_resnet20", ratio=3)
    blk = m.stages[1][0]
    assert blk.conv1.primary.conv.stride == (2, 2) and blk.conv1.primary.conv.kernel_size == (3, 3)
    assert blk.conv1.primary.act is not None and blk.conv1.cheap.act is not None
    assert blk.conv2.primary.act is None and blk.conv2.cheap.act is None
    assert blk.conv1.cheap.conv.out_channels == 2 * blk.conv1.primary.conv.out_channels  # ratio 3
    assert isinstance(m.stem.conv, nn.Conv2d) and m.stem.conv.groups == 1  # stem stays dense


def test_resnet_kaiming_init() -> None:
    w = create_model("resnet56").stages[2][3].conv1.conv.weight
    assert w.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.05)


def test_quickstart_twin_is_about_half() -> None:
    base, ghost = model_card("quickstart_cnn"), model_card("quickstart_ghost_cnn")
    assert 0.45 <= ghost.params / base.params <= 0.6 and 0.45 <= ghost.macs / base.macs <= 0.6
    for name in ("quickstart_cnn", "quickstart_ghost_cnn"):
        for shape in ((2, 1, 8, 8), (2, 1, 28, 28), (2, 3, 11, 9)):
            m = create_model(name, in_chans=shape[1]).eval()
            assert m(torch.randn(shape)).shape == (2, 10)


def test_lenet5_counts_match_lecun() -> None:
    # conv1 6*(25+1), conv2 16*(150+1), fc 400*120+120, 120*84+84, 84*10+10 = 61,706 params;
    # MACs 28*28*6*25 + 10*10*16*150 + 400*120 + 120*84 + 84*10 = 416,520 (pooling and ReLU count nothing).
    card = model_card("lenet5")
    assert (card.params, card.macs) == (61_706, 416_520)
    assert create_model("lenet5").forward_head(torch.zeros(2, 16, 5, 5), pre_logits=True).shape == (2, 84)


def test_ghostnet_cifar_layout_has_no_unused_convs() -> None:
    m = create_model("ghostnet_050_cifar")
    assert m.stem.conv.stride == (1, 1) and m.blocks[1][0].conv_dw is None
    assert m.forward_features(torch.zeros(1, 3, 32, 32)).shape[-1] == 4  # 32 / 8


# --- registry-generated protocol tests ------------------------------------------------------------------------


def small_size(name: str) -> tuple[int, int, int]:
    c, h, w = model_card(name).input_size
    return (c, min(h, 64), min(w, 64))  # GhostNet works at any size >= 32; keeps backward fast


@pytest.mark.parametrize("name", ALL)
def test_forward_backward(name: str) -> None:
    card = model_card(name)
    model = create_model(name).train()
    out = model(torch.randn(2, *small_size(name)))
    assert out.shape == (2, card.num_classes) and torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused, f"parameters without gradient: {unused[:3]}"


@pytest.mark.parametrize("name", ALL)
def test_overrides_and_classifier(name: str) -> None:
    c, h, w = small_size(name)
    model = create_model(name, num_classes=7, in_chans=c + 1).eval()
    x = torch.randn(2, c + 1, h, w)
    assert model(x).shape == (2, 7)
    assert isinstance(model.get_classifier(), nn.Linear) and model.get_classifier().out_features == 7
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)
    feats = model.forward_head(model.forward_features(x), pre_logits=True)
    model.reset_classifier(0)
    torch.testing.assert_close(model(x), feats)
    with pytest.raises(ConfigError, match="num_classes must be an integer >= 0"):
        model.reset_classifier(-1)


@pytest.mark.parametrize("name", ALL)
def test_card_matches_independent_count(name: str) -> None:
    card = model_card(name)
    assert card.name == name and card.family and len(card.mean) == len(card.std) == card.input_size[0]
    assert (card.params, card.macs) == counts(create_model(name), card.input_size)
    assert card.unsupported == {}, f"ops the profiler could not count: {card.unsupported}"


@pytest.mark.parametrize("name", ALL)
def test_fuse_keeps_outputs(name: str) -> None:
    model = randomize_bn(create_model(name)).eval()
    x = torch.randn(2, *small_size(name))
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    fused = model.fuse()
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.Identity)) for m in fused.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == n_bn  # original untouched
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), atol=1e-5, rtol=1e-4)


def test_unknown_model_suggests_close_match() -> None:
    with pytest.raises(UnknownNameError, match=r"ghostnet_100.*Run `leanvision list-models` to see all\.$"):
        create_model("ghostnet_10")


def test_generic_registry_has_no_model_text() -> None:
    plain: Registry[int] = Registry("model")  # the kind no longer switches on CLI-specific text
    plain.register("a")(lambda: 1)
    with pytest.raises(UnknownNameError, match=r"^unknown model 'b'\. Known: a\.$"):
        plain.get("b")
    hinted: Registry[int] = Registry("widget", hint="See `widgets --list`.")
    with pytest.raises(UnknownNameError, match=r"^unknown widget 'b'\. See `widgets --list`\.$"):
        hinted.get("b")


@pytest.mark.parametrize("name", ALL)
def test_builders_spell_out_their_arguments(name: str) -> None:
    params = inspect.signature(MODELS.get(name)).parameters.values()
    assert not [p for p in params if p.kind is p.VAR_KEYWORD], "give the builder explicit keyword arguments"
    assert all(p.kind is p.KEYWORD_ONLY for p in params)
    defaults = {p.name: p.default for p in params}
    assert defaults["num_classes"] == model_card(name).num_classes
    assert defaults["in_chans"] == model_card(name).input_size[0]
    model = create_model(name, num_classes=5, in_chans=2)
    assert model.num_classes == 5 and arch_of(model) == {"name": name, "kwargs": {"num_classes": 5, "in_chans": 2}}


def test_create_model_errors_and_none_kwargs() -> None:
    with pytest.raises(ConfigError, match="does not accept the argument 'widht'"):
        create_model("ghostnet_100", widht=2.0)
    with pytest.raises(ConfigError, match="shortcut must be 'A'"):
        create_model("resnet20", shortcut="C")
    assert create_model("resnet20", num_classes=None, in_chans=None).num_classes == 10
    assert list_models("ghostnet_*_cifar") == ["ghostnet_050_cifar", "ghostnet_100_cifar", "ghostnet_130_cifar"]


# --- timm interop ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "width", "size"), [("ghostnet_050", 0.5, 96), ("ghostnet_100", 1.0, 224), ("ghostnet_130", 1.3, 96)]
)
def test_timm_equivalence(name: str, width: float, size: int) -> None:
    timm = pytest.importorskip("timm")
    ref = randomize_bn(timm.create_model(name, pretrained=False)).eval()
    ours = ghostnet_from_timm(ref.state_dict(), width=width).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = ref(x)
        torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fuse_bn(ours)(x), expected, atol=1e-5, rtol=1e-5)


def test_load_timm_state_dict_variants_and_errors() -> None:
    timm = pytest.importorskip("timm")
    sd = timm.create_model("ghostnet_050", pretrained=False, num_classes=5, in_chans=1).state_dict()
    wrapped = {"state_dict": {f"module.{k}": v for k, v in sd.items()}}
    model = load_timm_state_dict(create_model("ghostnet_050", num_classes=5, in_chans=1), wrapped)
    torch.testing.assert_close(model.stem.conv.weight, sd["conv_stem.weight"])
    assert ghostnet_from_timm(sd, width=0.5).num_classes == 5
    with pytest.raises(CheckpointError, match=r"shape mismatch.*width"):
        ghostnet_from_timm(sd, width=1.0)
    with pytest.raises(CheckpointError, match="missing: classifier"):
        load_timm_state_dict(
            create_model("ghostnet_050", in_chans=1), {k: v for k, v in sd.items() if "classifier" not in k} | {}
        )
    with pytest.raises(CheckpointError, match="not a timm/official GhostNet"):
        ghostnet_from_timm({"fc.weight": torch.zeros(1)})


# --- docs -----------------------------------------------------------------------------------------------------


def test_models_doc_table_is_current() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text()
    assert doc == with_model_table(doc), "regenerate: python -m leanvision.models._doctable docs/models.md"
    table = render_model_table()
    assert all(f"`{name}`" in table for name in ALL)
