"""Positive-Unlabeled compression (arXiv 1909.09757): find the user's kind of data in an unlabeled pool, then distill.

Stage 1 trains a PU classifier (:class:`PUNet`, the teacher's backbone with a multi-scale squeeze-excitation head)
with the non-negative PU risk (:func:`nnpu_loss`, Kiryo et al., arXiv 1703.00593) on batches that always hold
labelled positives (:class:`PULoader`); :func:`select_positives` keeps the unlabeled samples it scores positive.
Stage 2 distills the teacher into a student on positives + selected samples with the class-weighted robust loss
in :mod:`leanvision.compress.distill`. Everything follows the official code unless an argument says otherwise.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Sampler

from leanvision.compress.distill import predict_logits
from leanvision.data.dataset import ImageDataset, normalize
from leanvision.errors import ConfigError
from leanvision.models._registry import MODELS, arch_of

# ----------------------------------------------------------------------------------------------------- the loss


def _check_pu_params(prior: float, beta: float, gamma: float) -> None:
    if not 0 < prior < 1:
        raise ConfigError(
            f"prior must be in (0, 1): the fraction of positives in the UNLABELED pool (not in a batch), got {prior}"
        )
    if not beta >= 0 or not gamma > 0:
        raise ConfigError(f"nnPU needs beta >= 0 and gamma > 0, got beta={beta}, gamma={gamma}; defaults 0 and 1")


def _positive_mask(pu_labels: Tensor, n: int) -> Tensor:
    labels = pu_labels.reshape(-1)
    if labels.shape[0] != n:
        raise ConfigError(f"need one PU label per logit ({n}), got labels of shape {tuple(pu_labels.shape)}")
    if not ((labels == 1) | (labels == 0) | (labels == -1)).all():
        raise ConfigError(
            "PU labels must be 1 (labelled positive) or 0 / -1 (unlabeled), got values "
            f"{sorted(set(labels.tolist()))[:5]}; PULoader yields such labels"
        )
    return labels == 1


def pu_risks(logits: Tensor, pu_labels: Tensor, prior: float) -> tuple[Tensor, Tensor]:
    """(R_p+, R_n) = (pi E_P[sig(-f)], E_U[sig(f)] - pi E_P[sig(f)]), sigmoid loss (arXiv 1909.09757, 1703.00593)."""
    if logits.dim() == 2 and logits.shape[1] == 1:
        logits = logits.squeeze(1)
    if logits.dim() != 1:
        raise ConfigError(f"PU logits must be [B] or [B, 1] (one score per sample), got {tuple(logits.shape)}")
    pos = _positive_mask(pu_labels, logits.shape[0]).to(logits.dtype)
    unl = 1 - pos
    # Counts clamped to >= 1 as in the official code: a batch without positives has R_p+ = 0.
    n_p, n_u = pos.sum().clamp(min=1), unl.sum().clamp(min=1)
    r_p = (prior * pos / n_p * torch.sigmoid(-logits)).sum()
    r_n = ((unl / n_u - prior * pos / n_p) * torch.sigmoid(logits)).sum()
    return r_p, r_n


def _objective(r_p: Tensor, r_n: Tensor, *, beta: float, gamma: float, nonnegative: bool) -> Tensor:
    if not nonnegative:  # uPU: the unbiased risk, whose negative part can go below 0 and overfit
        return r_p + r_n
    ascend = -gamma * r_n
    # Value exactly R_p+ - beta (x - x.detach() is exactly 0), gradient -gamma * dR_n.
    ascent = (r_p - beta).detach() + (ascend - ascend.detach())
    # torch.where picks the branch inside the graph: no Python `if` on a tensor value, no host sync here.
    return torch.where(r_n < -beta, ascent, r_p + r_n)


def nnpu_loss(
    logits: Tensor,
    pu_labels: Tensor,
    prior: float,
    *,
    beta: float = 0.0,
    gamma: float = 1.0,
    nonnegative: bool = True,
) -> Tensor:
    """The nnPU objective of the official PU-compression code (arXiv 1909.09757); ``nonnegative=False`` is uPU.

    ``pu_labels``: 1 = labelled positive, 0 or -1 = unlabeled. ``prior`` is the positive fraction of the unlabeled
    pool. While R_n >= -beta the value and gradient are those of R_p+ + R_n; below, the value is R_p+ - beta and
    the gradient is -gamma * grad R_n (gradient ascent on the negative risk only).
    """
    _check_pu_params(prior, beta, gamma)
    r_p, r_n = pu_risks(logits, pu_labels, prior)
    return _objective(r_p, r_n, beta=beta, gamma=gamma, nonnegative=nonnegative)


@dataclass
class PUStep:
    """``fit(train_step=...)`` for the PU classifier: one nnPU (or uPU) update per batch (arXiv 1909.09757).

    Batches are ``(inputs, pu_labels)`` (see :class:`PULoader`). Returns ``outputs=None`` so fit reports no
    accuracy (P-vs-U agreement is not one). Per 0-based epoch it keeps the mean negative risk R_n and how many
    batches had R_n < -beta (where nnPU ascends; under uPU this shows the risk going negative).
    """

    prior: float
    beta: float = 0.0
    gamma: float = 1.0
    nonnegative: bool = True
    negative_risk_by_epoch: dict[int, float] = field(default_factory=dict)
    ascent_steps_by_epoch: dict[int, int] = field(default_factory=dict)
    _seen: dict[int, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        _check_pu_params(self.prior, self.beta, self.gamma)

    def __call__(self, model: nn.Module, inputs: Any, targets: Tensor, ctx: Any) -> tuple[Tensor, None]:
        outputs = model(inputs)
        r_p, r_n = pu_risks(outputs[0] if isinstance(outputs, (tuple, list)) else outputs, targets, self.prior)
        loss = _objective(r_p, r_n, beta=self.beta, gamma=self.gamma, nonnegative=self.nonnegative)
        ctx.update(loss)  # ctx is the engine's StepContext
        self._record(ctx.epoch, r_n.item())
        return loss.detach(), None

    def _record(self, epoch: int, r_n: float) -> None:
        n = self._seen.get(epoch, 0)
        prev = self.negative_risk_by_epoch.get(epoch, 0.0)
        self.negative_risk_by_epoch[epoch] = prev + (r_n - prev) / (n + 1)
        self.ascent_steps_by_epoch[epoch] = self.ascent_steps_by_epoch.get(epoch, 0) + int(r_n < -self.beta)
        self._seen[epoch] = n + 1


# ---------------------------------------------------------------------------------------------- the PU network

# Where registered models keep their stages, in the order they are looked for.
_STAGE_CONTAINERS = ("stages", "blocks", "layers", "features")


class _Tap:
    """A forward hook that keeps its module's latest output (a plain object so deepcopy/pickle follow it)."""

    def __init__(self) -> None:
        self.out: Any = None

    def __call__(self, module: nn.Module, args: Any, output: Any) -> None:
        self.out = output


class _VectorSE(nn.Module):
    """Squeeze-excitation on a feature vector: FC-ReLU-FC-sigmoid gate, no biases (the official SELayer)."""

    def __init__(self, chs: int, reduction: int) -> None:
        super().__init__()
        rd = max(1, chs // reduction)
        self.gate = nn.Sequential(
            nn.Linear(chs, rd, bias=False), nn.ReLU(inplace=True), nn.Linear(rd, chs, bias=False), nn.Sigmoid()
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x)


def _layer_names(backbone: nn.Module, layers: Sequence[nn.Module | str] | None) -> list[str]:
    """Names (in ``backbone``) of the given layers; without layers, the children of its stage container."""
    if layers is None:
        for attr in _STAGE_CONTAINERS:
            container = getattr(backbone, attr, None)
            if isinstance(container, (nn.Sequential, nn.ModuleList)) and len(container) > 0:
                return [f"{attr}.{i}" for i in range(len(container))]
        raise ConfigError(
            f"cannot tell where the stages of {type(backbone).__name__} are: pass layers=[...], module names "
            f"such as 'layer1' or the modules themselves (its children: {[n for n, _ in backbone.named_children()]})"
        )
    if len(layers) == 0:
        raise ConfigError("layers must name at least one module of the backbone")
    by_id = {id(m): n for n, m in backbone.named_modules() if n}
    known = set(by_id.values())
    names = []
    for layer in layers:
        name = layer if isinstance(layer, str) else by_id.get(id(layer))
        if name is None or name not in known:
            raise ConfigError(
                f"layer {layer if isinstance(layer, str) else type(layer).__name__!r} is not a submodule of the "
                f"backbone; pass modules of it or names from backbone.named_modules() (e.g. {sorted(known)[:4]})"
            )
        names.append(name)
    return names


def _input_size(backbone: nn.Module, input_size: Sequence[int] | None) -> tuple[int, ...]:
    if input_size is not None:
        size = tuple(input_size)
        if len(size) != 3 or not all(isinstance(s, int) and s > 0 for s in size):
            raise ConfigError(f"input_size must be (C, H, W), got {input_size!r}")
        return size
    arch = arch_of(backbone)
    if arch is None:
        raise ConfigError(
            "pass input_size=(C, H, W): the backbone was not built by create_model, so its input size is unknown"
        )
    return tuple(MODELS.meta(arch["name"])["input_size"])


def _run_backbone(backbone: nn.Module, x: Tensor) -> Any:
    # forward_features skips the teacher's classifier, which the PU net does not use.
    features = getattr(backbone, "forward_features", None)
    return features(x) if callable(features) else backbone(x)


def _probe(backbone: nn.Module, names: list[str], size: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Output shapes of the named layers for one input of ``size`` (eval mode, no grad; mode restored)."""
    taps = [_Tap() for _ in names]
    handles = [backbone.get_submodule(n).register_forward_hook(t) for n, t in zip(names, taps, strict=True)]
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            _run_backbone(backbone, torch.zeros(1, *size, device=next(backbone.parameters(), torch.empty(0)).device))
    finally:
        backbone.train(was_training)
        for h in handles:
            h.remove()
    shapes = []
    for name, tap in zip(names, taps, strict=True):
        if not isinstance(tap.out, Tensor):
            raise ConfigError(
                f"layer {name!r} gave no tensor during the backbone's forward_features (or forward); pick layers "
                "of the feature extractor"
            )
        if tap.out.dim() not in (2, 4):
            raise ConfigError(f"layer {name!r} outputs {tuple(tap.out.shape)}; need [B, C, H, W] or [B, C]")
        shapes.append(tuple(tap.out.shape))
    return shapes


def _last_per_resolution(names: list[str], shapes: list[tuple[int, ...]]) -> tuple[list[str], list[tuple[int, ...]]]:
    """Of consecutive stages, the last one at each spatial resolution (the official code's four stage outputs)."""
    spatial = [(n, s) for n, s in zip(names, shapes, strict=True) if len(s) == 4]
    keep = [(n, s) for i, (n, s) in enumerate(spatial) if i + 1 == len(spatial) or spatial[i + 1][1][2:] != s[2:]]
    if not keep:
        raise ConfigError("the backbone's stages give no [B, C, H, W] feature maps; pass layers=[...]")
    return [n for n, _ in keep], [s for _, s in keep]


class PUNet(nn.Module):
    """Teacher backbone, pooled features of several stages, squeeze-excitation, one PU logit (arXiv 1909.09757).

    ``layers`` are modules of ``backbone`` (or their names) whose outputs forward hooks collect; without them the
    last block of each resolution in the backbone's ``stages`` / ``blocks`` / ``layers`` / ``features``. Each
    output is globally average-pooled (any input size), the concatenation goes through squeeze-excitation
    (reduction 16, as officially) and a linear layer to the logit f(x), shape [B, 1]: f(x) > 0 means positive.
    The backbone is deep-copied (``copy_backbone=False`` trains it in place and leaves the hooks on it) and runs
    ``forward_features`` when it has one (a leanvision Classifier; the copy drops its classifier), else ``forward``.
    All of it trains.
    ``input_size`` (C, H, W) sizes the head by one probe forward; it defaults to a registered model's own.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        layers: Sequence[nn.Module | str] | None = None,
        input_size: Sequence[int] | None = None,
        reduction: int = 16,
        copy_backbone: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(reduction, int) or reduction < 1:
            raise ConfigError(
                f"reduction must be a positive int (SE hidden width = channels // reduction), got {reduction!r}"
            )
        names = _layer_names(backbone, layers)  # resolved on the original, so modules given by object map into a copy
        size = _input_size(backbone, input_size)
        if copy_backbone:
            backbone = copy.deepcopy(backbone)
            if callable(getattr(backbone, "reset_classifier", None)):
                backbone.reset_classifier(0)
        self.backbone = backbone
        shapes = _probe(backbone, names, size)
        if layers is None:
            names, shapes = _last_per_resolution(names, shapes)
        self.layer_names = names
        self.feature_chs = [s[1] for s in shapes]
        chs = sum(self.feature_chs)
        self.se = _VectorSE(chs, reduction)
        self.fc = nn.Linear(chs, 1)
        self._taps = [_Tap() for _ in names]
        for name, tap in zip(names, self._taps, strict=True):
            backbone.get_submodule(name).register_forward_hook(tap)

    def features(self, x: Tensor) -> Tensor:
        """The concatenated pooled stage features [B, sum(feature_chs)], before squeeze-excitation."""
        _run_backbone(self.backbone, x)
        pooled = [
            t.out.flatten(1) if t.out.dim() == 2 else F.adaptive_avg_pool2d(t.out, 1).flatten(1) for t in self._taps
        ]
        for t in self._taps:
            t.out = None  # the maps belong to this forward only; do not keep them alive
        return torch.cat(pooled, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.se(self.features(x)))


# ------------------------------------------------------------------------------------------------------ the data


class PUBatchSampler(Sampler[list[int]]):
    """Batches of indices into [P (0..n_p-1), U (n_p..)] with ``positives_per_batch`` positives each (arXiv 1909.09757).

    Every batch has exactly ``batch_size`` samples, ``positives_per_batch`` (k) of them positives, so no batch has
    an empty positive risk. An epoch has ``max(ceil(n_u / (batch_size - k)), ceil(n_p / k))`` batches and shows
    every sample at least once (the side that runs out first is reshuffled and repeated). The order depends only
    on (seed, epoch): ``set_epoch`` fixes the epoch, else each pass advances it. Default k: P's share, at least 1.
    """

    def __init__(
        self,
        num_positive: int,
        num_unlabeled: int,
        *,
        batch_size: int,
        positives_per_batch: int | None = None,
        seed: int = 0,
    ) -> None:
        if num_positive < 1 or num_unlabeled < 1:
            raise ConfigError(
                f"need at least one positive and one unlabeled sample, got {num_positive} and {num_unlabeled}"
            )
        if batch_size < 2:
            raise ConfigError(f"batch_size must be >= 2 (positives and unlabeled in every batch), got {batch_size}")
        if positives_per_batch is None:
            share = round(batch_size * num_positive / (num_positive + num_unlabeled))
            positives_per_batch = min(max(1, share), batch_size - 1)
        if not 1 <= positives_per_batch < batch_size:
            raise ConfigError(
                f"positives_per_batch must be in [1, batch_size) = [1, {batch_size}) so every batch has both kinds, "
                f"got {positives_per_batch}"
            )
        if seed < 0:
            raise ConfigError(f"seed must be >= 0, got {seed}")
        self.num_positive, self.num_unlabeled = num_positive, num_unlabeled
        self.batch_size, self.positives_per_batch, self.seed = batch_size, positives_per_batch, seed
        self.epoch, self._explicit_epoch = 0, False

    def set_epoch(self, epoch: int) -> None:
        """Fix the epoch whose order the next iterations use (fit calls it through :class:`PULoader`)."""
        self.epoch, self._explicit_epoch = epoch, True

    def __len__(self) -> int:
        k = self.positives_per_batch
        return max(math.ceil(self.num_unlabeled / (self.batch_size - k)), math.ceil(self.num_positive / k))

    def batches(self, epoch: int) -> Tensor:
        """The epoch's batches as an int64 [len(self), batch_size] tensor, positives first in each row."""
        state = np.random.SeedSequence([self.seed, epoch]).generate_state(1, dtype=np.uint64)[0]
        gen = torch.Generator().manual_seed(int(state))
        n, k = len(self), self.positives_per_batch
        pos = _cycled_permutation(self.num_positive, n * k, gen).view(n, k)
        unl = _cycled_permutation(self.num_unlabeled, n * (self.batch_size - k), gen).view(n, -1)
        return torch.cat([pos, unl + self.num_positive], dim=1)

    def __iter__(self) -> Iterator[list[int]]:
        epoch = self.epoch
        if not self._explicit_epoch:
            self.epoch += 1
        yield from self.batches(epoch).tolist()


def _cycled_permutation(n: int, length: int, gen: torch.Generator) -> Tensor:
    # Fresh permutations back to back: every index appears once before any appears twice.
    reps = math.ceil(length / n)
    return torch.cat([torch.randperm(n, generator=gen) for _ in range(reps)])[:length]


def image_pool(*parts: ImageDataset | Tensor, like: ImageDataset | None = None) -> ImageDataset:
    """One ImageDataset of datasets / uint8 [N, C, H, W] tensors, normalised like ``like`` (default: the first dataset).

    P and U must go through identical preprocessing, so the pool takes the mean/std (and class names) of ``like``
    whatever its parts' own were. Targets of dataset parts are kept (for reporting only; PU compression never
    reads them); tensor parts get -1.
    """
    like = like or next((p for p in parts if isinstance(p, ImageDataset)), None)
    if like is None:
        raise ConfigError("image_pool needs like=<ImageDataset> (its normalisation) when no part is a dataset")
    images, targets = [], []
    for part in parts:
        imgs = part.images if isinstance(part, ImageDataset) else part
        if not isinstance(imgs, Tensor) or imgs.dtype != torch.uint8 or tuple(imgs.shape[1:]) != like.input_size:
            got = tuple(imgs.shape) if isinstance(imgs, Tensor) else type(imgs).__name__
            raise ConfigError(f"every part must be uint8 images of size {like.input_size}, got {got}")
        images.append(imgs)
        targets.append(part.targets if isinstance(part, ImageDataset) else torch.full((len(imgs),), -1))
    return ImageDataset(
        torch.cat(images),
        torch.cat(targets),
        classes=like.classes,
        name="pool",
        split="train",
        mean=like.mean,
        std=like.std,
    )


class PULoader:
    """``(inputs, pu_labels)`` batches of P and U for :class:`PUStep`, 1 = positive, 0 = unlabeled (arXiv 1909.09757).

    Both sets are normalised with the positives' mean/std (identical preprocessing for P and U); batching follows
    :class:`PUBatchSampler`. No augmentation. ``set_epoch`` makes each epoch's order a function of (seed, epoch).
    """

    def __init__(
        self,
        positives: ImageDataset,
        unlabeled: ImageDataset,
        *,
        batch_size: int = 512,
        positives_per_batch: int | None = None,
        seed: int = 0,
    ) -> None:
        if positives.input_size != unlabeled.input_size:
            raise ConfigError(
                f"positives are {positives.input_size} but unlabeled images {unlabeled.input_size}; load both at the "
                "same size (load_dataset(..., image_size=...))"
            )
        self.sampler = PUBatchSampler(
            len(positives), len(unlabeled), batch_size=batch_size, positives_per_batch=positives_per_batch, seed=seed
        )
        self.images = torch.cat([positives.images, unlabeled.images])
        self.labels = torch.cat([torch.ones(len(positives)), torch.zeros(len(unlabeled))]).long()
        self.mean, self.std = positives.mean_std_tensors()

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for idx in self.sampler:
            idx_t = torch.as_tensor(idx)
            yield normalize(self.images.index_select(0, idx_t), self.mean, self.std), self.labels[idx_t]


# ------------------------------------------------------------------------------------------------- the selection


def pu_scores(
    pu_net: nn.Module,
    data: ImageDataset | Iterable[Any],
    *,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
) -> Tensor:
    """The PU logit f(x) of every sample of ``data`` (eval mode, in order), shape [N] (arXiv 1909.09757)."""
    out = predict_logits(pu_net, data, batch_size=batch_size, device=device)
    if out.dim() != 2 or out.shape[1] != 1:
        raise ConfigError(f"a PU network outputs one logit per sample ([N, 1]), this one gives {tuple(out.shape)}")
    return out.squeeze(1)


def select_positives(scores: Tensor, *, threshold: float | None = 0.0, top_k: int | None = None) -> Tensor:
    """Indices of the samples taken as positive, highest PU score first: f(x) > threshold (arXiv 1909.09757).

    The official rule is ``threshold=0`` (the logit's decision boundary). ``top_k`` keeps at most the k best
    (e.g. ``round(prior * len(pool))``); ``threshold=None`` with ``top_k`` ranks without a threshold. Ties keep
    the pool's order.
    """
    if scores.dim() != 1:
        raise ConfigError(f"scores must be one value per sample ([N]), got {tuple(scores.shape)}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
        raise ConfigError(f"top_k must be an int >= 0 or None, got {top_k!r}")
    order = torch.sort(scores, descending=True, stable=True).indices
    if threshold is not None:
        order = order[scores[order] > threshold]
    return order if top_k is None else order[:top_k]


def precision_recall(selected: Tensor, is_positive: Tensor) -> dict[str, float]:
    """Selection quality against ground truth: precision, recall and the counts (nan where undefined)."""
    truth = torch.as_tensor(is_positive).bool().reshape(-1)
    idx = torch.as_tensor(selected).long().reshape(-1)
    if idx.numel() and (idx.min() < 0 or idx.max() >= truth.numel()):
        raise ConfigError(f"selected indices must lie in [0, {truth.numel()}) (the pool's size)")
    if idx.unique().numel() != idx.numel():
        raise ConfigError("selected indices must be distinct")
    hits, n_sel, n_pos = int(truth[idx].sum()), idx.numel(), int(truth.sum())
    return {
        "precision": hits / n_sel if n_sel else math.nan,
        "recall": hits / n_pos if n_pos else math.nan,
        "selected": float(n_sel),
        "positives": float(n_pos),
        "true_positives": float(hits),
    }
