"""Short SR training as a search evaluator: ESR-EA's fitness (arXiv 1909.11409) on T91, never on a test set."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import torch

from leanvision._torch import torch_threads
from leanvision.errors import ConfigError
from leanvision.search.evaluators._registry import EVALUATORS, cached_space
from leanvision.search.space import SPACES, Sample

_DATA: dict[tuple, Any] = {}  # per-process cache of (train, val) pairs


def _center(pair: Any, size: int | None, scale: int) -> Any:
    """The central ``size`` x ``size`` LR part of a pair (and its HR), to bound validation time."""
    from leanvision.data.sr import SRPair

    if size is None:
        return pair
    h, w = pair.lr.shape[:2]
    y, x = max((h - size) // 2, 0), max((w - size) // 2, 0)
    return SRPair(pair.name, pair.hr[y * scale : (y + size) * scale, x * scale : (x + size) * scale],
                  pair.lr[y : y + size, x : x + size])  # fmt: skip


@EVALUATORS.register("train_sr")
class SRShortTraining:
    """Train a sampled SR network ``steps`` Adam steps on T91 patches; the objective is Y-PSNR on held-out T91.

    Data: the ``train_set`` images at the space's scale, ``val_images`` of them held out (seed 0, the same for every
    candidate) and scored on their central ``val_crop`` LR pixels (``None``: whole images). Training: batches of
    ``batch_size`` ``patch``-pixel LR patches, flips and rot90, L1, Adam ``lr`` multiplied by ``gamma`` at the
    fractions ``milestones`` of the steps, seed ``seed`` (weights and batches: every candidate sees the same
    patches). Visible metrics: val_psnr, params, multi_adds (at a 1280x720 output), train_s. ``report_sets``
    (e.g. ["Set5"]) are scored into ``report`` only, which no strategy sees.
    """

    def __init__(self, *, space: str = "esrn", space_kwargs: dict[str, Any] | None = None, train_set: str = "T91",
                 val_images: int = 10, val_crop: int | None = 48, steps: int = 300, batch_size: int = 16,
                 patch: int = 32, lr: float = 1e-3, milestones: Sequence[float] = (2 / 3,), gamma: float = 0.5,
                 seed: int = 0, report_sets: Sequence[str] = (), data_dir: str | os.PathLike[str] | None = None,
                 threads: int | None = 1, device: str = "cpu") -> None:  # fmt: skip
        SPACES.get(space)
        if not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"train_sr: steps must be an int >= 1, got {steps!r}")
        if train_set in report_sets:
            raise ConfigError(f"train_sr: {train_set} trains the candidates; it cannot also be a report set")
        config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        config.update(space_kwargs=dict(space_kwargs or {}), milestones=list(milestones), report_sets=list(report_sets),
                      data_dir=None if data_dir is None else str(data_dir))  # fmt: skip
        self.config = config
        self.__dict__.update(config)

    def _space(self) -> Any:
        return cached_space(self.space, self.space_kwargs)

    def _data(self, scale: int) -> tuple[list, list]:
        key = (self.train_set, self.data_dir, scale, self.val_images, self.val_crop)
        if key not in _DATA:
            from leanvision.data.sr import load_sr_set, split_pairs

            train, val = split_pairs(load_sr_set(self.train_set, scale, root=self.data_dir), self.val_images)
            _DATA[key] = (train, [_center(p, self.val_crop, scale) for p in val])
        return _DATA[key]

    def __call__(self, sample: Sample) -> dict[str, Any]:
        with torch_threads(self.threads or None):
            return self._run(sample)

    def _run(self, sample: Sample) -> dict[str, Any]:
        from leanvision.data.sr import load_sr_set
        from leanvision.engine.sr import evaluate_sr, train_sr

        space = self._space()
        space.validate(sample)
        scale = space.scale
        train, val = self._data(scale)
        torch.manual_seed(self.seed)
        model = space.build(sample)
        t0 = time.perf_counter()
        train_sr(model, train, scale=scale, steps=self.steps, batch_size=self.batch_size, patch=self.patch, lr=self.lr,
                 milestones=self.milestones, gamma=self.gamma, seed=self.seed, device=self.device)  # fmt: skip
        train_s = time.perf_counter() - t0
        val_psnr = evaluate_sr(model, val, scale=scale, ssim=False, device=self.device)["psnr"]
        report = {f"{name}_psnr": evaluate_sr(model, load_sr_set(name, scale, root=self.data_dir), scale=scale,
                                              ssim=False, device=self.device)["psnr"]
                  for name in self.report_sets}  # fmt: skip
        params, macs = space.cost(sample)
        return {"objective": val_psnr, "val_psnr": val_psnr, "params": params, "multi_adds": macs, "train_s": train_s,
                "report": report}  # fmt: skip
