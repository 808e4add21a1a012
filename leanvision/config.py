"""Config plumbing every workflow shares (YAML + overrides validated by pydantic, one-line errors, run settings) and
TrainConfig, kept torch-free here so that the command line shows its flags' help without importing torch."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from leanvision.errors import ConfigError
from leanvision.names import OPTIMIZERS, PRECISIONS, SCHEDULERS

M = TypeVar("M", bound=BaseModel)


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


def describe_error(err: ValidationError, source: str, schema: type[BaseModel]) -> str:
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


def load_config(schema: type[M], config: M | dict[str, Any] | str | Path | None = None,
                overrides: dict[str, Any] | None = None, *, source: str = "flags") -> M:  # fmt: skip
    """A validated ``schema`` from a YAML path, a dict or an instance, with the non-None ``overrides`` applied.

    The keys the user set (in the file, the dict or as overrides) are the result's ``model_fields_set``.
    """
    if isinstance(config, schema):
        data, source = config.model_dump(include=config.model_fields_set), "config"
    elif isinstance(config, dict):
        data, source = dict(config), "config"
    elif config is not None:
        data, source = read_yaml(config), str(config)
    else:
        data = {}
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return validate_model(schema, data, source)


def writable_dir(path: str | Path) -> Path:
    """Create ``path`` if needed; an unusable location is a one-line ConfigError, not a traceback."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create output directory '{path}' ({e.strerror}): choose a writable path") from None
    if not os.access(path, os.W_OK):
        raise ConfigError(f"output directory '{path}' is not writable: choose a writable path")
    return path


def cpu_count() -> int:
    """CPU cores this process may run on (the affinity mask, not the whole machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_threads(threads: int | None) -> int | None:
    """Refuse more threads than cores: oversubscribed PyTorch runs many times slower, which nobody wants."""
    cores = cpu_count()
    if threads is not None and threads > cores:
        raise ConfigError(f"--threads {threads} is more than the {cores} CPU cores available here; oversubscribed "
                          f"threads make PyTorch much slower: pass --threads {cores} or fewer")  # fmt: skip
    return threads


def check_device(device: str) -> str:
    """A torch device string that exists on this machine (cpu, cuda, cuda:N, mps)."""
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device {device}: not a device name; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {device}: MPS is not available on this machine; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"--device {device}: unsupported device type '{dev.type}'; use cpu, cuda or cuda:N")
    return device


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
    channels_last: bool = Field(False, description="keep conv weights and activations channels-last (NHWC): the same "
                                "computation, usually faster CNN training on CPU (oneDNN) and GPUs")  # fmt: skip
    precision: Literal[PRECISIONS] = Field(  # type: ignore[valid-type]
        "fp32", description="fp32, or bf16: mixed precision (the forward in bfloat16 autocast, weights and optimizer "
        "in float32); needs bf16 hardware (AVX512-BF16 or AMX CPUs, recent GPUs) to be faster")  # fmt: skip
    init_from: str | None = Field(None, description="start from the weights of this checkpoint (a new run)")
    policy: str | None = Field(
        None,
        description="augmentation policy after crop/flip: a policy JSON (e.g. from "
        "`leanvision augsearch`) or autoaugment, randaugment, trivialaugment",
    )
    out_dir: str = Field("runs/train", description="where metrics and checkpoints go")

    @field_validator("val_size")
    @classmethod
    def _fraction_or_count(cls, v: float) -> float:
        if v >= 1 and v != int(v):
            raise ValueError(f"got {v:g}: a fraction of the training split is < 1 (e.g. 0.1), a count a whole number")
        return v

    def exact_val_size(self) -> int | float:
        """``val_size`` as the loader wants it: a count when it is a whole number >= 1, else a fraction."""
        return int(self.val_size) if self.val_size >= 1 else self.val_size
