"""The configuration of one GAN run (:func:`leanvision.generative.train`); torch-free, validated by pydantic."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from leanvision.registry import Choices

# prior: z ~ N(0, I) as usual; fis: a normalizing flow fitted to the hardness-weighted prior (FIS-GAN);
# gaussian: the ablation, a Gaussian fitted to the same weighted latents instead of a flow.
SAMPLINGS = Choices("latent sampling", ("prior", "fis", "gaussian"))


class ProposalConfig(BaseModel):
    """How the latent proposal is fitted and mixed with the prior (used by sampling fis and gaussian)."""

    model_config = ConfigDict(extra="forbid")

    beta: float = Field(0.2, gt=0, le=1, description="share of the prior in the defensive mixture; weights <= 1/beta")
    truncate: float = Field(10.0, ge=1, description="self-normalised weights are cut at this value")
    refresh_every: int = Field(250, ge=1, description="generator steps between refits of the proposal")
    fit_samples: int = Field(1024, ge=16, description="prior latents scored by their hardness at each refit")
    fit_steps: int = Field(30, ge=1, description="Adam steps of weighted maximum likelihood per refit (flow)")
    flow_lr: float = Field(1e-3, gt=0, le=1, description="learning rate of the flow's fit")
    flow_transforms: int = Field(4, ge=1, le=16, description="affine coupling layers of the flow")
    flow_hidden: int = Field(64, ge=4, le=4096, description="hidden units of each coupling network (two layers)")


class GanConfig(BaseModel):
    """Everything one GAN run needs; unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field("mnist", description="a registered 1x28x28 dataset: mnist or fashion_mnist")
    data_dir: str | None = Field(None, description="dataset root (default: $LEANVISION_DATA)")
    subset: int | None = Field(None, ge=10, description="class-balanced training subset size (default: all)")
    sampling: Literal[SAMPLINGS] = Field("fis", description="latent sampling: prior, fis or gaussian")  # type: ignore[valid-type]
    proposal: ProposalConfig = Field(default_factory=ProposalConfig, description="the importance-sampling proposal")
    latent_dim: int = Field(64, ge=2, le=1024, description="dimensions of the latent z ~ N(0, I)")
    g_channels: int = Field(32, ge=8, le=1024, multiple_of=8, description="generator width (channels at 14x14)")
    d_channels: int = Field(32, ge=4, le=1024, description="discriminator width (channels at 7x7)")
    steps: int = Field(3000, ge=1, le=10_000_000, description="generator steps in total (one D step each)")
    batch_size: int = Field(64, ge=2, le=65_536, description="real and generated images per step")
    lr: float = Field(2e-4, gt=0, le=1, description="Adam learning rate of G and D")
    betas: tuple[float, float] = Field((0.5, 0.999), description="Adam betas of G and D")
    ema: float = Field(0.99, ge=0, lt=1, description="decay of the G weight average evaluated and sampled (0: raw G)")
    eval_every: int = Field(250, ge=1, description="steps between evaluations (FID, grid, checkpoint)")
    fid_samples: int = Field(5000, ge=10, description="generated and real test images per classifier-FID")
    classifier: str | None = Field(None, description="classifier-FID checkpoint (default: the one shipped for dataset)")
    seed: int = Field(0, ge=0, description="seed of initialisation, data order and latents")
    threads: int | None = Field(None, ge=1, le=1024, description="CPU threads (default: torch's)")
    device: str = Field("cpu", description="cpu, cuda or cuda:N")
    out_dir: str = Field("runs/gan", description="where metrics, grids, checkpoints and the report go")

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in v):
            raise ValueError(f"got {list(v)}: Adam's betas are two numbers in [0, 1), e.g. [0.5, 0.999]")
        return v
