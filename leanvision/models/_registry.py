"""The model registry: ``@register_model`` on a builder, ``create_model(name)`` to build, ``list_models()``."""

from __future__ import annotations

import inspect
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
from leanvision.registry import Registry, close_matches

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
    # Checked against the signature before the call, so a TypeError raised inside a builder stays a bug report.
    params = inspect.signature(builder).parameters
    takes = [n for n, p in params.items() if p.kind is not p.VAR_KEYWORD]
    bad = [] if len(takes) < len(params) else sorted(set(kwargs) - set(takes))
    if bad:
        raise ConfigError(f"model '{name}' does not accept the argument {', '.join(map(repr, bad))}."
                          f"{close_matches(bad[0], takes, n=1)} It takes: {', '.join(takes)}")  # fmt: skip
    model = builder(**kwargs)
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


# Rooms above models that change a registered build (a pruning plan, ...) register how to replay that change under
# a key of the arch description. They are found through the "leanvision.arch_transforms" entry-point group, so
# a checkpoint of a pruned model rebuilds without any lower room importing the room that pruned it.
ARCH_TRANSFORMS: dict[str, Callable[[nn.Module, Any], nn.Module]] = {}
_ENTRY_POINT_GROUP = "leanvision.arch_transforms"


def register_arch_transform(key: str, fn: Callable[[nn.Module, Any], nn.Module]) -> None:
    """Let :func:`create_from_arch` replay ``arch[key]`` on the registered build with ``fn(model, arch[key])``."""
    ARCH_TRANSFORMS[key] = fn


def _arch_transform(key: str, name: str) -> Callable[[nn.Module, Any], nn.Module]:
    if key not in ARCH_TRANSFORMS:
        from importlib.metadata import entry_points

        for ep in entry_points(group=_ENTRY_POINT_GROUP, name=key):
            ARCH_TRANSFORMS[key] = ep.load()
            break
        else:
            raise ConfigError(
                f"this '{name}' was changed by a '{key}' that no installed package knows how to replay: reinstall "
                "leanvision (pip install -e .) so its entry points are registered"
            )
    return ARCH_TRANSFORMS[key]


def create_from_arch(arch: dict[str, Any]) -> nn.Module:
    """Rebuild a model from the description :func:`arch_of` returns (registered build, then any recorded change)."""
    if not isinstance(arch, dict) or not isinstance(arch.get("name"), str):
        raise ConfigError(f"a model description needs a 'name' and 'kwargs', got {arch!r}")
    model = create_model(arch["name"], **dict(arch.get("kwargs") or {}))
    for key in sorted(set(arch) - {"name", "kwargs", "input_size"}):  # input_size: data, not a change
        model = _arch_transform(key, arch["name"])(model, arch[key])
    return model
