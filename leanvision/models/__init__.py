"""Model families, the registry (`create_model`, `list_models`) and model cards (`model_card`)."""

from __future__ import annotations

from leanvision.models import binary, dynamic, fsf, ghostnet, nasbench201, quick, resnet_cifar, tv_cifar  # noqa: F401  (importing registers the models)
from leanvision.models._base import Classifier
from leanvision.models._card import ModelCard, model_card, render_model_table, with_model_table
from leanvision.models._registry import arch_of, create_from_arch, create_model, list_models, register_model
from leanvision.models.binary import BinaryResNet, BinaryVGG
from leanvision.models.dynamic import DynamicNet
from leanvision.models.fsf import CifarVGG
from leanvision.models.ghostify import GhostResNet, GhostStep, ghostify, ghostify_plan
from leanvision.models.ghostnet import GhostNet, ghostnet_from_timm, load_timm_state_dict
from leanvision.models.quick import QuickCNN
from leanvision.models.resnet_cifar import CifarResNet
from leanvision.models.sr import ESRN, create_sr_model, list_sr_models
from leanvision.models.surgery import replace_modules
from leanvision.models.thin import WidthMatch, match_width

__all__ = [
    "ESRN",
    "BinaryResNet",
    "BinaryVGG",
    "CifarResNet",
    "CifarVGG",
    "Classifier",
    "DynamicNet",
    "GhostNet",
    "GhostResNet",
    "GhostStep",
    "ModelCard",
    "QuickCNN",
    "WidthMatch",
    "arch_of",
    "create_from_arch",
    "create_model",
    "create_sr_model",
    "ghostify",
    "ghostify_plan",
    "ghostnet_from_timm",
    "list_models",
    "list_sr_models",
    "load_timm_state_dict",
    "match_width",
    "model_card",
    "register_model",
    "render_model_table",
    "replace_modules",
    "with_model_table",
]
