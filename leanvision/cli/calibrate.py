"""`leanvision calibrate`: operational calibration (arXiv 1910.02352) of a trained checkpoint on operational data."""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from leanvision._io import append_jsonl, atomic_write_text, read_jsonl
from leanvision.calibrate.select import RULES
from leanvision.calibrate.shift import KINDS
from leanvision.cli._common import Interrupted, check_device, writable_dir
from leanvision.cli.config import read_yaml, validate_model
from leanvision.errors import ConfigError
from leanvision.names import SPLITS

ANSWERS, RUN_CONFIG, QUEUE = "labels.jsonl", "config.yaml", "label_queue"
RESULTS = ("calibration.npz", "summary.json", "report.html", "report.md")
# What a resume may change: where and how it runs, and where the labels come from; not what is selected.
RESUMABLE = ("checkpoint", "data_dir", "out_dir", "device", "batch_size", "labels")
SHOWN = 5  # offenders listed in one error line


class ShiftConfig(BaseModel):
    """A synthetic distribution shift applied to a registered dataset (leanvision.calibrate.shift)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal[KINDS] = Field(..., description="rotate or darken")  # type: ignore[valid-type]
    degrees: tuple[float, float] = Field((25.0, 45.0), description="rotate: angle range [low, high] in degrees")
    factor: float = Field(0.5, ge=0, le=1, description="darken: pixel values times this")
    classes: list[int] | None = Field(None, description="shift only the images of these classes (default: all)")
    seed: int = Field(0, ge=0, description="seed of the rotation angles")


class DataConfig(BaseModel):
    """The operational data: a registered dataset (optionally shifted) or a folder of images."""

    model_config = ConfigDict(extra="forbid")

    dataset: str | None = Field(None, description="a registered dataset name (or give folder)")
    split: Literal[SPLITS] = Field("test", description="the dataset split")  # type: ignore[valid-type]
    shift: ShiftConfig | None = Field(None, description="a synthetic shift of the dataset's images")
    folder: str | None = Field(None, description="a directory of images, in class subfolders if labels come from it")
    pool: int | None = Field(None, ge=0, description="examples in the unlabelled pool (default: all but test)")
    test: int = Field(0, ge=0, description="labelled examples held out to measure the result (0: none)")

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if (self.dataset is None) == (self.folder is None):
            raise ValueError("give either dataset: NAME or folder: DIR (exactly one)")
        if self.folder is not None and self.shift is not None:
            raise ValueError("shift applies to a registered dataset, not to a folder: remove shift")
        return self


class LabelsConfig(BaseModel):
    """Where the labels of the selected examples come from."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["split", "file", "prompt"] = Field(
        "split", description="split: the data's own labels; file: a CSV of key,label; prompt: ask in the terminal"
    )
    path: str | None = Field(None, description="the CSV file (source: file)")

    @model_validator(mode="after")
    def _path_with_file(self) -> LabelsConfig:
        if (self.source == "file") != (self.path is not None):
            raise ValueError("source: file needs path: FILE.csv, and path applies only to source: file")
        return self


class CalibratorConfig(BaseModel):
    """Options of the OperationalCalibrator."""

    model_config = ConfigDict(extra="forbid")

    n_components: int = Field(20, ge=1, description="PCA components of the features the GP reads")
    per_class: bool = Field(False, description="one GP per predicted class with enough labels")
    expectation: bool = Field(False, description="E[clip(c + f)] under the GP posterior instead of clip(c + mean)")


class CalibrateConfig(BaseModel):
    """One operational calibration run; unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: str = Field(..., description="a checkpoint written by `leanvision train` (best.pt)")
    data: DataConfig = Field(..., description="the operational data")
    labels: LabelsConfig = Field(default_factory=LabelsConfig, description="where labels come from")
    budget: int = Field(..., ge=2, description="how many examples to label")
    rule: Literal[RULES] = Field(RULES[0], description="which examples to label next")  # type: ignore[valid-type]
    calibrator: CalibratorConfig = Field(default_factory=CalibratorConfig, description="calibrator options")
    seed: int = Field(0, ge=0, description="seed of the pool/test split and of the selection")
    data_dir: str | None = Field(None, description="dataset root (default: the checkpoint's, else $LEANVISION_DATA)")
    out_dir: str = Field("runs/calibrate", description="where answers, calibration and report go")
    device: str = Field("cpu", description="cpu, cuda or cuda:N")
    batch_size: int = Field(256, ge=1, description="images per forward pass")

    def defining(self) -> dict[str, Any]:
        """The part that decides which examples are selected: a resume must keep it."""
        return self.model_dump(exclude=set(RESUMABLE))


# ---- config ------------------------------------------------------------------------------------------------------


def load_calibrate_config(path: str | Path, overrides: dict[str, Any] | None = None) -> CalibrateConfig:
    """Read and validate a calibrate YAML config (+ non-None ``overrides``); a problem is a one-line ConfigError."""
    data = read_yaml(path) | {k: v for k, v in (overrides or {}).items() if v is not None}
    return validate_model(CalibrateConfig, data, str(path))


# ---- operational data --------------------------------------------------------------------------------------------


@dataclass
class OperationalData:
    """Images at the model's input size (uint8), their labels when the data has them, and a key per example."""

    images: torch.Tensor
    targets: torch.Tensor | None
    keys: list[str]
    what: str


def _classes(ckpt: dict[str, Any], num_outputs: int) -> list[str]:
    return list((ckpt.get("meta") or {}).get("classes") or [str(i) for i in range(num_outputs)])


def _dataset_data(cfg: CalibrateConfig, ckpt: dict[str, Any], size: tuple[int, int, int]) -> OperationalData:
    from leanvision.calibrate.shift import apply_shift
    from leanvision.cli.use import _split_data

    d = cfg.data
    _, ds = _split_data(ckpt, Path(cfg.checkpoint), split=d.split, data_dir=cfg.data_dir, dataset=d.dataset)
    classes = (ckpt.get("meta") or {}).get("classes")
    if classes is not None and list(classes) != list(ds.classes):
        raise ConfigError(f"data.dataset: {cfg.checkpoint} was trained on other classes than {d.dataset}'s; "
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


def _folder_data(cfg: CalibrateConfig, classes: list[str], size: tuple[int, int, int]) -> OperationalData:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    from leanvision.data import decode_file
    from leanvision.data.folder import list_images, stack_images

    root = Path(cfg.data.folder or "")
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


def _split(cfg: CalibrateConfig, data: OperationalData) -> tuple[np.ndarray, np.ndarray]:
    """Pool and test indices into ``data``: a seeded shuffle, the pool first."""
    d, n = cfg.data, len(data.keys)
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
    if cfg.budget > pool:
        raise ConfigError(f"budget: the labelling budget ({cfg.budget}) is larger than the pool ({pool} examples): "
                          "lower the budget or give a larger pool")  # fmt: skip
    perm = np.random.default_rng(cfg.seed).permutation(n)
    return perm[:pool], perm[pool : pool + d.test]


def _batches(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, batch_size: int):
    from leanvision.data import normalize

    for i in range(0, len(images), batch_size):
        yield normalize(images[i : i + batch_size], mean, std)


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


def terminal_image(image: torch.Tensor, *, width: int = 28) -> Any:
    """A uint8 ``[C, H, W]`` image as rich text of half blocks (two pixel rows per line)."""
    from PIL import Image
    from rich.text import Text

    arr = image.permute(1, 2, 0).numpy()
    pil = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).convert("RGB")
    w = min(width, pil.width) if pil.width >= width else width  # small images are enlarged to stay visible
    h = max(2, round(pil.height * w / pil.width / 2) * 2)
    px = np.asarray(pil.resize((w, h), Image.NEAREST))
    text = Text()
    for y in range(0, h, 2):
        for x in range(w):
            top, bottom = px[y, x], px[y + 1, x]
            text.append("▀", style=f"rgb({top[0]},{top[1]},{top[2]}) on rgb({bottom[0]},{bottom[1]},{bottom[2]})")
        text.append("\n")
    return text


def save_png(image: torch.Tensor, path: Path, *, min_side: int = 112) -> Path:
    """Save a uint8 ``[C, H, W]`` image, enlarged (nearest) so that small ones can be seen."""
    from PIL import Image

    arr = image.permute(1, 2, 0).numpy()
    pil = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
    scale = max(1, math.ceil(min_side / min(pil.size)))
    path.parent.mkdir(parents=True, exist_ok=True)
    pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST).save(path)
    return path


class _Prompt:
    """Ask a person for each label: the image in the terminal and as a PNG under out_dir/label_queue/."""

    def __init__(self, images: torch.Tensor, keys: list[str], classes: list[str], queue: Path, console: Any,
                 budget: int) -> None:  # fmt: skip
        self.images, self.keys, self.classes, self.queue = images, keys, classes, queue
        self.console, self.budget = console, budget
        self.asked = 0

    def __call__(self, i: int, done: int) -> int:
        import typer

        key = self.keys[i]
        png = save_png(self.images[i], self.queue / (key.replace("/", "__") + ("" if key.endswith(".png") else ".png")))
        self.console.print(terminal_image(self.images[i]), end="")
        self.console.print(f"example {key}: {png}", soft_wrap=True)
        names = ", ".join(self.classes[:10]) + (" ..." if len(self.classes) > 10 else "")
        while True:
            text = typer.prompt(f"[{done + 1}/{self.budget}] class of {key} (0-{len(self.classes) - 1} or a name)")
            label = parse_label(text, self.classes)
            if label is not None:
                self.asked += 1
                return label
            self.console.print(f"'{text}' is not a class: give an index 0-{len(self.classes) - 1} or one of {names}")


class Answers:
    """The oracle of the selection: labels replayed from labels.jsonl, else asked of the source and appended to it
    at once, so that an interruption loses no answer."""

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


def _saved_answers(path: Path, classes: list[str]) -> dict[str, int]:
    saved = {}
    for rec in read_jsonl(path) if path.is_file() else []:
        label = rec.get("label")
        if not isinstance(label, int) or not 0 <= label < len(classes):
            raise ConfigError(f"{path}: answer {rec} is not a class index of the model; fix or remove that line")
        saved[str(rec.get("key"))] = label
    return saved


def _oracle(cfg: CalibrateConfig, data: OperationalData, pool: np.ndarray, classes: list[str], out: Path,
            console: Any, *, replay: bool) -> Answers:  # fmt: skip
    keys = [data.keys[i] for i in pool]
    source = cfg.labels.source
    missing = None
    if source == "split":
        if data.targets is None:
            raise ConfigError("labels.source: split needs the data's own labels: put the folder's images in class "
                              "subfolders, or use source: file or prompt")  # fmt: skip
        targets = data.targets[torch.as_tensor(pool)].tolist()

        def ask(i: int, _done: int) -> int:
            return targets[i]
    elif source == "file":
        path = Path(cfg.labels.path or "")
        table = read_label_file(path, data.keys, classes)

        def ask(i: int, _done: int) -> int:
            return table[keys[i]]

        def missing(new: list[str]) -> None:
            absent = [k for k in new if k not in table]
            if absent:
                raise ConfigError(f"{path} has no label for the selected examples {_offenders(absent)}: add them "
                                  f"(answers so far are kept) and run again with --resume")  # fmt: skip
    else:
        ask = _Prompt(data.images[torch.as_tensor(pool)], keys, classes, out / QUEUE, console, cfg.budget)
    saved = _saved_answers(out / ANSWERS, classes) if replay else {}
    return Answers(out / ANSWERS, keys, ask, saved, missing)


# ---- the run -----------------------------------------------------------------------------------------------------


def _check_out_dir(cfg: CalibrateConfig, out: Path, *, resume: bool, force: bool) -> None:
    if resume and force:
        raise ConfigError("give --resume (continue the run) or --force (start over), not both")
    held = [n for n in (ANSWERS, *RESULTS) if (out / n).exists()]
    if resume:
        if not (out / RUN_CONFIG).is_file():
            raise ConfigError(f"--resume: no calibration run in '{out}' (no {RUN_CONFIG}); start without --resume")
        saved = yaml.safe_load((out / RUN_CONFIG).read_text(encoding="utf-8")) or {}
        old = {k: v for k, v in saved.items() if k not in RESUMABLE}
        changed = sorted(k for k, v in cfg.defining().items() if json.dumps(old.get(k)) != json.dumps(v))
        if changed:
            raise ConfigError(f"--resume replays the answers of the run in '{out}', which was started with other "
                              f"{', '.join(changed)}; restore them, or start over with --force")  # fmt: skip
    elif held and not force:
        raise ConfigError(f"'{out}' already holds a calibration run ({', '.join(held)}): continue it with --resume, "
                          "start over with --force, or choose another out_dir")  # fmt: skip


def _start_fresh(out: Path) -> None:
    for name in (ANSWERS, RUN_CONFIG, *RESULTS):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / QUEUE, ignore_errors=True)


def run_calibrate(cfg: CalibrateConfig, *, config: str | Path, resume: bool = False, force: bool = False,
                  progress: bool = True) -> str:  # fmt: skip
    """Select and label ``cfg.budget`` pool examples, fit the calibrator, write it with a summary and a report."""
    from rich.console import Console

    from leanvision.calibrate import collect_outputs
    from leanvision.cli.use import input_contract, load_trained

    out = Path(cfg.out_dir)
    _check_out_dir(cfg, out, resume=resume, force=force)
    if not Path(cfg.checkpoint).is_file():
        raise ConfigError(f"checkpoint: no file at '{cfg.checkpoint}'; train one with `leanvision train CONFIG` "
                          "(e.g. configs/lenet5_mnist.yaml) and give its best.pt")  # fmt: skip
    check_device(cfg.device)
    model, ckpt = load_trained(Path(cfg.checkpoint), cfg.device)
    size, mean, std = input_contract(ckpt)
    classes = _classes(ckpt, _num_outputs(model, size, cfg.device))
    data = _folder_data(cfg, classes, size) if cfg.data.folder is not None else _dataset_data(cfg, ckpt, size)
    pool, test = _split(cfg, data)
    console = Console()
    # a bad labels file fails before anything is written; answers saved earlier count only with --resume
    oracle = _oracle(cfg, data, pool, classes, out, console, replay=resume)
    outputs = collect_outputs(model, _batches(data.images[torch.as_tensor(np.concatenate([pool, test]))], mean, std,
                                              cfg.batch_size), device=cfg.device)  # fmt: skip
    pool_out, test_out = outputs.take(np.arange(len(pool))), outputs.take(np.arange(len(pool), len(outputs)))
    writable_dir(out)
    if force:
        _start_fresh(out)
    atomic_write_text(out / RUN_CONFIG, yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    (out / ANSWERS).touch()
    selection = _select(cfg, pool_out, oracle, config=config, progress=progress and cfg.labels.source != "prompt")
    run = _Run(cfg, out, ckpt["arch"]["name"], classes, data, pool, test, pool_out, test_out)
    return _finish(run, selection, oracle)


def _num_outputs(model: torch.nn.Module, size: tuple[int, int, int], device: str) -> int:
    with torch.no_grad():
        return int(model(torch.zeros(1, *size, device=device)).shape[1])


def _select(cfg: CalibrateConfig, pool_out: Any, oracle: Answers, *, config: str | Path, progress: bool) -> Any:
    """Run the selection with a progress bar; Ctrl-C (or the end of the prompt's input) keeps every answer."""
    import typer
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from leanvision.calibrate import OperationalCalibrator, select_and_calibrate

    c = cfg.calibrator
    cal = OperationalCalibrator(n_components=c.n_components, per_class=c.per_class, expectation=c.expectation,
                                seed=cfg.seed)  # fmt: skip
    bar = Progress(TextColumn("labelling"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   disable=not progress, transient=True)  # fmt: skip
    try:
        with bar:
            task = bar.add_task("labels", total=cfg.budget)
            return select_and_calibrate(pool_out, oracle, cfg.budget, rule=cfg.rule, calibrator=cal, seed=cfg.seed,
                                        on_label=lambda n: bar.update(task, completed=n))  # fmt: skip
    except (KeyboardInterrupt, typer.Abort):  # Abort: the prompt's input ended
        n = len(oracle.saved)
        raise Interrupted(f"labelling interrupted; {n} answers are saved in {Path(cfg.out_dir) / ANSWERS}: continue "
                          f"with: leanvision calibrate {config} --resume") from None  # fmt: skip


# ---- results -----------------------------------------------------------------------------------------------------

GALLERY = 48  # selected examples shown in the report


@dataclass
class _Run:
    """What the results are computed from."""

    cfg: CalibrateConfig
    out: Path
    model: str
    classes: list[str]
    data: OperationalData
    pool: np.ndarray
    test: np.ndarray
    pool_out: Any
    test_out: Any


def _json_safe(value: Any) -> Any:
    """NaN (e.g. a reduction of zero errors) as null: strict JSON has no NaN."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _test_confidences(run: _Run, cal: Any, labelled: Any, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Confidences on the test part: uncalibrated, ours, and the baselines fitted on the same labels."""
    from leanvision.calibrate import IsotonicCalibration, TemperatureScaling

    out = run.test_out
    return {
        "uncalibrated": out.confidence,
        "operational calibration": cal.calibrate(out),
        "temperature scaling": TemperatureScaling().fit(labelled, labels).calibrate(out),
        "isotonic regression": IsotonicCalibration().fit(labelled, labels).calibrate(out),
    }


def _finish(run: _Run, selection: Any, oracle: Answers) -> str:
    """Save the calibrator, summary.json and the report; return a one-line summary."""
    from leanvision.calibrate import summary
    from leanvision.calibrate.report import calibration_report

    cfg, cal = run.cfg, selection.calibrator
    idx, labels = np.array(selection.indices), np.array(selection.labels)
    labelled = run.pool_out.take(idx)
    meta = {"checkpoint": str(Path(cfg.checkpoint).resolve()), "model": run.model, "classes": run.classes,
            "feature_dim": int(run.pool_out.features.shape[1]), "data": run.data.what, "rule": cfg.rule,
            "labels": len(idx)}  # fmt: skip
    cal.save(run.out / "calibration.npz", meta=meta)
    pool_after = cal.calibrate(run.pool_out)
    preds, conf = run.pool_out.predictions, run.pool_out.confidence
    selected = [
        {"key": run.data.keys[run.pool[i]], "label": run.classes[y], "prediction": run.classes[preds[i]],
         "confidence_before": float(conf[i]), "confidence_after": float(pool_after[i])}
        for i, y in zip(idx.tolist(), labels.tolist(), strict=True)
    ]  # fmt: skip
    test = None
    if len(run.test):
        correct = run.test_out.predictions == run.data.targets[torch.as_tensor(run.test)].numpy()
        test = {"correct": correct, "confidences": _test_confidences(run, cal, labelled, labels)}
        before = test["confidences"]["uncalibrated"]
        test["metrics"] = {k: summary(c, correct, before=before) for k, c in test["confidences"].items()}
    result = {
        "checkpoint": meta["checkpoint"], "model": run.model, "data": run.data.what, "pool": len(run.pool),
        "test": len(run.test), "budget": cfg.budget, "rule": cfg.rule, "labels_source": cfg.labels.source,
        "answers": {"replayed": oracle.replayed, "new": oracle.answered},
        "test_metrics": test["metrics"] if test else None,
        "pool_confidence": {"before_mean": float(conf.mean()), "after_mean": float(pool_after.mean())},
        "selected": selected,
    }  # fmt: skip
    atomic_write_text(run.out / "summary.json", json.dumps(_json_safe(result), indent=2) + "\n")
    gallery = [{**s, "image": run.data.images[run.pool[i]]} for i, s in zip(idx[:GALLERY], selected, strict=False)]
    html, _ = calibration_report(
        run.out,
        title=f"leanvision calibrate: {run.model} on {run.data.what}",
        intro=f"Operational calibration (arXiv 1910.02352): {len(idx)} of {len(run.pool)} pool examples labelled "
        f"(rule {cfg.rule}, labels from {cfg.labels.source}); checkpoint {cfg.checkpoint}."
        + (f" The gallery shows the first {GALLERY} labelled examples." if len(idx) > GALLERY else ""),
        test=test,
        pool_confidence=(run.pool_out.confidence, pool_after),
        gallery=gallery,
    )
    return _one_line(run, test, len(idx), html)


def _one_line(run: _Run, test: dict | None, n_labels: int, html: Path) -> str:
    head = f"{run.model} on {run.data.what}: {n_labels} labels ({run.cfg.rule})"
    tail = f"calibration.npz, summary.json and {html.name} in {run.out}"
    if test is None:
        return f"{head}; no labelled test part (set data.test to measure the result); {tail}"
    b, a = test["metrics"]["uncalibrated"], test["metrics"]["operational calibration"]
    return (f"{head}; on {len(run.test)} test examples: Brier {b['brier']:.4f} -> {a['brier']:.4f}, ECE "
            f"{100 * b['ece']:.2f}% -> {100 * a['ece']:.2f}%, high-confidence errors {b['hce']} -> {a['hce']}, "
            f"accuracy {100 * a['accuracy']:.2f}% (unchanged); {tail}")  # fmt: skip
