"""Compression: Synaptic Strength pruning, instance-wise feature sparsity, PU compression with robust distillation.

``run(config)`` is the whole Synaptic Strength workflow (train, regularise, prune, fine-tune, measure, report).
"""

from leanvision.compress.distill import (
    KDLoss,
    class_weights,
    kd_loss,
    perturb_class_weights,
    robust_kd_loss,
    teacher_class_weights,
)
from leanvision.compress.early_stop import EarlyStopping, PlateauResult, fit_until_plateau
from leanvision.compress.instance import (
    FeatureDecayStep,
    GatheredConv2d,
    InstanceMacs,
    InstanceSparsity,
    channel_norms,
    feature_cv,
    gather_costs,
    keep_mask,
    l21_penalty,
    layer_cv,
    layers_that_pay,
    prunable_layers,
    select_layers,
    static_masks,
)
from leanvision.compress.plan import apply_plan, make_plan, uniform_plan
from leanvision.compress.pu import (
    PUBatchSampler,
    PULoader,
    PUNet,
    PUStep,
    image_pool,
    nnpu_loss,
    precision_recall,
    pu_risks,
    pu_scores,
    select_positives,
)
from leanvision.compress.synaptic import SynapticConv2d, SynapticStrength
from leanvision.compress.workflow import CompressConfig, CompressResult, run

__all__ = [
    "CompressConfig",
    "CompressResult",
    "EarlyStopping",
    "FeatureDecayStep",
    "GatheredConv2d",
    "InstanceMacs",
    "InstanceSparsity",
    "KDLoss",
    "PUBatchSampler",
    "PULoader",
    "PUNet",
    "PUStep",
    "PlateauResult",
    "SynapticConv2d",
    "SynapticStrength",
    "apply_plan",
    "channel_norms",
    "class_weights",
    "feature_cv",
    "fit_until_plateau",
    "gather_costs",
    "image_pool",
    "kd_loss",
    "keep_mask",
    "l21_penalty",
    "layer_cv",
    "layers_that_pay",
    "make_plan",
    "nnpu_loss",
    "perturb_class_weights",
    "precision_recall",
    "prunable_layers",
    "pu_risks",
    "pu_scores",
    "robust_kd_loss",
    "run",
    "select_layers",
    "select_positives",
    "static_masks",
    "teacher_class_weights",
    "uniform_plan",
]
