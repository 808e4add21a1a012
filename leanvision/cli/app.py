"""Commands of the `leanvision` CLI; each parses and validates, then calls the library."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Column, Table

from leanvision.cli.shapes import parse_shape
from leanvision.errors import ConfigError

app = typer.Typer(
    name="leanvision",
    help="Efficient vision models, measured honestly: accuracy, MACs, params and wall-clock latency.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()


class Backend(str, Enum):
    eager = "eager"
    onnxruntime = "onnxruntime"


def writable_dir(path: Path) -> Path:
    """Create ``path`` if needed; an unusable location is a one-line ConfigError, not a traceback."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create output directory '{path}' ({e.strerror}): choose a writable path") from None
    if not os.access(path, os.W_OK):
        raise ConfigError(f"output directory '{path}' is not writable: choose a writable path")
    return path


def _example_input(model_name: str, shape: str | None, batch: int):
    import torch

    from leanvision.models import model_card

    dims = parse_shape(shape) if shape else (batch, *model_card(model_name).input_size)
    if len(dims) != 4:
        raise ConfigError(f"bad input shape '{shape}': image models take 4 dims, batch x C x H x W (e.g. 1x3x224x224)")
    return torch.randn(*dims)


def _build(model_name: str, *, num_classes: int | None, in_chans: int | None, fused: bool, checkpoint: Path | None):
    from leanvision.models import create_model

    model = create_model(model_name, num_classes=num_classes, in_chans=in_chans)
    if checkpoint is not None:
        from leanvision.engine import load_checkpoint, load_model_state

        load_model_state(model, load_checkpoint(checkpoint), source=checkpoint)
    if fused:
        from leanvision.ops import fuse_bn

        model = fuse_bn(model.eval())
    return model.eval()


@app.command("list-models")
def list_models_cmd(
    pattern: str = typer.Argument("*", help="shell-style filter, e.g. 'ghost*'"),
    cards: bool = typer.Option(True, "--cards/--names", help="show params/MACs (builds each model) or names only"),
) -> None:
    """List registered models with their cards (params and MACs at the card's input size)."""
    from leanvision.models import list_models, model_card
    from leanvision.profile import format_count

    names = list_models(pattern)
    if not names:
        raise ConfigError(f"no model matches '{pattern}': try `leanvision list-models` without a pattern")
    if not cards:
        for n in names:
            typer.echo(n)
        return
    table = Table("model", "params", "MACs", "input", "classes", "paper")
    for n in names:
        c = model_card(n)
        table.add_row(
            n,
            format_count(c.params),
            format_count(c.macs),
            "x".join(map(str, c.input_size)),
            str(c.num_classes),
            c.paper or "-",
        )
    console.print(table)


@app.command("profile")
def profile_cmd(
    model: str = typer.Argument(..., help="registered model name (see list-models)"),
    input_shape: str = typer.Option(None, "--input", help="BxCxHxW, default: 1 x the card's input size"),
    latency: bool = typer.Option(False, "--latency", help="also measure wall-clock latency"),
    backend: Backend = typer.Option(Backend.eager, "--backend", help="latency backend"),
    threads: int = typer.Option(None, "--threads", min=1, help="threads for latency (default: torch's)"),
    num_classes: int = typer.Option(None, "--num-classes", min=1),
    fused: bool = typer.Option(False, "--fused", help="fold BatchNorm into convs first (deploy form)"),
    top: int = typer.Option(10, "--top", min=0, help="how many modules to list by MACs"),
) -> None:
    """Count MACs and params (papers' convention) and optionally time the model."""
    from leanvision.profile import format_count, profile
    from leanvision.profile import latency as measure

    x = _example_input(model, input_shape, 1)
    net = _build(model, num_classes=num_classes, in_chans=x.shape[1], fused=fused, checkpoint=None)
    try:
        prof = profile(net, x)
    except RuntimeError as e:
        raise ConfigError(f"{model} cannot run on input {tuple(x.shape)}: {str(e).splitlines()[0]}") from None
    console.print(
        f"[bold]{model}[/] input {'x'.join(map(str, x.shape))}: "
        f"{format_count(prof.params)} params, {format_count(prof.macs)} MACs"
    )
    if top:
        leaves = sorted(((m, v) for m, v in prof.by_module.items() if m and "." not in m), key=lambda kv: -kv[1])
        table = Table("module", "MACs", "share")
        for name, macs in leaves[:top]:
            table.add_row(name, format_count(macs), f"{100 * macs / max(prof.macs, 1):.1f}%")
        console.print(table)
    if prof.unsupported:
        console.print("[yellow]not counted:[/] " + ", ".join(f"{k} x{v}" for k, v in prof.unsupported.items()))
    if latency:
        stats = measure(net, x, backend=backend.value, threads=threads)
        console.print(
            f"latency ({stats.backend}, {stats.threads} threads, batch {stats.batch_size}): "
            f"median {stats.median_ms:.3f} ms, p90 {stats.p90_ms:.3f} ms over {stats.iters} runs"
        )


@app.command("export")
def export_cmd(
    model: str = typer.Argument(..., help="registered model name"),
    out: Path = typer.Option(..., "--out", help="output .onnx file"),
    input_shape: str = typer.Option(None, "--input", help="BxCxHxW, default: 1 x the card's input size"),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="a leanvision checkpoint (last.pt) to load"),
    num_classes: int = typer.Option(None, "--num-classes", min=1),
    fused: bool = typer.Option(True, "--fused/--no-fused", help="fold BatchNorm into convs (deploy form)"),
    opset: int = typer.Option(None, "--opset", min=7),
) -> None:
    """Export a model to ONNX and check onnxruntime's output against PyTorch."""
    from leanvision.export import check_onnx, export_onnx

    if out.suffix.lower() != ".onnx":
        raise ConfigError(f"--out '{out}' should end in .onnx")
    x = _example_input(model, input_shape, 1)
    net = _build(model, num_classes=num_classes, in_chans=x.shape[1], fused=fused, checkpoint=checkpoint)
    path = export_onnx(net, x, out, opset=opset)
    diff = check_onnx(net, path, x)
    console.print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB); max |onnxruntime - torch| = {diff:.2e}")


@app.command("train")
def train_cmd(
    config: Path = typer.Argument(None, help="YAML config; flags override its values"),
    model: str = typer.Option(None, "--model"),
    dataset: str = typer.Option(None, "--dataset"),
    data_dir: str = typer.Option(None, "--data-dir", help="dataset root (else $LEANVISION_DATA)"),
    subset: int = typer.Option(None, "--subset", help="class-balanced training subset size"),
    epochs: int = typer.Option(None, "--epochs"),
    batch_size: int = typer.Option(None, "--batch-size"),
    lr: float = typer.Option(None, "--lr"),
    optimizer: str = typer.Option(None, "--optimizer"),
    scheduler: str = typer.Option(None, "--scheduler"),
    seed: int = typer.Option(None, "--seed"),
    threads: int = typer.Option(None, "--threads"),
    out_dir: str = typer.Option(None, "--out-dir"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out-dir from its last.pt"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Train a registered model on a dataset (YAML config and/or flags)."""
    from leanvision.cli.config import load_train_config
    from leanvision.cli.train import run_training

    flags = dict(
        model=model,
        dataset=dataset,
        data_dir=data_dir,
        subset=subset,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        scheduler=scheduler,
        seed=seed,
        threads=threads,
        out_dir=out_dir,
    )
    cfg = load_train_config(config, flags)
    summary = run_training(cfg, resume=resume, progress=not quiet)
    console.print(summary)


@app.command("quickstart")
def quickstart_cmd(
    dataset: str = typer.Option("digits", "--dataset", help="digits (embedded), mnist or fashion_mnist"),
    data_dir: str = typer.Option(
        None, "--data-dir", help="dataset root holding MNIST/ or FashionMNIST/ (else $LEANVISION_DATA)"
    ),
    out_dir: Path = typer.Option(Path("runs/quickstart"), "--out-dir"),
    epochs: int = typer.Option(None, "--epochs", min=1),
    subset: int = typer.Option(None, "--subset", min=10, help="training subset size"),
    seed: int = typer.Option(0, "--seed"),
    threads: int = typer.Option(None, "--threads", min=1),
    quiet: bool = typer.Option(False, "--quiet"),
) -> None:
    """Train a small CNN and its Ghost twin, profile and time both, and write an HTML/Markdown report."""
    from leanvision.quickstart import run_quickstart

    if dataset not in ("digits", "mnist", "fashion_mnist"):
        raise ConfigError(f"quickstart --dataset must be digits, mnist or fashion_mnist, not '{dataset}'")
    result = run_quickstart(
        dataset=dataset,
        data_dir=data_dir,
        out_dir=writable_dir(out_dir),
        epochs=epochs,
        subset=subset,
        seed=seed,
        threads=threads,
        progress=not quiet,
    )
    table = Table(Column("model", no_wrap=True), "test acc (%)", "params", "MACs", "eager bs1 ms", "ORT bs1 ms")
    for r in result.rows:
        table.add_row(
            r["model"],
            f"{r['acc']:.2f}",
            f"{r['params']:,}",
            f"{r['macs']:,}",
            f"{r['eager_bs1_ms']:.3f}",
            f"{r['onnxruntime_bs1_ms']:.3f}",
        )
    console.print(table)
    console.print(f"report: {result.html}  (also {result.markdown.name})")
