"""Deployment-time calibration: operational calibration with a GP (arXiv 1910.02352) and its baselines."""

from leanvision.calibrate.baselines import IsotonicCalibration, TemperatureScaling, finetune_last_layer, linear_outputs
from leanvision.calibrate.features import ModelOutputs, collect_outputs, last_linear
from leanvision.calibrate.metrics import (
    brier,
    confident_correct,
    cost_curve,
    ece,
    high_conf_errors,
    reliability,
    summary,
)
from leanvision.calibrate.opcal import OperationalCalibrator
from leanvision.calibrate.select import RULES, Selection, coverage_seeds, select_and_calibrate

__all__ = [
    "RULES",
    "IsotonicCalibration",
    "ModelOutputs",
    "OperationalCalibrator",
    "Selection",
    "TemperatureScaling",
    "brier",
    "collect_outputs",
    "confident_correct",
    "cost_curve",
    "coverage_seeds",
    "ece",
    "finetune_last_layer",
    "high_conf_errors",
    "last_linear",
    "linear_outputs",
    "reliability",
    "select_and_calibrate",
    "summary",
]
