"""GANs with flow-based importance sampling of the latent (FIS-GAN, arXiv 1910.02519), judged by a classifier-FID;
``train`` is the whole workflow (a run directory with grids, curves and a resumable checkpoint), ``sample`` draws a
grid from a trained generator. The flow and the FID need the ``gan`` extra (zuko, torchmetrics)."""

from leanvision.generative.config import SAMPLINGS, GanConfig, ProposalConfig
from leanvision.generative.fid import (
    ClassifierFID,
    FeatureNet,
    coverage_entropy,
    frechet_metric,
    load_classifier,
    train_classifier,
)
from leanvision.generative.nets import Discriminator, Generator
from leanvision.generative.sampling import (
    FlowProposal,
    GaussianProposal,
    LatentSampler,
    hardness,
    normalised_weights,
    prior_log_prob,
)
from leanvision.generative.workflow import GanResult, sample, train

__all__ = [
    "SAMPLINGS",
    "ClassifierFID",
    "Discriminator",
    "FeatureNet",
    "FlowProposal",
    "GanConfig",
    "GanResult",
    "GaussianProposal",
    "Generator",
    "LatentSampler",
    "ProposalConfig",
    "coverage_entropy",
    "frechet_metric",
    "hardness",
    "load_classifier",
    "normalised_weights",
    "prior_log_prob",
    "sample",
    "train",
    "train_classifier",
]
