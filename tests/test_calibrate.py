"""Operational calibration (arXiv 1910.02352): GP target and clipping, PCA on the pool, selection, baselines, file."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from leanvision.calibrate import (
    RULES,
    IsotonicCalibration,
    ModelOutputs,
    OperationalCalibrator,
    TemperatureScaling,
    brier,
    collect_outputs,
    confident_correct,
    cost_curve,
    coverage_seeds,
    ece,
    finetune_last_layer,
    high_conf_errors,
    last_linear,
    linear_outputs,
    reliability,
    select_and_calibrate,
    summary,
)
from leanvision.calibrate.gp import ConfidenceGP
from leanvision.calibrate.opcal import expected_clipped
from leanvision.calibrate.select import _scores
from leanvision.calibrate.shift import apply_shift
from leanvision.data import ImageDataset
from leanvision.errors import ConfigError


def toy_outputs(n: int = 400, d: int = 6, k: int = 3, seed: int = 0) -> tuple[ModelOutputs, np.ndarray]:
    """Features in two clusters; the model is over-confident and wrong on the second cluster half of the time."""
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n, d))
    bad = np.arange(n) >= n // 2
    feats[bad] += 4.0
    labels = rng.integers(0, k, n)
    logits = np.full((n, k), -2.0)
    pred = labels.copy()
    flip = bad & (rng.random(n) < 0.5)
    pred[flip] = (labels[flip] + 1) % k
    logits[np.arange(n), pred] = 3.0  # confidence ~0.99 everywhere
    return ModelOutputs(logits, feats), labels


# -- metrics -------------------------------------------------------------------------------------------------
def test_metrics_match_hand_computed_values() -> None:
    conf = np.array([0.95, 0.95, 0.6, 0.2])
    correct = np.array([True, False, True, False])
    assert brier(conf, correct) == pytest.approx((0.05**2 + 0.95**2 + 0.4**2 + 0.2**2) / 4)
    assert high_conf_errors(conf, correct) == 1 and confident_correct(conf, correct) == 1
    # bins of width 0.5: {0.2} acc 0, {0.95, 0.95, 0.6} acc 2/3 conf 0.8333
    assert ece(conf, correct, bins=2) == pytest.approx((1 * 0.2 + 3 * abs(2 / 3 - 2.5 / 3)) / 4)
    r = reliability(conf, correct, bins=2)
    assert r["count"].tolist() == [1, 3]
    c = cost_curve(conf, correct, thresholds=[0.5], cost_wrong=1.0, cost_reject=0.2)
    assert c["cost"][0] == pytest.approx((1.0 + 0.2) / 4) and c["accepted"][0] == 0.75
    s = summary(np.array([0.95, 0.5, 0.6, 0.2]), correct, before=conf)
    assert s["hce_reduction"] == 1.0 and s["confident_correct_kept"] == 1.0


def test_metrics_refuse_mismatched_lengths() -> None:
    with pytest.raises(ConfigError, match="one confidence per prediction"):
        brier([0.5, 0.5], [True])


# -- GP ------------------------------------------------------------------------------------------------------
def test_gp_posterior_matches_scikit_learn() -> None:
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, WhiteKernel
    from sklearn.gaussian_process.kernels import ConstantKernel as Const

    rng = np.random.default_rng(0)
    X, Xs = rng.normal(size=(30, 3)), rng.normal(size=(50, 3))
    y = np.sin(X[:, 0]) - 0.3
    gp = ConfidenceGP.fit(X, y, scale=2.0, restarts=0)
    kernel = Const(gp.amplitude, "fixed") * RBF(gp.length_scale, "fixed") + WhiteKernel(gp.noise, "fixed")
    ref = GaussianProcessRegressor(kernel, normalize_y=True, optimizer=None).fit(X, y)
    mean_ref, std_ref = ref.predict(Xs, return_std=True)
    mean, std = gp.predict(Xs)
    np.testing.assert_allclose(mean, mean_ref, atol=1e-8)
    # Ours is the latent deviation: scikit-learn's includes the white noise.
    np.testing.assert_allclose(std**2 + gp.noise * gp.y_std**2, std_ref**2, atol=1e-8)


def test_gp_length_scale_stays_in_its_bounds_with_few_labels() -> None:
    rng = np.random.default_rng(1)
    gp = ConfidenceGP.fit(rng.normal(size=(5, 4)), rng.normal(size=5), scale=3.0)
    assert 0.3 - 1e-9 <= gp.length_scale <= 30 + 1e-9 and gp.noise >= 1e-4 - 1e-12


def test_conditioning_without_refit_equals_a_fresh_posterior() -> None:
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(20, 3)), rng.normal(size=20)
    gp = ConfidenceGP.fit(X[:15], y[:15], scale=2.0, restarts=0)
    grown = gp.with_points(X[15:], y[15:])
    fresh = ConfidenceGP(X, y, gp.amplitude, gp.length_scale, gp.noise, gp.y_mean, gp.y_std)
    Z = rng.normal(size=(7, 3))
    np.testing.assert_allclose(grown.predict(Z), fresh.predict(Z))


# -- calibrator ----------------------------------------------------------------------------------------------
def test_target_is_correctness_minus_confidence() -> None:
    out = ModelOutputs(np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])), np.zeros((2, 2)))
    np.testing.assert_allclose(OperationalCalibrator.targets(out, [0, 2]), [1 - 0.7, 0 - 0.6])


def test_calibrated_confidence_is_clipped_to_the_unit_interval() -> None:
    out, labels = toy_outputs()
    cal = OperationalCalibrator(seed=0).fit_pool(out)
    cal.fit(out.take(np.arange(0, 400, 4)), labels[::4])
    gp = cal.gp
    for shift, clipped in ((5.0, 1.0), (-5.0, 0.0)):  # GP means far outside [-1, 1]: confidences stay in [0, 1]
        cal.gp = dataclasses.replace(gp, y=gp.y + shift, y_mean=gp.y_mean + shift)
        assert np.all(cal.calibrate(out) == clipped)


def test_expected_clipped_matches_monte_carlo_and_limits() -> None:
    rng = np.random.default_rng(0)
    m, s = np.array([0.9, -0.2, 0.5, 1.3]), np.array([0.3, 0.5, 0.1, 0.4])
    mc = np.clip(m + s * rng.normal(size=(200_000, 4)), 0, 1).mean(0)
    np.testing.assert_allclose(expected_clipped(m, s), mc, atol=3e-3)
    np.testing.assert_allclose(expected_clipped(m, np.zeros(4)), np.clip(m, 0, 1))


def test_gp_lowers_confidence_where_the_model_errs_only() -> None:
    out, labels = toy_outputs()
    idx = np.arange(0, 400, 5)
    c = OperationalCalibrator(seed=0).fit_pool(out).fit(out.take(idx), labels[idx]).calibrate(out)
    good, bad = c[:200].mean(), c[200:].mean()
    assert good > 0.9 and 0.3 < bad < 0.7  # the second cluster is right half of the time


def test_predictions_and_accuracy_are_unchanged() -> None:
    out, labels = toy_outputs()
    cal = OperationalCalibrator(per_class=True, expectation=True, seed=0).fit_pool(out).fit(out, labels)
    c = cal.calibrate(out)
    assert c.shape == (400,) and np.all((c >= 0) & (c <= 1))
    assert summary(c, out.predictions == labels)["accuracy"] == summary(out.confidence, out.predictions == labels)[
        "accuracy"]  # fmt: skip


def test_pca_is_fitted_on_the_pool_only() -> None:
    out, labels = toy_outputs()
    pool = out.take(np.arange(200, 400))  # the shifted cluster alone
    cal = OperationalCalibrator(n_components=3).fit_pool(pool)
    z = cal.embed(pool.features)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-9)
    np.testing.assert_allclose(z.std(0, ddof=1), 1, atol=1e-9)
    # The same directions as the pool's own principal components (signs aside), not the training data's.
    _, _, vt = np.linalg.svd(pool.features - pool.features.mean(0), full_matrices=False)
    np.testing.assert_allclose(np.abs(cal.components), np.abs(vt[:3]), atol=1e-9)
    # Labelled examples do not move the representation.
    before = cal.components.copy()
    cal.fit(out.take(np.arange(0, 50)), labels[:50])
    np.testing.assert_array_equal(cal.components, before)


def test_calibration_file_round_trip(tmp_path) -> None:
    out, labels = toy_outputs()
    cal = OperationalCalibrator(per_class=True, seed=0).fit_pool(out).fit(out.take(np.arange(0, 400, 2)), labels[::2])
    path = cal.save(tmp_path / "cal.npz", meta={"model": "toy"})
    back = OperationalCalibrator.load(path)
    np.testing.assert_array_equal(back.calibrate(out), cal.calibrate(out))
    assert back.meta == {"model": "toy"} and back.per_class and sorted(back.class_gps) == sorted(cal.class_gps)


def test_load_refuses_other_files(tmp_path) -> None:
    bad = tmp_path / "x.npz"
    bad.write_text("not numpy")
    with pytest.raises(ConfigError, match="not a leanvision calibration file"):
        OperationalCalibrator.load(bad)
    with pytest.raises(ConfigError, match="not found"):
        OperationalCalibrator.load(tmp_path / "missing.npz")


def test_clear_errors_for_bad_labels_and_unfitted_use() -> None:
    out, _ = toy_outputs()
    cal = OperationalCalibrator().fit_pool(out)
    with pytest.raises(ConfigError, match="got 3 labels for 400 examples"):
        cal.fit(out, [0, 1, 2])
    with pytest.raises(ConfigError, match=r"class indices in \[0, 2\]"):
        cal.fit(out, np.full(400, 7))
    with pytest.raises(ConfigError, match="no labels yet"):
        cal.calibrate(out)
    with pytest.raises(ConfigError, match="features have 2 dimensions, the pool had 6"):
        cal.embed(np.zeros((3, 2)))
    with pytest.raises(ConfigError, match="call fit_pool"):
        OperationalCalibrator().embed(out.features)


# -- selection -----------------------------------------------------------------------------------------------
def test_coverage_seeds_are_distinct_medoids_of_the_clusters() -> None:
    centres = np.repeat(np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]), 10, axis=0)
    Z = centres + np.random.default_rng(0).normal(scale=0.1, size=centres.shape)
    seeds = coverage_seeds(Z, 3, seed=0)
    assert sorted(i // 10 for i in seeds) == [0, 1, 2] and len(set(seeds)) == 3


def test_rules_pick_the_intended_point_on_a_toy_pool() -> None:
    # Labelled: the origin. Pool: a dense blob at (3, 0), a lone outlier at (0, 9), a blob at (-3, 0).
    rng = np.random.default_rng(0)
    Z = np.vstack([[[0.0, 0.0]], rng.normal(scale=0.3, size=(50, 2)) + np.array([3.0, 0.0]), [[0.0, 9.0]],
                   rng.normal(scale=0.3, size=(50, 2)) + np.array([-3.0, 0.0])])  # fmt: skip
    gp = ConfidenceGP(Z[:1], np.array([0.0]), amplitude=1.0, length_scale=2.0, noise=0.01, y_mean=0.0, y_std=1.0)
    pool = np.arange(1, len(Z))
    conf = np.ones(len(Z))
    conf[52:] = 0.9  # the left blob sits at the accept threshold, the right one far above it ...
    conf[1:51] = 0.3  # ... well, far below: these predictions would be rejected whatever a label says

    def pick(rule):
        return int(pool[np.argmax(_scores(rule, gp, Z, conf, pool, pool, 0.9))])

    assert pick("sigma") == 51  # max-sigma picks the outlier
    assert pick("ivr") != 51  # variance reduction picks a blob, not the outlier
    assert pick("ivr_threshold") >= 52  # ... the blob whose accept/reject decision is uncertain
    assert pick("straddle") >= 52


def test_selection_respects_budget_and_is_seeded() -> None:
    out, labels = toy_outputs()
    calls = []

    def oracle(idx):
        calls.append(list(idx))
        return labels[idx]

    a = select_and_calibrate(out, oracle, 30, rule="ivr", n_seeds=5, seed=3)
    b = select_and_calibrate(out, lambda idx: labels[idx], 30, rule="ivr", n_seeds=5, seed=3)
    assert a.indices == b.indices and len(set(a.indices)) == 30 and a.labels == labels[a.indices].tolist()
    assert len(calls[0]) == 5 and all(len(c) == 1 for c in calls[1:]) and len(calls) == 26
    assert a.calibrator is not None and a.calibrator.gp is not None and len(a.calibrator.gp.X) == 30


@pytest.mark.parametrize("rule", RULES)
def test_every_rule_calibrates_the_toy_pool(rule) -> None:
    out, labels = toy_outputs(seed=1)
    sel = select_and_calibrate(out, lambda idx: labels[idx], 40, rule=rule, seed=0)
    c = sel.calibrator.calibrate(out)
    assert brier(c, out.predictions == labels) < brier(out.confidence, out.predictions == labels)


def test_selection_errors() -> None:
    out, labels = toy_outputs(n=20)
    with pytest.raises(ConfigError, match="larger than the pool"):
        select_and_calibrate(out, lambda i: labels[i], 21)
    with pytest.raises(ConfigError, match="pool is empty"):
        select_and_calibrate(out.take(np.array([], int)), lambda i: labels[i], 5)
    with pytest.raises(ConfigError, match="unknown selection rule 'max'"):
        select_and_calibrate(out, lambda i: labels[i], 5, rule="max")
    with pytest.raises(ConfigError, match="answered 1 labels for 5"):
        select_and_calibrate(out, lambda i: [0], 6, n_seeds=5)


# -- features and baselines ----------------------------------------------------------------------------------
class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU())
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.body(x))


def test_collect_outputs_reads_the_input_of_the_last_linear() -> None:
    torch.manual_seed(0)
    net = _Net().train()
    x = torch.randn(10, 1, 4, 4)
    out = collect_outputs(net, [x[:6], (x[6:], torch.zeros(4))])
    np.testing.assert_allclose(out.features, net.body(x).detach().double().numpy(), rtol=1e-6)
    np.testing.assert_allclose(out.logits, net(x).detach().double().numpy(), rtol=1e-6)
    assert net.training and last_linear(net)[0] == "head"
    with pytest.raises(ConfigError, match="no inputs"):
        collect_outputs(net, [])
    with pytest.raises(ConfigError, match="not a module"):
        collect_outputs(net, [x], feature_layer="nope")


def test_baselines() -> None:
    out, labels = toy_outputs()
    hot = ModelOutputs(out.logits * 3, out.features)  # over-confident logits: T > 1 undoes it
    ts = TemperatureScaling().fit(hot, labels)
    assert ts.temperature > 1.5
    np.testing.assert_array_equal(ModelOutputs(hot.logits / ts.temperature, hot.features).predictions,
                                  hot.predictions)  # fmt: skip
    iso = IsotonicCalibration().fit(out, labels).calibrate(out)
    assert iso.min() >= 0 and iso.max() <= 1
    linear = nn.Linear(6, 3)
    tuned = finetune_last_layer(linear, out, labels, epochs=200, lr=0.05)
    assert linear_outputs(tuned, out).logits.shape == (400, 3) and tuned is not linear
    acc = (linear_outputs(tuned, out).predictions == labels).mean()
    assert acc > (linear_outputs(linear, out).predictions == labels).mean()


def test_shift_rotates_or_darkens_only_the_chosen_classes() -> None:
    images = torch.zeros(4, 1, 9, 9, dtype=torch.uint8)
    images[:, :, 4, :] = 200  # a horizontal bar
    ds = ImageDataset(images, torch.tensor([0, 1, 0, 1]), classes=["a", "b"], name="t", split="test", mean=[0.5],
                      std=[0.5])  # fmt: skip
    rot = apply_shift(ds, "rotate", degrees=(90, 90), classes=[1])
    assert torch.equal(rot.images[0], images[0]) and rot.images[1, 0, :, 4].float().mean() > 150
    dark = apply_shift(ds, "darken", factor=0.5)
    assert int(dark.images.max()) == 100 and torch.equal(ds.images, images)
    with pytest.raises(ConfigError, match="not class indices"):
        apply_shift(ds, "rotate", classes=[5])
