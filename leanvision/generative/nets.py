"""DCGAN-style generator and discriminator for 1x28x28 images (spectral norm in D, arXiv 1802.05957)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class Generator(nn.Module):
    """z [N, latent_dim] -> images [N, 1, 28, 28] in [-1, 1]: a linear layer to 7x7, two transposed convs up to 28x28.

    GroupNorm instead of DCGAN's BatchNorm: each image depends on its own latent only, so a batch drawn from a
    proposal neither shifts the statistics that prior samples are later generated with nor couples the weighted
    per-latent losses.
    """

    def __init__(self, latent_dim: int = 64, channels: int = 64) -> None:
        super().__init__()
        c = channels
        self.latent_dim = latent_dim
        self.fc = nn.Sequential(nn.Linear(latent_dim, 2 * c * 7 * 7), nn.Unflatten(1, (2 * c, 7, 7)),
                                nn.GroupNorm(8, 2 * c), nn.ReLU())  # fmt: skip
        self.up = nn.Sequential(
            nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1), nn.GroupNorm(8, c), nn.ReLU(),
            nn.ConvTranspose2d(c, 1, 4, stride=2, padding=1), nn.Tanh(),
        )  # fmt: skip

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.up(self.fc(z))


class Discriminator(nn.Module):
    """images [N, 1, 28, 28] -> one logit each (real vs generated); every layer spectrally normalised."""

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        c = channels
        self.net = nn.Sequential(
            spectral_norm(nn.Conv2d(1, c // 2, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(c // 2, c, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
            nn.Flatten(), spectral_norm(nn.Linear(c * 7 * 7, 1)),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()
