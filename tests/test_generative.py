"""FIS-GAN (arXiv 1910.02519): importance weights, the weighted flow fit, classifier-FID, exact resume, CLI errors."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_cli import assert_one_line_error, run  # shared CLI helpers (tests/ is on sys.path)

from leanvision.errors import ConfigError, Interrupted
from leanvision.generative import (
    Discriminator,
    FlowProposal,
    GaussianProposal,
    Generator,
    LatentSampler,
    frechet_metric,
    hardness,
    normalised_weights,
    prior_log_prob,
)
from leanvision.generative import workflow as gan

# ---- importance sampling ------------------------------------------------------------------------------------------


def _shifted_sampler(beta: float = 0.2, truncate: float = 10.0) -> LatentSampler:
    """The defensive mixture around a known Gaussian proposal N((1, -0.5), diag(0.5, 2))."""
    q = GaussianProposal(2)
    q.mean.copy_(torch.tensor([1.0, -0.5]))
    q.scale_tril.copy_(torch.diag(torch.tensor([0.5, 2.0]).sqrt()))
    sampler = LatentSampler(2, q, beta=beta, truncate=truncate)
    sampler.fitted = True
    return sampler


def test_importance_weights_are_unbiased_on_a_toy_expectation():
    sampler = _shifted_sampler()
    zs, ws = zip(*(sampler.draw(256)[:2] for _ in range(600)), strict=True)
    z, w = torch.cat(zs), torch.cat(ws)
    raw = sampler.mixture_weights(z)
    assert raw.max() <= 1 / 0.2 + 1e-4  # the defensive mixture bounds p / q_mix by 1 / beta
    assert raw.mean().item() == pytest.approx(1.0, abs=0.02)  # E_q[p / q] = 1
    # E_p[z0^2 + z1] = 1 and E_p[exp(z0)] = e^0.5, estimated from the proposal's samples
    for f, truth in ((z[:, 0] ** 2 + z[:, 1], 1.0), (z[:, 0].exp(), math.exp(0.5))):
        assert (raw * f).mean().item() == pytest.approx(truth, rel=0.04)
        assert (w * f).mean().item() == pytest.approx(truth, rel=0.04)  # self-normalised per batch of 256


def test_weights_are_self_normalised_truncated_and_their_ess_reported():
    w, ess = normalised_weights(torch.ones(8), truncate=10)
    assert torch.equal(w, torch.ones(8)) and ess == 1.0
    w, ess = normalised_weights(torch.tensor([1.0, 1.0, 1.0, 97.0]), truncate=2)
    assert w.tolist() == pytest.approx([0.04, 0.04, 0.04, 2.0])
    assert ess == pytest.approx(2.12**2 / (4 * (3 * 0.04**2 + 4)))
    z, w, ess = LatentSampler(3).draw(5)  # nothing fitted yet: the prior, every weight 1
    assert z.shape == (5, 3) and torch.equal(w, torch.ones(5)) and ess == 1.0


def test_weighted_flow_fit_recovers_a_known_weighted_density():
    # prior samples weighted by exp(a.z) represent N(0, I) tilted by exp(a.z), i.e. N(a, I); as in training, each
    # refit sees fresh prior samples and continues from the previous fit. 8192 samples (effective size ~2,400):
    # with 2048 (~590) the flow's KL ranged 0.013-0.087 over seeds and moved with the float summation order.
    a = torch.tensor([1.0, -0.5])
    target = torch.distributions.MultivariateNormal(a, torch.eye(2))
    flow, gauss = FlowProposal(2, transforms=2, hidden=32, lr=1e-2, steps=25), GaussianProposal(2)
    for _ in range(8):
        z = torch.randn(8192, 2)
        flow.fit(z, torch.softmax(z @ a, 0))
    gauss.fit(z, torch.softmax(z @ a, 0))
    probe = target.sample((4000,))
    for q in (flow, gauss):
        z, log_q = q.sample_and_log_prob(4000)
        assert z.mean(0).tolist() == pytest.approx(a.tolist(), abs=0.1)
        assert torch.allclose(log_q, q.log_prob(z), atol=1e-4)
        assert (target.log_prob(probe) - q.log_prob(probe)).mean().item() < 0.03  # KL(target || q)
    assert (target.log_prob(probe) - prior_log_prob(probe)).mean() > 0.6  # the prior itself is far: KL = |a|^2 / 2


def test_hardness_is_each_latents_generator_loss_and_does_not_touch_d():
    g, d = Generator(8, 8), Discriminator(8)
    z = torch.randn(10, 8)
    before = {k: v.clone() for k, v in d.state_dict().items()}
    h = hardness(g, d, z, batch=4)
    assert all(torch.equal(before[k], v) for k, v in d.state_dict().items())  # no power iteration step
    d.eval()
    assert torch.allclose(h, torch.nn.functional.softplus(-d(g(z))).detach())
    assert g(z).shape == (10, 1, 28, 28) and d(g(z)).shape == (10,)


def test_a_missing_gan_extra_is_a_one_line_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "zuko", None)
    with pytest.raises(ConfigError, match=r"needs the 'gan' extra: pip install 'leanvision\[gan\]'"):
        FlowProposal(4)
    monkeypatch.setitem(sys.modules, "torchmetrics.image.fid", None)
    with pytest.raises(ConfigError, match=r"classifier-FID needs the 'gan' extra"):
        frechet_metric(torch.nn.Identity())


# ---- classifier-FID -----------------------------------------------------------------------------------------------


class _Identity(torch.nn.Module):
    num_features = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_frechet_distance_of_a_set_with_itself_is_zero_and_grows_with_a_known_shift():
    x = torch.randn(400, 4) @ torch.tensor([[1.0, 0.3, 0, 0], [0, 1, 0.5, 0], [0, 0, 2, 0], [0, 0, 0, 0.5]])
    metric = frechet_metric(_Identity())
    metric.update(x, real=True)

    def fid(fake: torch.Tensor) -> float:
        metric.reset()  # keeps the real statistics
        metric.update(fake, real=False)
        return float(metric.compute())

    delta = torch.tensor([1.0, 2.0, 0.0, 0.0])
    assert fid(x) == pytest.approx(0.0, abs=1e-3)
    assert fid(x + delta) == pytest.approx(5.0, rel=1e-3)  # equal covariances: |shift|^2
    assert fid(x + 2 * delta) == pytest.approx(20.0, rel=1e-3)


@pytest.mark.parametrize("dataset, accuracy", [("mnist", 0.98), ("fashion_mnist", 0.88)])
def test_the_shipped_classifiers_are_small_accurate_and_give_zero_fid_on_real_images(shared_data, dataset, accuracy):
    from leanvision.data import load_dataset
    from leanvision.engine import load_checkpoint
    from leanvision.generative import ClassifierFID, load_classifier
    from leanvision.generative.fid import SHIPPED

    path = SHIPPED / f"{dataset}.pt"
    assert path.stat().st_size < 300_000
    assert load_checkpoint(path)["meta"]["test_acc"] >= accuracy
    real = load_dataset(dataset, root=shared_data, split="test").subset(1000, seed=0).images
    fid = ClassifierFID(load_classifier(dataset), real)
    same = fid(real)
    assert same["fid"] == pytest.approx(0.0, abs=1e-3) and same["coverage"] > 0.99
    darker = [fid((real.float() * f).to(torch.uint8))["fid"] for f in (0.9, 0.6)]
    assert 0 < darker[0] < darker[1]


def test_a_dataset_without_a_shipped_classifier_needs_one_in_the_config():
    from leanvision.generative import load_classifier

    with pytest.raises(ConfigError, match=r"ships for dataset 'cifar10' \(only fashion_mnist, mnist\).*set classifier"):
        load_classifier("cifar10")


# ---- training runs ------------------------------------------------------------------------------------------------


def _config(shared_data: Path, out: Path, **changes) -> dict:
    cfg = {"dataset": "mnist", "data_dir": str(shared_data), "subset": 200, "sampling": "fis", "latent_dim": 8,
           "g_channels": 8, "d_channels": 8, "steps": 4, "batch_size": 16, "eval_every": 2, "fid_samples": 50,
           "proposal": {"refresh_every": 2, "fit_samples": 64, "fit_steps": 2, "flow_hidden": 16,
                        "flow_transforms": 2}, "out_dir": str(out)}  # fmt: skip
    return {**cfg, **changes}


@pytest.fixture(scope="module")
def fis_run(shared_data, tmp_path_factory) -> gan.GanResult:
    """An uninterrupted 4-step FIS run (the flow refitted at step 2)."""
    return gan.train(_config(shared_data, tmp_path_factory.mktemp("fis") / "run"), progress=False)


def _states(out: Path) -> dict:
    from leanvision.engine import load_checkpoint

    ckpt = load_checkpoint(out / "last.pt")
    return {k: ckpt[k] for k in ("generator", "generator_ema", "discriminator", "opt_g", "opt_d", "sampler", "step")}


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


def test_a_run_writes_grids_metrics_report_and_a_checkpoint(fis_run):
    out = fis_run.out_dir
    assert [r["step"] for r in fis_run.history] == [0, 2, 4] and fis_run.steps_trained == 4
    for name in (
        "config.yaml",
        "last.pt",
        "metrics.jsonl",
        "report.html",
        "report.md",
        "grids.png",
        "curves_steps.png",
        "fid_seconds.png",
        "grids/step_0000000.png",
        "grids/step_0000004.png",
    ):
        assert (out / name).is_file(), name
    later = fis_run.history[1:]
    assert all(0 < r["ess_min"] <= r["ess"] <= 1 and r["fid"] > 0 and 0 <= r["coverage"] <= 1 for r in later)
    assert later[-1]["proposal_seconds"] > 0  # the flow was fitted at step 2
    assert "classifier-FID" in fis_run.summary() and str(out) in fis_run.summary()


def test_an_interrupted_run_resumes_exactly(fis_run, shared_data, tmp_path, monkeypatch):
    cfg = _config(shared_data, tmp_path / "run")
    evaluate = gan._Run.evaluate

    def stop_after_step_2(self):
        evaluate(self)
        if self.step == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(gan._Run, "evaluate", stop_after_step_2)
    with pytest.raises(Interrupted, match=r"GAN training interrupted; resume with: leanvision gan train .* --resume"):
        gan.train(cfg, progress=False)
    monkeypatch.setattr(gan._Run, "evaluate", evaluate)
    resumed = gan.train(cfg, resume=True, progress=False)
    assert resumed.steps_trained == 2
    assert _same(_states(resumed.out_dir), _states(fis_run.out_dir))
    strip = lambda h: [{k: v for k, v in r.items() if "seconds" not in k} for r in h]  # noqa: E731
    assert strip(resumed.history) == strip(fis_run.history)


def _images(weights: dict, cfg: dict, n: int = 9) -> torch.Tensor:
    g = gan.Generator(cfg["latent_dim"], cfg["g_channels"])
    g.load_state_dict(weights)
    z = torch.randn(n, cfg["latent_dim"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return gan.to_uint8(g.eval()(z))


@pytest.mark.parametrize("ema", [0.0, 0.5])
def test_samples_come_from_the_generator_average_the_fid_measured(shared_data, tmp_path, ema):
    from PIL import Image

    from leanvision.engine import load_checkpoint

    cfg = _config(shared_data, tmp_path / "run", sampling="prior", steps=3, eval_every=3, ema=ema)
    gan.train(cfg, progress=False)
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    raw = _images(ckpt["generator"], cfg)
    if ema:  # torch's AveragedModel keeps the average under "module."; n_averaged counts the updates
        assert int(ckpt["generator_ema"]["n_averaged"]) == 3
        mean = {k.removeprefix("module."): v for k, v in ckpt["generator_ema"].items() if k.startswith("module.")}
        expected = _images(mean, cfg)
        assert not torch.equal(expected, raw)
    else:
        assert "generator_ema" not in ckpt
        expected = raw
    grid = gan.sample(tmp_path / "run" / "last.pt", tmp_path / "s.png", n=9)
    # the grid's first tile (2-pixel padding) is the first image
    assert torch.equal(torch.from_numpy(np.array(Image.open(grid)))[2:30, 2:30], expected[0, 0])


def test_the_run_rule_refuses_restarts_and_changed_resumes(fis_run, shared_data):
    out = fis_run.out_dir
    with pytest.raises(ConfigError, match="already holds a GAN run: pass --resume"):
        gan.train(_config(shared_data, out), progress=False)
    with pytest.raises(ConfigError, match=r"you changed steps 8 \(run: 4\)"):
        gan.train(_config(shared_data, out, steps=8), resume=True, progress=False)
    done = gan.train(_config(shared_data, out, threads=1), resume=True, progress=False)
    assert done.steps_trained == 0 and done.summary().startswith("already finished")


def test_cli_trains_and_samples_a_grid(shared_data, tmp_path, capsys):
    from PIL import Image

    cfg = tmp_path / "gan.yaml"
    cfg.write_text(yaml.safe_dump(_config(shared_data, tmp_path / "run", sampling="gaussian", steps=2)))
    code, out, err = run(capsys, "gan", "train", str(cfg), "--quiet")
    assert code == 0, err
    assert "GAN (gaussian sampling) on mnist, 2 steps: classifier-FID" in out
    code, out, err = run(capsys, "gan", "sample", str(tmp_path / "s.png"), "--checkpoint",
                         str(tmp_path / "run" / "last.pt"), "-n", "9")  # fmt: skip
    assert code == 0, err
    assert Image.open(tmp_path / "s.png").size == (3 * 30 + 2, 3 * 30 + 2)
    code, _, err = run(capsys, "gan", "sample", str(tmp_path / "s.jpg"), "--checkpoint", str(tmp_path / "run/last.pt"))
    assert_one_line_error(code, err, "give a file name ending in .png")
    code, _, err = run(capsys, "gan", "sample", str(tmp_path / "t.png"), "--checkpoint", str(cfg))
    assert_one_line_error(code, err, "cannot read checkpoint")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"sampling": "fiss"}, ("'sampling': Input should be", "did you mean 'fis'?")),
        ({"proposal": {"beta": 0}}, "'proposal.beta': Input should be greater than 0"),
        ({"proposal": {"refresh": 5}}, "unknown key 'proposal.refresh'. Did you mean 'refresh_every'?"),
        ({"g_channels": 12}, "'g_channels': Input should be a multiple of 8"),
        ({"betas": [0.5, 1.5]}, "Adam's betas are two numbers in [0, 1)"),
        ({"ema": 1}, "'ema': Input should be less than 1"),
        ({"dataset": "digits"}, "digits has 1x8x8 images but the GAN makes 1x28x28 ones"),
        ({"batch_size": 500}, "batch_size 500 is larger than the 200 training images"),
        ({"classifier": "nope.pt"}, "checkpoint not found: nope.pt"),
    ],
)
def test_bad_configs_are_one_line_errors(shared_data, tmp_path, capsys, changes, message):
    cfg = tmp_path / "gan.yaml"
    cfg.write_text(yaml.safe_dump(_config(shared_data, tmp_path / "run", **changes)))
    code, _, err = run(capsys, "gan", "train", str(cfg), "--quiet")
    assert_one_line_error(code, err, *(message if isinstance(message, tuple) else (message,)))
    assert not (tmp_path / "run").exists()
