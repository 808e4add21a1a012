"""The `leanvision train` configuration: YAML file and/or flags, validated by pydantic."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from leanvision.errors import ConfigError


class TrainConfig(BaseModel):
    """Everything one training run needs; unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = "resnet20"
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    dataset: str = "cifar10"
    data_dir: str | None = None
    subset: int | None = Field(None, ge=1, description="class-balanced training subset size")
    test_subset: int | None = Field(None, ge=1)
    image_size: int | None = Field(None, ge=1, description="resize every image to this square size")
    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(128, ge=1, le=65_536)
    optimizer: Literal["sgd", "adamw", "adam", "rmsprop"] = "sgd"
    lr: float = Field(0.1, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0, lt=1)
    scheduler: Literal["cosine", "step", "constant", "onecycle"] = "cosine"
    warmup_epochs: int = Field(0, ge=0)
    seed: int = 0
    threads: int | None = Field(None, ge=1, le=1024)
    out_dir: str = "runs/train"


def _describe(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        known = ", ".join(TrainConfig.model_fields)
        return f"{source}: unknown key '{key}'. Known keys: {known}"
    got = first.get("input")
    return f"{source}: '{key}': {first['msg']} (got {got!r})"


def load_train_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML config (optional), apply non-None ``overrides`` (CLI flags) and validate."""
    data: dict[str, Any] = {}
    source = "train flags"
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise ConfigError(f"config file '{p}' not found: give the path of an existing YAML file")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{p}: not valid YAML{where}: fix the syntax") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            kind = type(loaded).__name__
            raise ConfigError(f"{p}: expected a mapping of keys to values at the top level, got a {kind}")
        data.update(loaded)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return TrainConfig(**data)
    except ValidationError as e:
        raise ConfigError(_describe(e, source)) from None
