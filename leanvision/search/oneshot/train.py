"""The shared supernet trainer of the one-shot methods: sampled paths per step through ``engine.fit``, exact resume."""

from __future__ import annotations

import copy
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from leanvision.errors import ConfigError
from leanvision.search.oneshot.data import SupernetData, load_supernet_data
from leanvision.search.oneshot.supernet import Arch, NB201Supernet, score_paths
from leanvision.search.space import ChoiceSpace
from leanvision.search.spaces.nasbench201 import (
    EDGES,
    NB201Space,
    canonical_archs,
    cell_ops,
    format_arch,
    is_connected,
    params_macs,
    parse_arch,
)

# sampler(rng) -> the paths of ONE optimiser step (their gradients accumulate on the same batch).
Sampler = Callable[[random.Random], Sequence[Arch]]


def as_space(space: Any) -> NB201Space:
    """The NAS-Bench-201 space of ``space`` (an ``NB201Space`` or the name ``"nasbench201"``)."""
    if isinstance(space, str):
        from leanvision.search.space import create_space

        space = create_space(space)
    if not isinstance(space, NB201Space):
        raise ConfigError(f"one-shot methods search the 'nasbench201' space, got {type(space).__name__}")
    return space


def canonical_cell(space: NB201Space, sample: Arch) -> dict[str, str] | None:
    """``sample`` as a candidate of ``space``: on a ``canonical`` space the representative of its isomorphism class,
    or None for a disconnected cell (no input->output path without ``none``); elsewhere ``sample`` itself."""
    if not space.canonical:
        return cell_ops(sample)
    rep = canonical_archs(space.ops)[format_arch(cell_ops(sample))]
    return parse_arch(rep) if is_connected(rep) else None


def random_state(rng: random.Random) -> dict[str, Any]:
    """``rng``'s state as plain data (weights-only loadable)."""
    version, state, gauss = rng.getstate()
    return {"version": version, "state": list(state), "gauss": gauss}


def set_random_state(rng: random.Random, state: dict[str, Any]) -> None:
    rng.setstate((state["version"], tuple(state["state"]), state["gauss"]))


def uniform_sampler(space: NB201Space) -> Sampler:
    """One uniformly random path per step (SPOS's sampling; CARS's warm-up): every op of every edge equally often,
    also on a ``canonical`` space (whose own sampling, one cell per isomorphism class, is for picking candidates)."""

    def sample(rng: random.Random) -> list[Arch]:
        return [ChoiceSpace.sample(space, rng)]

    return sample


class SupernetTrainer:
    """An :class:`NB201Supernet` over ``space``'s ops, its data, SGD and a cosine schedule, trained by sampled paths.

    Each optimiser step asks ``sampler(rng)`` for its paths (one for SPOS/CARS, K for a balanced step), runs the
    forward/backward of each on the same batch (gradients add up; FairNAS-style strict fairness sums them), then
    takes one SGD step. Training goes through ``engine.fit`` with this step as its ``train_step``, over a window of
    the loader's seeded batch stream, so calls of any length continue one another and a loaded
    :meth:`state_dict` continues bitwise as an uninterrupted run. The cosine LR spans ``total_steps`` optimiser
    steps (default ``total_epochs`` x batches per epoch) across calls. Data: ``load_supernet_data`` (train subset,
    held-out val split); scoring: :func:`score_paths` on ``bn_images`` train / ``eval_images`` val images.
    ``cpu_s`` holds the CPU seconds spent training and scoring so far (kept in the state, so a resumed run's total).
    ``threads`` torch threads while training or scoring (restored after; None leaves them).
    """

    def __init__(self, space: Any, *, seed: int = 0, C: int = 8, N: int = 1, resolution: int = 16,
                 dataset: str = "cifar10", data_dir: str | os.PathLike[str] | None = None, subset: int | None = 10_000,
                 val_size: int | float = 5_000, batch_size: int = 128, lr: float = 0.05, momentum: float = 0.9,
                 weight_decay: float = 5e-4, nesterov: bool = True, total_epochs: float | None = None,
                 total_steps: int | None = None, grad_clip: float | None = None, flip: bool = True,
                 bn_images: int = 500, eval_images: int = 1_000, threads: int | None = 1,
                 progress: bool = False) -> None:  # fmt: skip
        from leanvision.engine import make_optimizer, make_scheduler

        self.space = as_space(space)
        if threads is not None and threads < 1:
            raise ConfigError(f"SupernetTrainer: threads must be >= 1 or None (leave as is), got {threads}")
        self.seed, self.C, self.N, self.resolution = seed, C, N, resolution
        self.bn_images, self.eval_images, self.threads, self.progress = bn_images, eval_images, threads, progress
        self.grad_clip = grad_clip
        self.data: SupernetData = load_supernet_data(data_dir, dataset=dataset, resolution=resolution, subset=subset,
                                                     val_size=val_size, seed=seed)  # fmt: skip
        self.loader = self.data.loader(batch_size, flip=flip)
        self.steps_per_epoch = len(self.loader)
        if total_steps is None:
            if total_epochs is None or not total_epochs > 0:
                raise ConfigError("SupernetTrainer: pass total_epochs (> 0) or total_steps: the cosine LR's length")
            total_steps = math.ceil(total_epochs * self.steps_per_epoch)
        self.total_steps = total_steps
        torch.manual_seed(seed)  # the supernet's initial weights
        self.net = NB201Supernet(C=C, N=N, num_classes=self.data.num_classes, in_chans=self.data.in_chans,
                                 ops=self.space.ops)  # fmt: skip
        self.optimizer = make_optimizer(self.net, "sgd", lr=lr, momentum=momentum, weight_decay=weight_decay,
                                        nesterov=nesterov)  # fmt: skip
        self.scheduler = make_scheduler(self.optimizer, "cosine", total_steps=total_steps)
        self.rng = random.Random(seed)  # the samplers' stream (paths of every step), saved with the state
        self.steps_done = 0  # optimiser steps = batches consumed from the loader's stream
        self.passes_done = 0  # path forward/backward passes (K per step)
        self.op_counts: dict[str, dict[str, int]] = {e: dict.fromkeys(self.space.ops, 0) for e in EDGES}
        self.history: list[dict[str, float]] = []
        # CPU seconds (this process, all threads) spent training and scoring, summed over resumed calls.
        self.cpu_s = {"train": 0.0, "score": 0.0}
        self._sampler: Sampler | None = None
        self._costs: dict[str, tuple[int, int]] = {}

    @property
    def epochs_done(self) -> float:
        """Passes over the training data so far (optimiser steps / batches per epoch)."""
        return self.steps_done / self.steps_per_epoch

    def _step(self, model: nn.Module, inputs: Tensor, targets: Tensor, ctx: Any) -> tuple[Tensor, Tensor]:
        paths = list(self._sampler(self.rng))
        if not paths:
            raise ConfigError("SupernetTrainer: the sampler returned no path for this step")
        ctx.optimizer.zero_grad(set_to_none=True)
        losses = []
        for arch in paths:
            ops = cell_ops(arch)
            self.net.set_arch(ops)
            outputs = model(inputs)
            loss = ctx.loss_fn(outputs, targets, inputs)
            loss.backward()  # one backward per path: memory stays that of one path
            losses.append(loss.detach())
            for e in EDGES:
                self.op_counts[e][ops[e]] += 1
        if ctx.grad_clip is not None:
            nn.utils.clip_grad_norm_(ctx.params, ctx.grad_clip)
        ctx.optimizer.step()
        self.passes_done += len(paths)
        return torch.stack(losses).mean(), outputs

    def _threads(self) -> int:
        previous = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        return previous

    def train_steps(self, steps: int, sampler: Sampler) -> None:
        """Train ``steps`` optimiser steps, each on the next batch of the stream with the paths ``sampler`` gives."""
        from leanvision.engine import fit

        if not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"SupernetTrainer: steps must be an int >= 1, got {steps!r}")
        previous = self._threads()
        self._sampler = sampler
        c0 = time.process_time()
        try:
            result = fit(self.net, self.loader.window(self.steps_done, steps), epochs=1, optimizer=self.optimizer,
                         scheduler=self.scheduler, train_step=self._step, seed=self.seed, progress=self.progress,
                         grad_clip=self.grad_clip)  # fmt: skip
        finally:
            self._sampler = None
            torch.set_num_threads(previous)
            self.cpu_s["train"] += time.process_time() - c0
        self.steps_done += steps
        row = result.final
        self.history.append({"steps": self.steps_done, "passes": self.passes_done, "train_loss": row["train_loss"],
                             "train_acc": row["train_acc"], "lr": row["lr"]})  # fmt: skip

    def train(self, epochs: int, sampler: Sampler) -> None:
        """Train ``epochs`` passes over the training data (``epochs`` x batches-per-epoch optimiser steps)."""
        if not isinstance(epochs, int) or epochs < 1:
            raise ConfigError(f"SupernetTrainer: epochs must be an int >= 1, got {epochs!r}")
        self.train_steps(epochs * self.steps_per_epoch, sampler)

    def score(self, archs: Sequence[Arch]) -> list[float]:
        """Held-out accuracy (%) of each path with inherited weights and per-path BatchNorm re-estimation."""
        previous = self._threads()
        c0 = time.process_time()
        try:
            return score_paths(self.net, archs, self.data, bn_images=self.bn_images, eval_images=self.eval_images)
        finally:
            torch.set_num_threads(previous)
            self.cpu_s["score"] += time.process_time() - c0

    def candidates(self, archs: Sequence[Arch]) -> list[dict[str, Any]]:
        """:meth:`score` as a method's candidate dicts: ``{"sample", "objective" (= val acc %), "params", "macs"}``."""
        scores = self.score(archs)
        return [{"sample": cell_ops(a), "objective": s, "params": self.params(a), "macs": self.macs(a)}
                for a, s in zip(archs, scores, strict=True)]  # fmt: skip

    def set_total_steps(self, total_steps: int) -> None:
        """Re-plan the cosine schedule over ``total_steps`` optimiser steps (only before the first step)."""
        from leanvision.engine import make_scheduler

        if self.steps_done:
            raise ConfigError("SupernetTrainer: the schedule's length can only change before training starts")
        if not isinstance(total_steps, int) or total_steps < 1:
            raise ConfigError(f"SupernetTrainer: total_steps must be an int >= 1, got {total_steps!r}")
        self.total_steps = total_steps
        self.scheduler = make_scheduler(self.optimizer, "cosine", total_steps=total_steps)

    def _cost(self, arch: Arch) -> tuple[int, int]:
        ops = cell_ops(arch)
        key = "".join(ops[e] for e in EDGES)
        if key not in self._costs:
            self._costs[key] = params_macs(ops, C=self.C, N=self.N, num_classes=self.data.num_classes,
                                           resolution=self.data.resolution, in_chans=self.data.in_chans)  # fmt: skip
        return self._costs[key]

    def params(self, arch: Arch) -> int:
        """Parameters of ``arch``'s standalone child network (C, N, classes of this trainer)."""
        return self._cost(arch)[0]

    def macs(self, arch: Arch) -> int:
        """MACs of ``arch``'s standalone child network at this trainer's resolution."""
        return self._cost(arch)[1]

    def state_dict(self) -> dict[str, Any]:
        """Everything a fresh trainer with the same options needs to continue exactly (a deep copy)."""
        return copy.deepcopy({
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "steps_done": self.steps_done,
            "passes_done": self.passes_done,
            "rng": random_state(self.rng),
            "op_counts": self.op_counts,
            "history": self.history,
            "cpu_s": self.cpu_s,
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
        })  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (the trainer must have been built with the same options)."""
        for k in ("steps_per_epoch", "total_steps"):
            if state[k] != getattr(self, k):
                raise ConfigError(f"SupernetTrainer state has {k}={state[k]} but this trainer {getattr(self, k)}; "
                                  "build it with the same data, batch size and schedule")  # fmt: skip
        state = copy.deepcopy(state)
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.steps_done, self.passes_done = state["steps_done"], state["passes_done"]
        set_random_state(self.rng, state["rng"])
        self.op_counts = state["op_counts"]
        self.history = state["history"]
        self.cpu_s = state.get("cpu_s", {"train": 0.0, "score": 0.0})  # states saved before it was kept: none


def make_trainer(space: Any, seed: int, options: dict[str, Any] | None, **fixed: Any) -> SupernetTrainer:
    """A :class:`SupernetTrainer` from a method's ``supernet`` options plus the ones the method sets (``fixed``)."""
    import inspect

    options = dict(options or {})
    accepted = [n for n in inspect.signature(SupernetTrainer).parameters if n != "space"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(f"unknown supernet options {unknown}; accepted: {', '.join(accepted)}")
    clash = sorted(set(options) & {"seed", *fixed})
    if clash:
        raise ConfigError(f"supernet options {clash} are set by the method (seed, budget); pass them to the method")
    return SupernetTrainer(space, seed=seed, **fixed, **options)
