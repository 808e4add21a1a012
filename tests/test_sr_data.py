"""SR data: the MATLAB bicubic port against the shipped LR files, Y-PSNR/SSIM against scikit-image, pairs, patches."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from leanvision.data.imresize import imresize, modcrop
from leanvision.data.sr import PatchLoader, load_sr_set, psnr_y, read_rgb, rgb_to_y, split_pairs, ssim_y
from leanvision.errors import ConfigError, DataError


@pytest.mark.parametrize("name", ["Set5", "Set14"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_imresize_reproduces_the_shipped_lr_files_bit_exactly(shared_data, name, scale):
    folder = shared_data / "SR" / name
    for hr_path in sorted((folder / "HR").glob("*.png")):
        shipped = np.asarray(Image.open(folder / "LR_bicubic" / f"X{scale}" / f"{hr_path.stem}x{scale}.png"))
        hr = np.asarray(Image.open(hr_path))  # grey images (Set14's bridge) stay grey, as the LR file is
        ours = imresize(modcrop(hr, scale), 1 / scale)
        assert ours.shape == shipped.shape and np.array_equal(ours, shipped), f"{name}/{hr_path.name} x{scale}"


def test_imresize_sizes_and_float_input():
    img = np.random.default_rng(0).random((10, 7, 3))
    assert imresize(img, 0.5).shape == (5, 4, 3) and imresize(img, 2).shape == (20, 14, 3)
    assert imresize(img, 2).dtype == np.float64
    flat = np.full((6, 6), 100, dtype=np.uint8)  # the kernel's weights sum to one: a flat image stays flat
    assert np.all(imresize(flat, 1 / 3) == 100) and np.all(imresize(flat, 3) == 100)
    with pytest.raises(ConfigError, match="scale must be > 0"):
        imresize(flat, 0)


def _noisy_pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    hr = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)
    sr = np.clip(hr.astype(int) + rng.integers(-20, 21, hr.shape), 0, 255).astype(np.uint8)
    return sr, hr


def test_psnr_and_ssim_match_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    sr, hr = _noisy_pair()
    ys, yh = rgb_to_y(sr)[3:-3, 3:-3], rgb_to_y(hr)[3:-3, 3:-3]
    assert psnr_y(sr, hr, border=3) == pytest.approx(metrics.peak_signal_noise_ratio(yh, ys, data_range=255), abs=1e-9)
    ref = metrics.structural_similarity(yh, ys, data_range=255, gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False)  # fmt: skip
    assert ssim_y(sr, hr, border=3) == pytest.approx(ref, abs=1e-9)


def test_metric_conventions():
    sr, hr = _noisy_pair()
    assert psnr_y(hr, hr, border=2) == float("inf") and ssim_y(hr, hr, border=2) == pytest.approx(1.0)
    assert rgb_to_y(np.zeros((1, 1, 3), np.uint8))[0, 0] == 16 and rgb_to_y(np.full((1, 1, 3), 255, np.uint8))[0, 0] \
        == pytest.approx(235)  # fmt: skip
    bad = sr.copy()
    bad[:2] = 0  # only the cropped border differs
    assert psnr_y(bad, sr, border=2) == float("inf")
    with pytest.raises(ConfigError, match="8-bit"):
        psnr_y(sr.astype(np.float32), hr, border=2)
    with pytest.raises(ConfigError, match="differ in shape"):
        psnr_y(sr[:-1], hr, border=2)


def test_sets_load_and_t91_gets_matlab_lr(shared_data):
    set5 = load_sr_set("Set5", 3, root=shared_data)
    assert [p.name for p in set5] == ["baby", "bird", "butterfly", "head", "woman"]
    assert all(p.hr.shape[0] == 3 * p.lr.shape[0] and p.hr.shape[1] == 3 * p.lr.shape[1] for p in set5)
    t91 = load_sr_set("T91", 2, root=shared_data)
    assert len(t91) == 91 and np.array_equal(t91[0].lr, imresize(t91[0].hr, 0.5))
    train, val = split_pairs(t91, 10)
    assert len(train) == 81 and len(val) == 10 and not {p.name for p in train} & {p.name for p in val}
    assert [p.name for p in split_pairs(t91, 10)[1]] == [p.name for p in val]  # seeded: the same split every time


def _tiny_set(root, *, lr_scales=(2,), size=(12, 12), name="Tiny") -> None:
    folder = root / "SR" / name
    (folder / "HR").mkdir(parents=True)
    img = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(img).save(folder / "HR" / "a.png")
    for s in lr_scales:
        (folder / "LR_bicubic" / f"X{s}").mkdir(parents=True)
        Image.fromarray(imresize(modcrop(img, s), 1 / s)).save(folder / "LR_bicubic" / f"X{s}" / f"ax{s}.png")


def test_one_line_errors_for_missing_lr_small_images_and_bad_scales(tmp_path):
    _tiny_set(tmp_path)
    assert load_sr_set("Tiny", 2, root=tmp_path)[0].lr.shape == (6, 6, 3)
    with pytest.raises(DataError, match=r"Tiny has no LR files for scale 3 .*it has scale 2"):
        load_sr_set("Tiny", 3, root=tmp_path)
    small = tmp_path / "small"
    _tiny_set(small, lr_scales=(), size=(2, 5))
    with pytest.raises(DataError, match="is 5x2 pixels, too small for scale 3"):
        load_sr_set("Tiny", 3, root=small)
    with pytest.raises(ConfigError, match="scale must be one of 2, 3, 4"):
        load_sr_set("Tiny", 8, root=tmp_path)
    with pytest.raises(DataError, match="no Set5 in"):
        load_sr_set("Set5", 2, root=tmp_path)
    with pytest.raises(DataError, match="image not found"):
        read_rgb(tmp_path / "nope.png")


def test_patches_are_aligned_seeded_and_resumable(tmp_path):
    _tiny_set(tmp_path, size=(40, 40))
    pairs = load_sr_set("Tiny", 2, root=tmp_path)
    loader = PatchLoader(pairs, scale=2, patch=8, batch_size=4, batches_per_epoch=3, seed=1, augment=False)
    lr, hr = next(iter(loader))
    assert lr.shape == (4, 3, 8, 8) and hr.shape == (4, 3, 16, 16) and float(lr.max()) <= 1
    full_lr = pairs[0].lr.astype(np.float32) / 255
    patch = (lr[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    hits = [(y, x) for y in range(13) for x in range(13) if np.array_equal(pairs[0].lr[y : y + 8, x : x + 8], patch)]
    assert hits and full_lr.shape == (20, 20, 3)
    y, x = hits[0]
    assert np.array_equal((hr[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8),
                          pairs[0].hr[2 * y : 2 * y + 16, 2 * x : 2 * x + 16])  # fmt: skip
    first = [b[0] for b in loader]
    loader.set_epoch(1)
    second = [b[0] for b in loader]
    loader.set_epoch(0)
    assert all((a == b).all() for a, b in zip(first, [b[0] for b in loader], strict=True))
    assert not all((a == b).all() for a, b in zip(first, second, strict=True))
    with pytest.raises(ConfigError, match="larger than the LR image"):
        PatchLoader(pairs, scale=2, patch=64)
