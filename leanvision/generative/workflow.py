"""GAN training with importance sampling of the latent (FIS-GAN, arXiv 1910.02519) as one call that writes its run
directory, and sampling an image grid from a trained generator."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from leanvision._io import atomic_write, atomic_write_text
from leanvision.config import check_device, check_threads, load_config, writable_dir
from leanvision.errors import CheckpointError, ConfigError
from leanvision.generative.config import GanConfig
from leanvision.generative.nets import Discriminator, Generator
from leanvision.generative.sampling import FlowProposal, GaussianProposal, LatentSampler
from leanvision.runs import changed_settings, check_run_dir, interruptible

RUN_CONFIG, LAST, METRICS, GRIDS = "config.yaml", "last.pt", "metrics.jsonl", "grids"
GRID = 64  # images in each grid of the run (the same prior latents every time)


@dataclass
class GanResult:
    """What a GAN run wrote and measured; ``history`` has one row per evaluation (step 0 first)."""

    out_dir: Path
    checkpoint: Path  # last.pt: generator, discriminator, proposal, optimizers and RNG state
    report: Path  # report.html (report.md beside it)
    sampling: str
    dataset: str
    steps: int
    steps_trained: int  # by this call: 0 when a resumed run had already finished
    history: list[dict[str, Any]]

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1]

    def summary(self) -> str:
        """One line for a person: the final classifier-FID, coverage, ESS and wall-clock, and where the files are."""
        f = self.final
        ess = [r["ess_min"] for r in self.history if r.get("ess_min") is not None]
        flow = f" ({f['proposal_seconds']:.0f} s of it fitting the proposal)" if self.sampling != "prior" else ""
        done = "" if self.steps_trained else "already finished; "
        return (f"{done}GAN ({self.sampling} sampling) on {self.dataset}, {self.steps} steps: classifier-FID "
                f"{f['fid']:.2f}, class coverage {f['coverage']:.3f}" + (f", ESS/N >= {min(ess):.2f}" if ess else "")
                + f"; {f['seconds']:.0f} s of training{flow}; report and last.pt in {self.out_dir}")  # fmt: skip


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator outputs in [-1, 1] as uint8 images, quantised like the real ones."""
    return ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def save_grid(images: torch.Tensor, path: str | os.PathLike[str], *, nrow: int | None = None) -> Path:
    """uint8 images ``[N, 1, H, W]`` as one PNG grid (``nrow`` per row, default square), written atomically."""
    from PIL import Image
    from torchvision.utils import make_grid

    grid = make_grid(images.cpu(), nrow=nrow or math.ceil(math.sqrt(len(images))), padding=2, pad_value=255)
    png = Image.fromarray(grid[0].numpy())
    return atomic_write(path, lambda f: png.save(f, format="PNG"))


def _data(cfg: GanConfig) -> tuple[Any, torch.Tensor]:
    """The training split (a seeded subset if asked) and the real test images the FID compares with (uint8)."""
    from leanvision.data import load_dataset

    train = load_dataset(cfg.dataset, root=cfg.data_dir, split="train", subset=cfg.subset, seed=cfg.seed)
    if train.input_size != (1, 28, 28):
        raise ConfigError(f"dataset: {cfg.dataset} has {'x'.join(map(str, train.input_size))} images but the GAN "
                          "makes 1x28x28 ones: use mnist or fashion_mnist")  # fmt: skip
    if len(train) < cfg.batch_size:
        raise ConfigError(f"batch_size {cfg.batch_size} is larger than the {len(train)} training images: lower it")
    test = load_dataset(cfg.dataset, root=cfg.data_dir, split="test")
    if cfg.fid_samples < len(test):  # the same class-balanced real set for every run
        test = test.subset(cfg.fid_samples, seed=0)
    return train, test.images


class _Run:
    """The state of one run: networks, optimizers, the latent sampler, data order, history and clocks."""

    def __init__(self, cfg: GanConfig, train: Any, fid: Any, out: Path) -> None:
        from leanvision.data import make_loader

        self.cfg, self.fid, self.out, dev = cfg, fid, out, cfg.device
        torch.manual_seed(cfg.seed)
        self.g = Generator(cfg.latent_dim, cfg.g_channels).to(dev)
        self.d = Discriminator(cfg.d_channels).to(dev)
        # evaluated and sampled: an exponential average of G's weights (arXiv 1806.04498), so a FID curve follows
        # training rather than the step-to-step oscillation of GAN iterates; training itself never reads it
        self.g_ema = AveragedModel(self.g, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema)) if cfg.ema else None
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=cfg.lr, betas=cfg.betas)
        p = cfg.proposal
        proposal = {"prior": lambda: None, "gaussian": lambda: GaussianProposal(cfg.latent_dim),
                    "fis": lambda: FlowProposal(cfg.latent_dim, transforms=p.flow_transforms, hidden=p.flow_hidden,
                                                lr=p.flow_lr, steps=p.fit_steps)}[cfg.sampling]()  # fmt: skip
        self.sampler = LatentSampler(cfg.latent_dim, proposal.to(dev) if proposal else None, beta=p.beta,
                                     truncate=p.truncate, device=dev)  # fmt: skip
        # the order of real images is a pure function of (seed, epoch): nothing to save for an exact resume
        self.images, self.loader = train.images, make_loader(train, batch_size=cfg.batch_size, seed=cfg.seed,
                                                            augment=False, drop_last=True)  # fmt: skip
        self.per_epoch, self._plan = len(self.loader), (-1, None)
        self.step, self.seconds, self.proposal_seconds = 0, 0.0, 0.0
        self.history: list[dict[str, Any]] = []
        self._window: list[tuple[float, float, float]] = []  # (d_loss, g_loss, ess) since the last evaluation

    def load(self, ckpt: dict[str, Any]) -> None:
        """Continue from a checkpoint written by :meth:`save`."""
        from leanvision.engine.checkpoint import set_rng_state

        for name, obj in (("generator", self.g), ("discriminator", self.d), ("opt_g", self.opt_g),
                          ("opt_d", self.opt_d), ("sampler", self.sampler)):  # fmt: skip
            obj.load_state_dict(ckpt[name])
        if self.g_ema is not None:
            self.g_ema.load_state_dict(ckpt["generator_ema"])
        self.step, self.history = ckpt["step"], list(ckpt["history"])
        self.seconds, self.proposal_seconds = ckpt["seconds"], ckpt["proposal_seconds"]
        set_rng_state(ckpt["rng"])

    def save(self) -> None:
        from leanvision.engine.checkpoint import rng_state, save_checkpoint

        ema = {"generator_ema": self.g_ema.state_dict()} if self.g_ema is not None else {}
        save_checkpoint(self.out / LAST, step=self.step, generator=self.g.state_dict(), **ema,
                        discriminator=self.d.state_dict(), opt_g=self.opt_g.state_dict(),
                        opt_d=self.opt_d.state_dict(), sampler=self.sampler.state_dict(), rng=rng_state(),
                        history=self.history, seconds=self.seconds, proposal_seconds=self.proposal_seconds,
                        config=self.cfg.model_dump())  # fmt: skip

    def real_batch(self) -> torch.Tensor:
        epoch, i = divmod(self.step, self.per_epoch)
        if self._plan[0] != epoch:
            self._plan = (epoch, self.loader.epoch_plan(epoch).order)
        idx = self._plan[1][i * self.cfg.batch_size : (i + 1) * self.cfg.batch_size]
        return self.images[idx].to(self.cfg.device).float() / 127.5 - 1

    def gan_step(self) -> None:
        """One D step and one G step, fake terms weighted by the latents' importance weights."""
        g, d = self.g, self.d
        real = self.real_batch()
        n = len(real)
        z, w, ess = self.sampler.draw(2 * n)  # one draw for both steps: the proposal's overhead is paid once
        with torch.no_grad():
            fake = g(z[:n])
        d_loss = F.softplus(-d(real)).mean() + (w[:n] * F.softplus(d(fake))).mean()
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        g_loss = (w[n:] * F.softplus(-d(g(z[n:])))).mean()
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        if self.g_ema is not None:
            self.g_ema.update_parameters(self.g)
        self._window.append((d_loss.item(), g_loss.item(), ess))

    def train(self, progress: bool) -> None:
        from leanvision.engine._progress import track

        cfg, p = self.cfg, self.cfg.proposal
        if self.step == 0 and not self.history:
            self.evaluate()
        for _ in track(range(self.step, cfg.steps), description=f"GAN steps ({cfg.sampling})", enabled=progress):
            start = time.perf_counter()
            if self.step and self.step % p.refresh_every == 0 and self.sampler.proposal is not None:
                self.sampler.refit(self.g, self.d, p.fit_samples)
                self.proposal_seconds += time.perf_counter() - start
            self.gan_step()
            self.seconds += time.perf_counter() - start
            self.step += 1
            if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                self.evaluate()

    def evaluate(self) -> None:
        """Classifier-FID and coverage of prior samples (never the proposal's), a grid, metrics.jsonl and last.pt."""
        cfg = self.cfg
        z = torch.randn(cfg.fid_samples, cfg.latent_dim, generator=torch.Generator().manual_seed(cfg.seed))
        g = self.g_ema.module if self.g_ema is not None else self.g
        g.eval()
        with torch.no_grad():
            images = torch.cat([to_uint8(g(c.to(cfg.device))).cpu() for c in z.split(500)])
        g.train()
        row: dict[str, Any] = {"step": self.step, "seconds": round(self.seconds, 3),
                               "proposal_seconds": round(self.proposal_seconds, 3), **self.fid(images)}  # fmt: skip
        if self._window:
            d_loss, g_loss, ess = (torch.tensor(v, dtype=torch.float64) for v in zip(*self._window, strict=True))
            row |= {"d_loss": float(d_loss.mean()), "g_loss": float(g_loss.mean()), "ess": float(ess.mean()),
                    "ess_min": float(ess.min())}  # fmt: skip
            self._window = []
        self.history.append(row)
        save_grid(images[:GRID], self.out / GRIDS / f"step_{self.step:07d}.png")
        self.save()  # the checkpoint first: metrics.jsonl is rewritten from its history on resume
        write_metrics(self.out, self.history)


def write_metrics(out: Path, history: list[dict[str, Any]]) -> None:
    atomic_write_text(out / METRICS, "".join(json.dumps(r) + "\n" for r in history))


def _resumed(cfg: GanConfig, out: Path, *, resume: bool) -> dict[str, Any] | None:
    """The checkpoint to continue from (resume) or None; refuses what the shared run rule refuses."""
    from leanvision.engine import load_checkpoint

    last = out / LAST
    held = last.is_file() if resume else (last.exists() or (out / METRICS).exists())
    if not (resume and held):
        check_run_dir(out, what="GAN run", held=held, resume=resume)
        return None
    ckpt = load_checkpoint(last)
    if not isinstance(ckpt.get("config"), dict) or "generator" not in ckpt:
        raise CheckpointError(f"{last} was not written by a GAN run; point --out-dir at a `leanvision gan train` run")
    changed = changed_settings(ckpt["config"], cfg.model_dump())
    check_run_dir(out, what="GAN run", held=True, resume=True, changed=changed)
    return ckpt


def train(config: GanConfig | dict[str, Any] | str | Path, *, resume: bool = False,
          progress: bool = True) -> GanResult:  # fmt: skip
    """Train a GAN with ``config.sampling`` latents (prior, fis or gaussian), writing grids, metrics.jsonl, last.pt
    and a report (FID vs steps and wall-clock, ESS, grids over training) to its out_dir.

    Every ``eval_every`` steps the classifier-FID of prior samples is measured and last.pt written; ``resume``
    continues from it exactly (the same numbers as an uninterrupted run) with the settings the run was started with.
    """
    from leanvision.generative.fid import ClassifierFID, load_classifier

    cfg = load_config(GanConfig, config, source="gan config")
    out = Path(cfg.out_dir)
    ckpt = _resumed(cfg, out, resume=resume)
    check_threads(cfg.threads)
    check_device(cfg.device)
    if ckpt is not None and ckpt["step"] >= cfg.steps:
        return _finish(cfg, out, ckpt["history"], trained=0)
    threads = torch.get_num_threads()
    try:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        train_set, real = _data(cfg)
        fid = ClassifierFID(load_classifier(cfg.dataset, path=cfg.classifier), real, device=cfg.device)
        run = _Run(cfg, train_set, fid, out)  # everything that can fail on the user's input has been checked
        writable_dir(out)
        atomic_write_text(out / RUN_CONFIG, yaml.safe_dump(cfg.model_dump(), sort_keys=False))
        start = 0
        if ckpt is not None:
            run.load(ckpt)
            start = run.step
            write_metrics(out, run.history)  # rows written after the checkpoint belong to steps that are redone
        again = f"leanvision gan train {out / RUN_CONFIG} --resume"
        with interruptible("GAN training", lambda: again if (out / LAST).is_file() else None):
            run.train(progress)
    finally:
        torch.set_num_threads(threads)
    return _finish(cfg, out, run.history, trained=cfg.steps - start)


def _grids_over_training(out: Path, steps: list[int], path: Path, *, panels: int = 5) -> Path:
    """Up to ``panels`` of the run's grids side by side, evenly spaced over training, each headed by its step."""
    from PIL import Image, ImageDraw

    picks = sorted({steps[round(i * (len(steps) - 1) / max(panels - 1, 1))] for i in range(min(panels, len(steps)))})
    grids = [Image.open(out / GRIDS / f"step_{s:07d}.png").convert("L") for s in picks]
    head, gap = 14, 8
    w, h = grids[0].size
    sheet = Image.new("L", (len(grids) * (w + gap) - gap, h + head), 255)
    draw = ImageDraw.Draw(sheet)
    for i, (s, grid) in enumerate(zip(picks, grids, strict=True)):
        sheet.paste(grid, (i * (w + gap), head))
        draw.text((i * (w + gap) + 2, 1), f"step {s}", fill=0)
    return atomic_write(path, lambda f: sheet.save(f, format="PNG"))


def _finish(cfg: GanConfig, out: Path, history: list[dict[str, Any]], *, trained: int) -> GanResult:
    """Write the report: grids over training, FID vs steps and vs wall-clock, ESS over training, the table."""
    from leanvision.report import Column, line_panels, write_report

    series = {cfg.sampling: history}
    panels = [("fid", "classifier-FID"), ("coverage", "class coverage"), ("ess", "ESS / N (mean)")]
    figures = [
        _grids_over_training(out, [r["step"] for r in history], out / "grids.png"),
        line_panels(series, panels, out / "curves_steps.png", x_key="step", log_y=["fid"]),
        line_panels(series, panels[:1], out / "fid_seconds.png", x_key="seconds", log_y=["fid"]),
    ]
    g = lambda spec: lambda v: format(v, spec)  # noqa: E731
    columns = [Column("step", "step"), Column("seconds", "training s", g(".1f")), Column("fid", "classifier-FID",
               g(".3f")), Column("coverage", "coverage", g(".3f")), Column("ess", "ESS/N mean", g(".3f")),
               Column("ess_min", "ESS/N min", g(".3f")), Column("d_loss", "D loss", g(".3f")),
               Column("g_loss", "G loss", g(".3f"))]  # fmt: skip
    how = {"prior": "latents from the prior N(0, I)",
           "fis": "latents importance-sampled from a normalizing flow fitted to the hardness-weighted prior (FIS-GAN, "
                  "arXiv 1910.02519)",
           "gaussian": "latents importance-sampled from a Gaussian fitted to the hardness-weighted prior"}  # fmt: skip
    html, _ = write_report(
        out, title=f"leanvision gan: {cfg.dataset}, {cfg.sampling} sampling", rows=history, columns=columns,
        figures=figures, intro=f"{cfg.steps} generator steps of batch {cfg.batch_size}, {how[cfg.sampling]}. FID and "
        f"coverage are measured on {cfg.fid_samples} samples from the prior against real test images, with a small "
        "classifier's penultimate features; training seconds include fitting the proposal, not evaluation.",
        notes=["class coverage: entropy of the generated images' predicted classes over log(classes); 1 = balanced.",
               "ESS/N: effective sample size of the importance weights per batch (1 = plain prior sampling)."],
    )  # fmt: skip
    return GanResult(out, out / LAST, html, cfg.sampling, cfg.dataset, cfg.steps, trained, history)


def sample(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], *, n: int = 64, seed: int = 0,
           device: str = "cpu") -> Path:  # fmt: skip
    """Generate ``n`` images from the prior with a GAN run's checkpoint and save them as one PNG grid at ``out``."""
    from leanvision.engine import load_checkpoint

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ConfigError(f"'{out}': the grid is written as a PNG; give a file name ending in .png")
    if n < 1:
        raise ConfigError(f"n {n}: give the number of images to generate, 1 or more")
    check_device(device)
    ckpt = load_checkpoint(checkpoint)
    cfg = ckpt.get("config")
    if not isinstance(cfg, dict) or not isinstance(ckpt.get("generator"), dict):
        raise CheckpointError(f"{checkpoint} holds no generator: give the last.pt of a `leanvision gan train` run")
    g = Generator(cfg["latent_dim"], cfg["g_channels"])
    ema = ckpt.get("generator_ema")  # the average is what the run evaluated; AveragedModel keeps it under "module."
    g.load_state_dict({k.removeprefix("module."): v for k, v in ema.items() if k.startswith("module.")}
                      if isinstance(ema, dict) else ckpt["generator"])  # fmt: skip
    g.to(device).eval()
    z = torch.randn(n, g.latent_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        images = torch.cat([to_uint8(g(c.to(device))).cpu() for c in z.split(500)])
    out.parent.mkdir(parents=True, exist_ok=True)
    return save_grid(images, out)
