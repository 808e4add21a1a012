"""Model cards: the data contract and measured cost (params, MACs) of each registered model."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

from leanvision.models._registry import MODELS


@dataclass(frozen=True)
class ModelCard:
    """What a model expects (input, normalisation, classes) and costs, measured by ``leanvision.profile``.

    ``params``/``macs`` are counted on the default build at batch 1 and ``input_size``; ``paper_params`` /
    ``paper_macs`` are the reference numbers reported in ``paper`` (arXiv id) where they exist. ``unsupported``
    counts the ops the profiler could not count (empty for every registered model: a test checks it).
    """

    name: str
    family: str
    paper: str | None
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    params: int
    macs: int
    paper_params: int | None = None
    paper_macs: int | None = None
    notes: str = ""
    unsupported: dict[str, int] = field(default_factory=dict)
    bops: int = 0  # binary (1-bit x 1-bit) MACs, kept apart from the float `macs` (0 for float models)


@functools.cache
def model_card(name: str) -> ModelCard:
    """The card of a registered model (built and profiled once per process, then cached)."""
    from leanvision.profile import profile

    meta = MODELS.meta(name)
    model = MODELS.build(name)
    prof = profile(model, torch.zeros(1, *meta["input_size"]))
    return ModelCard(
        name=name,
        family=meta["family"],
        paper=meta["paper"],
        input_size=meta["input_size"],
        mean=meta["mean"],
        std=meta["std"],
        num_classes=meta["num_classes"],
        params=prof.params,
        macs=prof.macs,
        paper_params=meta.get("paper_params"),
        paper_macs=meta.get("paper_macs"),
        notes=meta.get("notes", ""),
        unsupported=dict(prof.unsupported),
        bops=prof.bops,
    )


def _m(n: int | None, digits: int | None = None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:g}M" if digits is None else f"{n / 1e6:.{digits}f}M"


def render_model_table(names: list[str] | None = None) -> str:
    """The Markdown table of model cards used in ``docs/models.md`` (regenerate, never edit by hand)."""
    names = MODELS.list() if names is None else names
    rows = [
        "| model | params | MACs | paper params / MACs | input (C×H×W) | classes | paper | notes |",
        "|---|---:|---:|---:|---|---:|---|---|",
    ]
    for name in names:
        c = model_card(name)
        ref = "-" if c.paper_params is None and c.paper_macs is None else (f"{_m(c.paper_params)} / {_m(c.paper_macs)}")
        paper = f"[{c.paper}](https://arxiv.org/abs/{c.paper})" if c.paper else "-"
        macs = _m(c.macs, 1) + (f" + {_m(c.bops, 1)} BOPs" if c.bops else "")  # binary nets: float MACs + BOPs
        rows.append(
            f"| `{name}` | {_m(c.params, 3)} | {macs} | {ref} | {'×'.join(map(str, c.input_size))} "
            f"| {c.num_classes} | {paper} | {c.notes or '-'} |"
        )
    return "\n".join(rows) + "\n"


TABLE_BEGIN = "<!-- model-table:begin (generated: python -m leanvision.models._doctable docs/models.md) -->"
TABLE_END = "<!-- model-table:end -->"


def with_model_table(text: str) -> str:
    """``text`` with the part between the model-table markers replaced by a freshly rendered table."""
    head, sep, rest = text.partition(TABLE_BEGIN)
    _, sep2, tail = rest.partition(TABLE_END)
    if not sep or not sep2:
        raise ValueError(f"markers {TABLE_BEGIN!r} ... {TABLE_END!r} not found")
    return f"{head}{TABLE_BEGIN}\n{render_model_table()}{TABLE_END}{tail}"
