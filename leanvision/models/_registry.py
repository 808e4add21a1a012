"""The model registry: ``@register_model`` on a builder, ``create_model(name)`` to build, ``list_models()``."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from leanvision.data.constants import (  # noqa: F401  (re-exported for the model families)
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MNIST_MEAN,
    MNIST_STD,
)
from leanvision.errors import ConfigError
from leanvision.registry import Registry

MODELS: Registry[nn.Module] = Registry("model", hint="Run `leanvision list-models` to see all.")

F = TypeVar("F", bound=Callable[..., nn.Module])


def register_model(
    name: str | None = None,
    *,
    input_size: tuple[int, int, int],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    num_classes: int,
    paper: str | None = None,
    **meta: Any,
) -> Callable[[F], F]:
    """Register a builder with its data contract (input_size (C, H, W), mean, std, num_classes).

    ``paper`` is an arXiv id; extra ``meta`` (``paper_params``, ``paper_macs``, ``notes``, ``family``) ends up
    in the model card. ``family`` defaults to the builder's module name (``ghostnet``, ``resnet_cifar``...).
    """
    if len(mean) != input_size[0] or len(std) != input_size[0]:
        raise ValueError(f"mean/std need {input_size[0]} entries for input_size {input_size}")

    def deco(fn: F) -> F:
        family = meta.pop("family", fn.__module__.rsplit(".", 1)[-1])
        MODELS.register(
            name,
            input_size=tuple(input_size),
            mean=tuple(mean),
            std=tuple(std),
            num_classes=num_classes,
            paper=paper,
            family=family,
            **meta,
        )(fn)
        return fn

    return deco


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern`` (case-insensitive), sorted."""
    return MODELS.list(pattern)


def create_model(name: str, *, num_classes: int | None = None, **kw: Any) -> nn.Module:
    """Build a registered model; ``None`` keyword values are dropped so each builder's defaults apply.

    Every model accepts ``num_classes`` and ``in_chans``. Unknown names raise ``UnknownNameError`` with
    close matches; an argument the model does not take raises ``ConfigError``.
    """
    builder = MODELS.get(name)
    kwargs = {k: v for k, v in {"num_classes": num_classes, **kw}.items() if v is not None}
    try:
        model = builder(**kwargs)
    except TypeError as err:
        bad = re.search(r"unexpected keyword argument '(\w+)'", str(err))
        if bad is None:
            raise
        raise ConfigError(
            f"model '{name}' does not accept the argument '{bad.group(1)}'; "
            f"see `help(leanvision.models.{MODELS.get(name).__name__})` for the ones it takes"
        ) from err
    # Recorded so checkpoints describe themselves: fit saves it and `create_from_arch` rebuilds the model.
    setattr(model, ARCH_ATTR, {"name": name, "kwargs": kwargs})
    return model


ARCH_ATTR = "leanvision_arch"


def arch_of(model: nn.Module) -> dict[str, Any] | None:
    """``{"name", "kwargs"}`` of a model built by :func:`create_model` (None for any other model).

    A model pruned by ``leanvision.compress.apply_plan`` adds ``"plan"``: the JSON plan that turns the registered
    build into it.
    """
    arch = getattr(model, ARCH_ATTR, None)
    if not isinstance(arch, dict):
        return None
    return {"name": arch["name"], "kwargs": dict(arch["kwargs"])} | ({"plan": arch["plan"]} if "plan" in arch else {})


def create_from_arch(arch: dict[str, Any]) -> nn.Module:
    """Rebuild a model from the ``{"name", "kwargs"}`` description that :func:`arch_of` returns."""
    if not isinstance(arch, dict) or not isinstance(arch.get("name"), str):
        raise ConfigError(f"a model description needs a 'name' and 'kwargs', got {arch!r}")
    if "plan" in arch:  # models cannot prune (compress builds on models): refuse rather than build the unpruned net
        raise ConfigError(
            f"this '{arch['name']}' was pruned by a plan: rebuild it with leanvision.engine.model_from_checkpoint or "
            "leanvision.compress.apply_plan(create_model(name), plan)"
        )
    return create_model(arch["name"], **dict(arch.get("kwargs") or {}))
