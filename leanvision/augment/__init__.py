"""Augmentation search: AutoAugment ops on uint8 batches, JSON policies, Adversarial AutoAugment (arXiv 1912.11188)."""

from __future__ import annotations

from leanvision.augment.adversarial import BatchAugmentStep, PolicyController, reinforce
from leanvision.augment.ops import NUM_LEVELS, OP_NAMES, OPS, AugOp, apply_op, cutout, get_op
from leanvision.augment.policy import Policy, PolicyTransform, augment_copies, batch_transform
from leanvision.augment.workflow import AugSearchConfig, AugSearchResult, run

__all__ = [
    "NUM_LEVELS",
    "OPS",
    "OP_NAMES",
    "AugOp",
    "AugSearchConfig",
    "AugSearchResult",
    "BatchAugmentStep",
    "Policy",
    "PolicyController",
    "PolicyTransform",
    "apply_op",
    "augment_copies",
    "batch_transform",
    "cutout",
    "get_op",
    "reinforce",
    "run",
]
