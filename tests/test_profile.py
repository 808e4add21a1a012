"""MACs / params counting against hand-derived counts and fvcore; latency measurement invariants."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
import warnings
from types import SimpleNamespace

import pytest
import torch
import torchvision
from torch import nn

from leanvision.errors import ConfigError, UnknownNameError
from leanvision.profile import (
    Profile,
    batchnorms_computed,
    check_deploy_form,
    compare_latency,
    count_params,
    format_count,
    format_profile,
    latency,
    profile,
    register_op_macs,
    thread_counts,
)
from leanvision.profile import macs as lv_macs
from leanvision.profile import timing as lv_timing


def _macs(module: nn.Module, *shape: int) -> int:
    return profile(module, torch.randn(*shape)).macs


# --- hand-derived counts: MACs = output positions x output channels x (in channels / groups) x kernel size ---


def test_plain_conv() -> None:
    assert _macs(nn.Conv2d(3, 8, 3, padding=1), 1, 3, 16, 16) == 16 * 16 * 8 * 3 * 9


def test_conv_stride_padding() -> None:
    # out = floor((15 + 2*1 - 5) / 2) + 1 = 7
    assert _macs(nn.Conv2d(4, 6, 5, stride=2, padding=1), 1, 4, 15, 15) == 7 * 7 * 6 * 4 * 25


def test_conv_dilation_and_batch() -> None:
    # out = 12 + 2*2 - 2*(3-1) - 1 + 1 = 12; batch multiplies
    assert _macs(nn.Conv2d(2, 3, 3, padding=2, dilation=2), 4, 2, 12, 12) == 4 * 12 * 12 * 3 * 2 * 9


def test_grouped_conv() -> None:
    assert _macs(nn.Conv2d(8, 12, 3, groups=4, padding=1), 2, 8, 10, 10) == 2 * 10 * 10 * 12 * 2 * 9


def test_depthwise_conv() -> None:
    assert _macs(nn.Conv2d(16, 16, 3, groups=16, padding=1, bias=False), 1, 16, 8, 8) == 8 * 8 * 16 * 9


def test_transposed_conv() -> None:
    # every input position scatters into out_chs x kernel taps: 5*5 inputs x 4 in x 6 out x 9 taps
    assert _macs(nn.ConvTranspose2d(4, 6, 3, stride=2), 1, 4, 5, 5) == 25 * 4 * 6 * 9
    assert _macs(nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2), 1, 4, 5, 5) == 25 * 4 * 3 * 9


def test_transposed_conv_matches_naive_scatter_count() -> None:
    # A transposed conv is the adjoint of a conv with the same weight: same MACs as that conv on its output.
    conv_t = nn.ConvTranspose2d(3, 5, 4, stride=2, padding=1)
    conv = nn.Conv2d(5, 3, 4, stride=2, padding=1)
    y = conv_t(torch.randn(1, 3, 6, 6))
    assert profile(conv_t, torch.randn(1, 3, 6, 6)).macs == profile(conv, y).macs


def test_conv1d_and_conv3d() -> None:
    assert _macs(nn.Conv1d(3, 5, 3), 2, 3, 10) == 2 * 8 * 5 * 3 * 3
    assert _macs(nn.Conv3d(2, 4, 3), 1, 2, 5, 5, 5) == 27 * 4 * 2 * 27


def test_linear_2d_and_3d_input() -> None:
    assert _macs(nn.Linear(10, 7), 4, 10) == 4 * 10 * 7
    assert _macs(nn.Linear(10, 7, bias=False), 2, 5, 10) == 2 * 5 * 10 * 7


class _Functional(nn.Module):
    """Only functional calls: matmul against a parameter, einsum, F.linear and bmm."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(5, 6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (3, 4, 5)
        y = x @ self.w  # 3*4*5*6
        z = torch.einsum("bij,bjk->bik", y, y.transpose(1, 2))  # 3*4*6*4
        z = nn.functional.linear(z, torch.ones(2, 4))  # 3*4*4*2
        return torch.bmm(z.transpose(1, 2), z)  # 3*2*4*2


def test_functional_matmuls_are_counted() -> None:
    assert _macs(_Functional(), 3, 4, 5) == 3 * 4 * 5 * 6 + 3 * 4 * 6 * 4 + 3 * 4 * 4 * 2 + 3 * 2 * 4 * 2


def test_matrix_vector_products() -> None:
    class MV(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.mv(x, x[0]) + torch.dot(x[0], x[1])

    assert _macs(MV(), 3, 7) == 3 * 7 + 7


def test_attention_is_counted_as_its_matmuls() -> None:
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    x = torch.randn(2, 5, 8)

    class Self(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = mha

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.attn(x, x, x)[0]

    prof = profile(Self(), x)
    in_proj, scores, weighted, out_proj = 2 * 5 * 8 * 24, 2 * 5 * 5 * 8, 2 * 5 * 5 * 8, 2 * 5 * 8 * 8
    assert prof.macs == in_proj + scores + weighted + out_proj
    assert not prof.unsupported
    assert torch.backends.mha.get_fastpath_enabled() == fastpath


def test_tied_parameters_counted_once_but_computed_twice() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = nn.Linear(6, 6, bias=False)
            self.dec = nn.Linear(6, 6, bias=False)
            self.dec.weight = self.enc.weight

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.dec(self.enc(x))

    prof = profile(Tied(), torch.randn(1, 6))
    assert prof.params == 36
    assert prof.macs == 2 * 36
    assert prof.by_module == {"": 72, "enc": 36, "dec": 36}


def test_shared_module_reused_accumulates() -> None:
    block = nn.Conv2d(2, 2, 1, bias=False)
    model = nn.Sequential(block, nn.ReLU(), block)
    prof = profile(model, torch.randn(1, 2, 4, 4))
    assert prof.params == 4
    assert prof.macs == 2 * 16 * 4
    assert prof.by_module["0"] == prof.macs  # the second call runs under the first registered name


def _nested() -> nn.Module:
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()),
        nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=2), nn.Hardswish(), nn.MaxPool2d(2)),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )


def test_by_module_hierarchy_sums() -> None:
    model = _nested()
    prof = profile(model, torch.randn(2, 3, 8, 8))
    conv0, conv1, fc = 2 * 64 * 4 * 3 * 9, 2 * 64 * 4 * 2 * 9, 2 * 4 * 3
    assert prof.by_module == {
        "": conv0 + conv1 + fc,
        "0": conv0, "0.0": conv0, "0.1": 0, "0.2": 0,
        "1": conv1, "1.0": conv1, "1.1": 0, "1.2": 0,
        "2": 0, "3": 0, "4": fc,
    }  # fmt: skip
    names = dict(model.named_modules())
    for name, module in names.items():
        children = [f"{name}.{c}" if name else c for c, _ in module.named_children()]
        if children:
            assert prof.by_module[name] == sum(prof.by_module[c] for c in children)
    assert prof.macs == prof.by_module[""]


def test_free_ops_are_neither_counted_nor_reported() -> None:
    class Free(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = nn.functional.batch_norm(x, torch.zeros(3), torch.ones(3))
            x = nn.functional.interpolate(x, scale_factor=2, mode="bilinear") * torch.sigmoid(x).mean()
            x = nn.functional.layer_norm(x, x.shape[-1:]) + nn.functional.group_norm(x, 1)
            x = torch.cat([x, x.flip(1)], 1).softmax(1).view(2, -1)[:, :5]
            return torch.nn.functional.pad(x, (1, 1)).cumsum(1).clamp(0, 1)

    prof = profile(Free(), torch.randn(2, 3, 4, 4))
    assert prof.macs == 0
    assert prof.unsupported == {}


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "efficientnet_b0", "mobilenet_v3_large", "vgg16_bn"])
def test_standard_cnns_have_no_unsupported_ops(name: str) -> None:
    model = getattr(torchvision.models, name)()
    assert profile(model, torch.randn(1, 3, 64, 64)).unsupported == {}


def test_unsupported_ops_are_surfaced_not_zero() -> None:
    class Spectral(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(2, 2, 3, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.fft.rfft(self.conv(x)).abs() + torch.fft.rfft(x).abs().mean()

    prof = profile(Spectral(), torch.randn(1, 2, 10))
    assert prof.macs == 8 * 2 * 2 * 3  # the conv is still counted
    assert prof.unsupported == {"aten._fft_r2c": 2}
    assert "aten._fft_r2c x2" in format_profile(prof)


def test_recurrent_kernel_is_reported() -> None:
    prof = profile(nn.LSTM(4, 8), torch.randn(3, 2, 4))
    assert sum(prof.unsupported.values()) >= 1


def test_runs_in_eval_no_grad_and_restores_training_flags() -> None:
    seen: list[tuple[bool, bool]] = []

    class Probe(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append((self.training, torch.is_grad_enabled()))
            return x

    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), Probe())
    model.train()
    model[1].eval()  # a frozen BN must stay frozen, the rest must go back to training
    before = [m.training for m in model.modules()]
    profile(model, torch.randn(1, 1, 3, 3))
    assert seen == [(False, False)]
    assert [m.training for m in model.modules()] == before
    assert all(p.grad is None for p in model.parameters())


def test_tuple_input_is_unpacked() -> None:
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return self.fc(a) + self.fc(b)

    assert profile(Two(), (torch.randn(4, 3), torch.randn(4, 3))).macs == 2 * 4 * 3 * 2


def test_bad_input_type_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="example_input must be a Tensor or a tuple of Tensors"):
        profile(nn.Linear(2, 2), [[1.0, 2.0]])  # type: ignore[arg-type]


def _python(code: str) -> None:
    """Run `code` in a fresh interpreter (import order matters) and fail with its stderr."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_leanvision_profile_is_always_the_module() -> None:
    # It used to be the function until `import leanvision.profile...` ran, and a patched callable package after.
    _python(
        "import types, torch, leanvision as lv\n"
        "assert isinstance(lv.profile, types.ModuleType), lv.profile\n"
        "import leanvision.profile.macs\n"
        "assert isinstance(lv.profile, types.ModuleType) and lv.profile is leanvision.profile\n"
        "assert not callable(lv.profile)\n"
        "assert lv.profile.profile(torch.nn.Linear(3, 2), torch.randn(1, 3)).macs == 6\n"
        "assert callable(lv.latency) and lv.latency is lv.profile.latency\n"
    )


def test_profile_to_dict_is_json() -> None:
    prof = profile(_nested(), torch.randn(1, 3, 8, 8))
    assert isinstance(prof, Profile)
    assert json.loads(json.dumps(prof.to_dict()))["macs"] == prof.macs
    assert prof.flops == 2 * prof.macs


def test_count_params_dedupes_shared_storage() -> None:
    a = nn.Linear(4, 4)
    b = nn.Linear(4, 4)
    b.weight = nn.Parameter(a.weight.data)  # a different Parameter object on the same memory
    assert count_params(nn.ModuleList([a, b])) == 16 + 4 + 4


@pytest.mark.parametrize(
    ("n", "text"),
    [(141_200_000, "141.2M"), (1_814_073_344, "1.8G"), (11_689_512, "11.7M"), (1500, "1.5K"), (999, "999"),
     (0, "0"), (2.5e12, "2.5T")],
)  # fmt: skip
def test_format_count(n: float, text: str) -> None:
    assert format_count(n) == text


def test_format_count_digits() -> None:
    assert format_count(11_689_512, digits=2) == "11.69M"


def test_bookkeeping_ops_are_free() -> None:
    class Split(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a, _ = x.unsafe_split(2, 1)
            c, _ = x.unsafe_chunk(2, 1)
            e = x.unsafe_split_with_sizes([1, 3], 1)[0]
            assert x.is_same_size(x)
            return a + c + e

    assert profile(Split(), torch.randn(2, 4)).unsupported == {}


# --- extension points: declared costs, binary precision, custom ops -----------------------------------------


class _Gathered(nn.Module):
    """Computes densely but declares the cost of its gathered execution (half of the output channels)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y + torch.fft.rfft2(y).abs().mean()  # unsupported if it were counted: it must not be reported

    def profile_macs(self, inputs: tuple, output: torch.Tensor) -> int:
        (x,) = inputs
        return output.shape[0] * output.shape[2] * output.shape[3] * (8 // 2) * x.shape[1] * 9


def _with(block: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 1), block, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))


def test_declared_macs_replace_the_inner_count() -> None:
    prof = profile(_with(_Gathered()), torch.randn(2, 3, 6, 6))
    stem, declared, fc = 2 * 36 * 4 * 3, 2 * 36 * 4 * 4 * 9, 2 * 8 * 2
    assert prof.by_module["1"] == declared and prof.by_module["1.conv"] == 0
    assert prof.by_module == {"": stem + declared + fc, "0": stem, "1": declared, "1.conv": 0, "2": 0, "3": 0, "4": fc}
    assert prof.macs == stem + declared + fc and prof.bops == 0
    assert prof.unsupported == {}


def test_declared_cost_of_the_outermost_module_wins_and_may_give_bops() -> None:
    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = _Gathered()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x)

        def profile_macs(self, inputs: tuple, output: torch.Tensor) -> dict[str, int]:
            return {"macs": 5, "bops": 640}

    prof = profile(_with(Outer()), torch.randn(1, 3, 4, 4))
    assert (prof.by_module["1"], prof.by_module["1.inner"], prof.bops_by_module["1"]) == (5, 0, 640)
    assert prof.bops == 640 and prof.ops == prof.macs + 10


class _BinaryConv(nn.Module):
    """A sign-binarised 3x3 conv: its MACs are 1-bit x 1-bit."""

    mac_precision = "binary"

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, 4, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(torch.sign(x), torch.sign(self.weight), padding=1)


def test_binary_modules_are_counted_as_bops() -> None:
    prof = profile(_with(_BinaryConv()), torch.randn(1, 3, 6, 6))
    stem, binary, fc = 36 * 4 * 3, 36 * 8 * 4 * 9, 8 * 2
    assert (prof.macs, prof.bops) == (stem + fc, binary)
    assert prof.by_module["1"] == 0 and prof.bops_by_module["1"] == binary and prof.bops_by_module[""] == binary
    assert prof.ops == stem + fc + binary / 64  # Bi-Real Net's OPs
    assert json.loads(json.dumps(prof.to_dict()))["bops"] == binary
    text = format_profile(prof)
    assert "BOPs" in text and f"bops: {format_count(binary)}" in text
    assert "bops" not in format_profile(profile(_nested(), torch.randn(1, 3, 8, 8)))


def test_declared_int_inside_a_binary_module_is_bops() -> None:
    class BinaryGathered(_Gathered):
        mac_precision = "binary"

    prof = profile(BinaryGathered(), torch.randn(1, 4, 2, 2))
    assert (prof.macs, prof.bops) == (0, 4 * 4 * 4 * 9)


def test_bad_extension_declarations_are_config_errors() -> None:
    class Bad(_Gathered):
        def profile_macs(self, inputs: tuple, output: torch.Tensor) -> float:
            return 1.5

    with pytest.raises(ConfigError, match=r"Bad.profile_macs must return a non-negative int.*, got 1.5"):
        profile(Bad(), torch.randn(1, 4, 2, 2))

    class Keys(_Gathered):
        def profile_macs(self, inputs: tuple, output: torch.Tensor) -> dict[str, int]:
            return {"flops": 3}

    with pytest.raises(ConfigError, match=r"returned keys \['flops'\]; only 'macs' and 'bops'"):
        profile(Keys(), torch.randn(1, 4, 2, 2))

    class Ternary(_BinaryConv):
        mac_precision = "ternary"

    with pytest.raises(ConfigError, match="mac_precision is 'ternary'; use 'binary'"):
        profile(Ternary(), torch.randn(1, 4, 2, 2))
    with pytest.raises(ConfigError, match="register_op_macs needs a torch op"):
        register_op_macs("aten.mm", lambda *a, out: 0)


@torch.library.custom_op("leanvision_test::pair_product", mutates_args=())
def _pair_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A custom op the profiler knows nothing about: a matrix product in disguise."""
    return (a.unsqueeze(-1) * b.unsqueeze(0)).sum(1)


def test_registered_custom_op_formula_is_counted(monkeypatch) -> None:
    class UsesCustomOp(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 5))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.ops.leanvision_test.pair_product(x, self.w)

    model = nn.Sequential(nn.Linear(4, 4), UsesCustomOp())
    before = profile(model, torch.randn(3, 4))
    assert before.macs == 3 * 4 * 4 and before.unsupported == {"leanvision_test.pair_product": 1}
    monkeypatch.setattr(lv_macs, "_COUNTED", dict(lv_macs._COUNTED))  # keep the global table clean
    register_op_macs(torch.ops.leanvision_test.pair_product, lambda a, b, *, out: a.shape[0] * a.shape[1] * b.shape[1])
    after = profile(model, torch.randn(3, 4))
    assert after.macs == 3 * 4 * 4 + 3 * 4 * 5 and after.unsupported == {}
    assert after.by_module["1"] == 3 * 4 * 5
    register_op_macs(_pair_product, lambda a, b, *, out: {"bops": 7})  # the torch.library object works too
    assert profile(model, torch.randn(3, 4)).bops == 7


# --- agreement with fvcore on the papers' convention ---------------------------------------------------------


def _fvcore_macs(model: nn.Module, x: torch.Tensor) -> tuple[int, dict[str, int]]:
    fvcore_nn = pytest.importorskip("fvcore.nn")
    from fvcore.nn import jit_handles

    # Only the convention's ops: fvcore's defaults also count batch_norm, upsample, adaptive_avg_pool, ...
    handles = {
        "aten::_convolution": jit_handles.conv_flop_jit,
        "aten::addmm": jit_handles.addmm_flop_jit,
        "aten::bmm": jit_handles.bmm_flop_jit,
        "aten::matmul": jit_handles.matmul_flop_jit,
        "aten::linear": jit_handles.linear_flop_jit,
        "aten::einsum": jit_handles.einsum_flop_jit,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = fvcore_nn.FlopCountAnalysis(model.eval(), x).clear_op_handles().set_op_handle(**handles)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return analysis.total(), analysis.by_module()


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "shufflenet_v2_x1_0"])
def test_agrees_with_fvcore(name: str) -> None:
    model = getattr(torchvision.models, name)()
    x = torch.randn(1, 3, 224, 224)
    prof = profile(model, x)
    total, by_module = _fvcore_macs(model, x)
    assert abs(prof.macs - total) <= 0.01 * total
    assert prof.params == sum(p.numel() for p in model.parameters())
    assert prof.unsupported == {}
    assert set(prof.by_module) == set(by_module)
    big = [k for k, v in by_module.items() if v > 0.01 * total]
    assert all(abs(prof.by_module[k] - by_module[k]) <= 0.01 * by_module[k] for k in big)
    if name == "resnet18":
        assert prof.macs == 1_814_073_344  # the "1.8 GFLOPs" of the ResNet paper's table
        assert prof.params == 11_689_512
        assert prof.by_module["fc"] == 512 * 1000


# --- latency ------------------------------------------------------------------------------------------------


def _small_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(512, 4))


@pytest.mark.parametrize("backend", ["eager", "onnxruntime"])
def test_latency_stats_are_consistent(backend: str) -> None:
    model = _small_cnn().train()
    before = torch.get_num_threads()
    stats = latency(model, torch.randn(2, 3, 8, 8), backend=backend, threads=1, warmup=1, iters=7)
    assert torch.get_num_threads() == before
    assert model.training
    assert (stats.backend, stats.threads, stats.batch_size, stats.warmup, stats.iters) == (backend, 1, 2, 1, 7)
    assert 0 < stats.min_ms <= stats.median_ms <= stats.p90_ms <= stats.max_ms
    assert stats.min_ms <= stats.mean_ms <= stats.max_ms
    assert (stats.onnxruntime_version is not None) == (backend == "onnxruntime")
    assert json.loads(json.dumps(stats.to_dict()))["median_ms"] == stats.median_ms


def test_latency_sets_and_restores_threads() -> None:
    seen: list[int] = []

    class Probe(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(torch.get_num_threads())
            return x

    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    try:
        stats = latency(Probe(), torch.randn(1, 2), threads=target, warmup=0, iters=2)
        assert seen == [target, target] and stats.threads == target
        assert torch.get_num_threads() == before
        assert latency(Probe(), torch.randn(1, 2), warmup=0, iters=1).threads == before  # None -> torch's count
    finally:
        torch.set_num_threads(before)


def test_latency_unknown_backend() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown latency backend 'eagr'; did you mean 'eager'\? choose"):
        latency(_small_cnn(), torch.randn(1, 3, 8, 8), backend="eagr")
    with pytest.raises(UnknownNameError, match="choose one of: eager, onnxruntime"):
        latency(_small_cnn(), torch.randn(1, 3, 8, 8), backend="tensorrt")


@pytest.mark.parametrize(
    ("kw", "match"),
    [({"iters": 0}, "iters must be an integer >= 1"), ({"warmup": -1}, "warmup must be an integer >= 0"),
     ({"threads": 0}, "threads must be a positive integer or None")],
)  # fmt: skip
def test_latency_bad_arguments(kw: dict, match: str) -> None:
    before = torch.get_num_threads()
    with pytest.raises(ConfigError, match=match):
        latency(_small_cnn(), torch.randn(1, 3, 8, 8), **kw)
    assert torch.get_num_threads() == before


def test_compare_latency_interleaves_rounds() -> None:
    calls: list[str] = []

    class Probe(nn.Module):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(self.name)
            return x

    models = {"a": Probe("a"), "b": Probe("b")}
    stats = compare_latency(models, torch.randn(4, 2), warmup=1, iters=2, rounds=3, threads=1)
    warm, round0, round1, round2 = ["a", "b"], ["a", "a", "b", "b"], ["b", "b", "a", "a"], ["a", "a", "b", "b"]
    assert calls == [*warm, *round0, *round1, *round2]  # the order rotates between rounds
    assert set(stats) == {"a", "b"}
    for s in stats.values():
        assert (s.iters, s.rounds, s.warmup, s.batch_size, s.threads) == (2, 3, 1, 4, 1)
        assert s.min_ms <= s.median_ms <= s.p90_ms <= s.max_ms


def test_compare_latency_onnxruntime_and_bad_rounds() -> None:
    models = {"cnn": _small_cnn(), "linear": nn.Sequential(nn.Flatten(), nn.Linear(192, 4))}
    stats = compare_latency(models, torch.randn(1, 3, 8, 8), backend="onnxruntime", warmup=0, iters=2, rounds=2)
    assert all(s.onnxruntime_version and s.median_ms > 0 for s in stats.values())
    with pytest.raises(ConfigError, match="rounds must be an integer >= 1"):
        compare_latency(models, torch.randn(1, 3, 8, 8), rounds=0)


def test_latency_records_device_and_machine() -> None:
    stats = latency(_small_cnn(), torch.randn(1, 3, 8, 8), warmup=0, iters=1)
    assert (stats.device, stats.gpu) == ("cpu", None)
    # The model name and the instruction set: a virtual machine may show only "AMD EPYC" for different CPUs.
    capability = torch.backends.cpu.get_cpu_capability()
    assert stats.cpu.endswith(f" [{capability}]") and len(stats.cpu) > len(capability) + 3
    from leanvision.profile import native_bf16

    assert native_bf16() in (True, False, None)
    if capability in ("DEFAULT", "AVX2"):  # oneDNN's bf16 kernels need AVX-512 at least
        assert native_bf16() is not True
    ort = latency(_small_cnn(), torch.randn(1, 3, 8, 8), backend="onnxruntime", warmup=0, iters=1)
    assert ort.device == "cpu" and ort.gpu is None


def test_latency_moves_the_input_to_the_model_device() -> None:
    seen: list[torch.device] = []

    class OnMeta(nn.Module):  # the meta device stands in for a GPU: tensors without data, on another device
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.empty(2, device="meta"))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.device)
            return x * self.w

    stats = latency(OnMeta(), torch.randn(1, 2), warmup=0, iters=2)
    assert seen == [torch.device("meta")] * 2 and stats.device == "meta"


def test_sync_fn_synchronises_cuda_only(monkeypatch) -> None:
    calls: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    sync = lv_timing._sync_fn(torch.device("cuda", 1))
    assert sync is not None and not calls
    sync()
    assert calls == [torch.device("cuda", 1)]
    assert lv_timing._sync_fn(torch.device("cpu")) is None


def test_latency_waits_for_the_device_around_every_timed_call(monkeypatch) -> None:
    events: list[str] = []

    class Probe(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            events.append("forward")
            return x

    monkeypatch.setattr(lv_timing, "_sync_fn", lambda device: lambda: events.append("sync"))
    counter = iter(range(1000))
    clock = SimpleNamespace(perf_counter=lambda: events.append("clock") or float(next(counter)))
    monkeypatch.setattr(lv_timing, "time", clock)  # the timing loop's clock only (not the load meter's)
    latency(Probe(), torch.randn(1, 2), warmup=1, iters=2)
    timed = ["clock", "forward", "sync", "clock"]
    assert events == ["sync", "forward", "sync", *timed, *timed]  # queued work drained before the first clock


@pytest.mark.parametrize("enabled", [True, False])
def test_latency_pauses_gc_and_restores_it(enabled: bool) -> None:
    seen: list[bool] = []

    class Probe(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(gc.isenabled())
            return x

    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        latency(Probe(), torch.randn(1, 2), warmup=1, iters=3)
        assert seen == [False] * 4
        assert gc.isenabled() == enabled
        with pytest.raises(RuntimeError, match="boom"):
            latency(nn.Sequential(Probe(), _Raise()), torch.randn(1, 2), warmup=0, iters=1)
        assert gc.isenabled() == enabled
    finally:
        (gc.enable if was else gc.disable)()


class _Raise(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")


# --- thread counts and deploy forms (latency comparisons judged at 1 thread and at all cores, BN folded) ---------


def test_thread_counts_parse_one_and_all(monkeypatch) -> None:
    monkeypatch.setattr(lv_timing, "cpu_count", lambda: 4)
    assert thread_counts("1,all") == [1, 4] and thread_counts("all,1,4") == [4, 1] and thread_counts(2) == [2]
    assert thread_counts([1, "2"]) == [1, 2]
    monkeypatch.setattr(lv_timing, "cpu_count", lambda: 1)
    assert thread_counts("1,all") == [1]  # one core: one column
    for bad in ("0", "1,five", "8"):
        with pytest.raises(ConfigError, match="thread counts are integers from 1 to the 1 cores"):
            thread_counts(bad)


class _FunctionalBN(nn.Module):
    """A BatchNorm run as a function (as torch.fx leaves timm's BatchNormAct2d): no BatchNorm module to find."""

    def __init__(self, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        self.bn = bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.bn
        return nn.functional.batch_norm(x, b.running_mean, b.running_var, b.weight, b.bias, False, 0.0, b.eps)


def test_a_folded_candidate_is_never_timed_beside_an_unfolded_baseline() -> None:
    from leanvision.ops import fuse_bn

    x = torch.randn(1, 3, 32, 32)
    net = torchvision.models.resnet18(num_classes=10).eval()
    assert batchnorms_computed(net, x) == 20 and batchnorms_computed(fuse_bn(net), x) == 0  # stem BN included
    hidden = nn.Sequential(nn.Conv2d(3, 4, 3), _FunctionalBN(nn.BatchNorm2d(4)))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in hidden.children()) and batchnorms_computed(hidden, x) == 1
    with pytest.raises(ConfigError) as err:
        check_deploy_form({"candidate (deploy)": fuse_bn(net), "baseline": hidden}, x)
    assert str(err.value).startswith("'baseline' still runs 1 BatchNorms while 'candidate (deploy)' is folded")
    assert "\n" not in str(err.value)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    check_deploy_form({"a": fuse_bn(net), "b": fuse_bn(plain)}, x)  # all in deploy form
    check_deploy_form({"a": net, "b": hidden}, x)  # all in training form: comparable, not refused


def test_cli_profile_latency_times_one_thread_and_all_cores(capsys) -> None:
    from leanvision.cli import main
    from leanvision.config import cpu_count

    with pytest.raises(SystemExit) as exc:
        main(["profile", "quickstart_cnn", "--latency"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    counts = sorted({1, cpu_count()})
    assert [line.split("(")[1].split(",")[1].strip() for line in out.splitlines() if line.startswith("latency")] == [
        f"{n} threads" for n in counts
    ]


def test_other_cpu_counts_only_what_other_processes_used(monkeypatch) -> None:
    import leanvision.profile.machine as machine

    # All processes were busy for 3 s, this one for 1 s, over 2 s of wall time: others kept 1 core busy.
    busy, own, wall = iter([100.0, 103.0]), iter([10.0, 11.0]), iter([0.0, 2.0])
    monkeypatch.setattr(machine, "_busy_seconds", lambda: next(busy))
    clock = SimpleNamespace(process_time=lambda: next(own), perf_counter=lambda: next(wall), sleep=time.sleep)
    monkeypatch.setattr(machine, "time", clock)  # this module's clock only: pytest's own stays real
    with machine.other_cpu({}) as record:
        pass
    assert record["other_cores"] == pytest.approx(1.0)
    monkeypatch.undo()
    monkeypatch.setattr(machine, "_busy_seconds", lambda: None)  # not Linux: unknown, not zero
    assert machine.others_busy(0.0) is None


def test_latency_records_how_busy_other_processes_kept_the_machine(monkeypatch) -> None:
    import leanvision.profile.machine as machine
    from leanvision.profile import QUIET_CORES, busiest, busy_text

    stats = latency(_small_cnn(), torch.randn(1, 3, 8, 8), warmup=0, iters=2)
    assert stats.other_cores is not None and stats.other_cores >= 0  # Linux: measured
    monkeypatch.setattr(machine, "_busy_seconds", lambda: None)
    assert latency(_small_cnn(), torch.randn(1, 3, 8, 8), warmup=0, iters=1).other_cores is None
    assert busy_text(None) == "the load of other processes could not be measured here"
    assert busy_text(QUIET_CORES) == "other processes kept 0.10 CPU cores busy meanwhile"
    assert busy_text(1.5).endswith("(over 0.1: a busy machine, so the times are noisy)")
    assert busiest([0.02, None, 0.4]) == 0.4 and busiest([None]) is None
