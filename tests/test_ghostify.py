"""leanvision.models.ghostify: GhostNet's conversion rules (arXiv 1911.11907) on torchvision CNNs; Ghost-ResNet-50.

Run ``python tests/test_ghostify.py`` to regenerate the tables in docs/ghostify.md (a test fails when they drift).
"""

from __future__ import annotations

import functools
import math
import re
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from test_ops import hook_macs, randomize_bn  # shared reference helpers (tests/ is on sys.path)
from torch import nn

from leanvision.errors import ConfigError
from leanvision.export import check_onnx, export_onnx
from leanvision.models import GhostResNet, create_model, ghostify, ghostify_plan, model_card
from leanvision.ops import GhostModule, fuse_bn
from leanvision.profile import profile

DOC = Path(__file__).resolve().parents[1] / "docs" / "ghostify.md"
TORCHVISION = ("resnet18", "resnet50", "vgg16_bn", "mobilenet_v2")
X224 = torch.zeros(1, 3, 224, 224)


def tv(name: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(**kw)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@functools.cache
def measured(name: str) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """Our profiler's (params, MACs) of the torchvision model and of its ghostified version at 224x224, and the
    independent formula's numbers (``expected_counts``) for the same model: one build per model (VGG is slow)."""
    model = tv(name)
    base = profile(model, X224)
    expected = expected_counts(model, ratio=2)
    ghost = profile(ghostify(model, ratio=2), X224)
    assert not base.unsupported and not ghost.unsupported
    return (base.params, base.macs, ghost.params, ghost.macs), expected


def counts(name: str) -> tuple[int, int, int, int]:
    return measured(name)[0]


def expected_counts(model: nn.Module, *, ratio: int, dw_size: int = 3) -> tuple[int, int, int, int]:
    """Independent formula: (params, MACs) after conversion, and (MACs of the converted convs before, after).

    From the original model's conv shapes and output sizes only: a converted conv (c_in, n, k x k, groups g, output
    H'W') costs m*c_in/g*k*k + m*(s-1)*d*d weights (m = ceil(n/s)) and that many MACs per output pixel; its BN's 2n
    affine parameters become 2m + 2m(s-1); the absorbed BN and the conv bias disappear.
    """
    plan = {s.conv: s for s in ghostify_plan(model, ratio=ratio) if s.converted}
    modules = dict(model.named_modules())
    out_hw: dict[str, int] = {}
    hooks = [
        modules[name].register_forward_hook(lambda _m, _i, out, name=name: out_hw.__setitem__(name, out[0, 0].numel()))
        for name in plan
    ]
    params, macs = n_params(model), hook_macs(model, X224)
    for h in hooks:
        h.remove()
    before = after = 0
    for name, step in plan.items():
        conv, bn = modules[name], modules[step.bn]
        m = math.ceil(conv.out_channels / ratio)
        kk = conv.kernel_size[0] * conv.kernel_size[1]
        weights = m * conv.in_channels // conv.groups * kk + m * (ratio - 1) * dw_size**2
        params += weights + 2 * m * ratio - sum(p.numel() for p in [*conv.parameters(), *bn.parameters()])
        conv_macs = conv.out_channels * conv.in_channels // conv.groups * kk * out_hw[name]
        macs += weights * out_hw[name] - conv_macs
        before, after = before + conv_macs, after + weights * out_hw[name]
    return params, macs, before, after


# --- the four torchvision models ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TORCHVISION)
def test_counts_match_independent_formula(name: str) -> None:
    params, macs, before, after = measured(name)[1]
    assert counts(name)[2:] == (params, macs)
    # The converted convs cost ~1/s: the paper's r_s = s*c/(s+c-1) for c = c_in*k^2 / d^2, i.e. 1/2 plus the cheap
    # op; that is at most ~0.57 here (MobileNetV2's 1x1 convs on 16-24 channels), ~0.50 for 3x3 convs.
    assert 0.5 <= after / before <= 0.6


@pytest.mark.parametrize(
    ("name", "param_ratio", "mac_ratio"),
    [
        ("resnet18", (0.50, 0.56), (0.50, 0.56)),  # stem dense: 118M of 1.8G MACs
        ("resnet50", (0.50, 0.56), (0.50, 0.56)),  # 2M dense fc weights
        ("vgg16_bn", (0.90, 0.96), (0.50, 0.53)),  # 124M of the 138M params are in the dense fc layers
        ("mobilenet_v2", (0.65, 0.75), (0.58, 0.65)),  # depthwise convs and the fc stay
    ],
)
def test_ratio_band(name: str, param_ratio: tuple[float, float], mac_ratio: tuple[float, float]) -> None:
    p0, m0, p1, m1 = counts(name)
    assert param_ratio[0] <= p1 / p0 <= param_ratio[1] and mac_ratio[0] <= m1 / m0 <= mac_ratio[1]


@pytest.mark.parametrize("name", TORCHVISION)
def test_forward_backward_at_32(name: str) -> None:
    model = ghostify(tv(name)).train()
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 1000) and torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    assert all(p.grad.abs().sum() > 0 for p in model.parameters() if p.dim() == 4)  # every conv gets a gradient


@pytest.mark.parametrize("name", TORCHVISION)
def test_fuse_keeps_outputs(name: str) -> None:
    model = randomize_bn(ghostify(tv(name))).eval()
    x = torch.randn(2, 3, 64, 64)
    fused = fuse_bn(model)
    ghosts = [m for m in fused.modules() if isinstance(m, GhostModule)]
    assert ghosts and all(g.primary.bn is None and g.cheap.bn is None for g in ghosts)
    with torch.no_grad():
        expected = model(x)
        # float32 rounding grows with depth and the output scale (random BN stats amplify deep nets)
        torch.testing.assert_close(fused(x), expected, atol=1e-5 * float(expected.abs().max()), rtol=1e-4)


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("resnet18", 64),
        ("resnet50", 64),
        ("mobilenet_v2", 64),
        # 224: torchvision's VGG pools to 7x7, which the ONNX exporter supports only from a multiple of 7;
        # the 131M-parameter file makes this one slow.
        pytest.param("vgg16_bn", 224, marks=pytest.mark.slow),
    ],
)
def test_onnx_export_matches(name: str, size: int, tmp_path) -> None:
    model = randomize_bn(ghostify(tv(name))).eval()
    x = torch.randn(1, 3, size, size)
    path = export_onnx(model, x, tmp_path / f"{name}.onnx", check=True)  # check: raises if onnxruntime disagrees
    assert check_onnx(model, path, x) < 1e-3 * (1 + model(x).abs().max().item())


def test_resnet50_plan_and_parameter_names() -> None:
    base = tv("resnet50", zero_init_residual=True)
    before = set(base.state_dict())
    plan = ghostify_plan(base)
    assert [s.conv for s in plan if not s.converted] == ["conv1"]  # only the stem stays dense
    acts = {s.conv: s.act for s in plan if s.converted}
    assert all(acts[f"layer{i}.0.conv{j}"] == "ReLU" for i in range(1, 5) for j in (1, 2))
    assert all(acts[f"layer{i}.0.{c}"] is None for i in range(1, 5) for c in ("conv3", "downsample.0"))
    model = ghostify(base)
    after = set(model.state_dict())
    converted = {s.conv for s in plan if s.converted}
    absorbed = {s.bn for s in plan if s.converted}
    assert before - after == {k for k in before if k.rsplit(".", 1)[0] in converted | absorbed}
    sub = {"primary.conv.weight", "cheap.conv.weight"} | {
        f"{half}.bn.{p}" for half in ("primary", "cheap") for p in ("weight", "bias", "running_mean", "running_var")
    }
    assert {"layer2.0.conv2.primary.conv.weight", "layer2.0.downsample.0.cheap.bn.bias", "conv1.weight"} <= after
    sub |= {"primary.bn.num_batches_tracked", "cheap.bn.num_batches_tracked"}
    new = {k for k in after - before if any(k.startswith(f"{c}.") and k[len(c) + 1 :] in sub for c in converted)}
    assert new == after - before and len(new) == len(converted) * len(sub)
    blk = model.layer2[0]
    assert isinstance(blk.bn2, nn.Identity) and isinstance(blk.downsample[1], nn.Identity)
    assert blk.conv2.primary.conv.stride == (2, 2) and blk.conv2.cheap.conv.stride == (1, 1)
    assert blk.downsample[0].primary.conv.stride == (2, 2) and blk.downsample[0].primary.conv.kernel_size == (1, 1)
    assert blk.conv1.primary.act is not None and blk.conv3.primary.act is None and blk.conv3.cheap.act is None
    # zero_init_residual: the last BN of each block started at gamma=0; its Ghost halves do too
    assert blk.conv3.primary.bn.weight.abs().sum() == 0 and blk.conv3.cheap.bn.weight.abs().sum() == 0


def test_mobilenet_v2_rules() -> None:
    plan = {s.conv: s for s in ghostify_plan(tv("mobilenet_v2"))}
    block = plan["features.2.conv.0.0"], plan["features.2.conv.1.0"], plan["features.2.conv.2"]
    assert block[0].converted and block[0].act == "ReLU6"  # 1x1 expand, ReLU6 on both halves
    assert not block[1].converted and block[1].reason.startswith("depthwise")
    assert block[2].converted and block[2].act is None  # linear 1x1 projection stays linear
    assert not plan["features.0.0"].converted and plan["features.18.0"].converted  # stem kept, head conv converted
    assert not ghostify_plan(tv("mobilenet_v2"), keep_head=True)[-1].converted


# --- the rules on small models: function form, placement, options ------------------------------------------


def _ghost_reference(g: GhostModule, x: torch.Tensor, act) -> torch.Tensor:
    """The paper's Ghost module written out: cat(f(BN(conv(x))), f(BN(dw(...))))[:, :n] with f the activation."""
    p, c = g.primary, g.cheap
    x1 = act(p.bn(p.conv(x)))
    x2 = act(c.bn(c.conv(x1)))
    return torch.cat([x1, x2], 1)[:, : g.out_chs]


def test_function_form_stride_trim_and_activation_placement() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
        nn.Conv2d(8, 13, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(13), nn.Hardswish(),
        nn.Conv2d(13, 16, 1, bias=False), nn.BatchNorm2d(16, eps=1e-3),
    )  # fmt: skip
    ghostify(model, ratio=3, keep_stem=False)
    g0, g3, g6 = model[0], model[3], model[6]
    assert all(isinstance(g, GhostModule) for g in (g0, g3, g6))
    assert [type(model[i]) for i in (1, 2, 4, 5, 7)] == [nn.Identity, nn.ReLU, nn.Identity, nn.Identity, nn.Identity]
    assert g3.primary.conv.stride == (2, 2) and g3.primary.conv.out_channels == 5 and g3.cheap.conv.out_channels == 10
    assert isinstance(g3.cheap.act, nn.Hardswish) and g6.primary.act is None and g6.primary.bn.eps == 1e-3
    randomize_bn(model).eval()
    x = torch.randn(2, 3, 9, 11)
    with torch.no_grad():
        h = _ghost_reference(g0, x, torch.relu)
        h = _ghost_reference(g3, h, nn.functional.hardswish)  # moved inside; the outer Hardswish is gone
        ref = _ghost_reference(g6, h, lambda t: t)
        assert ref.shape == (2, 16, 5, 6)
        torch.testing.assert_close(model(x), ref)


def test_grouped_depthwise_and_no_bn_rules() -> None:
    model = nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8),
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8),  # depthwise
        nn.Conv2d(8, 16, 3, padding=1, groups=4), nn.BatchNorm2d(16),  # grouped: 8 intrinsic maps split into 4
        nn.Conv2d(16, 12, 1, groups=4), nn.BatchNorm2d(12),  # grouped: ceil(12/2)=6 maps do not split into 4
        nn.Conv2d(12, 12, 3, padding=2, dilation=2), nn.ReLU(),  # no BN
        nn.Conv2d(12, 6, 3, padding=2, dilation=2, bias=False), nn.BatchNorm2d(6),  # dilation kept
    )  # fmt: skip
    plan = ghostify_plan(model)
    assert [s.converted for s in plan] == [False, False, True, False, False, True]
    assert [s.reason.split(" ")[0] for s in plan[:5]] == ["stem", "depthwise:", "", "grouped", "not"]
    ghostify(model)
    assert model[4].primary.conv.groups == 4 and model[10].primary.conv.dilation == (2, 2)
    assert model(torch.randn(1, 4, 10, 10)).shape == (1, 6, 10, 10)


def test_keep_stem_include_and_shared_activation() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
            self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
            self.act = nn.SiLU()  # shared and not idempotent: cannot move inside, so the Ghost module is linear

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.bn2(self.conv2(self.act(self.bn1(self.conv1(x))))))

    plan = ghostify_plan(Block(), keep_stem=False)
    assert [(s.converted, s.act) for s in plan] == [(True, None), (True, None)]
    model = ghostify(Block(), keep_stem=False, include=lambda name, conv: name != "conv2")
    assert isinstance(model.conv1, GhostModule) and isinstance(model.conv2, nn.Conv2d)
    assert (
        isinstance(model.act, nn.SiLU) and isinstance(model.bn1, nn.Identity) and isinstance(model.bn2, nn.BatchNorm2d)
    )


def test_ratio_one_is_conv_bn_act_and_dtype_mode_are_kept() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6),
                          nn.ReLU(inplace=True)).double().eval()  # fmt: skip
    ghostify(model, ratio=1)
    g = model[2]
    assert g.cheap is None and g.primary.act is None and g.training is False
    assert g.primary.conv.weight.dtype == torch.float64
    out = model.train()(torch.randn(2, 3, 5, 5, dtype=torch.float64))
    out.sum().backward()  # the outer in-place ReLU on the primary's output is safe
    assert (out >= 0).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ratio": 0}, "ratio must be an integer >= 1"),
        ({"ratio": 1.5}, "ratio must be an integer >= 1"),
        ({"ratio": True}, "ratio must be an integer >= 1"),
        ({"dw_size": 2}, "dw_size must be an odd integer >= 1"),
        ({"include": "layer1"}, "include must be a predicate"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ghostify(tv("resnet18"), **kwargs)


def test_nothing_to_convert_and_untraceable_models() -> None:
    with pytest.raises(ConfigError, match="has no Conv2d layer"):
        ghostify(nn.Sequential(nn.Linear(4, 4)))
    with pytest.raises(ConfigError, match=r"none of the 13 convs .* 12x not followed by its own BatchNorm2d"):
        ghostify(tv("vgg16"))  # no BN: the paper's Ghost module would add normalisation the model never had
    with pytest.raises(ConfigError, match="1x stem"):
        ghostify(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(self.conv(x)) if x.sum() > 0 else x

    with pytest.raises(ConfigError, match=r"cannot trace Branchy with torch\.fx.*ghostify needs the graph"):
        ghostify(Branchy())


# --- Ghost-ResNet-50 ------------------------------------------------------------------------------------------

CARD = (13_953_512, 2_151_023_360)


def test_ghost_resnet50_card_exact() -> None:
    card = model_card("ghost_resnet50")
    assert (card.params, card.macs) == CARD and card.unsupported == {}
    assert (card.paper_params, card.paper_macs) == (13_000_000, 2_200_000_000)
    assert round(card.macs / 1e8) == 22  # 2.151G is the paper's "2.2B" at its precision
    assert counts("resnet50")[2:] == CARD  # the same as ghostify(torchvision resnet50) with its defaults
    p = profile(create_model("ghost_resnet50", ratio=4), X224)
    assert (p.params, p.macs) == (8_151_752, 1_181_942_912) and round(p.macs / 1e8) == 12  # paper s=4: 1.2B
    assert (p.params, p.macs) == expected_counts(tv("resnet50"), ratio=4)[:2]


def test_ghost_resnet50_equals_ghostified_torchvision() -> None:
    ref = randomize_bn(ghostify(tv("resnet50"))).eval()

    def rename(key: str) -> str:
        key = re.sub(r"^conv1\.", "stem.0.conv.", re.sub(r"^bn1\.", "stem.0.bn.", key))
        key = re.sub(r"^layer(\d)\.", lambda m: f"stages.{int(m.group(1)) - 1}.", key)
        return key.replace("downsample.0.", "downsample.").replace("fc.", "classifier.")

    ours = GhostResNet().eval()
    ours.load_state_dict({rename(k): v for k, v in ref.state_dict().items()})
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = ref(x)
        torch.testing.assert_close(ours(x), expected)
        torch.testing.assert_close(ours.fuse()(x), expected, atol=1e-5 * float(expected.abs().max()), rtol=1e-4)


# --- the doc tables -------------------------------------------------------------------------------------------

_RULES = {
    "every block conv + 1x1 shortcuts, stem dense, d=3 (registered)": {},
    "1x1 shortcut convs dense": {"include": lambda name, _c: "downsample" not in name},
    "stem converted too": {"keep_stem": False},
    "cheap op d=1": {"dw_size": 1},
    "cheap op d=5": {"dw_size": 5},
    "3x3 convs only": {"include": lambda _n, conv: conv.kernel_size == (3, 3)},
}


def render_torchvision_table() -> str:
    rows = ["| model | params | MACs | ghostified params | ghostified MACs | ratio params / MACs |",
            "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name in TORCHVISION:
        p0, m0, p1, m1 = counts(name)
        rows.append(
            f"| {name} | {p0 / 1e6:.3f}M | {m0 / 1e9:.3f}G | {p1 / 1e6:.3f}M | {m1 / 1e9:.3f}G "
            f"| {p1 / p0:.3f} / {m1 / m0:.3f} |"
        )
    return "\n".join(rows) + "\n"


def render_rules_table() -> str:
    rows = ["| rule | s=2 params | s=2 MACs | s=4 params | s=4 MACs |", "|---|---:|---:|---:|---:|",
            "| paper (arXiv 1911.11907) | 13.0M | 2.2B | 6.5M | 1.2B |"]  # fmt: skip
    for label, kw in _RULES.items():
        cells = []
        for s in (2, 4):
            p = profile(ghostify(tv("resnet50"), ratio=s, **kw), X224)
            cells += [f"{p.params / 1e6:.3f}M", f"{p.macs / 1e9:.3f}G"]
        rows.append(f"| {label} | {' | '.join(cells)} |")
    return "\n".join(rows) + "\n"


def _block(text: str, tag: str) -> tuple[int, int]:
    begin, end = f"<!-- {tag}:begin (generated: python tests/test_ghostify.py) -->\n", f"<!-- {tag}:end -->"
    i, j = text.index(begin) + len(begin), text.index(end)
    return i, j


def _with_tables(text: str, tables: dict[str, str]) -> str:
    for tag, table in tables.items():
        i, j = _block(text, tag)
        text = text[:i] + table + text[j:]
    return text


def test_doc_example_runs_and_its_comments_hold(capsys) -> None:
    (block,) = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    namespace: dict = {}
    exec(compile(block, str(DOC), "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert printed == [line.removeprefix("# ") for line in block.splitlines() if line.startswith("# GhostStep")]
    p = namespace["p"]
    assert (round(p.params / 1e6, 3), round(p.macs / 1e9, 3)) == (13.954, 2.151)


def test_doc_torchvision_table_is_current() -> None:
    doc = DOC.read_text()
    assert doc == _with_tables(doc, {"ghostify-table": render_torchvision_table()}), (
        "run: python tests/test_ghostify.py"
    )


@pytest.mark.slow  # 12 ResNet-50 conversions profiled at 224x224
def test_doc_rules_table_is_current() -> None:
    doc = DOC.read_text()
    assert doc == _with_tables(doc, {"ghost-resnet50-rules": render_rules_table()}), (
        "run: python tests/test_ghostify.py"
    )


if __name__ == "__main__":
    text = DOC.read_text()
    new = _with_tables(
        text, {"ghostify-table": render_torchvision_table(), "ghost-resnet50-rules": render_rules_table()}
    )
    DOC.write_text(new)
    print(f"{DOC}: {'updated' if new != text else 'already current'}", file=sys.stderr)
