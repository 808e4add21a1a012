"""A fast in-memory batch iterator with vectorised crop + flip augmentation and per-epoch determinism."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from leanvision.data.dataset import ImageDataset, normalize
from leanvision.errors import ConfigError


def crop_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, *, padding: int) -> torch.Tensor:
    """Zero-pad by ``padding``, crop back to H x W at per-sample ``offsets`` [B, 2] (dy, dx), flip where set."""
    b, _, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    batch = torch.arange(b)
    # Sliding-window views pick each sample's crop with one small gather per axis (far faster than a
    # 4-d advanced index or torch.gather on uint8).
    rows = padded.unfold(2, h, 1)[batch, :, offsets[:, 0]]  # [B, C, W + 2p, H]
    crops = rows.unfold(2, w, 1)[batch, :, offsets[:, 1]]  # [B, C, H, W]
    return torch.where(flips[:, None, None, None], crops.flip(3), crops)


class EpochPlan(NamedTuple):
    """Everything random about one epoch: sample order and, per position, crop offsets and flips."""

    order: torch.Tensor  # [n] int64 indices into the dataset
    offsets: torch.Tensor | None  # [n, 2] int64 (dy, dx) in 0..2*padding
    flips: torch.Tensor | None  # [n] bool


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A ``torch.Generator`` whose stream depends only on (seed, epoch, stream), mixed by NumPy's SeedSequence."""
    entropy = [seed, epoch, stream] if stream else [seed, epoch]  # SeedSequence ignores trailing zeros anyway
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


class BatchLoader:
    """Yields ``(x float32 NCHW normalised, y int64)`` batches of an ImageDataset; augments its train split.

    ``transform(images, generator)`` (e.g. an augmentation policy) changes each uint8 batch after crop and flip, with
    a generator seeded by (seed, epoch, rank); ``normalized=False`` yields the uint8 images themselves.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        batch_size: int = 128,
        *,
        shuffle: bool = True,
        augment: bool | None = None,
        seed: int = 0,
        drop_last: bool = False,
        padding: int = 4,
        num_replicas: int = 1,
        rank: int = 0,
        transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
        normalized: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if seed < 0:
            raise ConfigError(f"seed must be >= 0, got {seed}")
        if padding < 0:
            raise ConfigError(f"padding must be >= 0, got {padding}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ConfigError(f"need 0 <= rank < num_replicas, got rank={rank}, num_replicas={num_replicas}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = dataset.train_augment and dataset.split == "train" if augment is None else augment
        self.seed = seed
        self.drop_last = drop_last
        self.padding = padding
        self.num_replicas = num_replicas
        self.rank = rank
        self.transform = transform
        self.normalized = normalized
        self.epoch = 0
        self._explicit_epoch = False

    def set_epoch(self, epoch: int) -> None:
        """Fix the epoch whose order/augmentation the next iterations use (like ``DistributedSampler``)."""
        self.epoch = epoch
        self._explicit_epoch = True

    @property
    def num_samples(self) -> int:
        """Samples this replica sees per epoch (the order is padded by wrap-around to divide evenly)."""
        return math.ceil(len(self.dataset) / self.num_replicas)

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def epoch_plan(self, epoch: int) -> EpochPlan:
        """The order and augmentation parameters of ``epoch`` for this replica (a pure function of seed, epoch)."""
        n = len(self.dataset)
        gen = epoch_generator(self.seed, epoch)
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        total = self.num_samples * self.num_replicas
        if total > n:
            order = torch.cat([order, order[: total - n]])
        offsets = flips = None
        if self.augment:
            # Drawn for the whole epoch at once so each replica's draws differ from the others'.
            offsets = torch.randint(0, 2 * self.padding + 1, (total, 2), generator=gen)
            flips = torch.randint(0, 2, (total,), generator=gen).bool()
            offsets, flips = offsets[self.rank :: self.num_replicas], flips[self.rank :: self.num_replicas]
        return EpochPlan(order[self.rank :: self.num_replicas], offsets, flips)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch
        if not self._explicit_epoch:
            self.epoch += 1
        plan = self.epoch_plan(epoch)
        mean, std = self.dataset.mean_std_tensors()
        images, targets = self.dataset.images, self.dataset.targets
        gen = epoch_generator(self.seed, epoch, 1 + self.rank) if self.transform is not None else None
        for i in range(len(self)):
            sl = slice(i * self.batch_size, (i + 1) * self.batch_size)
            idx = plan.order[sl]
            x = images.index_select(0, idx)
            if plan.offsets is not None and plan.flips is not None:
                x = crop_flip(x, plan.offsets[sl], plan.flips[sl], padding=self.padding)
            if gen is not None:
                x = self.transform(x, gen)
            yield normalize(x, mean, std) if self.normalized else x, targets.index_select(0, idx)


# The functional spelling used across the docs and recipes (like torch.utils.data.DataLoader, it is the class).
make_loader = BatchLoader
