"""PU compression (arXiv 1909.09757): nnPU loss vs a naive reference, PU network, sampler, selection, robust KD."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from leanvision.compress.distill import (
    KDLoss,
    class_weights,
    kd_loss,
    perturb_class_weights,
    robust_kd_loss,
    teacher_class_weights,
)
from leanvision.compress.pu import (
    PUBatchSampler,
    PULoader,
    PUNet,
    PUStep,
    image_pool,
    nnpu_loss,
    precision_recall,
    pu_risks,
    pu_scores,
    select_positives,
)
from leanvision.data import ImageDataset
from leanvision.data.dataset import normalize
from leanvision.engine import StepContext, fit, make_optimizer
from leanvision.errors import ConfigError
from leanvision.models import create_model

# ------------------------------------------------------------------------------------------- nnPU reference


def _sig(t: float) -> float:
    return 1.0 / (1.0 + math.exp(-t))


def reference_nnpu(z: list[float], y: list[int], prior: float, beta: float, gamma: float, nonnegative: bool = True):
    """Value and d/dz written from the equations, sample by sample, with the sigmoid loss l(t) = sig(-t).

    R_p+ = pi mean_P l(f), R_n = mean_U l(-f) - pi mean_P l(-f) (means over counts clamped >= 1);
    R_n >= -beta: value and gradient of R_p+ + R_n; else value R_p+ - beta, gradient -gamma dR_n.
    """
    pos = [i for i, t in enumerate(y) if t == 1]
    unl = [i for i, t in enumerate(y) if t != 1]
    n_p, n_u = max(len(pos), 1), max(len(unl), 1)
    r_p = prior * sum(_sig(-z[i]) for i in pos) / n_p
    r_n = sum(_sig(z[i]) for i in unl) / n_u - prior * sum(_sig(z[i]) for i in pos) / n_p
    d_rp, d_rn = [0.0] * len(z), [0.0] * len(z)
    for i in pos:  # d sig(-z)/dz = -sig(z) sig(-z); d sig(z)/dz = sig(z) sig(-z)
        d_rp[i] = -prior / n_p * _sig(z[i]) * _sig(-z[i])
        d_rn[i] = -prior / n_p * _sig(z[i]) * _sig(-z[i])
    for i in unl:
        d_rn[i] = _sig(z[i]) * _sig(-z[i]) / n_u
    if nonnegative and r_n < -beta:
        return r_p - beta, [-gamma * g for g in d_rn], "ascent"
    return r_p + r_n, [a + b for a, b in zip(d_rp, d_rn, strict=True)], "descent"


def _check_against_reference(z: torch.Tensor, y: torch.Tensor, prior, beta, gamma, branch, nonnegative=True):
    ref_value, ref_grad, ref_branch = reference_nnpu(z.tolist(), y.tolist(), prior, beta, gamma, nonnegative)
    assert ref_branch == branch
    logits = z.clone().double().unsqueeze(1).requires_grad_(True)  # the official [B, 1] layout
    loss = nnpu_loss(logits, y, prior, beta=beta, gamma=gamma, nonnegative=nonnegative)
    loss.backward()
    assert loss.item() == pytest.approx(ref_value, abs=1e-14)
    torch.testing.assert_close(logits.grad.squeeze(1), torch.tensor(ref_grad, dtype=torch.float64), rtol=0, atol=1e-15)


def _mixed_batch(seed: int = 0, n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, generator=gen, dtype=torch.float64) * 2
    y = torch.zeros(n, dtype=torch.long)
    y[: n // 3] = 1
    return z, y


@pytest.mark.parametrize(("beta", "gamma"), [(0.0, 1.0), (0.05, 0.5)])
def test_nnpu_nonnegative_branch_matches_reference(beta: float, gamma: float) -> None:
    z, y = _mixed_batch()
    _check_against_reference(z, y, prior=0.3, beta=beta, gamma=gamma, branch="descent")


@pytest.mark.parametrize(("beta", "gamma"), [(0.0, 1.0), (0.05, 0.5)])
def test_nnpu_negative_risk_branch_matches_reference(beta: float, gamma: float) -> None:
    # Positives scored positive, unlabeled strongly negative: E_U[sig(f)] ~ 0 < pi E_P[sig(f)], so R_n < -beta.
    z = torch.tensor([3.0, 2.5, 4.0, 1.5, -6.0, -5.0, -7.5, -4.0, -6.5], dtype=torch.float64)
    y = torch.tensor([1, 1, 1, 1, -1, -1, -1, -1, -1])
    _check_against_reference(z, y, prior=0.4, beta=beta, gamma=gamma, branch="ascent")


def test_nnpu_ascent_gradient_is_minus_gamma_times_negative_risk_gradient() -> None:
    z = torch.tensor([[2.0], [3.0], [-5.0], [-4.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([1, 1, 0, 0])
    r_p, r_n = pu_risks(z, y, 0.5)
    assert r_n.item() < 0
    (grad_rn,) = torch.autograd.grad(r_n, z)
    loss = nnpu_loss(z, y, 0.5, gamma=2.0)
    (grad,) = torch.autograd.grad(loss, z)
    assert loss.item() == r_p.item()  # the value is exactly R_p+ - beta
    torch.testing.assert_close(grad, -2.0 * grad_rn, rtol=0, atol=0)


def test_nnpu_boundary_negative_risk_equal_minus_beta_descends() -> None:
    # No unlabeled samples (count clamped to 1) and z = 0 on P: R_n = -pi * 0.5 = -0.125 exactly; R_n == -beta
    # is NOT below -beta, so the official code takes the ordinary branch.
    z, y = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.long)
    _check_against_reference(z, y, prior=0.25, beta=0.125, gamma=1.0, branch="descent")


def test_upu_option_keeps_the_negative_risk() -> None:
    z = torch.tensor([3.0, 2.5, -6.0, -5.0, -7.5], dtype=torch.float64)
    y = torch.tensor([1, 1, 0, 0, 0])
    _check_against_reference(z, y, prior=0.4, beta=0.0, gamma=1.0, branch="descent", nonnegative=False)
    r_p, r_n = pu_risks(z, y, 0.4)
    assert r_n.item() < 0  # uPU keeps it: its value sits below R_p+
    assert nnpu_loss(z, y, 0.4, nonnegative=False).item() == pytest.approx((r_p + r_n).item(), abs=1e-15)


def test_nnpu_labels_shapes_and_empty_positive_side() -> None:
    z, y = _mixed_batch(seed=3)
    y_minus = torch.where(y == 1, 1, -1)
    assert nnpu_loss(z, y, 0.3).item() == nnpu_loss(z.unsqueeze(1), y_minus, 0.3).item()  # 0 and -1 both mean U
    r_p, _ = pu_risks(z, torch.zeros_like(y), 0.3)  # a batch without positives: R_p+ = 0 (count clamped, no nan)
    assert r_p.item() == 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"prior": 0.0}, "prior must be in \\(0, 1\\)"),
        ({"prior": 1.0}, "UNLABELED pool"),
        ({"prior": 0.3, "beta": -0.1}, "beta >= 0 and gamma > 0"),
        ({"prior": 0.3, "gamma": 0.0}, "beta >= 0 and gamma > 0"),
    ],
)
def test_nnpu_bad_hyperparameters(kwargs: dict, match: str) -> None:
    z, y = _mixed_batch()
    with pytest.raises(ConfigError, match=match):
        nnpu_loss(z, y, **kwargs)
    with pytest.raises(ConfigError, match=match):
        PUStep(**kwargs)


def test_nnpu_bad_inputs() -> None:
    z, y = _mixed_batch()
    with pytest.raises(ConfigError, match="1 \\(labelled positive\\) or 0 / -1"):
        nnpu_loss(z, y * 2, 0.3)
    with pytest.raises(ConfigError, match="one PU label per logit \\(24\\)"):
        nnpu_loss(z, y[:5], 0.3)
    with pytest.raises(ConfigError, match="\\[B\\] or \\[B, 1\\]"):
        nnpu_loss(z.view(12, 2), y, 0.3)


# ------------------------------------------------------------------------------------------------ PU step


def _ctx(model: nn.Module, lr: float = 1.0) -> StepContext:
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    return StepContext(optimizer=opt, loss_fn=None, grad_clip=None, epoch=0, step=0, params=list(model.parameters()))


def test_pu_step_steps_on_minus_gamma_negative_risk_and_records_it() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 1).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[2.0, 0.0, 0.0]]))
        model.bias.zero_()
    x = torch.tensor([[2.0, 0, 0], [1.5, 0, 0], [-3.0, 1, 0], [-2.5, 0, 1]], dtype=torch.float64)
    y = torch.tensor([1, 1, 0, 0])
    r_p, r_n = pu_risks(model(x), y, 0.5)
    grads = torch.autograd.grad(r_n, list(model.parameters()))
    before = [p.detach().clone() for p in model.parameters()]
    step = PUStep(prior=0.5, gamma=0.5)
    loss, outputs = step(model, x, y, _ctx(model, lr=0.1))
    assert outputs is None  # fit reports no accuracy for the P-vs-U problem
    assert loss.item() == r_p.item()  # the objective's value on this branch: R_p+ - beta
    for p, b, g in zip(model.parameters(), before, grads, strict=True):
        torch.testing.assert_close(p.detach(), b - 0.1 * (-0.5 * g))  # SGD on -gamma * grad R_n
    assert step.ascent_steps_by_epoch == {0: 1}
    assert step.negative_risk_by_epoch[0] == pytest.approx(r_n.item())


# ----------------------------------------------------------------------------------------------- PU network


class Plain(nn.Module):
    """A backbone without forward_features and without a stage container (like a torchvision net)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.conv2(F.relu(self.conv1(x)))).mean((2, 3)))


def test_pu_net_on_a_classifier_equals_manual_multiscale_se_head() -> None:
    teacher = create_model("quickstart_cnn", widths=(4, 8, 16)).eval()
    pu = PUNet(teacher, reduction=4).eval()
    assert pu.layer_names == ["features.0", "features.1", "features.2"]  # 28, 14, 7: one per resolution
    assert pu.feature_chs == [4, 8, 16]
    assert pu.se.gate[0].weight.shape == (7, 28) and pu.fc.weight.shape == (1, 28)
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        f0 = teacher.features[0](x)
        f1 = teacher.features[1](f0)
        f2 = teacher.features[2](f1)
        v = torch.cat([f.mean((2, 3)) for f in (f0, f1, f2)], dim=1)
        w1, w2 = pu.se.gate[0].weight, pu.se.gate[2].weight
        gated = v * torch.sigmoid(F.relu(v @ w1.T) @ w2.T)
        expected = gated @ pu.fc.weight.T + pu.fc.bias
        torch.testing.assert_close(pu(x), expected, rtol=1e-5, atol=1e-6)
    assert pu(x).shape == (5, 1)


def test_pu_net_picks_the_last_stage_of_each_resolution() -> None:
    pu = PUNet(create_model("resnet20"))  # three stages at 32, 16, 8
    assert pu.layer_names == ["stages.0", "stages.1", "stages.2"] and pu.feature_chs == [16, 32, 64]
    assert pu.se.gate[0].weight.shape == (112 // 16, 112)  # the official reduction 16

    class Seq(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 5, 3, stride=2, padding=1), nn.ReLU()
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.features(x)

    pu = PUNet(Seq(), input_size=(1, 8, 8))
    assert pu.layer_names == ["features.1", "features.3"] and pu.feature_chs == [3, 5]


def test_pu_net_with_hooked_modules_copies_the_backbone() -> None:
    teacher = Plain()
    before = copy.deepcopy(teacher.state_dict())
    pu = PUNet(teacher, layers=[teacher.conv1, teacher.conv2], input_size=(1, 8, 8), reduction=2)
    assert pu.layer_names == ["conv1", "conv2"] and pu.feature_chs == [4, 6]
    opt = torch.optim.SGD(pu.parameters(), lr=0.5)
    pu(torch.randn(4, 1, 8, 8)).sum().backward()
    opt.step()
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k])  # training the PU net leaves the teacher alone
    assert pu.backbone.conv1.weight.grad is not None and not torch.equal(pu.backbone.conv1.weight, teacher.conv1.weight)
    shared = PUNet(teacher, layers=["conv2"], input_size=(1, 8, 8), copy_backbone=False)
    assert shared.backbone is teacher


def test_pu_net_deepcopy_keeps_its_own_hooks() -> None:
    pu = PUNet(Plain(), layers=["conv1", "conv2"], input_size=(1, 8, 8)).eval()
    x = torch.randn(3, 1, 8, 8)
    twin = copy.deepcopy(pu)
    with torch.no_grad():
        ref = pu(x)
        twin.backbone.conv2.weight.mul_(3)
        assert torch.equal(pu(x), ref) and not torch.allclose(twin(x), ref)


def test_pu_net_errors() -> None:
    teacher = create_model("quickstart_cnn", widths=(4, 8, 16))
    with pytest.raises(ConfigError, match="'nope' is not a submodule of the backbone"):
        PUNet(teacher, layers=["nope"])
    with pytest.raises(ConfigError, match="'Conv2d' is not a submodule"):
        PUNet(teacher, layers=[nn.Conv2d(1, 1, 1)])
    with pytest.raises(ConfigError, match="gave no tensor"):
        PUNet(teacher, layers=["classifier"])  # not run by forward_features
    with pytest.raises(ConfigError, match="pass input_size=\\(C, H, W\\)"):
        PUNet(Plain(), layers=["conv1"])
    with pytest.raises(ConfigError, match="cannot tell where the stages of Plain are"):
        PUNet(Plain(), input_size=(1, 8, 8))
    with pytest.raises(ConfigError, match="reduction must be a positive int"):
        PUNet(teacher, reduction=0)


# --------------------------------------------------------------------------------------------------- sampler


@pytest.mark.parametrize(("n_p", "n_u", "bs", "k", "n_batches"), [(10, 95, 16, 3, 8), (50, 20, 10, 2, 25)])
def test_pu_batch_sampler_positives_in_every_batch_and_full_coverage(n_p, n_u, bs, k, n_batches) -> None:
    sampler = PUBatchSampler(n_p, n_u, batch_size=bs, positives_per_batch=k, seed=7)
    assert len(sampler) == n_batches
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == n_batches
        assert all(len(b) == bs and sum(i < n_p for i in b) >= k for b in batches)
        assert set().union(*batches) == set(range(n_p + n_u))  # every sample seen this epoch


def test_pu_batch_sampler_is_seeded() -> None:
    a = PUBatchSampler(10, 95, batch_size=16, positives_per_batch=3, seed=7)
    b = PUBatchSampler(10, 95, batch_size=16, positives_per_batch=3, seed=7)
    assert list(a) == list(b)  # epoch 0 twice
    assert list(a) == b.batches(1).tolist() != b.batches(0).tolist()  # no set_epoch: each pass advances it
    other = PUBatchSampler(10, 95, batch_size=16, positives_per_batch=3, seed=8)
    assert other.batches(0).tolist() != a.batches(0).tolist()
    loader = DataLoader(TensorDataset(torch.arange(105)), batch_sampler=a)  # a torch batch sampler too
    assert sorted(torch.cat([x for (x,) in loader]).unique().tolist()) == list(range(105))


def test_pu_batch_sampler_default_share_and_errors() -> None:
    assert PUBatchSampler(100, 900, batch_size=50).positives_per_batch == 5
    assert PUBatchSampler(1, 10_000, batch_size=50).positives_per_batch == 1
    with pytest.raises(ConfigError, match="positives_per_batch must be in \\[1, batch_size\\) = \\[1, 8\\)"):
        PUBatchSampler(10, 10, batch_size=8, positives_per_batch=8)
    with pytest.raises(ConfigError, match="positives_per_batch must be in"):
        PUBatchSampler(10, 10, batch_size=8, positives_per_batch=0)
    with pytest.raises(ConfigError, match="batch_size must be >= 2"):
        PUBatchSampler(10, 10, batch_size=1)
    with pytest.raises(ConfigError, match="at least one positive and one unlabeled"):
        PUBatchSampler(0, 10, batch_size=8)


def _images(n: int, seed: int, size: int = 8) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _dataset(images: torch.Tensor, mean: float = 0.5, std: float = 0.25, targets=None) -> ImageDataset:
    targets = torch.zeros(len(images), dtype=torch.long) if targets is None else targets
    return ImageDataset(images, targets, classes=["a", "b"], name="synthetic", split="train", mean=[mean], std=[std])


def test_pu_loader_labels_and_shared_normalisation() -> None:
    p, u = _dataset(_images(6, 0)), _dataset(_images(20, 1), mean=0.1, std=0.9)
    loader = PULoader(p, u, batch_size=8, positives_per_batch=2, seed=0)
    loader.set_epoch(0)
    idx = loader.sampler.batches(0)
    mean, std = p.mean_std_tensors()
    all_images = torch.cat([p.images, u.images])
    for (x, y), rows in zip(loader, idx, strict=True):
        torch.testing.assert_close(x, normalize(all_images[rows], mean, std))  # U normalised with P's statistics
        assert y.tolist() == [int(i < 6) for i in rows.tolist()]
    assert len(loader) == 4  # ceil(20 unlabeled / 6 per batch)
    with pytest.raises(ConfigError, match="load both at the same size"):
        PULoader(p, _dataset(_images(4, 2, size=10)))


def test_image_pool_concatenates_with_one_normalisation() -> None:
    p, u = _dataset(_images(3, 0), targets=torch.tensor([1, 0, 1])), _images(2, 1)
    pool = image_pool(p, u)
    assert torch.equal(pool.images, torch.cat([p.images, u])) and pool.targets.tolist() == [1, 0, 1, -1, -1]
    assert (pool.mean, pool.std) == (p.mean, p.std)
    with pytest.raises(ConfigError, match="uint8 images of size \\(1, 8, 8\\)"):
        image_pool(p, u.float())
    with pytest.raises(ConfigError, match="needs like="):
        image_pool(u)


# ------------------------------------------------------------------------------------------------- selection


def test_select_positives_rule_and_ranking() -> None:
    scores = torch.tensor([0.5, -1.0, 2.0, 0.0, 0.5, 3.0])
    assert select_positives(scores).tolist() == [5, 2, 0, 4]  # f > 0 (strict), best first, ties in pool order
    assert select_positives(scores, top_k=2).tolist() == [5, 2]
    assert select_positives(scores, threshold=None, top_k=5).tolist() == [5, 2, 0, 4, 3]
    assert select_positives(scores, threshold=1.0).tolist() == [5, 2]
    with pytest.raises(ConfigError, match="one value per sample"):
        select_positives(scores.view(2, 3))
    with pytest.raises(ConfigError, match="top_k must be an int >= 0"):
        select_positives(scores, top_k=-1)


def test_precision_recall() -> None:
    truth = torch.tensor([1, 0, 1, 1, 0, 0, 1], dtype=torch.bool)
    m = precision_recall(torch.tensor([0, 1, 2]), truth)
    assert m == {"precision": 2 / 3, "recall": 0.5, "selected": 3.0, "positives": 4.0, "true_positives": 2.0}
    empty = precision_recall(torch.tensor([], dtype=torch.long), truth)
    assert math.isnan(empty["precision"]) and empty["recall"] == 0.0
    with pytest.raises(ConfigError, match="must lie in \\[0, 7\\)"):
        precision_recall(torch.tensor([7]), truth)
    with pytest.raises(ConfigError, match="distinct"):
        precision_recall(torch.tensor([1, 1]), truth)


def test_pu_scores_are_the_eval_mode_logits() -> None:
    pu = PUNet(create_model("quickstart_cnn", widths=(4, 8, 16)), input_size=(1, 8, 8)).train()
    data = _dataset(_images(10, 3))
    scores = pu_scores(pu, data, batch_size=4)
    assert pu.training  # mode restored
    with torch.no_grad():
        mean, std = data.mean_std_tensors()
        torch.testing.assert_close(scores, pu.eval()(normalize(data.images, mean, std)).squeeze(1))
    with pytest.raises(ConfigError, match="one logit per sample"):
        pu_scores(nn.Sequential(nn.Flatten(), nn.Linear(64, 2)), data)


def _two_kinds(n: int, positive: bool, seed: int) -> torch.Tensor:
    """8x8 images: positives are bright on the left half, negatives on the right, plus noise."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 60, (n, 1, 8, 8), generator=gen)
    if positive:
        x[..., :4] += 150
    else:
        x[..., 4:] += 150
    return x.to(torch.uint8)


def test_pu_training_with_fit_selects_the_positives() -> None:
    p = _dataset(_two_kinds(40, True, 0))
    u_pos, u_neg = _two_kinds(100, True, 1), _two_kinds(100, False, 2)
    u = image_pool(u_pos, u_neg, like=p)  # true prior 0.5
    torch.manual_seed(0)
    teacher = create_model("quickstart_cnn", widths=(4, 8), strides=(1, 2))
    pu = PUNet(teacher, input_size=(1, 8, 8), reduction=4)
    step = PUStep(prior=0.5)
    opt = torch.optim.Adam(pu.parameters(), lr=1e-2)
    fit(pu, PULoader(p, u, batch_size=32, seed=0), epochs=4, train_step=step, optimizer=opt, progress=False)
    assert sorted(step.negative_risk_by_epoch) == [0, 1, 2, 3]
    chosen = select_positives(pu_scores(pu, u))
    m = precision_recall(chosen, torch.arange(200) < 100)
    assert m["precision"] >= 0.95 and m["recall"] >= 0.95


# ------------------------------------------------------------------------------------------------ robust KD


def _naive_kl(s: torch.Tensor, t: torch.Tensor, tau: float) -> torch.Tensor:
    q = torch.exp(t / tau) / torch.exp(t / tau).sum(1, keepdim=True)
    p = torch.exp(s / tau) / torch.exp(s / tau).sum(1, keepdim=True)
    return (q * (q.log() - p.log())).sum(1)


def test_kd_loss_matches_naive_and_scales() -> None:
    gen = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 4, generator=gen, dtype=torch.float64), torch.randn(6, 4, generator=gen, dtype=torch.float64)
    w = torch.rand(6, generator=gen, dtype=torch.float64)
    assert kd_loss(s, t).item() == pytest.approx(_naive_kl(s, t, 1.0).mean().item(), abs=1e-14)
    assert kd_loss(s, t, sample_weights=w).item() == pytest.approx((w * _naive_kl(s, t, 1.0)).mean().item(), abs=1e-14)
    tau2 = (_naive_kl(s, t, 2.0)).mean().item()
    assert kd_loss(s, t, tau=2.0).item() == pytest.approx(2 * tau2, abs=1e-14)  # official: times tau
    assert kd_loss(s, t, tau=2.0, scale="tau2").item() == pytest.approx(4 * tau2, abs=1e-14)
    with pytest.raises(ConfigError, match="'tau' \\(the official PU-compression code\\) or 'tau2'"):
        kd_loss(s, t, scale="T")
    with pytest.raises(ConfigError, match=r"tau .* must be > 0"):
        kd_loss(s, t, tau=0.0)


def test_robust_kd_is_the_max_and_backpropagates_only_the_max_vector() -> None:
    gen = torch.Generator().manual_seed(1)
    s = torch.randn(8, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    t = torch.randn(8, 3, generator=gen, dtype=torch.float64)
    vectors = torch.tensor([[1.0, 1.0, 1.0], [0.2, 3.0, 2.5], [1.1, 1.0, 1.05]], dtype=torch.float64)
    pred = t.argmax(1)
    kl = _naive_kl(s.detach(), t, 1.0)
    naive = [(v[pred] * kl).mean().item() for v in vectors]
    worst = max(range(3), key=naive.__getitem__)
    assert worst == 1  # the perturbed vector, not the first, so the gradient test means something
    loss = robust_kd_loss(s, t, vectors)
    assert loss.item() == pytest.approx(naive[worst], abs=1e-14)
    (grad,) = torch.autograd.grad(loss, s)
    (expected,) = torch.autograd.grad(kd_loss(s, t, sample_weights=vectors[worst][pred]), s)
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-15)
    with pytest.raises(ConfigError, match="\\[R, num_classes\\] with num_classes = 3"):
        robust_kd_loss(s, t, torch.ones(2, 4))


def test_class_weights_exact_and_clamped() -> None:
    probs = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]], dtype=torch.float64)
    w = class_weights(probs.log())  # soft counts c = (2, 1, 1) -> 1/c = (0.5, 1, 1) -> * 3 / 2.5
    torch.testing.assert_close(w, torch.tensor([0.6, 1.2, 1.2], dtype=torch.float64))
    rare = torch.tensor([[1.0, 0.0, 0.0]] * 4 + [[0.0, 0.9, 0.1]], dtype=torch.float64).log()
    w = class_weights(rare)  # c = (4, 0.9, 0.1) clamped to (4, 1, 1): the absent class cannot explode
    torch.testing.assert_close(w, torch.tensor([0.25, 1.0, 1.0], dtype=torch.float64) * 3 / 2.25)
    assert class_weights(rare, min_count=0.0)[2] > 2.5
    with pytest.raises(ConfigError, match="non-empty \\[N, num_classes\\]"):
        class_weights(torch.zeros(0, 3))


def test_perturbed_weights_are_seeded_and_nonnegative_shifts() -> None:
    w = torch.tensor([0.6, 1.2, 1.2])
    vs = perturb_class_weights(w, eps=0.1, num=3, seed=5)
    assert vs.shape == (4, 3) and torch.equal(vs[0], w)
    assert (vs[1:] >= w).all() and (vs[1:] <= w + 0.1).all()
    assert torch.equal(vs, perturb_class_weights(w, eps=0.1, num=3, seed=5))
    assert not torch.equal(vs, perturb_class_weights(w, eps=0.1, num=3, seed=6))
    with pytest.raises(ConfigError, match="eps >= 0 and an integer num >= 0"):
        perturb_class_weights(w, eps=-0.1)


def _teacher() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))


def test_teacher_class_weights_from_data() -> None:
    teacher = _teacher().train()
    x = torch.randn(20, 1, 8, 8)
    batches = [(x[:12], torch.zeros(12)), (x[12:], torch.zeros(8))]
    vs = teacher_class_weights(teacher, batches, eps=0.1, num_perturb=1, seed=0)
    assert teacher.training  # eval for the counts, mode restored
    with torch.no_grad():
        w = class_weights(teacher.eval()(x))
    torch.testing.assert_close(vs, perturb_class_weights(w, eps=0.1, num=1, seed=0))


def test_kd_loss_fn_ignores_labels_and_leaves_the_teacher_alone() -> None:
    teacher = _teacher().train()
    bn_before = teacher[2].running_mean.clone()
    vectors = torch.tensor([[1.0, 2.0, 0.5], [1.05, 2.02, 0.58]])
    loss_fn = KDLoss(teacher, weight_vectors=vectors)
    x, out = torch.randn(6, 1, 8, 8), torch.randn(6, 3)
    a = loss_fn(out, torch.zeros(6, dtype=torch.long), x)
    b = loss_fn(out, torch.randint(0, 3, (6,)), x)
    assert a.item() == b.item()
    assert teacher.training and torch.equal(teacher[2].running_mean, bn_before)
    with torch.no_grad():
        expected = robust_kd_loss(out, teacher.eval()(x), vectors)
    assert a.item() == pytest.approx(expected.item(), abs=1e-6)
    with pytest.raises(ConfigError, match="needs the batch inputs"):
        loss_fn(out, None)


def test_robust_distillation_with_fit_never_reads_the_labels() -> None:
    teacher = _teacher().eval()
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(32, 1, 8, 8, generator=gen)
    vectors = teacher_class_weights(teacher, [(x, None)], num_perturb=2, seed=1)

    def run(labels: torch.Tensor) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        student = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
        data = [(x[:16], labels[:16]), (x[16:], labels[16:])]
        opt = make_optimizer(student, "sgd", lr=0.1)
        fit(student, data, epochs=2, optimizer=opt, loss_fn=KDLoss(teacher, weight_vectors=vectors), progress=False)
        return student.state_dict()

    first, second = run(torch.zeros(32, dtype=torch.long)), run(torch.randint(0, 3, (32,), generator=gen))
    assert all(torch.equal(first[k], second[k]) for k in first)
