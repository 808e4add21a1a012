"""A calibration file at work with its checkpoint: its numbers on data, and the calibrated confidence of images."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from leanvision.calibrate.config import DataConfig
from leanvision.calibrate.features import ModelOutputs, collect_outputs
from leanvision.calibrate.metrics import summary
from leanvision.calibrate.opcal import OperationalCalibrator
from leanvision.calibrate.operational import classes_of, operational_data
from leanvision.calibrate.workflow import batches
from leanvision.errors import ConfigError


@dataclass
class CalibrationEval:
    """A checkpoint's accuracy and loss on some data, and its calibration metrics before -> after a calibration file."""

    data: str  # what was evaluated, e.g. "mnist test, rotate 25-45 deg, held-out test part"
    images: int
    acc: float
    top5: float
    loss: float
    before: dict[str, float]
    after: dict[str, float]
    note: str | None  # one line when the data differ from what the calibrator was fitted for
    calibration: Path

    def summary(self) -> str:
        """Lines for a person: the note, accuracy and loss, each calibration metric before -> after."""
        from leanvision.engine.use import accuracy_line

        b, a = self.before, self.after
        return "\n".join([*([f"note: {self.note}"] if self.note else []),
                          accuracy_line(self.data, self.images, self.acc, self.top5, self.loss),
                          f"calibrated with {self.calibration} (uncalibrated -> calibrated):",
                          f"  Brier {b['brier']:.4f} -> {a['brier']:.4f}",
                          f"  ECE {100 * b['ece']:.2f}% -> {100 * a['ece']:.2f}%",
                          f"  high-confidence (>0.9) errors {b['hce']} -> {a['hce']}",
                          f"  confident-correct (>0.9) {b['confident_correct']} -> {a['confident_correct']}",
                          f"  accuracy {100 * b['accuracy']:.2f}% (unchanged: calibration never changes a prediction)",
                          ])  # fmt: skip


def _load(checkpoint: Path, calibration: Path, device: str) -> tuple[OperationalCalibrator, Any, dict[str, Any]]:
    from leanvision.config import check_device
    from leanvision.engine import load_trained

    cal = OperationalCalibrator.load(calibration)  # a bad file fails before any work
    return cal, *load_trained(checkpoint, check_device(device))


def _outputs(model: Any, cal: OperationalCalibrator, inputs: Iterable[torch.Tensor], *, device: str,
             calibration: Path, checkpoint: Path) -> ModelOutputs:  # fmt: skip
    """The model's outputs on ``inputs``; a calibration file fitted on another model's features is refused."""
    outputs = collect_outputs(model, inputs, device=device)
    want, got = len(cal.pca_mean), outputs.features.shape[1]
    if want != got:  # its GP would read meaningless inputs
        made_for = (cal.meta or {}).get("model", "another model")
        raise ConfigError(f"'{calibration}' was made for {made_for} (features of {want} dimensions), but "
                          f"{checkpoint}'s model has {got}: calibrate this checkpoint with `leanvision calibrate` and "
                          "pass that file")  # fmt: skip
    return outputs


def evaluate_calibration(checkpoint: str | Path, calibration: str | Path, *, dataset: str | None = None,
                         split: str | None = None, data_dir: str | None = None, batch_size: int = 256,
                         device: str = "cpu") -> CalibrationEval:  # fmt: skip
    """Accuracy, loss and calibration metrics before/after of ``checkpoint`` with ``calibration``, by default on the
    held-out test part the file was fitted for (the run's report's numbers), else on ``dataset``/``split``."""
    from leanvision.engine import checkpoint_data, input_contract
    from leanvision.engine.evaluate import correct_topk

    checkpoint, calibration = Path(checkpoint), Path(calibration)
    cal, model, ckpt = _load(checkpoint, calibration, device)
    size, mean, std = input_contract(ckpt)
    fitted = cal.meta.get("operational_data")
    other = fitted is not None and ((dataset is not None and dataset != fitted["dataset"])
                                    or (split is not None and split != fitted["split"]))  # fmt: skip
    note = None
    if fitted is not None and fitted["test_keys"] and not other:
        d = DataConfig(**{k: fitted[k] for k in ("dataset", "split", "shift", "folder")})
        data = operational_data(d, ckpt=ckpt, checkpoint=checkpoint, data_dir=data_dir or fitted["data_dir"],
                                classes=cal.meta.get("classes") or classes_of(ckpt, 0))  # fmt: skip
        index = {k: i for i, k in enumerate(data.keys)}
        missing = [k for k in fitted["test_keys"] if k not in index]
        if missing or data.targets is None:
            raise ConfigError(f"'{calibration}' was fitted for {fitted['what']}, whose test examples (e.g. "
                              f"{(missing or fitted['test_keys'])[0]}) are no longer there with their labels: "
                              "evaluate on a dataset split with --dataset/--split")  # fmt: skip
        idx = torch.tensor([index[k] for k in fitted["test_keys"]])
        images, targets = data.images[idx], data.targets[idx]
        what = f"{fitted['what']}, held-out test part"
    else:
        name, ds = checkpoint_data(ckpt, checkpoint, split=split or "test", data_dir=data_dir, dataset=dataset)
        ds = ds.resized(size[1:])
        images, targets, what = ds.images, ds.targets, f"{name} {split or 'test'}"
        if fitted is None:
            note = (f"'{calibration}' does not record the data it was fitted for (an older file); {what} may not be "
                    "that data: calibrate again to record it")  # fmt: skip
        else:
            why = "" if other else " (its run held out no test part: data.test 0)"
            note = f"'{calibration}' was fitted for {fitted['what']}{why}; evaluating on {what}, which is other data"
    outputs = _outputs(model, cal, batches(images, mean, std, batch_size), device=device, calibration=calibration,
                       checkpoint=checkpoint)  # fmt: skip
    logits = torch.from_numpy(outputs.logits).double()
    top5, loss = correct_topk(logits, targets, (5,))[0].item() / len(targets), F.cross_entropy(logits, targets).item()
    before, correct = outputs.confidence, outputs.predictions == targets.numpy()
    return CalibrationEval(what, len(targets), float(correct.mean()), top5, loss, summary(before, correct),
                           summary(cal.calibrate(outputs), correct, before=before), note, calibration)  # fmt: skip


def calibrated_confidences(checkpoint: str | Path, calibration: str | Path, images: Iterable[str | Path], *,
                           device: str = "cpu") -> list[float | None]:  # fmt: skip
    """The calibrated confidence of each image file's prediction, in :func:`leanvision.engine.predict`'s order (None:
    unreadable)."""
    from leanvision.engine.use import image_files, input_contract, load_image
    from leanvision.errors import LeanVisionError

    checkpoint, calibration = Path(checkpoint), Path(calibration)
    cal, model, ckpt = _load(checkpoint, calibration, device)
    contract = input_contract(ckpt)
    out: list[float | None] = []
    for path in image_files(images):
        try:
            x, _ = load_image(path, contract)
        except LeanVisionError:
            out.append(None)  # predict reports why
            continue
        outputs = _outputs(model, cal, [x], device=device, calibration=calibration, checkpoint=checkpoint)
        out.append(float(cal.calibrate(outputs)[0]))
    return out
