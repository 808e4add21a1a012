"""Tabular evaluators: look a cell's accuracy up in NAS-Bench-201's table (Dong & Yang, arXiv 2001.00326).

The table is ``<data dir>/nasbench201/nasbench201.csv`` (data dir: ``data_dir``, else ``$LEANVISION_DATA``), one
row per cell with the 200-epoch test accuracy and the 12-epoch validation and test accuracies on CIFAR-10,
CIFAR-100 and ImageNet16-120. The protocol: search on a 12-epoch column (``proxy``), report the 200-epoch test
accuracy; the test column only ever lands in the result's ``"report"``, which no strategy sees.
"""

from __future__ import annotations

import csv
import functools
import math
import os
import time
from pathlib import Path

import numpy as np

from leanvision.errors import ConfigError, DataError
from leanvision.registry import unknown_choice
from leanvision.search.evaluators._registry import EVALUATORS
from leanvision.search.space import Result, Sample
from leanvision.search.spaces.nasbench201 import EDGES, OPS, cell_ops, params_macs

DATASETS = {"cifar10": (32, 10), "cifar100": (32, 100), "imagenet16": (16, 120)}  # resolution, classes
COLUMNS = ("test_200ep", "val_12ep", "test_12ep")
PROXIES = ("val_12ep", "test_12ep")
TABLE = Path("nasbench201") / "nasbench201.csv"
_ALL_CONV = dict.fromkeys(EDGES, "nor_conv_3x3")  # the costliest cell


def nb201_csv(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The table's path under ``data_dir`` (else ``$LEANVISION_DATA``); a ``DataError`` says where it looked."""
    from leanvision.data._fs import resolve_root  # here: importing leanvision.data loads torch

    root = resolve_root(data_dir, dataset="nasbench201", layouts=str(TABLE))
    path = root / TABLE
    if not path.is_file():
        raise DataError(
            f"NAS-Bench-201 table not found: looked for {path}; pass --data-dir DIR (Python: data_dir=DIR) or set "
            f"$LEANVISION_DATA to a directory holding {TABLE}"
        )
    return path


def arch_code(ops: dict[str, str]) -> int:
    """A cell's row in a dense 5^6 table: the edges' op indices as base-5 digits (edge "1<-0" lowest)."""
    return sum(OPS.index(ops[e]) * len(OPS) ** k for k, e in enumerate(EDGES))


@functools.lru_cache(maxsize=4)
def _read(path: str, _stamp: tuple[int, int]) -> tuple[tuple[str, ...], dict[str, tuple[float, ...]]]:
    """``(column names, {arch: values})`` of the CSV (cached per path, size and mtime)."""
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header or "arch" not in header:
                raise DataError(f"{path} has no 'arch' column: it is not the NAS-Bench-201 table; replace it")
            a = header.index("arch")
            cols = tuple(h for k, h in enumerate(header) if k != a and h != "index")
            idx = [header.index(c) for c in cols]
            rows = {row[a]: tuple(float(row[k]) for k in idx) for row in reader if row}
    except (OSError, ValueError, IndexError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read the NAS-Bench-201 table {path}: {e}; replace it with a good copy") from None
    return cols, rows


def _table(data_dir: str | os.PathLike[str] | None) -> tuple[tuple[str, ...], dict[str, tuple[float, ...]]]:
    path = nb201_csv(data_dir)
    st = path.stat()
    return _read(str(path.resolve()), (st.st_size, st.st_mtime_ns))


def load_nb201(data_dir: str | os.PathLike[str] | None = None) -> dict[str, dict[str, float]]:
    """``{arch string: {column: accuracy in %}}`` for every cell in the table (columns as in the CSV header)."""
    cols, rows = _table(data_dir)
    return {arch: dict(zip(cols, vals, strict=True)) for arch, vals in rows.items()}


def _column(dataset: str, column: str) -> str:
    if dataset not in DATASETS:
        raise unknown_choice("NAS-Bench-201 dataset", dataset, tuple(DATASETS))
    if column not in COLUMNS:
        raise unknown_choice("NAS-Bench-201 column", column, COLUMNS)
    return f"{dataset}_{column}"


def optimum(dataset: str = "cifar10", column: str = "test_200ep", *,
            data_dir: str | os.PathLike[str] | None = None) -> float:  # fmt: skip
    """The best value of ``column`` over all cells on ``dataset`` (e.g. 94.37 for CIFAR-10's 200-epoch test)."""
    name = _column(dataset, column)
    cols, rows = _table(data_dir)
    if name not in cols:
        raise DataError(f"the NAS-Bench-201 table has no column {name!r} (it has {', '.join(cols)}); replace it")
    k = cols.index(name)
    return max(vals[k] for vals in rows.values())


@EVALUATORS.register("nasbench201_tabular")
class NB201Tabular:
    """Look a ``nasbench201`` sample up: ``objective`` = the ``{dataset}_{proxy}`` accuracy (%), visible metrics
    ``params`` and ``macs`` (by formula, at the dataset's resolution and classes), ``report`` = the ``report``
    columns. ``simulate_time`` > 0 sleeps ``simulate_time * macs / max macs`` seconds per trial, so cheap cells
    finish first as they would in real training (asynchronous searches then see results out of order).

    The table is read once here and kept as a dense array (small to pickle into worker processes).
    """

    def __init__(self, *, data_dir: str | os.PathLike[str] | None = None, dataset: str = "cifar10",
                 proxy: str = "val_12ep", report: tuple[str, ...] | list[str] = ("test_200ep",),
                 simulate_time: float = 0.0) -> None:  # fmt: skip
        if proxy not in PROXIES:
            raise ConfigError(f"nasbench201_tabular: proxy must be one of {', '.join(PROXIES)}, got {proxy!r}; the "
                              "200-epoch test accuracy is only reported, never searched on")  # fmt: skip
        report = (report,) if isinstance(report, str) else tuple(report)
        names = [_column(dataset, c) for c in (proxy, *report)]
        if not isinstance(simulate_time, (int, float)) or not math.isfinite(simulate_time) or simulate_time < 0:
            raise ConfigError(f"nasbench201_tabular: simulate_time must be >= 0 seconds, got {simulate_time!r}")
        cols, rows = _table(data_dir)
        missing = [n for n in names if n not in cols]
        if missing:
            raise DataError(f"the NAS-Bench-201 table has no column {missing[0]!r} (it has {', '.join(cols)}); "
                            "replace it with a good copy")  # fmt: skip
        idx = [cols.index(n) for n in names]
        values = np.full((len(OPS) ** len(EDGES), len(idx)), np.nan)
        for arch, vals in rows.items():
            values[arch_code(cell_ops(arch))] = [vals[k] for k in idx]
        self.dataset, self.proxy, self.report = dataset, proxy, report
        self.simulate_time = float(simulate_time)
        self.resolution, self.num_classes = DATASETS[dataset]
        self._values = values
        self._max_macs = self._cost(_ALL_CONV)[1]

    def _cost(self, ops: dict[str, str]) -> tuple[int, int]:
        return params_macs(ops, num_classes=self.num_classes, resolution=self.resolution)

    def __call__(self, sample: Sample) -> Result:
        ops = cell_ops(sample)
        row = self._values[arch_code(ops)]
        if np.isnan(row).any():
            raise DataError(f"cell {sample!r} is not in the NAS-Bench-201 table (a partial copy?); replace the table")
        params, macs = self._cost(ops)
        if self.simulate_time:
            time.sleep(self.simulate_time * macs / self._max_macs)
        return {"objective": float(row[0]), "params": params, "macs": macs,
                "report": {c: float(v) for c, v in zip(self.report, row[1:], strict=True)}}  # fmt: skip

    def __repr__(self) -> str:
        return (f"NB201Tabular(dataset={self.dataset!r}, proxy={self.proxy!r}, report={self.report!r}, "
                f"simulate_time={self.simulate_time})")  # fmt: skip
