"""Hardware-aware widths: the channel multiple that pruned layers should be rounded to, measured on this machine.

Fast convolution kernels work on blocks of channels (onnxruntime's NCHWc layout on AVX-512 uses 16; oneDNN and GPU
kernels similar ones), so a layer left with 59 channels can run slower than one with 64. Which multiple pays is a
property of the backend and the CPU, not of the model, so it is measured rather than assumed: :func:`choose_multiple`
times a 3x3 conv pair at the model's own most expensive shapes for a range of pruned widths, each width as it is and
rounded up to every candidate multiple, and picks the multiple whose rounded widths run fastest on average.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from statistics import fmean

import torch
from torch import nn

from leanvision.errors import ConfigError

CANDIDATES = (1, 8, 16, 32)
LayerShape = tuple[int, int, int]  # (channels, height, width) of a conv's input


@dataclass
class MultipleChoice:
    """The chosen multiple and what each candidate scored: mean latency of the rounded widths over the unrounded."""

    multiple: int
    scores: dict[int, float]  # candidate -> mean over layers and widths of latency(rounded) / latency(as is)
    by_backend: dict[str, dict[int, float]]  # the same means per backend (a model deployed on one may pick by it)
    shapes: list[LayerShape]
    widths: dict[str, list[int]]  # per shape ("CxHxW"): the pruned widths timed
    backends: list[str]
    threads: int | None
    other_cores: float | None = None  # CPU cores other processes kept busy while timing

    def to_dict(self) -> dict:
        by_backend = {b: {str(k): v for k, v in sc.items()} for b, sc in self.by_backend.items()}
        return {**asdict(self), "scores": {str(k): v for k, v in self.scores.items()}, "by_backend": by_backend}


def round_up(width: int, multiple: int, cap: int) -> int:
    """``width`` rounded up to a multiple of ``multiple``, never above ``cap`` (the layer's unpruned width)."""
    return min(cap, multiple * math.ceil(width / multiple))


def conv_shapes(model: nn.Module, input_size: Sequence[int], top: int = 3) -> list[LayerShape]:
    """The input shapes (C, H, W) of the ``top`` 3x3-or-larger convs with the most MACs in one forward pass (not the
    stem's: pruning never changes the image's channels)."""
    seen: dict[LayerShape, int] = {}
    image = tuple(input_size)

    def hook(conv: nn.Conv2d, args: tuple, out: torch.Tensor) -> None:
        shape = tuple(args[0].shape[1:])
        if conv.groups == 1 and max(conv.kernel_size) > 1 and shape != image:  # the image's channels stay
            seen[shape] = seen.get(shape, 0) + out.numel() * conv.in_channels * math.prod(conv.kernel_size)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_size))
    finally:
        for h in handles:
            h.remove()
    if not seen:
        raise ConfigError("choose_multiple: the model has no dense 3x3 (or larger) conv whose widths rounding affects")
    return sorted(seen, key=seen.__getitem__, reverse=True)[:top]


def pruned_widths(channels: int, count: int = 6) -> list[int]:
    """``count`` widths a pruning could leave, spread over [channels / 4, channels), none a multiple of 8."""
    if channels < 2:
        raise ConfigError(f"a layer of {channels} channel cannot be pruned to fewer")
    lo, hi = max(1, channels // 4), channels - 1
    out = []
    for i in range(count):
        w = lo + round(i * (hi - lo) / max(count - 1, 1))
        while w % 8 == 0 and w > 1:  # widths that are already multiples would not show what rounding does
            w -= 1
        out.append(w)
    return sorted(set(out))


class _Pair(nn.Module):
    """Two 3x3 convs with ReLU at ``width`` in and out (a pruned layer reads a pruned input, so both widths vary),
    reading the first ``width`` channels of a shared input so that every width is timed on the same tensor."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width
        self.convs = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x[:, : self.width])


def choose_multiple(
    shapes: Sequence[LayerShape],
    *,
    candidates: Sequence[int] = CANDIDATES,
    backends: Sequence[str] = ("eager", "onnxruntime"),
    threads: int | None = None,
    widths_per_shape: int = 6,
    rounds: int = 5,
    timer: Callable[[Mapping[str, nn.Module], torch.Tensor, str], Mapping[str, float]] | None = None,
) -> MultipleChoice:
    """Measure which channel multiple pruned widths should be rounded up to (1 = none), at batch 1.

    For each shape (the model's expensive convs, :func:`conv_shapes`) and each of ``widths_per_shape`` pruned widths,
    a conv pair runs at the width as it is and rounded up to every candidate (never above the shape's channels); all
    of a shape's nets are timed in one interleaved run per backend. A candidate's score is the mean over backends of
    the mean over shapes and widths of latency(rounded) / latency(as is) (``by_backend`` keeps each backend's): below
    1, rounding up is faster despite the added channels. The lowest score wins; 1 when no candidate beats keeping the
    widths as they are. ``backends=("onnxruntime",)`` picks for a model deployed there only. ``timer(models, x,
    backend) -> {name: ms}`` replaces the measurement (tests); by default :func:`leanvision.profile.compare_latency`.
    """
    from leanvision.profile import compare_latency, other_cpu

    if not shapes:
        raise ConfigError("choose_multiple needs at least one conv shape (conv_shapes(model, input_size))")
    if any(m < 1 for m in candidates):
        raise ConfigError(f"choose_multiple: every candidate multiple must be >= 1, got {list(candidates)}")

    def measure(models: Mapping[str, nn.Module], x: torch.Tensor, backend: str) -> Mapping[str, float]:
        stats = compare_latency(models, x, backend=backend, threads=threads, rounds=rounds, iters=5, warmup=3)
        return {name: s.median_ms for name, s in stats.items()}

    timer = timer or measure
    cands = sorted({1, *candidates})
    ratios: dict[str, dict[int, list[float]]] = {b: {m: [] for m in cands} for b in backends}
    widths: dict[str, list[int]] = {}
    with other_cpu({}) as load:
        for c, h, w in shapes:
            key = f"{c}x{h}x{w}"
            widths[key] = pruned_widths(c, widths_per_shape)
            timed = sorted({round_up(p, m, c) for p in widths[key] for m in cands})
            nets, x = {str(t): _Pair(t).eval() for t in timed}, torch.randn(1, c, h, w)
            for backend in backends:
                ms = timer(nets, x, backend)
                for p in widths[key]:
                    for m in cands:
                        ratios[backend][m].append(ms[str(round_up(p, m, c))] / ms[str(p)])
    by_backend = {b: {m: fmean(r) for m, r in per.items()} for b, per in ratios.items()}
    scores = {m: fmean(by_backend[b][m] for b in backends) for m in cands}
    best = min(cands, key=lambda m: (scores[m], m))
    return MultipleChoice(best, scores, by_backend, [tuple(s) for s in shapes], widths, list(backends), threads,
                          load["other_cores"])  # fmt: skip
