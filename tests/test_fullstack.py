"""Full-stack filters (arXiv 1908.02023): layer, STE, ortho loss, training hooks, deploy, storage, models."""

from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.nn.functional as F
from test_ops import hook_macs, randomize_bn  # shared reference helpers (tests/ is on sys.path)
from torch import nn

from leanvision.engine import fit, make_optimizer, standard_step
from leanvision.errors import CheckpointError, ConfigError
from leanvision.export import check_onnx, export_onnx
from leanvision.models import create_model, model_card
from leanvision.models.fsf import FSF_VGG8_NOTE, FSF_VGG16_NOTE, CifarVGG
from leanvision.ops import (
    FSFStep,
    MaskConv2d,
    clip_mask_proxies,
    fold_masks,
    freeze_masks,
    fuse_bn,
    load_fsf,
    ortho_loss,
    save_fsf,
    storage_report,
)
from leanvision.ops.fullstack import binarize
from leanvision.profile import profile


def signs(h: torch.Tensor) -> torch.Tensor:
    return torch.where(h >= 0, 1.0, -1.0)


def reference_weight(conv: MaskConv2d) -> torch.Tensor:
    """The effective weight built filter by filter from the paper's / official code's definition."""
    n, m, g = conv.out_channels, conv.num_basis, conv.groups
    mask, basis = signs(conv.mask.detach()), conv.basis.detach()
    rows = []
    for o in range(n):
        j, local = divmod(o, n // g)  # group and index inside it
        i, b = divmod(local, m // g)  # which mask copy, which of the group's bases
        rows.append((mask[i] if conv.shared else mask[o]) * basis[j * (m // g) + b])
    return torch.stack(rows)


def small_net(**kw) -> nn.Sequential:
    return nn.Sequential(
        MaskConv2d(3, 16, 3, padding=1, bias=False, **kw),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        MaskConv2d(16, 32, 3, padding=1, stride=2, bias=False, **kw),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


# --- the layer --------------------------------------------------------------------------------------------------


def test_effective_weight_is_mask_times_basis_o_mod_m() -> None:  # spec E1
    conv = MaskConv2d(16, 32, 3, ratio=4)
    w, h, b = conv.weight.detach(), conv.mask.detach(), conv.basis.detach()
    assert conv.basis.shape == (8, 16, 3, 3) and conv.mask.shape == (32, 16, 3, 3)
    for o in range(32):
        assert torch.equal(w[o], signs(h[o]) * b[o % 8])
    shared = MaskConv2d(16, 32, 3, ratio=4, shared=True)
    assert shared.mask.shape == (4, 16, 3, 3)
    ws = shared.weight.detach()
    for i in range(4):
        for j in range(8):
            assert torch.equal(ws[i * 8 + j], signs(shared.mask.detach()[i]) * shared.basis.detach()[j])


@pytest.mark.parametrize(
    "kw",
    [
        {"stride": 1, "padding": 1},
        {"stride": 2, "padding": 0, "bias": True},
        {"padding": 2, "dilation": 2, "shared": True},
        {"padding": "same", "ratio": 2},
        {"padding": 1, "groups": 2, "ratio": 2},
        {"padding": 1, "groups": 4, "ratio": 2, "shared": True},
        {"padding": 1, "padding_mode": "reflect", "ratio": 8},
    ],
)
def test_forward_equals_conv2d_with_the_explicit_weight(kw: dict) -> None:
    kw = {"ratio": 4, "bias": False, **kw}
    conv = MaskConv2d(8, 16, 3, **kw)
    expected_w = reference_weight(conv)
    assert torch.equal(conv.weight.detach(), expected_w)
    dense = nn.Conv2d(8, 16, 3, **{k: v for k, v in kw.items() if k not in ("ratio", "shared")})
    with torch.no_grad():
        dense.weight.copy_(expected_w)
        if conv.bias is not None:
            dense.bias.copy_(conv.bias)
    x = torch.randn(2, 8, 9, 9)
    torch.testing.assert_close(conv(x), dense(x), rtol=0, atol=0)


def test_groups_keep_bases_inside_their_group() -> None:
    conv = MaskConv2d(8, 16, 3, groups=2, ratio=2)  # m = 8 bases, 4 per group
    for o in range(16):
        group = o // 8
        basis = (group * 4) + (o % 8) % 4
        assert torch.equal(conv.weight.detach()[o].abs(), conv.basis.detach()[basis].abs())
    with pytest.raises(ConfigError, match="m = out_channels / ratio = 2 must be divisible by groups"):
        MaskConv2d(8, 8, 3, groups=4, ratio=4)


@pytest.mark.parametrize("ratio", [3, 0, -2, 2.0, True])
def test_out_channels_must_be_divisible_by_ratio(ratio) -> None:
    with pytest.raises(ConfigError, match=r"out_channels=16 must be divisible by ratio s="):
        MaskConv2d(8, 16, 3, ratio=ratio)


def test_sign_is_never_zero_and_exact_for_clipped_proxies() -> None:
    h = torch.tensor([0.0, -0.0, 1e-30, -1e-30, 1.0, -1.0, 0.3])
    assert binarize(h).tolist() == [1.0, 1.0, 1.0, -1.0, 1.0, -1.0, 1.0]
    h = torch.rand(100_000) * 2 - 1  # the STE form h + (sign - h) is exactly +-1 in floating point
    assert torch.equal(binarize(h), signs(h))
    conv = MaskConv2d(4, 4, 1, ratio=2)
    with torch.no_grad():
        conv.mask.zero_()
    assert torch.equal(conv.weight.detach(), conv.basis.detach().repeat(2, 1, 1, 1))


def test_ste_gradient_wrt_proxy_equals_gradient_wrt_mask() -> None:  # spec E1
    conv = MaskConv2d(6, 8, 3, padding=1, ratio=4)
    x, target = torch.randn(3, 6, 7, 7), torch.randn(3, 8, 7, 7)
    F.mse_loss(conv(x), target).backward()
    # reference: the binary mask as a leaf, weight built from it, gradient at the binary point
    m = signs(conv.mask.detach()).requires_grad_(True)
    w = m * conv.basis.detach().repeat(4, 1, 1, 1)
    F.mse_loss(F.conv2d(x, w, conv.bias.detach(), padding=1), target).backward()
    torch.testing.assert_close(conv.mask.grad, m.grad)
    assert conv.mask.grad.abs().sum() > 0 and conv.basis.grad is not None


def test_weight_is_a_read_only_view_not_a_parameter() -> None:
    conv = MaskConv2d(4, 8, 3, ratio=2)
    assert {n for n, _ in conv.named_parameters()} == {"basis", "mask", "bias"}
    assert set(conv.state_dict()) == {"basis", "mask", "bias"}
    assert isinstance(conv, nn.Conv2d) and conv.weight.requires_grad and conv.weight.shape == (8, 4, 3, 3)
    with pytest.raises((AttributeError, KeyError)):
        conv.weight = nn.Parameter(torch.zeros(8, 4, 3, 3))
    clone = copy.deepcopy(conv)
    assert torch.equal(clone.weight, conv.weight)
    assert "ratio=2, num_basis=4, shared=False" in repr(conv)
    fresh = MaskConv2d(4, 8, 3, ratio=2)
    fresh.load_state_dict(conv.state_dict())
    assert torch.equal(fresh.weight, conv.weight)


def test_from_conv_converts_any_model_with_replace_modules() -> None:
    from leanvision.models import replace_modules

    model = create_model("resnet20")
    names = replace_modules(model, nn.Conv2d, lambda _, c: MaskConv2d.from_conv(c, ratio=2))
    assert len(names) == 19 and all(isinstance(model.get_submodule(n), MaskConv2d) for n in names)
    conv = model.get_submodule(names[-1])
    assert (conv.stride, conv.padding, conv.bias, conv.ratio) == ((1, 1), (1, 1), None, 2)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


# --- orthogonality loss --------------------------------------------------------------------------------------------


def hadamard(n: int) -> torch.Tensor:
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def test_ortho_loss_of_hadamard_masks_is_zero() -> None:  # spec E1
    per_filter = MaskConv2d(64, 32, 3, ratio=4)  # 32 masks of length 64 * 9
    shared = MaskConv2d(16, 32, 1, ratio=8, shared=True)  # 8 shared masks of length 16
    with torch.no_grad():
        # rows of H64 (x) ones(9): mutually orthogonal, +-1, length 576
        per_filter.mask.copy_((hadamard(64)[:32, :, None] * torch.ones(9)).view(32, 64, 3, 3) * 0.5)
        shared.mask.copy_(hadamard(16)[:8].view(8, 16, 1, 1) * 0.1)  # proxies: only the signs count
    model = nn.Sequential(per_filter, shared)
    assert ortho_loss(model).item() == 0.0
    with torch.no_grad():
        per_filter.mask[1] = per_filter.mask[0]  # two equal masks: G[0,1] = G[1,0] = 1
    assert ortho_loss(model).item() == pytest.approx(2 / 32**2)


def test_ortho_loss_formula_sums_layers_and_has_a_floor_on_short_masks() -> None:
    model = small_net()
    expected = 0.0
    for conv in (model[0], model[3]):
        x = signs(conv.mask.detach()).flatten(1)
        g = x @ x.T / x.shape[1]
        expected += ((g - torch.eye(len(x))) ** 2).mean().item()
    loss = ortho_loss(model)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert model[0].mask.grad is not None and model[0].mask.grad.abs().sum() > 0
    # the stem: 16 masks of length 27 cannot be orthogonal (rank <= 27 is fine, but +-1 rows of odd length
    # never have a zero dot product), so its term stays > 0 whatever the masks are
    assert ortho_loss(model[0]).item() > 0
    assert ortho_loss(nn.Linear(2, 2)).item() == 0.0


# --- training: no weight decay on proxies, clipping, the fit step -----------------------------------------------


def test_proxies_get_no_weight_decay_but_bases_do() -> None:
    model = small_net()
    decay, no_decay = make_optimizer(model, "sgd", lr=0.1, weight_decay=5e-4).param_groups
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids([model[0].mask, model[3].mask]) <= ids(no_decay["params"]) and no_decay["weight_decay"] == 0
    assert ids([model[0].basis, model[3].basis, model[8].weight]) == ids(decay["params"])


def _toy_data(n: int = 64, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g)
    y = (x[:, 0].mean((1, 2)) > 0).long() + 2 * (x[:, 1].mean((1, 2)) > 0).long()
    return [(x[i : i + 16], y[i : i + 16]) for i in range(0, n, 16)]


def test_fit_with_the_fsf_step_keeps_proxies_clipped_and_learns_masks() -> None:
    data = _toy_data()
    torch.manual_seed(0)
    model = small_net()
    before = [signs(m.mask.detach()) for m in (model[0], model[3])]
    step = FSFStep(ortho_weight=0.05)
    opt = make_optimizer(model, "adam", lr=0.3)  # large steps: proxies would leave [-1, 1] within a few updates
    res = fit(model, data, epochs=3, optimizer=opt, train_step=step, seed=0, progress=False)
    for conv, old in zip((model[0], model[3]), before, strict=True):
        assert conv.mask.abs().max().item() <= 1.0
        assert (conv.mask.abs() == 1.0).any()  # the clip was active
        assert (signs(conv.mask.detach()) != old).any()  # masks were learned
    assert sorted(step.ortho_by_epoch) == [0, 1, 2] and all(v > 0 for v in step.ortho_by_epoch.values())
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in res.history)
    # without the clip the same run lets proxies drift out of range (so the check above is not vacuous)
    torch.manual_seed(0)
    plain = small_net()
    fit(plain, data, epochs=3, optimizer=make_optimizer(plain, "adam", lr=0.3), train_step=standard_step, seed=0,
        progress=False)  # fmt: skip
    assert max(m.mask.abs().max().item() for m in (plain[0], plain[3])) > 1.0


def test_ortho_weight_lowers_the_ortho_loss() -> None:
    data = _toy_data()
    losses = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        model = small_net()
        fit(model, data, epochs=3, optimizer=torch.optim.Adam(model.parameters(), lr=0.02),
            train_step=FSFStep(ortho_weight=weight), seed=0, progress=False)  # fmt: skip
        losses[weight] = ortho_loss(model).item()
    assert losses[1.0] < losses[0.0]


def test_clip_freeze_and_step_arguments() -> None:
    model = small_net()
    with torch.no_grad():
        model[0].mask.mul_(100)
    clip_mask_proxies(model, 0.5)
    assert model[0].mask.abs().max().item() == 0.5
    freeze_masks(model)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    assert model[0].mask.grad is None and model[0].basis.grad is not None
    assert all(p is not model[0].mask for g in make_optimizer(model, "sgd", lr=0.1).param_groups for p in g["params"])
    with pytest.raises(ConfigError, match="ortho_weight must be >= 0"):
        FSFStep(ortho_weight=-1.0)


# --- deploy: fold, fuse_bn, MACs, ONNX ----------------------------------------------------------------------------


def test_fold_and_fuse_bn_give_plain_convs_with_identical_outputs_and_macs() -> None:
    model = randomize_bn(small_net(shared=False)).eval()
    x = torch.randn(2, 3, 8, 8)
    folded = model[0].fold()
    assert type(folded) is nn.Conv2d and not folded.training
    torch.testing.assert_close(folded(x), model[0](x), rtol=0, atol=0)
    dense = fold_masks(model)
    assert not any(isinstance(m, MaskConv2d) for m in dense.modules()) and any(
        isinstance(m, MaskConv2d) for m in model.modules()
    )
    torch.testing.assert_close(dense(x), model(x), rtol=0, atol=0)
    fused = fuse_bn(model)
    assert all(type(m) is not nn.BatchNorm2d and not isinstance(m, MaskConv2d) for m in fused.modules())
    assert sum(type(m) is nn.Conv2d for m in fused.modules()) == 2
    torch.testing.assert_close(fused(x), model(x), atol=1e-5, rtol=1e-4)
    # a memory method: MACs are exactly those of the dense convolutions
    assert profile(model, x[:1]).macs == profile(fused, x[:1]).macs == hook_macs(dense, x[:1]) > 0


def test_masked_form_exports_to_onnx(tmp_path) -> None:
    model = randomize_bn(small_net(shared=True)).eval()
    x = torch.randn(1, 3, 8, 8)
    for name, net in (("masked", model), ("fused", fuse_bn(model))):
        path = export_onnx(net, x, tmp_path / f"{name}.onnx", check=True)  # check: raises if onnxruntime disagrees
        assert check_onnx(net, path, x) < 1e-4, name


# --- storage --------------------------------------------------------------------------------------------------


def _storage_net() -> nn.Sequential:
    return nn.Sequential(
        MaskConv2d(16, 32, 3, ratio=4, bias=False),  # the spec's E1 layer
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


def test_storage_report_arithmetic_is_exact() -> None:  # spec E1 + memory model
    r = storage_report(_storage_net())
    basis, bn, fc = 8 * 16 * 9, 4 * 32, 32 * 10 + 10  # m C_in k^2; BN weight/bias/mean/var; linear
    assert r.float_values == basis + bn + fc == 1610
    assert 4 * basis == 4608  # float bytes of the layer: m * C_in * 9 * 4
    assert r.mask_bits == 32 * 16 * 9 == 4608 and r.mask_bytes == 576  # n * C_in * 9 bits
    assert r.other_bytes == 8  # BatchNorm's int64 batch counter
    assert r.bytes == 4 * 1610 + 576 + 8 == 7024
    assert r.dense_float_values == 32 * 16 * 9 + bn + fc
    assert r.dense_bytes == 4 * (4608 + 128 + 330) + 8 == 20272
    assert r.ratio == pytest.approx(20272 / 7024)
    # a layer alone: 32 m C k^2 + n C k^2 bits, vs 32 n C k^2
    alone = storage_report(MaskConv2d(16, 32, 3, ratio=4, bias=False))
    assert 8 * alone.bytes == 32 * 8 * 144 + 32 * 144 and 8 * alone.dense_bytes == 32 * 32 * 144
    assert storage_report(MaskConv2d(16, 32, 3, ratio=4, shared=True, bias=False)).mask_bits == 4 * 144
    odd = storage_report(MaskConv2d(3, 4, 1, ratio=2, bias=False))  # 12 bits -> 2 bytes
    assert (odd.mask_bits, odd.mask_bytes) == (12, 2)


def test_save_load_round_trip_is_exact_and_the_file_matches_the_memory_model(tmp_path) -> None:
    model = randomize_bn(_storage_net()).eval()
    path = save_fsf(model, tmp_path / "m.fsf")
    assert not list(tmp_path.glob(".*tmp*"))  # atomic: no temp left behind
    raw = torch.load(path, weights_only=True)  # plain data, weights-only loadable
    assert raw["format"] == "leanvision.fsf" and raw["masks"]["0.mask"]["bits"].dtype == torch.uint8
    assert raw["masks"]["0.mask"]["bits"].numel() == 576 and raw["tensors"]["0.basis"].dtype == torch.float32
    assert "0.mask" not in raw["tensors"]
    fresh = _storage_net().eval()
    load_fsf(path, fresh)
    x = torch.randn(3, 16, 5, 5)
    assert torch.equal(fresh[0].weight, model[0].weight) and torch.equal(fresh(x), model(x))
    for k, v in model.state_dict().items():
        expected = signs(v) if k == "0.mask" else v
        assert torch.equal(fresh.state_dict()[k], expected), k
    # measured on disk: the memory model plus the container's per-tensor overhead
    report = storage_report(model)
    dense_path = tmp_path / "dense.pt"
    torch.save(fold_masks(model).state_dict(), dense_path)
    fsf_overhead = os.path.getsize(path) - report.bytes
    dense_overhead = os.path.getsize(dense_path) - report.dense_bytes
    assert 0 < fsf_overhead < 4096 and 0 < dense_overhead < 4096


def test_load_fsf_errors(tmp_path) -> None:
    model = _storage_net()
    path = save_fsf(model, tmp_path / "m.fsf")
    with pytest.raises(CheckpointError, match="no such file"):
        load_fsf(tmp_path / "missing.fsf", model)
    (tmp_path / "junk.fsf").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_fsf(tmp_path / "junk.fsf", model)
    torch.save({"weight": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a full-stack-filter file"):
        load_fsf(tmp_path / "plain.pt", model)
    other_ratio = nn.Sequential(MaskConv2d(16, 32, 3, ratio=2, bias=False), *list(_storage_net())[1:])
    with pytest.raises(CheckpointError, match=r"shape mismatch for 0\.basis"):
        load_fsf(path, other_ratio)
    with pytest.raises(CheckpointError, match=r"missing: 0\.weight"):
        load_fsf(path, fold_masks(model))


# --- models -----------------------------------------------------------------------------------------------------


def test_fsf_vgg_structure_and_twin() -> None:
    model, dense = create_model("fsf_vgg8_cifar"), create_model("vgg8_cifar")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 7 and all(isinstance(c, MaskConv2d) and c.ratio == 4 and not c.shared for c in convs)
    assert [c.out_channels for c in convs] == [32, 32, 64, 64, 128, 128, 256]
    assert [m.out_channels for m in dense.modules() if isinstance(m, nn.Conv2d)] == [c.out_channels for c in convs]
    assert model_card("fsf_vgg8_cifar").macs == model_card("vgg8_cifar").macs
    assert model_card("fsf_vgg16_cifar").macs == model_card("vgg16_cifar").macs
    # dense twin params: the folded FSF model has exactly the dense model's shapes
    assert {k: v.shape for k, v in fold_masks(model).state_dict().items()} == {
        k: v.shape for k, v in dense.state_dict().items()
    }
    shared = create_model("fsf_vgg8_cifar", ratio=8, shared_masks=True)
    assert all(m.mask.shape[0] == 8 for m in shared.modules() if isinstance(m, MaskConv2d))
    with pytest.raises(ConfigError, match="divisible by ratio"):
        create_model("fsf_vgg8_cifar", ratio=3)
    with pytest.raises(ConfigError, match="VGG widths"):
        CifarVGG((8, "X"))


def test_card_notes_state_the_measured_storage() -> None:
    r8 = storage_report(create_model("fsf_vgg8_cifar"))
    assert f"stored {r8.bytes / 1e6:.3f} MB vs {r8.dense_bytes / 1e6:.3f} MB" in FSF_VGG8_NOTE
    assert f"({r8.ratio:.2f}x smaller)" in FSF_VGG8_NOTE
    assert model_card("fsf_vgg8_cifar").notes == FSF_VGG8_NOTE and model_card("fsf_vgg8_cifar").paper == "1908.02023"
    # the spec's memory model: ~ (1/s + 1/32) of dense, BN/FC on top
    assert r8.bytes / r8.dense_bytes == pytest.approx(1 / 4 + 1 / 32, abs=0.01)


def test_vgg16_storage_matches_notes_and_official_release() -> None:
    r = storage_report(create_model("fsf_vgg16_cifar"))
    stored = f"stored {r.bytes / 1e6:.3f} MB vs {r.dense_bytes / 1e6:.3f} MB dense float32 ({r.ratio:.2f}x smaller)"
    assert stored in FSF_VGG16_NOTE
    assert r.mask_bits == 14_710_464  # = the conv weights of CIFAR VGG-16
    official = storage_report(create_model("fsf_vgg16_cifar", ratio=64))  # README: 1.0 MB floats + masks as bits
    assert f"{official.bytes / 1e6:.3f} MB ({official.ratio:.2f}x)" in FSF_VGG16_NOTE
    assert official.mask_bytes / 2**20 == pytest.approx(1.75, abs=0.01)
    assert 4 * official.float_values / 2**20 == pytest.approx(0.96, abs=0.02)
    assert official.ratio == pytest.approx(20.8, abs=0.2)


def test_guide_storage_table_and_examples_are_current() -> None:
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "fullstack.md").read_text()
    for block in re.findall(r"```python\n(.*?)```", doc, flags=re.S):
        compile(block, "fullstack.md", "exec")  # the examples at least parse
    for name, kw in (("fsf_vgg8_cifar", {}), ("fsf_vgg16_cifar", {}), ("fsf_vgg16_cifar", {"ratio": 64})):
        r = storage_report(create_model(name, **kw))
        assert f"| {r.bytes / 1e6:.3f} MB | {r.dense_bytes / 1e6:.3f} MB | {r.ratio:.2f}× |" in doc, (name, kw)
