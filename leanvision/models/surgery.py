"""Module surgery: replace submodules chosen by type or predicate, in place, keeping parameter names; fx tracing."""

from __future__ import annotations

from collections.abc import Callable

from torch import fx, nn

from leanvision.errors import ConfigError
from leanvision.models._registry import ARCH_ATTR

Match = type[nn.Module] | tuple[type[nn.Module], ...] | Callable[[str, nn.Module], bool]


class _Tracer(fx.Tracer):
    def __init__(self, leaf: Callable[[nn.Module], bool] | None) -> None:
        super().__init__()
        self.leaf = leaf

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return (self.leaf is not None and self.leaf(m)) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module, *, why: str, leaf: Callable[[nn.Module], bool] | None = None) -> fx.Graph:
    """``model``'s ``torch.fx`` graph, modules with ``leaf(m)`` kept as single nodes; else a one-line ConfigError.

    ``why`` says, in the error, what needs the graph (e.g. "ghostify needs it to see which BatchNorm follows a conv").
    """
    try:
        return _Tracer(leaf).trace(model)
    except Exception as e:  # fx raises many types (TraceError, TypeError on data-dependent control flow, ...)
        first = (str(e).splitlines() or [""])[0]
        raise ConfigError(
            f"cannot trace {type(model).__name__} with torch.fx ({type(e).__name__}: {first}); {why}. Make forward "
            "free of data-dependent Python control flow (no if, int() or iteration on tensor values), or wrap that "
            "part in a module torch.fx treats as a leaf"
        ) from None


def _matcher(match: Match) -> Callable[[str, nn.Module], bool]:
    if isinstance(match, type) or (isinstance(match, tuple) and match and all(isinstance(t, type) for t in match)):
        types = match
        return lambda _name, module: isinstance(module, types)
    if callable(match):
        return match
    raise ConfigError(
        f"match must be a module type, a tuple of types or a predicate (name, module) -> bool, got {match!r}"
    )


def replace_modules(
    model: nn.Module,
    match: Match,
    make: Callable[[str, nn.Module], nn.Module],
) -> list[str]:
    """Replace, in place, every submodule that ``match`` selects by ``make(name, module)``; returns their names.

    ``match`` is a module type, a tuple of types (``isinstance``) or a predicate ``(name, module) -> bool``;
    ``name`` is the dotted path (``"layer1.0.conv1"``). The replacement is set on the parent under the same
    attribute, so parameter names keep their prefix; it takes the replaced module's train/eval mode. Modules
    inside a replaced one (and inside the replacement) are not visited. ``make`` may return the module itself
    to decline: it is then kept and its children are visited. A module reachable under several names is
    replaced once and the replacement is shared the same way. The root itself is never replaced. Works through
    ``nn.Sequential``, ``nn.ModuleList`` and ``nn.ModuleDict``.

    A model built by ``create_model`` loses its recorded architecture (``arch_of`` returns None afterwards):
    it no longer matches its registered build.
    """
    matches = _matcher(match)
    done: dict[int, nn.Module] = {}  # id(original) -> replacement (or itself), so shared modules stay shared
    visited: set[int] = set()  # containers already walked and replacements: never walked or matched again
    replaced: list[str] = []

    def visit(parent: nn.Module, prefix: str) -> None:
        if id(parent) in visited:
            return
        visited.add(id(parent))
        for key, child in list(parent._modules.items()):
            if child is None:
                continue
            name = f"{prefix}{key}"
            new = done.get(id(child))
            if new is None and id(child) not in visited and matches(name, child):
                new = make(name, child)
                if not isinstance(new, nn.Module):
                    raise ConfigError(f"make({name!r}, module) must return an nn.Module, got {type(new).__name__}")
                if new is not child:
                    visited.add(id(new))
                    if new.training != child.training:
                        new.train(child.training)
                done[id(child)] = new
            if new is None or new is child:
                visit(child, f"{name}.")
                continue
            setattr(parent, key, new)
            replaced.append(name)

    visit(model, "")
    if replaced and ARCH_ATTR in vars(model):
        delattr(model, ARCH_ATTR)
    return replaced
