"""FIS-GAN (arXiv 1910.02519) diagnosis: does importance sampling lower the error of the generator's gradient?

    python benchmarks/fisgan_variance.py                                   # every fis/gaussian run of the benchmark
    python benchmarks/fisgan_variance.py --runs-dir OUT/runs --batches 200 --out OUT

Importance sampling of the latent can only speed GAN training up by giving a better estimate of the same gradient.
For every finished fis or gaussian run of benchmarks/fisgan.py (its last.pt: generator, discriminator and fitted
proposal at the end of training), the generator's gradient of the non-saturating loss is estimated --batches times
at the training batch size by (a) plain prior sampling and (b) the run's importance sampler (defensive mixture,
self-normalised truncated weights, exactly as in training), and each is compared with a reference from --reference
prior latents. Reported: the mean squared error of each estimator over the squared norm of the reference, and their
ratio (IS / prior: < 1 means importance sampling helps). Beside them, the best any per-latent proposal can do: with
per-latent gradients g(z) of --per-latent prior latents, the optimal proposal q* ~ p(z) |g(z)| has the variance
(E|g|)^2 - |E g|^2 against the prior's E|g|^2 - |E g|^2 (trace of the covariance, per latent); their ratio bounds the
gain of every importance sampler of the latent, a perfectly fitted flow included.
Needs the runs/ folders the benchmark leaves beside its JSON (not kept in the repository: re-run it to make them).
"""

from __future__ import annotations

import statistics
from pathlib import Path

import _runs
import torch
import torch.nn.functional as F

from leanvision.engine import load_checkpoint
from leanvision.generative.nets import Discriminator, Generator
from leanvision.generative.sampling import FlowProposal, GaussianProposal, LatentSampler


def _grad(g: Generator, d: Discriminator, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The generator's gradient of mean_i w_i * -log D(G(z_i)), flattened."""
    g.zero_grad(set_to_none=True)
    (w * F.softplus(-d(g(z)))).mean().backward()
    return torch.cat([p.grad.flatten() for p in g.parameters()])


def check(run: Path, *, batches: int, reference: int, per_latent: int, seed: int) -> dict:
    """Relative gradient error of prior sampling and of the run's importance sampler, at the run's batch size."""
    ckpt = load_checkpoint(run / "last.pt")
    cfg = ckpt["config"]
    g, d = Generator(cfg["latent_dim"], cfg["g_channels"]), Discriminator(cfg["d_channels"])
    g.load_state_dict(ckpt["generator"])
    d.load_state_dict(ckpt["discriminator"])
    d.eval()  # spectral norm's power iteration stays where training left it
    p, dim, n = cfg["proposal"], cfg["latent_dim"], cfg["batch_size"]
    proposal = (FlowProposal(dim, transforms=p["flow_transforms"], hidden=p["flow_hidden"]) if cfg["sampling"] == "fis"
                else GaussianProposal(dim))  # fmt: skip
    sampler = LatentSampler(dim, proposal, beta=p["beta"], truncate=p["truncate"])
    sampler.load_state_dict(ckpt["sampler"])
    torch.manual_seed(seed)
    ref = torch.stack([_grad(g, d, z, torch.ones(len(z))) for z in torch.randn(reference, dim).split(1024)]).mean(0)
    norm = float(ref.square().sum())
    prior, weighted, ess = [], [], []
    for _ in range(batches):
        prior.append(float((_grad(g, d, torch.randn(n, dim), torch.ones(n)) - ref).square().sum()) / norm)
        z, w, e = sampler.draw(n)
        weighted.append(float((_grad(g, d, z, w) - ref).square().sum()) / norm)
        ess.append(e)
    mse_prior, mse_is = statistics.fmean(prior), statistics.fmean(weighted)
    norms = torch.tensor([_grad(g, d, z[None], torch.ones(1)).norm() for z in torch.randn(per_latent, dim)])
    optimal = (float(norms.mean()) ** 2 - norm) / (float(norms.square().mean()) - norm)  # norm = |E g|^2
    return {"run": run.name, "dataset": cfg["dataset"], "sampling": cfg["sampling"], "seed": cfg["seed"],
            "batch_size": n, "rel_mse_prior": mse_prior, "rel_mse_is": mse_is, "ratio": mse_is / mse_prior,
            "ess_mean": statistics.fmean(ess), "optimal_ratio": optimal}  # fmt: skip


def main() -> None:
    ap = _runs.make_parser(__doc__, data_help=None)
    ap.add_argument("--runs-dir", type=Path, default=Path("benchmarks/results/fisgan/runs"))
    ap.add_argument("--batches", type=int, default=200, help="gradient estimates per estimator")
    ap.add_argument("--reference", type=int, default=16384, help="prior latents of the reference gradient")
    ap.add_argument("--per-latent", type=int, default=1024, help="prior latents whose own gradients bound the gain")
    ap.add_argument("--seed", type=int, default=0)
    _runs.add_out_arg(ap, "fisgan_variance")
    args = ap.parse_args()
    runs = sorted(r for r in args.runs_dir.glob("*_s*") if (r / "last.pt").is_file() and "prior" not in r.name)
    if not runs:
        raise SystemExit(f"no finished fis or gaussian run in {args.runs_dir}: run benchmarks/fisgan.py first")
    rows = [check(r, batches=args.batches, reference=args.reference, per_latent=args.per_latent, seed=args.seed)
            for r in runs]  # fmt: skip
    print(_runs.markdown(rows, {"run": "run", "relative MSE, prior": ("rel_mse_prior", ".3f"),
                                "relative MSE, IS": ("rel_mse_is", ".3f"), "IS / prior": ("ratio", ".2f"),
                                "ESS/N": ("ess_mean", ".2f"),
                                "optimal proposal / prior": ("optimal_ratio", ".2f")}))  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    _runs.write_json(args.out / "fisgan_variance.json", {"args": {k: str(v) for k, v in vars(args).items()},
                                                         "rows": rows})  # fmt: skip
    print(f"wrote {args.out / 'fisgan_variance.json'}")


if __name__ == "__main__":
    main()
