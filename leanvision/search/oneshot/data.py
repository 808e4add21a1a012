"""In-memory data for supernet training and path scoring: a seeded train subset and a held-out validation split."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from leanvision.errors import ConfigError

_CACHE: dict[tuple, SupernetData] = {}  # per process: every method and seed of a benchmark shares the images


class SupernetLoader:
    """Seeded ``(images, labels)`` batches of a normalised image tensor, usable by ``engine.fit``.

    The order (and the horizontal flips, with ``flip``) of epoch e depend only on (seed, e), so batch g of the
    endless stream (epoch ``g // len``, position ``g % len``) is the same in any run: :meth:`window` hands ``fit``
    a stretch of that stream, which is how training resumes in the middle of an epoch.
    """

    def __init__(self, images: Tensor, targets: Tensor, batch_size: int = 128, *, seed: int = 0, flip: bool = True,
                 drop_last: bool = True) -> None:  # fmt: skip
        if not isinstance(batch_size, int) or not 1 <= batch_size <= len(targets):
            raise ConfigError(f"batch_size must be in [1, {len(targets)}] (the training images), got {batch_size!r}")
        self.images, self.targets = images, targets
        self.batch_size, self.seed, self.flip, self.drop_last = batch_size, seed, flip, drop_last
        self.epoch = 0
        self._plan: tuple[int, Tensor, Tensor | None] | None = None

    def __len__(self) -> int:
        n = len(self.targets)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _epoch_plan(self, epoch: int) -> tuple[Tensor, Tensor | None]:
        if self._plan is None or self._plan[0] != epoch:
            from leanvision.data.loader import epoch_generator

            gen = epoch_generator(self.seed, epoch)
            order = torch.randperm(len(self.targets), generator=gen)
            flips = torch.randint(0, 2, (len(order),), generator=gen).bool() if self.flip else None
            self._plan = (epoch, order, flips)
        return self._plan[1], self._plan[2]

    def batch(self, g: int) -> tuple[Tensor, Tensor]:
        """Batch ``g`` of the endless stream (epoch ``g // len(self)``, position ``g % len(self)``)."""
        epoch, i = divmod(g, len(self))
        order, flips = self._epoch_plan(epoch)
        sl = slice(i * self.batch_size, (i + 1) * self.batch_size)
        idx = order[sl]
        x = self.images.index_select(0, idx)
        if flips is not None:
            x = torch.where(flips[sl, None, None, None], x.flip(3), x)
        return x, self.targets.index_select(0, idx)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        start = self.epoch * len(self)
        return (self.batch(g) for g in range(start, start + len(self)))

    def window(self, start: int, count: int) -> _Window:
        """A re-iterable of the ``count`` stream batches from batch ``start`` on."""
        return _Window(self, start, count)


class _Window:
    def __init__(self, loader: SupernetLoader, start: int, count: int) -> None:
        self.loader, self.start, self.count = loader, start, count

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return (self.loader.batch(g) for g in range(self.start, self.start + self.count))


@dataclass
class SupernetData:
    """Normalised float images and labels: ``train_x/train_y`` to train and re-estimate BatchNorm, ``val_x/val_y``
    (held out of the training split, never the test set) to score paths."""

    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    num_classes: int
    seed: int

    @property
    def in_chans(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def resolution(self) -> int:
        return int(self.train_x.shape[-1])

    def loader(self, batch_size: int = 128, *, flip: bool = True, drop_last: bool = True) -> SupernetLoader:
        """The seeded training-batch loader (see :class:`SupernetLoader`)."""
        return SupernetLoader(self.train_x, self.train_y, batch_size, seed=self.seed, flip=flip, drop_last=drop_last)

    def bn_images(self, n: int) -> Tensor:
        """A fixed seeded set of ``n`` training images (no augmentation), for BatchNorm re-estimation."""
        if not isinstance(n, int) or not 1 <= n <= len(self.train_y):
            raise ConfigError(f"bn_images must be in [1, {len(self.train_y)}] (the training images), got {n!r}")
        gen = torch.Generator().manual_seed(self.seed)
        return self.train_x[torch.randperm(len(self.train_y), generator=gen)[:n]]


def class_interleaved(targets: Tensor, num_classes: int, seed: int = 0) -> Tensor:
    """A seeded order of ``targets`` that cycles through the classes, so every prefix is (nearly) class-balanced.

    Needed because datasets are often stored sorted by class (CIFAR-10's image folders are): the first 1,000
    validation images would otherwise hold two classes only.
    """
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(seed))
    labels = targets[order]
    rank = torch.zeros_like(labels)
    for c in range(num_classes):
        members = labels == c
        rank[members] = torch.arange(int(members.sum()))
    return order[torch.argsort(rank * num_classes + labels, stable=True)]


def load_supernet_data(data_dir: str | os.PathLike[str] | None = None, *, dataset: str = "cifar10",
                       resolution: int | None = 16, subset: int | None = 10_000, val_size: int | float = 5_000,
                       seed: int = 0) -> SupernetData:  # fmt: skip
    """``dataset``'s training split resized to ``resolution`` (None: native): ``val_size`` class-balanced images held
    out as validation (fixed by seed 0, so every seed scores on the same images; ordered by
    :func:`class_interleaved`, so its first k images are class-balanced), then a seeded class-balanced ``subset``
    (None: all the rest) to train on; the same split as ``load_dataset(..., val_size=...)``. Cached per process."""
    key = (dataset, None if data_dir is None else str(data_dir), resolution, subset, val_size, seed)
    if key not in _CACHE:
        from leanvision.data import load_dataset, normalize

        if not val_size:
            raise ConfigError("load_supernet_data: paths are scored on held-out images; pass val_size (count/fraction)")
        full = load_dataset(dataset, root=data_dir, split="train", image_size=resolution)
        rest, val = full.split_off(val_size, seed=0)
        train = rest.subset(subset, seed=seed) if subset is not None else rest
        mean, std = train.mean_std_tensors()
        order = class_interleaved(val.targets, val.num_classes)
        _CACHE[key] = SupernetData(normalize(train.images, mean, std), train.targets,
                                   normalize(val.images[order], mean, std), val.targets[order], train.num_classes,
                                   seed)  # fmt: skip
    return _CACHE[key]
