"""Operational calibration (arXiv 1910.02352) of a checkpoint as one call that writes its run directory."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from leanvision._io import atomic_write_text
from leanvision.calibrate.config import RESUMABLE, CalibrateConfig
from leanvision.calibrate.opcal import OperationalCalibrator
from leanvision.calibrate.operational import (
    Answers,
    OperationalData,
    Oracle,
    answers,
    classes_of,
    operational_data,
    split_pool_test,
)
from leanvision.config import check_device, check_threads, load_config, writable_dir
from leanvision.errors import ConfigError
from leanvision.runs import changed_settings, check_run_dir

ANSWERS, RUN_CONFIG, QUEUE = "labels.jsonl", "config.yaml", "label_queue"
RESULTS = ("calibration.npz", "summary.json", "report.html", "report.md")
GALLERY = 48  # selected examples shown in the report


@dataclass
class CalibrateResult:
    """What a calibration run wrote and measured."""

    out_dir: Path
    calibration: Path  # calibration.npz: the calibrator, with the model and operational data it was fitted for
    report: Path  # report.html (report.md beside it)
    calibrator: OperationalCalibrator
    test_metrics: dict[str, dict[str, float]] | None  # per method on the held-out test part; None without one
    selected: list[dict[str, Any]]  # key, label, prediction, confidence before/after, in the order selected
    answers: dict[str, int]  # {"replayed": from the journal, "new": asked in this call}
    line: str  # one line: what was done and measured, where the files are


def run(config: CalibrateConfig | dict[str, Any] | str | Path, *, resume: bool = False, force: bool = False,
        oracle: Oracle | None = None, progress: bool = True) -> CalibrateResult:  # fmt: skip
    """Select and label ``budget`` pool examples, fit the calibrator, write it with a summary and a report.

    ``resume`` replays the answers journalled in out_dir (each the moment it is given) and asks only for the rest;
    ``force`` starts over; ``oracle(LabelRequest) -> class index`` answers ``labels.source: prompt``.
    """
    from leanvision.calibrate.features import collect_outputs
    from leanvision.engine import input_contract, load_trained

    cfg = load_config(CalibrateConfig, config, source="calibrate config")
    out = Path(cfg.out_dir)
    _check_out_dir(cfg, out, resume=resume, force=force)
    if not Path(cfg.checkpoint).is_file():
        raise ConfigError(f"checkpoint: no file at '{cfg.checkpoint}'; train one with `leanvision train CONFIG` "
                          "(e.g. configs/lenet5_mnist.yaml) and give its best.pt")  # fmt: skip
    check_device(cfg.device)
    threads = torch.get_num_threads()
    try:
        if check_threads(cfg.threads):
            torch.set_num_threads(cfg.threads)
        model, ckpt = load_trained(cfg.checkpoint, cfg.device)
        size, mean, std = input_contract(ckpt)
        with torch.no_grad():
            classes = classes_of(ckpt, int(model.eval()(torch.zeros(1, *size, device=cfg.device)).shape[1]))
        data = operational_data(cfg.data, ckpt=ckpt, checkpoint=Path(cfg.checkpoint), data_dir=cfg.data_dir,
                                classes=classes)  # fmt: skip
        pool, test = split_pool_test(data, cfg.data, budget=cfg.budget, seed=cfg.seed)
        # a bad labels file fails before anything is written; answers saved earlier count only with resume
        oracle_ = answers(cfg.labels, data, pool, classes, out / ANSWERS, oracle=oracle, budget=cfg.budget,
                          replay=resume)  # fmt: skip

        def outputs(part: np.ndarray) -> Any:
            images = data.images[torch.as_tensor(part)]
            return collect_outputs(model, batches(images, mean, std, cfg.batch_size), device=cfg.device)

        # the test part in its own batches, as evaluate_calibration runs it: the same numbers, to the last digit
        pool_out, test_out = outputs(pool), outputs(test) if len(test) else None
        writable_dir(out)
        if force:
            for name in (ANSWERS, RUN_CONFIG, *RESULTS):
                (out / name).unlink(missing_ok=True)
            shutil.rmtree(out / QUEUE, ignore_errors=True)
        atomic_write_text(out / RUN_CONFIG, yaml.safe_dump(cfg.model_dump(), sort_keys=False))
        (out / ANSWERS).touch()
        selection = _select(cfg, pool_out, oracle_, progress=progress and cfg.labels.source != "prompt")
        return _finish(_Run(cfg, out, ckpt["arch"]["name"], classes, data, pool, test, pool_out, test_out), selection,
                       oracle_)  # fmt: skip
    finally:
        torch.set_num_threads(threads)


def _check_out_dir(cfg: CalibrateConfig, out: Path, *, resume: bool, force: bool) -> None:
    """The shared resume rule (leanvision.runs); ``force`` starts over instead."""
    if resume and force:
        raise ConfigError("give --resume (continue the run) or --force (start over), not both")
    if force:
        return
    held = any((out / n).exists() for n in (RUN_CONFIG, ANSWERS, *RESULTS))
    changed = []
    if resume and held:
        saved = yaml.safe_load((out / RUN_CONFIG).read_text(encoding="utf-8")) if (out / RUN_CONFIG).is_file() else {}
        changed = changed_settings(saved or {}, cfg.model_dump(), resumable=RESUMABLE)
    try:
        check_run_dir(out, what="calibration run", held=held, resume=resume, changed=changed)
    except ConfigError as e:
        if resume:
            raise
        raise ConfigError(f"{e}; or start over there with --force") from None


def batches(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, batch_size: int):
    """uint8 images, normalised as the model was trained, ``batch_size`` at a time."""
    from leanvision.data import normalize

    for i in range(0, len(images), batch_size):
        yield normalize(images[i : i + batch_size], mean, std)


def _select(cfg: CalibrateConfig, pool_out: Any, oracle: Answers, *, progress: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from leanvision.calibrate.select import select_and_calibrate

    c = cfg.calibrator
    cal = OperationalCalibrator(n_components=c.n_components, per_class=c.per_class, expectation=c.expectation,
                                seed=cfg.seed)  # fmt: skip
    bar = Progress(TextColumn("labelling"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   disable=not progress, transient=True)  # fmt: skip
    with bar:
        task = bar.add_task("labels", total=cfg.budget)
        return select_and_calibrate(pool_out, oracle, cfg.budget, rule=cfg.rule, calibrator=cal, seed=cfg.seed,
                                    on_label=lambda n: bar.update(task, completed=n))  # fmt: skip


# ---- results -----------------------------------------------------------------------------------------------------


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


def _fitted_for(run: _Run) -> dict[str, Any]:
    """The fitted-for data as the calibration file records it: enough to rebuild the held-out test part."""
    d = run.cfg.data
    return {"what": run.data.what, "dataset": d.dataset, "split": d.split,
            "shift": d.shift.model_dump() if d.shift else None,
            "folder": str(Path(d.folder).resolve()) if d.folder else None,
            "data_dir": str(Path(run.cfg.data_dir).resolve()) if run.cfg.data_dir else None, "seed": run.cfg.seed,
            "pool": len(run.pool), "test_keys": [run.data.keys[i] for i in run.test]}  # fmt: skip


def _finish(run: _Run, selection: Any, oracle: Answers) -> CalibrateResult:
    """Save the calibrator, summary.json and the report."""
    from leanvision.calibrate.baselines import IsotonicCalibration, TemperatureScaling
    from leanvision.calibrate.metrics import summary
    from leanvision.calibrate.report import calibration_report

    cfg, cal = run.cfg, selection.calibrator
    idx, labels = np.array(selection.indices), np.array(selection.labels)
    labelled = run.pool_out.take(idx)
    meta = {"checkpoint": str(Path(cfg.checkpoint).resolve()), "model": run.model, "classes": run.classes,
            "feature_dim": int(run.pool_out.features.shape[1]), "data": run.data.what, "rule": cfg.rule,
            "labels": len(idx), "operational_data": _fitted_for(run)}  # fmt: skip
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
        out = run.test_out
        correct = out.predictions == run.data.targets[torch.as_tensor(run.test)].numpy()
        confidences = {
            "uncalibrated": out.confidence,
            "operational calibration": cal.calibrate(out),
            "temperature scaling": TemperatureScaling().fit(labelled, labels).calibrate(out),
            "isotonic regression": IsotonicCalibration().fit(labelled, labels).calibrate(out),
        }
        metrics = {k: summary(c, correct, before=out.confidence) for k, c in confidences.items()}
        test = {"correct": correct, "confidences": confidences, "metrics": metrics}
    answered = {"replayed": oracle.replayed, "new": oracle.answered}
    result = {
        "checkpoint": meta["checkpoint"], "model": run.model, "data": run.data.what, "pool": len(run.pool),
        "test": len(run.test), "budget": cfg.budget, "rule": cfg.rule, "labels_source": cfg.labels.source,
        "answers": answered, "test_metrics": test["metrics"] if test else None,
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
    return CalibrateResult(run.out, run.out / "calibration.npz", html, cal, result["test_metrics"], selected,
                           answered, _one_line(run, test, len(idx), html))  # fmt: skip


def _one_line(run: _Run, test: dict | None, n_labels: int, html: Path) -> str:
    head = f"{run.model} on {run.data.what}: {n_labels} labels ({run.cfg.rule})"
    tail = f"calibration.npz, summary.json and {html.name} in {run.out}"
    if test is None:
        return f"{head}; no labelled test part (set data.test to measure the result); {tail}"
    b, a = test["metrics"]["uncalibrated"], test["metrics"]["operational calibration"]
    return (f"{head}; on {len(run.test)} test examples: Brier {b['brier']:.4f} -> {a['brier']:.4f}, ECE "
            f"{100 * b['ece']:.2f}% -> {100 * a['ece']:.2f}%, high-confidence errors {b['hce']} -> {a['hce']}, "
            f"accuracy {100 * a['accuracy']:.2f}% (unchanged); {tail}")  # fmt: skip
