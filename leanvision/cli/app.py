"""Commands of the `leanvision` CLI; each parses and validates, then calls the library."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Column, Table

from leanvision.cli._common import (
    check_device,
    check_threads,
    checkpoint_option,
    data_dir_option,
    device_option,
    out_dir_option,
    precision_option,
    quiet_option,
    resume_option,
    threads_option,
    writable_dir,
)
from leanvision.cli.augment import augsearch_cmd
from leanvision.cli.gan import gan_app
from leanvision.cli.shapes import parse_shape
from leanvision.cli.sr import sr_eval_cmd, sr_train_cmd, upscale_cmd
from leanvision.config import TrainConfig
from leanvision.errors import ConfigError
from leanvision.executors import EXECUTORS
from leanvision.names import LATENCY_BACKENDS, OPTIMIZERS, SCHEDULERS, SPLITS

app = typer.Typer(
    name="leanvision",
    help="Efficient vision models, measured honestly: accuracy, MACs, params and wall-clock latency.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(gan_app, name="gan")
console = Console()


def _choices(name: str, values: tuple[str, ...]) -> type[Enum]:
    # typer shows an Enum's values as the option's choices and rejects anything else.
    return Enum(name, {v: v for v in values}, type=str)  # type: ignore[return-value]


Backend = _choices("Backend", LATENCY_BACKENDS)
Optimizer = _choices("Optimizer", OPTIMIZERS)
Scheduler = _choices("Scheduler", SCHEDULERS)
Split = _choices("Split", SPLITS)
Executor = _choices("Executor", EXECUTORS)
CALIBRATION_HELP = "a calibration.npz written by `leanvision calibrate` for this checkpoint"


# One description per setting: the config key's, shown by --help of the flag that sets it.
TRAIN_HELP = {key: field.description or "" for key, field in TrainConfig.model_fields.items()}


def _version(value: bool) -> None:
    if value:
        from leanvision import __version__

        typer.echo(f"leanvision {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version"),
) -> None:
    """Efficient vision models, measured honestly: accuracy, MACs, params and wall-clock latency."""


def _example_input(shape: str | None, default: tuple[int, ...]):
    import torch

    dims = parse_shape(shape) if shape else (1, *default)
    if len(dims) != 4:
        raise ConfigError(f"bad input shape '{shape}': image models take 4 dims, batch x C x H x W (e.g. 1x3x224x224)")
    return torch.randn(*dims)


def _model_and_input(model_name: str | None, checkpoint: Path | None, *, shape: str | None, num_classes: int | None):
    """The model to profile/export, from a registered name or rebuilt from a checkpoint, and its example input."""
    from leanvision.models import create_model
    from leanvision.models._registry import MODELS  # the data contract, without building and profiling the model

    if checkpoint is not None:
        from leanvision.engine import model_from_checkpoint

        if num_classes is not None:
            raise ConfigError("--num-classes comes from the checkpoint; drop it when you pass --checkpoint")
        model, ckpt = model_from_checkpoint(checkpoint)
        arch = ckpt["arch"]
        if model_name is not None and model_name != arch["name"]:
            raise ConfigError(f"{checkpoint} holds a {arch['name']}, not a {model_name}; drop MODEL or fix it")
        default = tuple(arch.get("input_size") or MODELS.meta(arch["name"])["input_size"])
        return arch["name"], model, _example_input(shape, default)
    if model_name is None:
        raise ConfigError("give a MODEL name (see `leanvision list-models`) or --checkpoint PATH")
    default = MODELS.meta(model_name)["input_size"]
    x = _example_input(shape, default)
    return model_name, create_model(model_name, num_classes=num_classes, in_chans=x.shape[1]).eval(), x


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
        table.add_row(n, format_count(c.params), format_count(c.macs), "x".join(map(str, c.input_size)),
                      str(c.num_classes), c.paper or "-")  # fmt: skip
    console.print(table)


@app.command("profile")
def profile_cmd(
    model: str = typer.Argument(None, help="registered model name (see list-models); optional with --checkpoint"),
    checkpoint: Path = checkpoint_option(),
    input_shape: str = typer.Option(None, "--input", help="BxCxHxW, default: 1 x the model's input size"),
    latency: bool = typer.Option(
        False, "--latency", help="also measure wall-clock latency (at 1 thread and at all cores, unless --threads)"
    ),
    backend: Backend = typer.Option(None, "--backend", help="latency backend (with --latency; default eager)"),
    threads: int = threads_option(),
    device: str = device_option(),
    num_classes: int = typer.Option(None, "--num-classes", min=1, help="classifier outputs (default: the model's)"),
    fused: bool = typer.Option(False, "--fused", help="fold BatchNorm into convs first (deploy form)"),
    top: int = typer.Option(10, "--top", min=0, help="how many modules to list by MACs"),
) -> None:
    """Count MACs and params (papers' convention) and optionally time the model (--threads, --device: its latency)."""
    from leanvision.ops import fuse_bn
    from leanvision.profile import busy_text, format_count, profile, thread_counts
    from leanvision.profile import latency as measure

    if backend is not None and not latency:
        raise ConfigError("--backend only applies to latency: add --latency, or drop --backend")
    if threads is not None and not latency:
        raise ConfigError("--threads only applies to latency: add --latency, or drop --threads")
    check_threads(threads)
    device = check_device(device or "cpu")
    name, net, x = _model_and_input(model, checkpoint, shape=input_shape, num_classes=num_classes)
    if fused:
        net = fuse_bn(net)
    try:
        prof = profile(net, x)
    except RuntimeError as e:
        raise ConfigError(f"{name} cannot run on input {tuple(x.shape)}: {str(e).splitlines()[0]}") from None
    binary = f" + {format_count(prof.bops)} binary OPs (OPs = MACs + BOPs/64: {format_count(prof.ops)})"
    console.print(f"[bold]{name}[/] input {'x'.join(map(str, x.shape))}: {format_count(prof.params)} params, "
                  f"{format_count(prof.macs)} MACs" + (binary if prof.bops else ""))  # fmt: skip
    if top:
        leaves = sorted(((m, v) for m, v in prof.by_module.items() if m and "." not in m), key=lambda kv: -kv[1])
        table = Table("module", "MACs", "share")
        for mod, macs in leaves[:top]:
            table.add_row(mod, format_count(macs), f"{100 * macs / max(prof.macs, 1):.1f}%")
        console.print(table)
    if prof.unsupported:
        console.print("[yellow]not counted:[/] " + ", ".join(f"{k} x{v}" for k, v in prof.unsupported.items()))
    if latency:  # at 1 thread and at all cores unless --threads: the two can rank models differently
        for n in [threads] if threads is not None else thread_counts("1,all"):
            stats = measure(net.to(device), x, backend=(backend or Backend.eager).value, threads=n)
            console.print(
                f"latency ({stats.backend}, {stats.threads} threads, batch {stats.batch_size}): "
                f"median {stats.median_ms:.3f} ms, p90 {stats.p90_ms:.3f} ms over {stats.iters} runs; "
                f"{busy_text(stats.other_cores)}"
            )


@app.command("export")
def export_cmd(
    model: str = typer.Argument(None, help="registered model name; optional with --checkpoint"),
    out_dir: Path = out_dir_option(),
    out: Path = typer.Option(None, "--out", hidden=True, help="deprecated: use --out-dir"),
    checkpoint: Path = checkpoint_option(),
    input_shape: str = typer.Option(None, "--input", help="BxCxHxW, default: 1 x the model's input size"),
    num_classes: int = typer.Option(None, "--num-classes", min=1, help="classifier outputs (default: the model's)"),
    fused: bool = typer.Option(True, "--fused/--no-fused", help="fold BatchNorm into convs (deploy form)"),
    opset: int = typer.Option(None, "--opset", min=7, help="ONNX opset (default: the exporter's)"),
) -> None:
    """Export a model to ONNX as --out-dir/MODEL.onnx; fails unless onnxruntime reproduces PyTorch's output."""
    from leanvision.export import check_onnx, export_onnx
    from leanvision.ops import fuse_bn

    if out is not None:  # the old spelling, kept for one release
        typer.echo("note: --out FILE is deprecated and will be removed; use --out-dir DIR (writes DIR/MODEL.onnx)",
                   err=True)  # fmt: skip
        if out_dir is not None:
            raise ConfigError("give --out-dir DIR (writes DIR/MODEL.onnx), not --out as well")
        if out.suffix.lower() != ".onnx":
            raise ConfigError(f"--out '{out}' should end in .onnx")
    elif out_dir is None:
        raise ConfigError("give --out-dir DIR: the ONNX file is written there as MODEL.onnx")
    name, net, x = _model_and_input(model, checkpoint, shape=input_shape, num_classes=num_classes)
    target = out if out is not None else writable_dir(out_dir) / f"{name}.onnx"
    if fused:
        net = fuse_bn(net)
    path = export_onnx(net, x, target, opset=opset, check=True)
    diff = check_onnx(net, path, x)
    console.print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB); max |onnxruntime - torch| = {diff:.2e}",
                  soft_wrap=True)  # fmt: skip


@app.command("train")
def train_cmd(
    config: Path = typer.Argument(None, help="YAML config (examples in configs/); flags override its values"),
    model: str = typer.Option(None, "--model", help=TRAIN_HELP["model"]),
    dataset: str = typer.Option(None, "--dataset", help=TRAIN_HELP["dataset"]),
    data_dir: str = data_dir_option(),
    subset: int = typer.Option(None, "--subset", min=1, help=TRAIN_HELP["subset"]),
    val_size: float = typer.Option(None, "--val-size", min=0, help=TRAIN_HELP["val_size"] + " (default 0.1)"),
    epochs: int = typer.Option(None, "--epochs", min=1, help=TRAIN_HELP["epochs"] + " (default 10)"),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help=TRAIN_HELP["batch_size"] + " (default 128)"),
    lr: float = typer.Option(None, "--lr", help=TRAIN_HELP["lr"] + " (default 0.1)"),
    optimizer: Optimizer = typer.Option(None, "--optimizer", help=TRAIN_HELP["optimizer"] + " (default sgd)"),
    scheduler: Scheduler = typer.Option(None, "--scheduler", help=TRAIN_HELP["scheduler"] + " (default cosine)"),
    seed: int = typer.Option(None, "--seed", min=0, help=TRAIN_HELP["seed"] + " (default 0)"),
    threads: int = threads_option(),
    device: str = device_option(),
    precision: str = precision_option(),
    init_from: Path = typer.Option(None, "--init-from", help=TRAIN_HELP["init_from"]),
    policy: str = typer.Option(None, "--policy", help=TRAIN_HELP["policy"]),
    out_dir: Path = out_dir_option(),
    resume: bool = resume_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Train a registered model on a dataset (YAML config and/or flags); best.pt is picked on a validation split."""
    import leanvision.augment.policy  # noqa: F401  (applies --policy also in a checkout never pip-installed)
    from leanvision.config import load_config
    from leanvision.engine import train

    flags = dict(model=model, dataset=dataset, data_dir=data_dir, subset=subset, val_size=val_size, epochs=epochs,
                 batch_size=batch_size, lr=lr, optimizer=optimizer and optimizer.value,
                 scheduler=scheduler and scheduler.value, seed=seed, threads=threads, device=device,
                 precision=precision, init_from=init_from and str(init_from), policy=policy,
                 out_dir=out_dir and str(out_dir))  # fmt: skip
    cfg = load_config(TrainConfig, config, flags, source="train flags")
    console.print(train(cfg, resume=resume, progress=not quiet).summary(), soft_wrap=True)


@app.command("compress")
def compress_cmd(
    config: Path = typer.Argument(
        None, help="YAML config (example: configs/compress_synaptic_resnet18.yaml); optional with --resume"
    ),
    checkpoint: Path = checkpoint_option(),
    data_dir: str = data_dir_option(),
    out_dir: Path = out_dir_option(),
    threads: int = threads_option(),
    device: str = device_option(),
    max_other_cores: float = typer.Option(
        None,
        "--max-other-cores",
        min=0,
        help="time only while other processes keep at most this many CPU cores busy (e.g. 0.1); else stop, resumable",
    ),
    seed: int = typer.Option(
        None, "--seed", min=0, help="seed of initialisation, data order and subsets (another seed: another --out-dir)"
    ),
    resume: bool = resume_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Prune a trained model (or train it first), fine-tune, and write it with a before/after report."""
    from leanvision.cli.compress import compress

    overrides = {"checkpoint": checkpoint, "data_dir": data_dir, "out_dir": out_dir, "device": device,
                 "threads": threads, "max_other_cores": max_other_cores, "seed": seed}  # fmt: skip
    overrides = {k: str(v) if isinstance(v, Path) else v for k, v in overrides.items()}
    console.print(compress(config, overrides, resume=resume, quiet=quiet), soft_wrap=True)


@app.command("search")
def search_cmd(
    config: Path = typer.Argument(None, help="YAML config (example: configs/search_nb201_evolution.yaml)"),
    budget: int = typer.Option(None, "--budget", min=1, help="trials in total (default: the config's)"),
    executor: Executor = typer.Option(None, "--executor", help="where trials run (default: the config's)"),
    workers: int = typer.Option(None, "--workers", min=1, help="parallel trials (default: the config's, else cores)"),
    ray_address: str = typer.Option(None, "--ray-address", help="a running Ray cluster, e.g. HEAD_IP:6379"),
    timeout: float = typer.Option(None, "--timeout", min=0.001, help="seconds before a trial is killed (failed)"),
    threads: int = threads_option(),
    device: str = device_option(),
    data_dir: str = data_dir_option(),
    out_dir: Path = out_dir_option(),
    resume: bool = resume_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Search architectures: asynchronous trials on local processes or Ray, journalled so --resume loses nothing."""
    from leanvision.cli.search import search_command

    settings = {"budget": budget, "executor": executor and executor.value, "workers": workers, "timeout": timeout,
                "ray_address": ray_address, "threads": threads, "device": device and check_device(device),
                "data_dir": data_dir}  # fmt: skip
    console.print(search_command(config, resume_run=resume, settings=settings, out_dir=out_dir, quiet=quiet),
                  soft_wrap=True)  # fmt: skip


@app.command("calibrate")
def calibrate_cmd(
    config: Path = typer.Argument(..., help="YAML config (example: configs/calibrate_mnist.yaml)"),
    checkpoint: Path = checkpoint_option(),
    data_dir: str = data_dir_option(),
    out_dir: Path = out_dir_option(),
    threads: int = threads_option(),
    device: str = device_option(),
    resume: bool = resume_option(),
    force: bool = typer.Option(False, "--force", help="start over in an --out-dir that holds an earlier run"),
    quiet: bool = quiet_option(),
) -> None:
    """Calibrate a trained model's confidence on operational data with a few selected labels (arXiv 1910.02352)."""
    from leanvision.calibrate import CalibrateConfig
    from leanvision.cli.calibrate import run_calibrate
    from leanvision.config import load_config

    overrides = {
        "checkpoint": checkpoint and str(checkpoint),
        "data_dir": data_dir,
        "threads": threads,
        "out_dir": out_dir and str(out_dir),
        "device": device,
    }  # run checks threads and device
    cfg = load_config(CalibrateConfig, config, overrides)
    again = f"leanvision calibrate {config}" + (f" --out-dir {out_dir}" if out_dir else "")
    console.print(run_calibrate(cfg, again=again, resume=resume, force=force, progress=not quiet, console=console),
                  soft_wrap=True)  # fmt: skip


app.command("augsearch")(augsearch_cmd)


@app.command("report")
def report_cmd(run_dir: Path = typer.Argument(..., help="the run directory (out_dir) of a search")) -> None:
    """Render a search's HTML/Markdown report (best-so-far curve, result table, best architecture's graph)."""
    from leanvision.search import write_report

    console.print(f"report: {write_report(run_dir)}", soft_wrap=True)


@app.command("evaluate")
def evaluate_cmd(
    checkpoint: Path = checkpoint_option(required=True),
    split: Split = typer.Option(
        None,
        "--split",
        help="test (default), val (held out of train, as in training) or "
        "train; with --calibration the default is the data it was fitted for",
    ),
    data_dir: str = data_dir_option(),
    dataset: str = typer.Option(None, "--dataset", help="dataset name (default: the one it was trained on)"),
    subset: int = typer.Option(None, "--subset", min=1, help="evaluate a class-balanced sample of this many images"),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="images per forward pass"),
    device: str = device_option(),
    threads: int = threads_option(),
    calibration: Path = typer.Option(None, "--calibration", help=CALIBRATION_HELP),
    quiet: bool = quiet_option(),
) -> None:
    """Accuracy (top-1, top-5) and loss of a trained checkpoint on a dataset split (and calibration metrics)."""
    import torch

    from leanvision.engine import evaluate_checkpoint

    if calibration is not None and subset is not None:
        raise ConfigError("--subset does not apply with --calibration: drop one of them")
    if check_threads(threads):
        torch.set_num_threads(threads)
    kw = {"dataset": dataset, "data_dir": data_dir, "batch_size": batch_size, "device": check_device(device or "cpu")}
    if calibration is not None:
        from leanvision.calibrate import evaluate_calibration

        result = evaluate_calibration(checkpoint, calibration, split=split and split.value, **kw)
    else:
        result = evaluate_checkpoint(checkpoint, split=(split or Split.test).value, subset=subset, progress=not quiet,
                                     **kw)  # fmt: skip
    console.print(result.summary(), soft_wrap=True)


@app.command("predict")
def predict_cmd(
    images: list[Path] = typer.Argument(..., help="image files (PNG, JPEG, ...) or folders of them"),
    checkpoint: Path = checkpoint_option(required=True),
    top_k: int = typer.Option(3, "--top-k", min=1, help="classes to show per image"),
    device: str = device_option(),
    calibration: Path = typer.Option(None, "--calibration", help=CALIBRATION_HELP),
) -> None:
    """Classify image files with a trained checkpoint: the top-k classes and their probabilities.

    A file that cannot be read gets a one-line error and the others are still classified; the exit code is then 1.
    """
    from leanvision.engine import predict
    from leanvision.engine.use import image_files

    device = check_device(device or "cpu")
    for folder in (p for p in images if p.is_dir()):
        typer.echo(f"note: {folder} is a folder: classifying its {len(image_files([folder]))} image files", err=True)
    predictions = predict(checkpoint, images, top_k=top_k, device=device)
    confidences = [None] * len(predictions)
    if calibration is not None:
        from leanvision.calibrate import calibrated_confidences

        confidences = calibrated_confidences(checkpoint, calibration, images, device=device)
    for p, calibrated in zip(predictions, confidences, strict=True):
        if p.error is not None:
            typer.echo(f"error: {p.error}", err=True)
            continue
        if p.note is not None:
            typer.echo(f"note: {p.note}", err=True)
        shown = ", ".join(f"{name} {100 * prob:.1f}%" for name, prob in p.top)
        if calibrated is not None:
            shown += f"; calibrated confidence of {p.top[0][0]}: {100 * calibrated:.1f}%"
        typer.echo(f"{p.path}: {shown}")
    if any(p.error is not None for p in predictions):
        raise typer.Exit(1)


@app.command("quickstart")
def quickstart_cmd(
    dataset: str = typer.Option("digits", "--dataset", help="digits (embedded), mnist or fashion_mnist"),
    data_dir: str = data_dir_option(),
    out_dir: Path = out_dir_option(Path("runs/quickstart")),
    epochs: int = typer.Option(None, "--epochs", min=1, help="training epochs (default: per dataset)"),
    subset: int = typer.Option(None, "--subset", min=10, help="training subset size"),
    seed: int = typer.Option(0, "--seed", min=0, help="first seed; each model is trained with 3 seeds from it"),
    threads: int = threads_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Train a small CNN and its Ghost twin, profile and time both, and write an HTML/Markdown report."""
    from leanvision.engine import quickstart
    from leanvision.profile import format_count

    result = quickstart(dataset=dataset, data_dir=data_dir, out_dir=out_dir, epochs=epochs, subset=subset, seed=seed,
                        threads=threads, progress=not quiet)  # fmt: skip

    table = Table(Column("model", no_wrap=True), "test acc %", "params", "MACs", "eager bs1 ms", "ORT bs1 ms")
    for r in result.rows:
        table.add_row(
            r["model"],
            f"{r['acc']:.2f}±{r['acc_sd']:.2f}",
            format_count(r["params"]),
            format_count(r["macs"]),
            f"{r['eager_bs1_ms']:.3f}",
            f"{r['onnxruntime_bs1_ms']:.3f}",
        )
    console.print(table)
    console.print(f"report: {result.html}  (also {result.markdown.name})", soft_wrap=True)


app.command("sr-train")(sr_train_cmd)  # super-resolution (leanvision/cli/sr.py)
app.command("sr-eval", context_settings={"allow_extra_args": True})(sr_eval_cmd)
app.command("upscale")(upscale_cmd)
