"""GhostNet deploy forms for onnxruntime: zero-padded channel layouts and the concat-free (part-wise) network."""

from __future__ import annotations

import onnx
import pytest
import torch
from test_ops import randomize_bn  # shared reference helper (tests/ is on sys.path)
from torch import nn

from leanvision.errors import ConfigError
from leanvision.export import export_onnx
from leanvision.models import create_model
from leanvision.models.ghostnet import align_channels, onnxruntime_form
from leanvision.ops import GhostModule
from leanvision.ops.align import Layout, relayout_conv, round_up
from leanvision.ops.split import PartsConv, SplitGhostBottleneck


def _place(x: torch.Tensor, layout: Layout) -> torch.Tensor:
    out = x.new_zeros(x.shape[0], layout.phys, *x.shape[2:])
    out[:, list(layout.idx)] = x
    return out


def _randomize(model: nn.Module) -> nn.Module:
    return randomize_bn(model).eval()


def test_round_up_and_dense_layout():
    assert [round_up(n, 16) for n in (1, 16, 17, 36)] == [16, 16, 32, 48]
    assert Layout.dense(3, 8) == Layout((0, 1, 2), 8)


@pytest.mark.parametrize(
    ("groups", "cin", "cout", "src", "dst"),
    [
        (1, 3, 4, Layout((5, 0, 2), 8), Layout((1, 3, 4, 9), 16)),  # dense: any placement
        (3, 3, 3, Layout((0, 1, 2), 8), Layout((0, 1, 2), 8)),  # depthwise, padded at the end
        (3, 3, 6, Layout((0, 1, 2), 4), Layout(tuple(range(6)), 8)),  # channel multiplier 2 (a Ghost cheap op)
    ],
)
def test_relayout_conv_is_exact_on_logical_channels_and_zero_on_pads(groups, cin, cout, src, dst):
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, 3, padding=1, groups=groups).double()
    x = torch.randn(2, cin, 5, 5, dtype=torch.float64)
    new = relayout_conv(conv, src, dst)
    y = new(_place(x, src))
    torch.testing.assert_close(y[:, list(dst.idx)], conv(x), rtol=0, atol=1e-12)
    pads = sorted(set(range(dst.phys)) - set(dst.idx))
    assert y[:, pads].abs().max().item() == 0.0


def test_relayout_conv_refuses_what_it_cannot_place():
    with pytest.raises(ConfigError, match=r"layouts of 2 -> 4 channels do not fit a conv of 3 -> 4"):
        relayout_conv(nn.Conv2d(3, 4, 1), Layout((0, 1), 4), Layout.dense(4))
    with pytest.raises(ConfigError, match="move channels out of their conv group"):
        relayout_conv(nn.Conv2d(2, 2, 3, groups=2), Layout((1, 0), 2), Layout((0, 1), 2))
    with pytest.raises(ConfigError, match=r"expected a plain nn\.Conv2d"):
        relayout_conv(nn.Conv1d(2, 2, 1), Layout.dense(2), Layout.dense(2))


def test_align_channels_same_outputs_and_every_concat_input_block_aligned():
    model = _randomize(create_model("ghostnet_050_cifar")).double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    aligned = align_channels(model, 16)
    with torch.no_grad():
        torch.testing.assert_close(aligned(x), model(x), rtol=0, atol=1e-10)
    ghosts = [m for m in aligned.modules() if isinstance(m, GhostModule)]
    assert ghosts and all(g.primary.conv.out_channels % 16 == 0 and g.n_ghost % 16 == 0 for g in ghosts)
    assert not any(g.trim for g in ghosts)
    assert model.blocks[0][0].ghost1.primary.bn is not None  # the input model is left untouched


def test_align_channels_refuses_other_models():
    with pytest.raises(ConfigError, match="align_channels takes a GhostNet"):
        align_channels(create_model("resnet20"))


@pytest.mark.parametrize("multiple", [16, None])
def test_onnxruntime_form_same_outputs_and_no_concat_in_the_export(tmp_path, multiple):
    model = _randomize(create_model("ghostnet_050_cifar"))
    form = onnxruntime_form(model, multiple)
    assert all(isinstance(b, SplitGhostBottleneck) for stage in form.blocks for b in stage)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(form(x), model(x), rtol=1e-5, atol=1e-5)
        double = onnxruntime_form(model.double(), multiple)
        torch.testing.assert_close(double(x.double()), model(x.double()), rtol=0, atol=1e-10)
    path = export_onnx(form, x, tmp_path / "ghost.onnx", check=True)  # raises if onnxruntime disagrees
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "Concat" not in ops and "Conv" in ops


def test_parts_conv_sums_column_blocks_and_checks_its_splits():
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 4, 1).double()
    x = torch.randn(1, 5, 3, 3, dtype=torch.float64)
    out = PartsConv(conv, [2, 3], [1, 3])([x[:, :2], x[:, 2:]])
    torch.testing.assert_close(torch.cat(out, 1), conv(x), rtol=0, atol=1e-12)
    with pytest.raises(ConfigError, match=r"splits \[2, 2\] -> \[4\] do not fit Conv2d 5 -> 4"):
        PartsConv(conv, [2, 2], [4])
    with pytest.raises(ConfigError, match="must be depthwise with equal input and output splits"):
        PartsConv(nn.Conv2d(4, 4, 3, groups=4), [2, 2], [4])


def test_split_needs_folded_blocks():
    blk = create_model("ghostnet_050_cifar").blocks[0][0]
    with pytest.raises(ConfigError, match="fold the BatchNorms first"):
        SplitGhostBottleneck(blk, [8])
