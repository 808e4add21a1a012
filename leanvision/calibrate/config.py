"""The configuration of one operational calibration run (:func:`leanvision.calibrate.run`), validated by pydantic."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from leanvision.calibrate.select import RULES
from leanvision.calibrate.shift import KINDS
from leanvision.names import SPLITS
from leanvision.runs import RESUMABLE_KEYS

# What a resume may change besides where and how fast it runs: the checkpoint's path, the batch size and where the
# labels come from; nothing that decides which examples are selected.
RESUMABLE = RESUMABLE_KEYS | {"checkpoint", "batch_size", "labels"}


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
        "split", description="split: the data's own labels; file: a CSV of key,label; prompt: ask a person"
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
    threads: int | None = Field(None, ge=1, description="CPU threads (default: torch's)")
    batch_size: int = Field(256, ge=1, description="images per forward pass")
