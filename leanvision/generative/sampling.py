"""Importance sampling of a GAN's latent (FIS-GAN, arXiv 1910.02519).

A latent's hardness is its generator loss. A proposal q (a normalizing flow, or a Gaussian for the ablation) is fitted
by weighted maximum likelihood to prior latents weighted by their hardness, i.e. to the density proportional to
p(z) h(z); training draws from the defensive mixture (1 - beta) q + beta p and weights each latent by p / q_mix, so
every expectation still is one over the prior. The weights are self-normalised and truncated; their effective
sample size says how much of the batch still counts.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from leanvision.errors import missing_extra

_LOG_2PI = math.log(2 * math.pi)


def prior_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) of each row of ``z``."""
    return -0.5 * (z.square().sum(-1) + z.shape[-1] * _LOG_2PI)


@torch.no_grad()
def hardness(generator: nn.Module, discriminator: nn.Module, z: torch.Tensor, *, batch: int = 512) -> torch.Tensor:
    """Each latent's non-saturating generator loss -log D(G(z)): large where G does not yet fool D."""
    was = discriminator.training
    discriminator.eval()  # eval: spectral norm's power iteration is not advanced by scoring
    try:
        return torch.cat([F.softplus(-discriminator(generator(c))) for c in z.split(batch)])
    finally:
        discriminator.train(was)


def normalised_weights(w: torch.Tensor, truncate: float) -> tuple[torch.Tensor, float]:
    """Self-normalised weights (mean 1) cut at ``truncate``, and their effective sample size over N."""
    w = (w / w.mean()).clamp(max=truncate)  # truncated importance sampling: a little bias for bounded variance
    return w, float(w.sum().square() / (len(w) * w.square().sum()))


class GaussianProposal(nn.Module):
    """N(mean, cov) fitted to the weighted latents: the ablation that keeps the weights and drops the flow."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale_tril", torch.eye(dim))

    def _dist(self) -> torch.distributions.MultivariateNormal:
        return torch.distributions.MultivariateNormal(self.mean, scale_tril=self.scale_tril)

    @torch.no_grad()
    def fit(self, z: torch.Tensor, v: torch.Tensor) -> None:
        """Weighted mean and covariance of ``z`` (weights ``v`` sum to 1); a small ridge keeps it invertible."""
        mean = v @ z
        c = z - mean
        cov = (c * v[:, None]).T @ c + 1e-4 * torch.eye(z.shape[1], device=z.device)
        self.mean.copy_(mean)
        self.scale_tril.copy_(torch.linalg.cholesky(cov))

    @torch.no_grad()
    def sample_and_log_prob(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        dist = self._dist()
        z = dist.sample((n,))
        return z, dist.log_prob(z)

    @torch.no_grad()
    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self._dist().log_prob(z)


class FlowProposal(nn.Module):
    """A RealNVP-style flow (zuko's affine couplings, arXiv 1605.08803) fitted by weighted maximum likelihood.

    Each refit continues from the previous flow for a few Adam steps: the hardness changes slowly with G and D.
    """

    def __init__(self, dim: int, *, transforms: int = 4, hidden: int = 64, lr: float = 1e-3, steps: int = 30) -> None:
        super().__init__()
        try:
            import zuko
        except ImportError:
            raise missing_extra("latent sampling with a flow (sampling: fis)", "gan") from None
        # zuko's NICE with its default affine couplings is RealNVP
        self.flow = zuko.flows.NICE(dim, transforms=transforms, hidden_features=[hidden, hidden])
        for m in self.flow.modules():  # zero last layers: the flow starts as the prior itself (ESS 1, as in Glow)
            if isinstance(m, zuko.flows.GeneralCouplingTransform):
                nn.init.zeros_(m.hyper[-1].weight)
                nn.init.zeros_(m.hyper[-1].bias)
        self.steps = steps
        self.optimizer = torch.optim.Adam(self.flow.parameters(), lr=lr)

    def fit(self, z: torch.Tensor, v: torch.Tensor) -> None:
        """Maximise sum_i v_i log q(z_i) (weights ``v`` sum to 1), full batch."""
        for _ in range(self.steps):
            loss = -(v * self.flow().log_prob(z)).sum()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()

    @torch.no_grad()
    def sample_and_log_prob(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.flow().rsample_and_log_prob((n,))  # one pass: the density comes with the sample

    @torch.no_grad()
    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.flow().log_prob(z)


Proposal = GaussianProposal | FlowProposal


class LatentSampler:
    """Latents for one GAN step with their importance weights: the prior until a proposal is fitted, then the
    defensive mixture ``(1 - beta) q + beta p`` weighted by ``p / q_mix`` (self-normalised, truncated)."""

    def __init__(self, dim: int, proposal: Proposal | None = None, *, beta: float = 0.2, truncate: float = 10.0,
                 device: str | torch.device = "cpu") -> None:  # fmt: skip
        self.dim, self.proposal, self.beta, self.truncate, self.device = dim, proposal, beta, truncate, device
        self.fitted = False

    def refit(self, generator: nn.Module, discriminator: nn.Module, n: int) -> None:
        """Score ``n`` prior latents by their hardness and fit the proposal to the hardness-weighted prior."""
        if self.proposal is None:
            return
        z = torch.randn(n, self.dim, device=self.device)
        h = hardness(generator, discriminator, z)
        self.proposal.fit(z, h / h.sum())
        self.fitted = True

    def mixture_weights(self, z: torch.Tensor, log_q: torch.Tensor | None = None) -> torch.Tensor:
        """Raw importance weights p(z) / q_mix(z) (``log_q``: the proposal's log density of ``z``, if known); their
        mean over q_mix samples is 1, and none exceeds 1 / beta."""
        log_p = prior_log_prob(z)
        if self.beta >= 1:  # the mixture is the prior itself
            return torch.ones_like(log_p)
        log_q = self.proposal.log_prob(z) if log_q is None else log_q
        log_mix = torch.logaddexp(log_q + math.log1p(-self.beta), log_p + math.log(self.beta))
        return torch.exp(log_p - log_mix)

    def draw(self, n: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        """``n`` latents, their weights (mean 1) and the weights' ESS / N."""
        if self.proposal is None or not self.fitted:
            return torch.randn(n, self.dim, device=self.device), torch.ones(n, device=self.device), 1.0
        from_prior = torch.rand(n, device=self.device) < self.beta
        z = torch.empty(n, self.dim, device=self.device)
        log_q = torch.empty(n, device=self.device)
        z[~from_prior], log_q[~from_prior] = self.proposal.sample_and_log_prob(n - int(from_prior.sum()))
        z[from_prior] = torch.randn(int(from_prior.sum()), self.dim, device=self.device)
        log_q[from_prior] = self.proposal.log_prob(z[from_prior])
        w, ess = normalised_weights(self.mixture_weights(z, log_q), self.truncate)
        return z, w, ess

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to draw the same latents next."""
        opt = getattr(self.proposal, "optimizer", None)
        return {"fitted": self.fitted, "proposal": self.proposal.state_dict() if self.proposal is not None else None,
                "optimizer": opt.state_dict() if opt is not None else None}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.fitted = bool(state["fitted"])
        if self.proposal is not None:
            self.proposal.load_state_dict(state["proposal"])
            if state.get("optimizer") is not None:
                self.proposal.optimizer.load_state_dict(state["optimizer"])
