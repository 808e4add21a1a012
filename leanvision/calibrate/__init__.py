"""Deployment-time calibration: operational calibration with a GP (arXiv 1910.02352) and its baselines; ``run`` is
the whole workflow (select, label, fit, report) on a trained checkpoint."""

from leanvision.calibrate.baselines import IsotonicCalibration, TemperatureScaling, finetune_last_layer, linear_outputs
from leanvision.calibrate.config import CalibrateConfig
from leanvision.calibrate.deploy import CalibrationEval, calibrated_confidences, evaluate_calibration
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
from leanvision.calibrate.operational import LabelRequest
from leanvision.calibrate.select import RULES, Selection, coverage_seeds, select_and_calibrate
from leanvision.calibrate.workflow import CalibrateResult, run

__all__ = [
    "RULES",
    "CalibrateConfig",
    "CalibrateResult",
    "CalibrationEval",
    "IsotonicCalibration",
    "LabelRequest",
    "ModelOutputs",
    "OperationalCalibrator",
    "Selection",
    "TemperatureScaling",
    "brier",
    "calibrated_confidences",
    "collect_outputs",
    "confident_correct",
    "cost_curve",
    "coverage_seeds",
    "ece",
    "evaluate_calibration",
    "finetune_last_layer",
    "high_conf_errors",
    "last_linear",
    "linear_outputs",
    "reliability",
    "run",
    "select_and_calibrate",
    "summary",
]
