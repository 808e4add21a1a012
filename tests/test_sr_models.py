"""SR networks: ESRN block shapes and closed-form costs equal to the profiler's, upsamplers, the baselines."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from leanvision.data.imresize import imresize
from leanvision.errors import ConfigError, UnknownNameError
from leanvision.models import arch_of, create_sr_model, list_sr_models
from leanvision.models.sr import (
    BLOCKS,
    ESRN,
    VEGA_EXAMPLE,
    Bicubic,
    block_cost,
    esrn_cost,
    hand_designed,
    lr_size_720p,
    parse_block,
)
from leanvision.profile import profile
from leanvision.search.spaces.esrn import ESRNSpace

SPACE_BLOCKS = ESRNSpace().blocks  # the paper's 90 block choices


def _count(model: torch.nn.Module, x: torch.Tensor) -> tuple[int, int]:
    p = profile(model, x)
    assert not p.unsupported, p.unsupported
    return p.params, p.macs


def test_the_paper_space_has_90_blocks():
    assert len(SPACE_BLOCKS) == 90 and len(set(SPACE_BLOCKS)) == 90


@pytest.mark.parametrize("code", SPACE_BLOCKS)
def test_every_block_shape_and_closed_form(code):
    kind, _, G, out = parse_block(code)
    for in_chs in sorted({32, G, out, 16}):  # input width equal to G, to O, and neither: each residual branch
        block = BLOCKS[kind](in_chs, code).eval()
        x = torch.randn(1, in_chs, 6, 4)
        with torch.no_grad():
            assert block(x).shape == (1, out, 6, 4)
        assert _count(block, x) == block_cost(code, in_chs, (6, 4))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_esrn_shapes_and_closed_form_per_scale(scale):
    blocks = ["S_2_8_16", "C_3_8_8", "G_3_8_16"]
    model = ESRN(blocks, scale=scale, G0=16).eval()
    for hw in ((6, 8), (5, 7)):  # odd sizes: padded for the contextual block, cropped back
        x = torch.randn(1, 3, *hw)
        with torch.no_grad():
            assert model(x).shape == (1, 3, hw[0] * scale, hw[1] * scale)
        assert _count(model, x) == esrn_cost(blocks, scale=scale, G0=16, hw=hw)


def test_costs_at_720p_agree_with_the_papers_scale():
    params, macs = esrn_cost(VEGA_EXAMPLE, scale=2)
    assert params == sum(p.numel() for p in create_sr_model("esrn").parameters())
    # networks in the paper's parameter window (315K-325K) cost what the paper's ESRN does (324K, 73.4G)
    space, rng = ESRNSpace(), random.Random(0)
    for _ in range(5):
        p, m = space.cost(space.sample(rng))
        assert 315e3 <= p <= 325e3 and 60e9 < m < 80e9
    assert lr_size_720p(2) == (360, 640) and lr_size_720p(3) == (240, 426)
    # linear in pixels (no contextual odd-size padding at 720p): the small-size equality carries to 720p
    small = esrn_cost(VEGA_EXAMPLE, scale=2, hw=(36, 64))[1]
    assert macs == small * 100


def test_bad_blocks_are_one_line_errors():
    for code, match in (("X_4_16_16", "bad block"), ("S_4_16", "T_C_G_O"), ("C_4_6_8", "divisible by 4")):
        with pytest.raises(ConfigError, match=match):
            parse_block(code)
    with pytest.raises(ConfigError, match="at least one block"):
        ESRN([])


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_module_is_matlab_imresize(scale):
    img = np.random.default_rng(scale).random((7, 9, 3))
    ref = imresize(img, scale)
    ours = Bicubic(scale=scale)(torch.from_numpy(img).permute(2, 0, 1)[None].float())[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5)


@pytest.mark.parametrize("name", ["bicubic", "srcnn", "fsrcnn", "esrn"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_registered_sr_models_upscale_and_record_their_arch(name, scale):
    kw = {"blocks": ["S_2_8_8", "G_2_8_8"], "G0": 8} if name == "esrn" else {}
    model = create_sr_model(name, scale=scale, **kw)
    out = model(torch.rand(2, 3, 6, 5))
    assert out.shape == (2, 3, 6 * scale, 5 * scale)
    if name != "bicubic":
        out.abs().mean().backward()
        assert all(p.grad is not None for p in model.parameters())
    assert arch_of(model) == {"name": name, "kwargs": {"scale": scale, **kw}}


def test_registry_errors_and_listing():
    assert list_sr_models() == ["bicubic", "esrn", "fsrcnn", "srcnn"]
    with pytest.raises(UnknownNameError, match="srcnn"):
        create_sr_model("srcn")
    with pytest.raises(ConfigError, match="scale must be one of 2, 3, 4"):
        create_sr_model("fsrcnn", scale=5)


def test_hand_designed_control_fits_the_budget():
    target = esrn_cost(VEGA_EXAMPLE, scale=2)[1]
    blocks = hand_designed(target, block="S_4_16_16")
    assert set(blocks) == {"S_4_16_16"}
    assert esrn_cost(blocks[1:], scale=2)[1] < target <= esrn_cost(blocks, scale=2)[1]
