"""The operational data of a calibration run and its labels: a dataset split (optionally shifted) or a folder of
images, labelled by the data itself, a CSV file or a person; every answer is journalled the moment it is given."""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from leanvision._io import append_jsonl, read_jsonl
from leanvision.calibrate.config import DataConfig
from leanvision.errors import ConfigError

SHOWN = 5  # offenders listed in one error line


@dataclass
class OperationalData:
    """Images at the model's input size (uint8), their labels when the data has them, and a key per example."""

    images: torch.Tensor
    targets: torch.Tensor | None
    keys: list[str]
    what: str


def classes_of(ckpt: dict[str, Any], num_outputs: int) -> list[str]:
    """The checkpoint's class names (their indices when it has none)."""
    return list((ckpt.get("meta") or {}).get("classes") or [str(i) for i in range(num_outputs)])


def operational_data(d: DataConfig, *, ckpt: dict[str, Any], checkpoint: Path, data_dir: str | None,
                     classes: list[str]) -> OperationalData:  # fmt: skip
    """The images of ``d`` at the checkpoint's input size, with their labels when the data has them."""
    from leanvision.engine import input_contract

    size = input_contract(ckpt)[0]
    return _folder(d, classes, size) if d.folder is not None else _dataset(d, ckpt, checkpoint, data_dir, size)


def _dataset(d: DataConfig, ckpt: dict, checkpoint: Path, data_dir: str | None, size: tuple) -> OperationalData:
    from leanvision.calibrate.shift import apply_shift
    from leanvision.engine import checkpoint_data

    _, ds = checkpoint_data(ckpt, checkpoint, split=d.split, data_dir=data_dir, dataset=d.dataset)
    classes = (ckpt.get("meta") or {}).get("classes")
    if classes is not None and list(classes) != list(ds.classes):
        raise ConfigError(f"data.dataset: {checkpoint} was trained on other classes than {d.dataset}'s; "
                          "calibrate it on data of the classes it predicts")  # fmt: skip
    what = f"{d.dataset} {d.split}"
    if d.shift is not None:
        s = d.shift
        ds = apply_shift(ds, s.kind, degrees=s.degrees, factor=s.factor, classes=s.classes, seed=s.seed)
        what += f", {s.kind} " + (f"{s.degrees[0]:g}-{s.degrees[1]:g} deg" if s.kind == "rotate" else f"x{s.factor:g}")
        what += f" (classes {s.classes})" if s.classes is not None else ""
    if ds.images.shape[1] != size[0]:
        raise ConfigError(f"data.dataset: {d.dataset} has {ds.images.shape[1]} channels, the model takes {size[0]}")
    ds = ds.resized(size[1:])
    return OperationalData(ds.images, ds.targets, [str(i) for i in range(len(ds))], what)


def _folder(d: DataConfig, classes: list[str], size: tuple[int, int, int]) -> OperationalData:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    from leanvision.data import decode_file
    from leanvision.data.folder import list_images, stack_images

    root = Path(d.folder or "")
    if not root.is_dir():
        raise ConfigError(f"data.folder: no directory at '{root}'; give a directory of images")
    subdirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    targets = None
    if subdirs:  # class subfolders: the folder names are the labels
        unknown = [s for s in subdirs if s not in classes]
        if unknown:
            raise ConfigError(f"data.folder: subfolders {unknown[:SHOWN]} of '{root}' are not classes of the model "
                              f"({', '.join(classes[:10])}{' ...' if len(classes) > 10 else ''})")  # fmt: skip
        paths, labels = list_images(root, classes)
        targets = torch.tensor(labels, dtype=torch.int64)
    else:
        paths = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)
    if not paths:
        raise ConfigError(f"data.folder: no images in '{root}' ({', '.join(IMG_EXTENSIONS)}): the operational pool "
                          "is empty; put the operational images there")  # fmt: skip
    mode = "gray" if size[0] == 1 else "rgb"
    images = stack_images([decode_file(p, mode=mode) for p in paths], paths, where=root, image_size=size[1:])
    keys = [p.relative_to(root).as_posix() for p in paths]
    return OperationalData(images, targets, keys, f"folder {root}")


def split_pool_test(data: OperationalData, d: DataConfig, *, budget: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pool and test indices into ``data``: a seeded shuffle, the pool first."""
    n = len(data.keys)
    if d.test and data.targets is None:
        raise ConfigError("data.test: measuring the result needs the data's own labels: put the folder's images in "
                          "class subfolders, or set test: 0")  # fmt: skip
    if d.test >= n:
        raise ConfigError(f"data.test ({d.test}) leaves no pool of the {n} examples of {data.what}: lower it")
    pool = n - d.test if d.pool is None else d.pool
    if pool + d.test > n:
        raise ConfigError(f"data.pool ({pool}) + data.test ({d.test}) is more than the {n} examples of {data.what}: "
                          "lower them")  # fmt: skip
    if pool == 0:
        raise ConfigError("data.pool: the operational pool is empty: give it some unlabelled examples (pool >= 2)")
    if budget > pool:
        raise ConfigError(f"budget: the labelling budget ({budget}) is larger than the pool ({pool} examples): "
                          "lower the budget or give a larger pool")  # fmt: skip
    perm = np.random.default_rng(seed).permutation(n)
    return perm[:pool], perm[pool : pool + d.test]


# ---- labels ------------------------------------------------------------------------------------------------------


def parse_label(text: str, classes: list[str]) -> int | None:
    """A class name or index as the class index; None if it is neither."""
    text = text.strip()
    if text in classes:
        return classes.index(text)
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(classes):
        return int(text)
    return None


def _offenders(items: list[str]) -> str:
    more = f" (+{len(items) - SHOWN} more)" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def read_label_file(path: Path, keys: list[str], classes: list[str]) -> dict[str, int]:
    """``key -> class index`` from CSV lines ``key,label``; unknown keys and bad labels are one-line errors."""
    if not path.is_file():
        raise ConfigError(f"labels.path: no file at '{path}'; give a CSV file of key,label lines")
    known = set(keys)
    by_name: dict[str, str | None] = {}
    for k in keys:  # a folder's file may be named without its class subfolder, when that is unambiguous
        name = k.rsplit("/", 1)[-1]
        by_name[name] = None if name in by_name else k
    out: dict[str, int] = {}
    unknown, bad, clash = [], [], []
    with open(path, newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.reader(f), 1):
            if not row or not "".join(row).strip() or (line == 1 and [c.strip() for c in row] == ["key", "label"]):
                continue
            if len(row) != 2:
                bad.append(f"line {line} (not key,label)")
                continue
            key, text = row[0].strip(), row[1].strip()
            key = key if key in known else (by_name.get(key) or key)
            label = parse_label(text, classes)
            if key not in known:
                unknown.append(f"line {line} '{key}'")
            elif label is None:
                bad.append(f"line {line} '{text}'")
            elif out.setdefault(key, label) != label:
                clash.append(f"line {line} '{key}'")
    if unknown:
        raise ConfigError(f"{path}: keys that are no example of the operational data: {_offenders(unknown)}; keys "
                          "are file names (folder) or example indices (dataset)")  # fmt: skip
    if bad:
        raise ConfigError(f"{path}: labels that are no class of the model (index 0-{len(classes) - 1} or a name): "
                          f"{_offenders(bad)}")  # fmt: skip
    if clash:
        raise ConfigError(f"{path}: keys labelled twice with different labels: {_offenders(clash)}")
    return out


@dataclass(frozen=True)
class LabelRequest:
    """One selected example a person is asked to label (``labels.source: prompt``)."""

    key: str  # the example's index in the dataset split, or its path relative to the folder
    image: torch.Tensor  # uint8 [C, H, W] at the model's input size
    classes: list[str]
    done: int  # answers given so far in this run
    budget: int
    out_dir: Path  # the run directory (the terminal prompt saves the image under out_dir/label_queue/)


Oracle = Callable[[LabelRequest], int]


class Answers:
    """The selection's oracle: labels replayed from the journal, else asked and journalled at once (none is lost)."""

    def __init__(self, path: Path, keys: list[str], ask: Callable[[int, int], int],
                 saved: dict[str, int], missing: Callable[[list[str]], None] | None = None) -> None:  # fmt: skip
        self.path, self.keys, self.ask, self.saved, self.missing = path, keys, ask, saved, missing
        self.replayed = self.answered = 0

    def __call__(self, indices: list[int]) -> list[int]:
        new = [self.keys[i] for i in indices if self.keys[i] not in self.saved]
        if self.missing is not None and new:
            self.missing(new)  # e.g. a labels file without these keys: say so before asking anything
        out = []
        for i in indices:
            key = self.keys[i]
            if key in self.saved:
                self.replayed += 1
            else:
                self.saved[key] = int(self.ask(i, self.replayed + self.answered))
                append_jsonl(self.path, {"key": key, "label": self.saved[key]})
                self.answered += 1
            out.append(self.saved[key])
        return out


def saved_answers(path: Path, classes: list[str]) -> dict[str, int]:
    """``key -> label`` of a journal; a line that is no class index is a one-line ConfigError."""
    saved = {}
    for rec in read_jsonl(path) if path.is_file() else []:
        label = rec.get("label")
        if not isinstance(label, int) or not 0 <= label < len(classes):
            raise ConfigError(f"{path}: answer {rec} is not a class index of the model; fix or remove that line")
        saved[str(rec.get("key"))] = label
    return saved


def answers(source: Any, data: OperationalData, pool: np.ndarray, classes: list[str], journal: Path, *,
            oracle: Oracle | None, budget: int, replay: bool) -> Answers:  # fmt: skip
    """The labels of pool examples from ``source`` (a LabelsConfig), journalled in ``journal``."""
    keys = [data.keys[i] for i in pool]
    missing = None
    if source.source == "split":
        if data.targets is None:
            raise ConfigError("labels.source: split needs the data's own labels: put the folder's images in class "
                              "subfolders, or use source: file or prompt")  # fmt: skip
        targets = data.targets[torch.as_tensor(pool)].tolist()

        def ask(i: int, _done: int) -> int:
            return targets[i]
    elif source.source == "file":
        path = Path(source.path or "")
        table = read_label_file(path, data.keys, classes)

        def ask(i: int, _done: int) -> int:
            return table[keys[i]]

        def missing(new: list[str]) -> None:
            absent = [k for k in new if k not in table]
            if absent:
                raise ConfigError(f"{path} has no label for the selected examples {_offenders(absent)}: add them "
                                  f"(answers so far are kept) and run again with --resume")  # fmt: skip
    else:
        if oracle is None:
            raise ConfigError("labels.source: prompt asks a person: run `leanvision calibrate` in a terminal, or pass "
                              "oracle=FUNCTION to leanvision.calibrate.run")  # fmt: skip
        images = data.images[torch.as_tensor(pool)]

        def ask(i: int, done: int) -> int:
            label = oracle(LabelRequest(keys[i], images[i], classes, done, budget, journal.parent))
            if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= label < len(classes):
                raise ConfigError(f"the oracle answered {label!r} for example {keys[i]}: answer a class index "
                                  f"0-{len(classes) - 1}")  # fmt: skip
            return int(label)

    saved = saved_answers(journal, classes) if replay else {}
    return Answers(journal, keys, ask, saved, missing)
