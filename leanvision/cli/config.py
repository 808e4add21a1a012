"""The `leanvision train` configuration: YAML file and/or flags, validated by pydantic."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from leanvision.errors import ConfigError
from leanvision.names import OPTIMIZERS, SCHEDULERS

M = TypeVar("M", bound=BaseModel)

# Settings that say where and how fast a run goes, not what it computes: the only ones a resume may change.
RESUMABLE_KEYS = frozenset({"data_dir", "threads", "device", "out_dir"})


class TrainConfig(BaseModel):
    """Everything one training run needs; unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field("resnet20", description="registered model name (see `leanvision list-models`)")
    model_kwargs: dict[str, Any] = Field(default_factory=dict, description="extra model arguments, e.g. {shortcut: B}")
    dataset: str = Field("cifar10", description="digits, mnist, fashion_mnist, cifar10 or image_folder")
    data_dir: str | None = Field(None, description="dataset root (default: $LEANVISION_DATA)")
    subset: int | None = Field(None, ge=1, description="class-balanced training subset size")
    test_subset: int | None = Field(None, ge=1, description="class-balanced test subset size")
    val_size: float = Field(
        0.1, ge=0, description="held out of the training split to pick best.pt: a fraction < 1 or a count; 0 = none"
    )
    image_size: int | None = Field(None, ge=1, description="resize every image to this square size")
    epochs: int = Field(10, ge=1, le=10_000, description="total training epochs")
    batch_size: int = Field(128, ge=1, le=65_536, description="images per training step")
    optimizer: Literal[OPTIMIZERS] = Field("sgd", description="optimizer")  # type: ignore[valid-type]
    lr: float = Field(0.1, gt=0, le=10, description="peak learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="momentum (sgd, rmsprop)")
    weight_decay: float = Field(5e-4, ge=0, lt=1, description="weight decay (not on norm weights and biases)")
    scheduler: Literal[SCHEDULERS] = Field("cosine", description="learning-rate schedule, stepped per batch")  # type: ignore[valid-type]
    warmup_epochs: int = Field(0, ge=0, description="linear warm-up epochs")
    seed: int = Field(0, ge=0, description="seed of initialisation, data order, augmentation and subsets")
    threads: int | None = Field(None, ge=1, le=1024, description="CPU threads (default: torch's)")
    device: str = Field("cpu", description="cpu, cuda or cuda:N")
    init_from: str | None = Field(None, description="start from the weights of this checkpoint (a new run)")
    out_dir: str = Field("runs/train", description="where metrics and checkpoints go")

    def exact_val_size(self) -> int | float:
        """``val_size`` as the loader wants it: a count when it is a whole number >= 1, else a fraction."""
        return int(self.val_size) if self.val_size >= 1 else self.val_size


def field_help(name: str) -> str:
    """The description of a config key, reused as the help text of its command-line flag."""
    return TrainConfig.model_fields[name].description or ""


def _schema_at(root: type[BaseModel], path: list[str]) -> type[BaseModel] | None:
    """The (nested) model that holds the key at ``path`` below ``root``."""
    schema = root
    for name in path:
        field = schema.model_fields.get(name)
        if field is None:
            return None
        ann = field.annotation
        nested = [a for a in (ann, *get_args(ann)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not nested:
            return None
        schema = nested[0]
    return schema


def describe_error(err: ValidationError, source: str, schema: type[BaseModel] = TrainConfig) -> str:
    """The first problem of a (nested) config as one line naming the key (dotted) and how to fix it."""
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"] if not isinstance(p, int)]
    key = ".".join(loc) or "(top level)"
    holder = _schema_at(schema, loc[:-1])
    known = list(holder.model_fields) if holder is not None else []
    if first["type"] == "extra_forbidden":
        close = difflib.get_close_matches(loc[-1], known, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        return f"{source}: unknown key '{key}'.{hint} Known keys{' there' if len(loc) > 1 else ''}: {', '.join(known)}"
    if first["type"] == "missing" and holder is not None:
        return f"{source}: '{key}' is required ({holder.model_fields[loc[-1]].description or 'see the docs'})"
    if first["type"] == "value_error":
        return f"{source}: '{key}': {first['msg'].removeprefix('Value error, ')}"
    got, hint = first.get("input"), ""
    if first["type"] == "literal_error" and isinstance(got, str) and holder is not None and loc:
        choices = [str(c) for c in get_args(holder.model_fields[loc[-1]].annotation)]
        close = difflib.get_close_matches(got, choices, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"{source}: '{key}': {first['msg']} (got {got!r}){hint}"


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a YAML file; a missing file or bad syntax is a one-line ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file '{p}' not found: give the path of an existing YAML file")
    try:
        loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}: not valid YAML{where}: fix the syntax") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{p}: expected a mapping of keys to values at the top level, got a {type(loaded).__name__}")
    return loaded


def validate_model(schema: type[M], data: dict[str, Any], source: str) -> M:
    """A ``schema`` instance from plain data; the first problem becomes a one-line ConfigError naming the key."""
    try:
        return schema(**data)
    except ValidationError as e:
        raise ConfigError(describe_error(e, source, schema)) from None


def validate_config(data: dict[str, Any], source: str = "train config") -> TrainConfig:
    """A TrainConfig from plain data; the first problem becomes a one-line ConfigError naming the key."""
    return validate_model(TrainConfig, data, source)


def load_train_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML config (optional), apply non-None ``overrides`` (CLI flags) and validate.

    The keys the user set (in the file or as flags) are the result's ``model_fields_set``.
    """
    data = read_yaml(path) if path is not None else {}
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return validate_config(data, str(path) if path is not None else "train flags")


def resume_config(cfg: TrainConfig, saved: dict[str, Any], *, checkpoint: Path) -> TrainConfig:
    """The config a resumed run really uses: the checkpoint's, plus only the settings a resume can change.

    A value the user set that differs from the run's (other than where/how fast it runs) is refused, so the
    recorded config never claims a value that was not used.
    """
    saved = {k: v for k, v in saved.items() if k in TrainConfig.model_fields}
    old = validate_config(saved, f"{checkpoint} (its saved config)")
    changed = [
        f"{k} {getattr(cfg, k)!r} (run: {getattr(old, k)!r})"
        for k in sorted(cfg.model_fields_set - RESUMABLE_KEYS)
        if getattr(cfg, k) != getattr(old, k)
    ]
    if changed:
        raise ConfigError(
            f"--resume continues the run in {checkpoint.parent} as it was started, but you changed "
            f"{', '.join(changed)}; drop those, or start a new run in another --out-dir "
            f"(--init-from {checkpoint} starts it from these weights)"
        )
    return old.model_copy(update={k: getattr(cfg, k) for k in cfg.model_fields_set & RESUMABLE_KEYS})
