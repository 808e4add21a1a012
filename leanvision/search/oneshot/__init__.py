"""One-shot (weight-sharing) NAS on NAS-Bench-201: the supernet, its trainer, SPOS, BETANAS and CARS, and the
round-by-round resumable driver."""

from leanvision.search.oneshot.base import ONESHOT, SUPERNET, OneShotMethod, create_oneshot, list_oneshot, picks_of
from leanvision.search.oneshot.betanas import BETANAS, GreedyAlpha, balanced_paths, drop_ops, op_scores
from leanvision.search.oneshot.cars import CARS
from leanvision.search.oneshot.data import SupernetData, SupernetLoader, load_supernet_data
from leanvision.search.oneshot.run import run_oneshot
from leanvision.search.oneshot.spos import SPOS
from leanvision.search.oneshot.supernet import MixedEdge, NB201Supernet, SuperCell, recalibrate_bn, score_paths
from leanvision.search.oneshot.train import SupernetTrainer, uniform_sampler

__all__ = [
    "BETANAS",
    "CARS",
    "ONESHOT",
    "SPOS",
    "SUPERNET",
    "GreedyAlpha",
    "MixedEdge",
    "NB201Supernet",
    "OneShotMethod",
    "SuperCell",
    "SupernetData",
    "SupernetLoader",
    "SupernetTrainer",
    "balanced_paths",
    "create_oneshot",
    "drop_ops",
    "list_oneshot",
    "load_supernet_data",
    "op_scores",
    "picks_of",
    "recalibrate_bn",
    "run_oneshot",
    "score_paths",
    "uniform_sampler",
]
