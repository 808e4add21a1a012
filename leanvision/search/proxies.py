"""Zero-cost proxies: score an untrained network from one batch, to rank architectures without training them.

Each proxy is a function ``(model, batch) -> float`` (``batch = (images, labels)``; higher means "predicted
better"); the model is left as it was (proxies that change weights or dtype work on a copy). :data:`PROXIES` names
them and :func:`rank_aggregate` combines several (sum of ranks, as arXiv 2101.08134's vote).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from leanvision.registry import unknown_choice

Batch = tuple[Tensor, Tensor]
_WEIGHTED = (nn.Conv2d, nn.Linear)


def params(model: nn.Module, batch: Batch | None = None) -> float:
    """Trainable parameter count: the free baseline every ranker must beat (arXiv 2101.08134, Table 1)."""
    return float(sum(p.numel() for p in model.parameters() if p.requires_grad))


def macs(model: nn.Module, batch: Batch) -> float:
    """Multiply-accumulates of one image's forward (:func:`leanvision.profile.profile`'s count; arXiv 2101.08134)."""
    from leanvision.profile import profile

    return float(profile(model, batch[0][:1]).macs)


def _weight_grads(model: nn.Module, batch: Batch) -> list[tuple[Tensor, Tensor]]:
    """``(weight, dL/dweight)`` of every conv and linear layer for the cross-entropy loss of ``batch`` (train mode)."""
    net = copy.deepcopy(model).train()
    x, y = batch
    net.zero_grad()
    nn.functional.cross_entropy(net(x), y).backward()
    return [(m.weight.detach(), m.weight.grad) for m in net.modules()
            if isinstance(m, _WEIGHTED) and m.weight.grad is not None]  # fmt: skip


def grad_norm(model: nn.Module, batch: Batch) -> float:
    """Sum over conv/linear layers of the loss gradient's L2 norm (arXiv 2101.08134)."""
    return float(sum(g.norm() for _, g in _weight_grads(model, batch)))


def snip(model: nn.Module, batch: Batch) -> float:
    """SNIP connection sensitivity summed over weights, sum |theta * dL/dtheta| (arXiv 1810.02340, 2101.08134)."""
    return float(sum((w * g).abs().sum() for w, g in _weight_grads(model, batch)))


@torch.no_grad()
def _abs_(net: nn.Module) -> None:
    for p in net.state_dict().values():
        if p.is_floating_point():
            p.abs_()


def synflow(model: nn.Module, batch: Batch) -> float:
    """SynFlow, sum |theta * dR/dtheta| with R = sum of the outputs of |theta| on an all-ones image, in float64
    with BatchNorm in eval mode (arXiv 2101.08134; the pruning score of arXiv 2006.05467). No data is used."""
    net = copy.deepcopy(model).double().eval()
    _abs_(net)
    net.zero_grad()
    net(torch.ones((1, *batch[0].shape[1:]), dtype=torch.float64)).sum().backward()
    return float(sum((m.weight.detach() * m.weight.grad).abs().sum() for m in net.modules()
                     if isinstance(m, _WEIGHTED) and m.weight.grad is not None))  # fmt: skip


@torch.no_grad()
def naswot(model: nn.Module, batch: Batch) -> float:
    """NASWOT, log|det K| with K_ij = units where images i and j share their ReLU on/off state (arXiv 2006.04647)."""
    model = copy.deepcopy(model).train()  # a copy: train-mode BatchNorm updates its running statistics
    n = batch[0].shape[0]
    k = torch.zeros(n, n, dtype=torch.float64)  # stays 0 only if no ReLU ran (every layer adds its units)

    def add(_m: nn.Module, inp: tuple[Tensor, ...]) -> None:
        # Accumulated per ReLU, as the authors' code does: codes of all layers at once would take GBs. The 0/1
        # products are integers <= units < 2**24, so float32 counts them exactly; c c' + (1-c)(1-c)' is written as
        # 2 c c' - s_i - s_j + units (s = on-units per image), one product instead of two.
        c = (inp[0] > 0).flatten(1).float()
        s = c.sum(1)
        k.add_((2 * c @ c.t() - s[:, None] - s[None, :] + c.shape[1]).double())

    hooks = [m.register_forward_pre_hook(add) for m in model.modules() if isinstance(m, nn.ReLU)]  # before in-place
    try:
        model(batch[0])
    finally:
        for h in hooks:
            h.remove()
    return float(torch.linalg.slogdet(k)[1]) if k.any() else 0.0


def jacov(model: nn.Module, batch: Batch) -> float:
    """Jacobian covariance: -sum(log(v + k) + 1/(v + k)) over the eigenvalues v of the correlation matrix of the
    per-image input gradients of the summed outputs, k = 1e-5 (arXiv 2006.04647v1)."""
    x = batch[0].detach().clone().requires_grad_(True)
    (jac,) = torch.autograd.grad(copy.deepcopy(model).train()(x).sum(), x)  # a copy, as in naswot
    corr = torch.corrcoef(jac.flatten(1).double())
    v = torch.linalg.eigvalsh(torch.nan_to_num(corr))
    k = 1e-5
    score = -float(torch.sum(torch.log(v.clamp_min(0) + k) + 1.0 / (v.clamp_min(0) + k)))
    return score if math.isfinite(score) else -math.inf


PROXIES: dict[str, Callable[[nn.Module, Batch], float]] = {
    "params": params, "macs": macs, "synflow": synflow, "naswot": naswot, "snip": snip, "grad_norm": grad_norm,
    "jacov": jacov,
}  # fmt: skip


def get_proxy(name: str) -> Callable[[nn.Module, Batch], float]:
    """The proxy called ``name`` (an unknown name is a one-line error listing the known ones)."""
    if name not in PROXIES:
        raise unknown_choice("zero-cost proxy", name, tuple(PROXIES))
    return PROXIES[name]


def _ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1 (smallest) to n, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def rank_aggregate(scores: Mapping[str, Sequence[float]]) -> list[float]:
    """Per candidate, the sum of its ranks under each proxy (higher = better; arXiv 2101.08134's voting, as a sum)."""
    columns = [list(v) for v in scores.values()]
    if not columns or len({len(c) for c in columns}) != 1:
        raise ValueError("rank_aggregate needs one or more score lists of equal length")
    ranked = [_ranks(c) for c in columns]
    return [float(sum(r[i] for r in ranked)) for i in range(len(columns[0]))]
