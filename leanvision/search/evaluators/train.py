"""Short-training evaluator: train a sampled network a few epochs and score it with BlockQNN's redefined reward.

BlockQNN (arXiv 1708.05552) trains each block's network for a few epochs only ("early stop") and corrects the
early accuracy for the block's cost, after He & Sun, "Convolutional Neural Networks at Constrained Time Cost"
(arXiv 1412.1710): reward = ACC - mu·log(FLOPs) - rho·log(Density), mu = 1, rho = 8 (see :func:`redefined_reward`).
"""

from __future__ import annotations

import inspect
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from leanvision._torch import torch_threads
from leanvision.errors import ConfigError
from leanvision.search.evaluators._registry import EVALUATORS, cached_space
from leanvision.search.space import SPACES, Sample

PAPER_MU, PAPER_RHO = 1.0, 8.0  # BlockQNN's constants as recalled (not checked against the PDF)


def redefined_reward(acc: float, flops: float, density: float | None, *, mu: float = PAPER_MU, rho: float = PAPER_RHO,
                     flops_ref: float = 1.0, acc_scale: float = 1.0) -> float:  # fmt: skip
    """BlockQNN's reward R = acc_scale·acc − mu·ln(flops / flops_ref) − rho·ln(density); density None drops its term.

    Units: ``acc`` is a fraction in [0, 1], so the first term is in units of 1/``acc_scale`` (1: fraction, 100:
    percentage points); ``flops`` and ``flops_ref`` are MACs of one block (their unit cancels: a different unit or
    reference only shifts every reward by the same constant, so rankings do not depend on it); density is edges
    per node (dimensionless). mu and rho are therefore "accuracy units per e-fold" of FLOPs and density: with the
    paper's mu = 1, rho = 8 and accuracy in percent (``acc_scale=100``) a 10x FLOPs ratio costs 2.3 points; with
    accuracy as a fraction the same terms outweigh any accuracy difference. The paper's unit is not verified here;
    :func:`calibrate_reward` fits mu and rho on trained blocks.
    """
    out = acc_scale * acc - mu * math.log(flops / flops_ref)
    return out if density is None else out - rho * math.log(density)


def charged_flops(flops: float, channels: int, resolution: int) -> float:
    """The FLOPs the reward charges an NSC block: its own, at least one 1x1 conv (a conv-free block, allowed with
    ``require_conv=False``, would otherwise have ln(0))."""
    return max(flops, channels * channels * resolution * resolution)


@dataclass
class RewardFit:
    """Fitted reward constants (signs free) beside the paper's, and how well each reward ranks the target."""

    mu: float
    rho: float
    acc_weight: float  # the raw least-squares weight of the early accuracy (mu, rho are divided by it)
    intercept: float
    spearman_fit: float
    spearman_paper: float
    flops_ref: float = 1.0
    acc_scale: float = 1.0
    paper_mu: float = PAPER_MU
    paper_rho: float = PAPER_RHO

    def predict(self, acc: float, flops: float, density: float) -> float:
        """The fitted target of one block (e.g. its longer-trained accuracy): intercept + acc_weight · reward.

        Rewards of different fits are on different scales (mu and rho are divided by each fit's ``acc_weight``);
        predictions are on the target's scale, so blocks scored by different fits (leave-one-out) compare."""
        reward = redefined_reward(acc, flops, density, mu=self.mu, rho=self.rho, flops_ref=self.flops_ref,
                                  acc_scale=self.acc_scale)  # fmt: skip
        return self.intercept + self.acc_weight * reward


def calibrate_reward(acc: Sequence[float], flops: Sequence[float], density: Sequence[float], target: Sequence[float],
                     *, flops_ref: float = 1.0, acc_scale: float = 1.0) -> RewardFit:  # fmt: skip
    """Fit mu, rho of :func:`redefined_reward` so the reward predicts ``target`` (e.g. longer-trained accuracy).

    Least squares of target ~ c + w·acc_scale·acc + b·ln(flops / flops_ref) + d·ln(density) over the blocks, then
    mu = -b / w and rho = -d / w (the reward's scale is free: only its order matters), so a positive mu means more
    FLOPs lower the reward and a negative one that they raise it. Needs at least 5 blocks and w > 0.
    """
    import numpy as np

    n = len(acc)
    if not n == len(flops) == len(density) == len(target) or n < 5:
        raise ConfigError(f"calibrate_reward: give >= 5 blocks with acc, flops, density and target each; got {n}")
    a = acc_scale * np.asarray(acc, float)
    lf, ld = np.log(np.asarray(flops, float) / flops_ref), np.log(np.asarray(density, float))
    X = np.column_stack([np.ones(n), a, lf, ld])
    (c, w, b, d), *_ = np.linalg.lstsq(X, np.asarray(target, float), rcond=None)
    if not w > 0:
        raise ConfigError(f"calibrate_reward: the early accuracy does not predict the target (weight {w:.3g}); "
                          "train the blocks longer or use more blocks")  # fmt: skip
    mu, rho = -b / w, -d / w

    def rank(values: Any) -> float:
        from scipy.stats import spearmanr

        return float(spearmanr(values, target).statistic)

    fit = a - mu * lf - rho * ld
    paper = a - PAPER_MU * lf - PAPER_RHO * ld
    return RewardFit(float(mu), float(rho), float(w), float(c), rank(fit), rank(paper), flops_ref, acc_scale)


_DATA: dict[tuple, tuple[Any, Any, Any]] = {}  # per-process cache: (train, val, test) by data options


@EVALUATORS.register("train_cifar")
class ShortTraining:
    """Train ``sample``'s network for ``epochs`` and return BlockQNN's redefined reward as the objective.

    The network comes from the space named ``space`` (created by name at call time with ``space_kwargs``), built
    with those of ``channels`` (F), ``N`` (blocks per stage), ``num_classes`` and ``in_chans`` (from the dataset)
    that its ``build`` names, plus ``build_kwargs`` (e.g. ``{"C": 16}`` for ``nasbench201``). Data: a seeded
    class-balanced ``subset`` of the training split of ``dataset`` after holding out ``val_size`` images (a count
    or a fraction) for validation, of which ``val_subset`` are used (``None``: all). Training: ``optimizer``
    (Adam, lr 1e-3, batch 128 by default), the learning rate multiplied by ``lr_decay`` every ``lr_decay_every``
    epochs (BlockQNN's 12-epoch recipe: 0.2 every 5), seed ``seed`` for the subset, the initial weights and the
    batch order; ``threads`` torch threads during the call (restored after); ``device`` trains and evaluates there.

    objective = :func:`redefined_reward` (``acc_scale``·val_acc - ``mu``·ln(flops / ``flops_ref``) -
    ``rho``·ln(density); units there). For ``nsc`` blocks, flops are one block's MACs at width F and the input
    resolution (``NSCSpace.flops``; the space refuses conv-free blocks unless ``require_conv=False``, and then such
    a block is charged one 1x1 conv so the log stays finite) and ``flops_ref`` defaults to the median of 1,000
    seeded random blocks; density is ``NSCSpace.density``. For other spaces flops are the whole network's MACs,
    the density term is off, and the FLOPs term is off unless ``flops_ref`` is given. ``acc_scale`` = 1 means
    accuracy as a fraction, 100 percent. Visible metrics: val_acc,
    flops, density, params, train_s; with ``report_test`` the test accuracy goes to ``report`` (on ``test_subset``
    test images, ``None``: all), which no strategy sees. Picklable: holds only its options; data are loaded in the
    worker on first use and cached per process.
    """

    def __init__(self, *, space: str = "nsc", space_kwargs: dict[str, Any] | None = None,
                 build_kwargs: dict[str, Any] | None = None, dataset: str = "cifar10",
                 data_dir: str | os.PathLike[str] | None = None, subset: int | None = 10_000,
                 val_size: int | float = 5_000, val_subset: int | None = None, report_test: bool = False,
                 test_subset: int | None = None, epochs: int = 1, batch_size: int = 128,
                 optimizer: str = "adam", lr: float = 1e-3, lr_decay: float = 0.2, lr_decay_every: int = 5,
                 augment: bool | None = None, channels: int = 16, N: int = 1, seed: int = 0, mu: float = 1.0,
                 rho: float = 8.0, flops_ref: float | None = None, acc_scale: float = 1.0,
                 threads: int | None = 1, device: str = "cpu") -> None:  # fmt: skip
        SPACES.get(space)  # an unknown name fails now, not in a worker
        if not isinstance(epochs, int) or epochs < 1:
            raise ConfigError(f"train_cifar: epochs must be an int >= 1, got {epochs!r}")
        if not val_size:
            raise ConfigError("train_cifar: the reward needs a validation split; pass val_size (a count or fraction)")
        if flops_ref is not None and not flops_ref > 0:
            raise ConfigError(f"train_cifar: flops_ref must be > 0 (MACs of a reference block), got {flops_ref}")
        if not isinstance(lr_decay_every, int) or lr_decay_every < 1:
            raise ConfigError(f"train_cifar: lr_decay_every must be an int >= 1 (epochs), got {lr_decay_every!r}")
        if threads is not None and threads < 1:
            raise ConfigError(f"train_cifar: threads must be >= 1 or None (leave as is), got {threads}")
        config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        config["space_kwargs"] = dict(space_kwargs or {})
        config["build_kwargs"] = dict(build_kwargs or {})
        config["data_dir"] = None if data_dir is None else str(data_dir)  # JSON-able (journal headers hold it)
        self.config = config
        self.__dict__.update(config)

    def _space(self) -> Any:
        return cached_space(self.space, self.space_kwargs)

    def _data(self) -> tuple[Any, Any, Any]:
        key = (self.dataset, self.data_dir, self.subset, self.val_size, self.val_subset, self.seed,
               self.report_test, self.test_subset)  # fmt: skip
        if key not in _DATA:
            from leanvision.data import load_dataset

            common = {"root": self.data_dir, "val_size": self.val_size, "val_seed": 0, "seed": self.seed}
            train = load_dataset(self.dataset, split="train", subset=self.subset, **common)
            val = load_dataset(self.dataset, split="val", subset=self.val_subset, **common)
            test = None
            if self.report_test:
                test = load_dataset(self.dataset, root=self.data_dir, split="test", subset=self.test_subset,
                                    seed=self.seed)  # fmt: skip
            _DATA[key] = (train, val, test)
        return _DATA[key]

    def _build(self, space: Any, sample: Sample, in_chans: int, num_classes: int) -> torch.nn.Module:
        offered = {"channels": self.channels, "N": self.N, "num_classes": num_classes, "in_chans": in_chans}
        params = inspect.signature(space.build).parameters
        kwargs = {k: v for k, v in offered.items() if k in params}
        return space.build(sample, **{**kwargs, **self.build_kwargs})

    def __call__(self, sample: Sample) -> dict[str, Any]:
        with torch_threads(self.threads or None):
            return self._run(sample)

    def _run(self, sample: Sample) -> dict[str, Any]:
        from leanvision.data import make_loader
        from leanvision.engine import evaluate, fit, make_optimizer, make_scheduler

        space = self._space()
        space.validate(sample)
        train, val, test = self._data()
        in_chans, res, _ = train.input_size
        torch.manual_seed(self.seed)
        model = self._build(space, sample, in_chans, train.num_classes)
        loader = make_loader(train, batch_size=self.batch_size, shuffle=True, seed=self.seed, augment=self.augment)
        opt = make_optimizer(model, self.optimizer, lr=self.lr)
        sched = None
        if self.epochs > self.lr_decay_every and self.lr_decay != 1:
            marks = [e / self.epochs for e in range(self.lr_decay_every, self.epochs, self.lr_decay_every)]
            sched = make_scheduler(opt, "step", total_steps=self.epochs * len(loader), milestones=marks,
                                   gamma=self.lr_decay)  # fmt: skip
        t0 = time.perf_counter()
        fit(model, loader, epochs=self.epochs, optimizer=opt, scheduler=sched, seed=self.seed, progress=False,
            device=self.device)  # fmt: skip
        train_s = time.perf_counter() - t0
        val_acc = evaluate(model, make_loader(val, batch_size=500, shuffle=False), device=self.device)["acc"]
        report = {}
        if test is not None:
            report["test_acc"] = evaluate(model, make_loader(test, batch_size=500, shuffle=False),
                                          device=self.device)["acc"]  # fmt: skip
        model.cpu()  # counted on the CPU, like every profile

        objective = self.acc_scale * val_acc
        if callable(getattr(space, "actions", None)):  # an NSC block: BlockQNN's block FLOPs and density
            flops = space.flops(sample, self.channels, res)
            ref = self.flops_ref or space.median_flops(self.channels, res)
            dens = space.density(sample)
            objective = redefined_reward(val_acc, charged_flops(flops, self.channels, res), dens, mu=self.mu,
                                         rho=self.rho, flops_ref=ref, acc_scale=self.acc_scale)  # fmt: skip
        else:
            from leanvision.profile import profile

            flops = profile(model, torch.zeros(1, in_chans, res, res)).macs
            dens = None
            if self.flops_ref:
                objective = redefined_reward(val_acc, max(flops, 1), None, mu=self.mu, flops_ref=self.flops_ref,
                                             acc_scale=self.acc_scale)  # fmt: skip
        out: dict[str, Any] = {
            "objective": objective,
            "val_acc": val_acc,
            "flops": flops,
            "density": dens,
            "params": sum(p.numel() for p in model.parameters()),
            "train_s": train_s,
            "report": report,
        }
        return out
