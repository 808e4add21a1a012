"""Performance predictors: learn to rank architectures from a few measured ones."""

from leanvision.search.predictors.renas import (
    ReNASPredictor,
    encode_cell,
    encode_cells,
    fit_predictor,
    kendall_tau,
    nb201_encodings,
    pairwise_ranking_loss,
)

__all__ = [
    "ReNASPredictor",
    "encode_cell",
    "encode_cells",
    "fit_predictor",
    "kendall_tau",
    "nb201_encodings",
    "pairwise_ranking_loss",
]
