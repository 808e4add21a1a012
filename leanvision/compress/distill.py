"""Knowledge-distillation losses, plain and class-weighted robust (RKD of PU compression, arXiv 1909.09757).

The robust loss follows the official PU-compression code: per-sample KL weighted by the class weight of the
teacher's predicted class, and the maximum over a few perturbed weight vectors. Ground-truth labels are never
read: only the teacher's outputs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leanvision.data.dataset import ImageDataset
from leanvision.data.loader import make_loader
from leanvision.errors import ConfigError

KD_SCALES = ("tau", "tau2")


def _logits(outputs: Any) -> Tensor:
    # Models with auxiliary outputs return a tuple whose first element is the logits (the engine's convention).
    return outputs[0] if isinstance(outputs, (tuple, list)) else outputs


def _check_tau(tau: float, scale: str) -> None:
    if not tau > 0:
        raise ConfigError(
            f"tau (the distillation temperature) must be > 0, got {tau}; 1.0 is the PU-compression default"
        )
    if scale not in KD_SCALES:
        raise ConfigError(
            f"scale must be 'tau' (the official PU-compression code) or 'tau2' (Hinton et al.), got {scale!r}"
        )


def sample_kl(student_logits: Tensor, teacher_logits: Tensor, *, tau: float = 1.0) -> Tensor:
    """Per-sample KL(softmax(teacher / tau) || softmax(student / tau)), shape [B]."""
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise ConfigError(
            f"student and teacher logits must both be [B, num_classes], got {tuple(student_logits.shape)} and "
            f"{tuple(teacher_logits.shape)}"
        )
    log_p = F.log_softmax(student_logits / tau, dim=1)
    q = F.softmax(teacher_logits / tau, dim=1)
    return F.kl_div(log_p, q, reduction="none").sum(dim=1)


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    tau: float = 1.0,
    sample_weights: Tensor | None = None,
    scale: str = "tau",
) -> Tensor:
    """(1/B) sum_x w_x KL(teacher || student) at temperature tau, times tau (official, arXiv 1909.09757) or tau^2."""
    _check_tau(tau, scale)
    kl = sample_kl(student_logits, teacher_logits, tau=tau)
    if sample_weights is not None:
        kl = kl * sample_weights
    # The official code multiplies by tau, not tau^2: identical at its tau = 1, kept as the default.
    return kl.sum() / kl.shape[0] * (tau if scale == "tau" else tau * tau)


def robust_kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    weight_vectors: Tensor,
    *,
    tau: float = 1.0,
    scale: str = "tau",
) -> Tensor:
    """max_v kd_loss with sample weights v[argmax teacher]: the min-max robust KD of arXiv 1909.09757."""
    _check_tau(tau, scale)
    vectors = torch.as_tensor(weight_vectors, dtype=student_logits.dtype, device=student_logits.device)
    if vectors.dim() == 1:
        vectors = vectors.unsqueeze(0)
    if vectors.dim() != 2 or vectors.shape[1] != teacher_logits.shape[-1]:
        raise ConfigError(
            f"weight_vectors must be [R, num_classes] with num_classes = {teacher_logits.shape[-1]}, got "
            f"{tuple(vectors.shape)}"
        )
    kl = sample_kl(student_logits, teacher_logits, tau=tau)
    per_vector = (vectors[:, teacher_logits.argmax(dim=1)] * kl).sum(dim=1) / kl.shape[0]
    # max over a dim routes the gradient to the one maximising vector only (the official code backpropagates
    # the loss it picked); a full-tensor max would split it among ties.
    worst = per_vector.max(dim=0).values
    return worst * (tau if scale == "tau" else tau * tau)


def class_weights(teacher_logits: Tensor, *, min_count: float = 1.0) -> Tensor:
    """w_k = (1/c_k) / sum_j (1/c_j) * K with c_k the teacher's soft count of class k (arXiv 1909.09757).

    ``c_k = sum_x softmax(teacher(x))_k`` is clamped to ``>= min_count`` so a class the teacher never predicts
    does not get an exploding weight (the official code has no clamp; ``min_count=0`` removes it).
    """
    if teacher_logits.dim() != 2 or teacher_logits.shape[0] == 0:
        raise ConfigError(
            f"teacher_logits must be a non-empty [N, num_classes] tensor, got {tuple(teacher_logits.shape)}"
        )
    if not min_count >= 0:
        raise ConfigError(f"min_count must be >= 0, got {min_count}")
    counts = F.softmax(teacher_logits.double(), dim=1).sum(dim=0).clamp_min(min_count)
    inv = 1.0 / counts
    return (inv / inv.sum() * teacher_logits.shape[1]).to(teacher_logits.dtype)


def perturb_class_weights(weights: Tensor, *, eps: float = 0.1, num: int = 1, seed: int = 0) -> Tensor:
    """[num + 1, K]: ``weights`` then ``weights + eps * u_r``, u_r ~ U(0, 1)^K, not renormalised (arXiv 1909.09757)."""
    if weights.dim() != 1:
        raise ConfigError(f"weights must be one vector [num_classes], got {tuple(weights.shape)}")
    if not eps >= 0 or not isinstance(num, int) or num < 0:
        raise ConfigError(f"need eps >= 0 and an integer num >= 0 (perturbed vectors), got eps={eps}, num={num}")
    gen = torch.Generator().manual_seed(seed)
    noise = torch.rand(num, weights.shape[0], generator=gen, dtype=torch.float64).to(weights.dtype)
    return torch.cat([weights.unsqueeze(0), weights.unsqueeze(0) + eps * noise])


def _as_batches(data: ImageDataset | Iterable[Any], batch_size: int) -> Iterable[Any]:
    if isinstance(data, ImageDataset):
        return make_loader(data, batch_size=batch_size, shuffle=False, augment=False)
    return data


@torch.no_grad()
def predict_logits(
    model: nn.Module, data: ImageDataset | Iterable[Any], *, batch_size: int = 1024, device: str | torch.device = "cpu"
) -> Tensor:
    """``model``'s outputs (eval mode, no grad) over an ImageDataset or (inputs, targets) batches, in order, on CPU."""
    was_training = model.training
    model.eval()  # BatchNorm must use running statistics when scoring or counting classes
    try:
        outs = []
        for batch in _as_batches(data, batch_size):
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            outs.append(_logits(model(inputs.to(device))).float().cpu())
    finally:
        model.train(was_training)
    if not outs:
        raise ConfigError("data yielded no batches; pass a non-empty dataset or loader")
    return torch.cat(outs)


def teacher_class_weights(
    teacher: nn.Module,
    data: ImageDataset | Iterable[Any],
    *,
    eps: float = 0.1,
    num_perturb: int = 1,
    seed: int = 0,
    min_count: float = 1.0,
    device: str | torch.device = "cpu",
) -> Tensor:
    """RKD weight vectors [num_perturb + 1, K] from the teacher's outputs on the training set (arXiv 1909.09757)."""
    w = class_weights(predict_logits(teacher, data, device=device), min_count=min_count)
    return perturb_class_weights(w, eps=eps, num=num_perturb, seed=seed)


class KDLoss:
    """``fit(loss_fn=...)`` distilling ``teacher``; with ``weight_vectors`` the robust max of arXiv 1909.09757.

    The teacher runs in eval mode without gradients (its training flag is restored); ``targets`` are never read,
    so the student learns only from the teacher's outputs. Without ``weight_vectors`` it is plain KD.
    """

    def __init__(
        self, teacher: nn.Module, *, weight_vectors: Tensor | None = None, tau: float = 1.0, scale: str = "tau"
    ) -> None:
        _check_tau(tau, scale)
        self.teacher = teacher
        self.weight_vectors = None if weight_vectors is None else torch.as_tensor(weight_vectors)
        self.tau = tau
        self.scale = scale

    @torch.no_grad()
    def teacher_logits(self, inputs: Tensor) -> Tensor:
        """The teacher's logits for ``inputs`` (eval mode, no grad; moved to the inputs' device if needed)."""
        param = next(self.teacher.parameters(), None)
        if param is not None and param.device != inputs.device:
            self.teacher.to(inputs.device)
        was_training = self.teacher.training
        self.teacher.eval()
        try:
            return _logits(self.teacher(inputs))
        finally:
            self.teacher.train(was_training)

    def __call__(self, outputs: Any, targets: Tensor | None = None, inputs: Tensor | None = None) -> Tensor:
        if inputs is None:
            raise ConfigError(
                "KDLoss needs the batch inputs to run the teacher: call it as loss(outputs, targets, inputs)"
            )
        student, teacher = _logits(outputs), self.teacher_logits(inputs)
        if self.weight_vectors is None:
            return kd_loss(student, teacher, tau=self.tau, scale=self.scale)
        return robust_kd_loss(student, teacher, self.weight_vectors, tau=self.tau, scale=self.scale)
