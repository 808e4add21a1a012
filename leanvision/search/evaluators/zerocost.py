"""The ``zerocost`` evaluator: score a NAS-Bench-201 cell's untrained network with a zero-cost proxy.

The objective is the proxy's score on one fixed batch of training images (the same images and the same seeded
initialisation for every cell); the benchmark's accuracies, when ``report`` names columns, go to the result's
``"report"`` only, which no strategy sees.
"""

from __future__ import annotations

import os
import time
from typing import Any

from leanvision.errors import ConfigError
from leanvision.search.evaluators._registry import EVALUATORS
from leanvision.search.evaluators.tabular import DATASETS, _column, load_nb201
from leanvision.search.proxies import get_proxy
from leanvision.search.space import Result, Sample
from leanvision.search.spaces.nasbench201 import format_arch, params_macs


@EVALUATORS.register("zerocost")
class ZeroCost:
    """``objective`` = the ``proxy`` (:data:`leanvision.search.proxies.PROXIES`) of the NB201 network (width ``C``,
    ``N`` cells per stage) at initialisation (seed ``seed``) on ``batch_size`` class-balanced training images of
    ``dataset``; visible metrics ``params``, ``macs`` and ``seconds``; ``report`` = the table's columns (``()``: no
    table needed)."""

    def __init__(self, *, proxy: str = "synflow", data_dir: str | os.PathLike[str] | None = None,
                 dataset: str = "cifar10", batch_size: int = 64, seed: int = 0, C: int = 16, N: int = 5,
                 report: tuple[str, ...] | list[str] = ("test_200ep",)) -> None:  # fmt: skip
        get_proxy(proxy)
        report = (report,) if isinstance(report, str) else tuple(report)
        names = [_column(dataset, c) for c in report]
        self.resolution, self.num_classes = DATASETS[dataset]
        # a class-balanced batch holds every class at least once
        for name, v, low in (("batch_size", batch_size, self.num_classes), ("C", C, 1), ("N", N, 1)):
            if not isinstance(v, int) or v < low:
                raise ConfigError(f"zerocost: {name} must be an integer >= {low}, got {v!r}")
        self.proxy, self.data_dir, self.dataset, self.report = proxy, data_dir, dataset, report
        self.batch_size, self.seed, self.C, self.N = batch_size, seed, C, N
        table = load_nb201(data_dir) if names else {}
        self._table = {a: [row[n] for n in names] for a, row in table.items()}
        self._batch: Any = None

    def batch(self) -> Any:
        """The fixed ``(images, labels)`` batch (loaded once: class-balanced, seeded, normalised)."""
        if self._batch is None:
            from leanvision.data import load_dataset, normalize

            ds = load_dataset(self.dataset, root=self.data_dir, split="train", subset=self.batch_size, seed=self.seed)
            mean, std = ds.mean_std_tensors()
            self._batch = (normalize(ds.images, mean, std), ds.targets)
        return self._batch

    def __call__(self, sample: Sample) -> Result:
        import torch

        from leanvision.models import create_model

        arch = format_arch(sample)
        batch = self.batch()
        t0 = time.perf_counter()
        torch.manual_seed(self.seed)
        model = create_model("nasbench201", arch=arch, C=self.C, N=self.N, num_classes=self.num_classes)
        score = get_proxy(self.proxy)(model, batch)
        seconds = time.perf_counter() - t0
        params, macs = params_macs(arch, C=self.C, N=self.N, num_classes=self.num_classes, resolution=self.resolution)
        out: Result = {"objective": score, "params": params, "macs": macs, "seconds": seconds}
        if self.report:
            out["report"] = dict(zip(self.report, self._table.get(arch, [float("nan")] * len(self.report)),
                                     strict=True))  # fmt: skip
        return out

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_batch": None}  # workers reload the batch rather than receive it

    def __repr__(self) -> str:
        return (f"ZeroCost(proxy={self.proxy!r}, dataset={self.dataset!r}, batch_size={self.batch_size}, "
                f"seed={self.seed})")  # fmt: skip
