"""Commands of the `leanvision` CLI; each parses and validates, then calls the library."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Column, Table

from leanvision.cli._common import check_device, check_threads, writable_dir
from leanvision.cli.config import field_help
from leanvision.cli.shapes import parse_shape
from leanvision.errors import ConfigError
from leanvision.names import LATENCY_BACKENDS, OPTIMIZERS, SCHEDULERS, SPLITS

app = typer.Typer(
    name="leanvision",
    help="Efficient vision models, measured honestly: accuracy, MACs, params and wall-clock latency.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()


def _choices(name: str, values: tuple[str, ...]) -> type[Enum]:
    # typer shows an Enum's values as the option's choices and rejects anything else.
    return Enum(name, {v: v for v in values}, type=str)  # type: ignore[return-value]


Backend = _choices("Backend", LATENCY_BACKENDS)
Optimizer = _choices("Optimizer", OPTIMIZERS)
Scheduler = _choices("Scheduler", SCHEDULERS)
Split = _choices("Split", SPLITS)
DEVICE_HELP = "cpu, cuda or cuda:N"
OPTIMIZER_HELP = field_help("optimizer") + " (default sgd)"
CALIBRATION_HELP = "a calibration.npz written by `leanvision calibrate` for this checkpoint"
SCHEDULER_HELP = field_help("scheduler") + " (default cosine)"


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
    model: str = typer.Argument(None, help="registered model name (see list-models); optional with --checkpoint"),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="rebuild the model (and input size) from a checkpoint"),
    input_shape: str = typer.Option(None, "--input", help="BxCxHxW, default: 1 x the model's input size"),
    latency: bool = typer.Option(False, "--latency", help="also measure wall-clock latency"),
    backend: Backend = typer.Option(None, "--backend", help="latency backend (with --latency; default eager)"),
    threads: int = typer.Option(None, "--threads", min=1, help="threads for latency (default: torch's)"),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP + " (for eager latency)"),
    num_classes: int = typer.Option(None, "--num-classes", min=1, help="classifier outputs (default: the model's)"),
    fused: bool = typer.Option(False, "--fused", help="fold BatchNorm into convs first (deploy form)"),
    top: int = typer.Option(10, "--top", min=0, help="how many modules to list by MACs"),
) -> None:
    """Count MACs and params (papers' convention) and optionally time the model."""
    from leanvision.ops import fuse_bn
    from leanvision.profile import format_count, profile
    from leanvision.profile import latency as measure

    if backend is not None and not latency:
        raise ConfigError("--backend only applies to latency: add --latency, or drop --backend")
    if threads is not None and not latency:
        raise ConfigError("--threads only applies to latency: add --latency, or drop --threads")
    check_threads(threads)
    check_device(device)
    name, net, x = _model_and_input(model, checkpoint, shape=input_shape, num_classes=num_classes)
    if fused:
        net = fuse_bn(net)
    try:
        prof = profile(net, x)
    except RuntimeError as e:
        raise ConfigError(f"{name} cannot run on input {tuple(x.shape)}: {str(e).splitlines()[0]}") from None
    console.print(
        f"[bold]{name}[/] input {'x'.join(map(str, x.shape))}: "
        f"{format_count(prof.params)} params, {format_count(prof.macs)} MACs"
        + (
            f" + {format_count(prof.bops)} binary OPs (OPs = MACs + BOPs/64: {format_count(prof.ops)})"
            if prof.bops
            else ""
        )
    )
    if top:
        leaves = sorted(((m, v) for m, v in prof.by_module.items() if m and "." not in m), key=lambda kv: -kv[1])
        table = Table("module", "MACs", "share")
        for mod, macs in leaves[:top]:
            table.add_row(mod, format_count(macs), f"{100 * macs / max(prof.macs, 1):.1f}%")
        console.print(table)
    if prof.unsupported:
        console.print("[yellow]not counted:[/] " + ", ".join(f"{k} x{v}" for k, v in prof.unsupported.items()))
    if latency:
        stats = measure(net.to(device), x, backend=(backend or Backend.eager).value, threads=threads)
        console.print(
            f"latency ({stats.backend}, {stats.threads} threads, batch {stats.batch_size}): "
            f"median {stats.median_ms:.3f} ms, p90 {stats.p90_ms:.3f} ms over {stats.iters} runs"
        )


@app.command("export")
def export_cmd(
    model: str = typer.Argument(None, help="registered model name; optional with --checkpoint"),
    out: Path = typer.Option(..., "--out", help="output .onnx file"),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="a leanvision checkpoint (last.pt / best.pt)"),
    input_shape: str = typer.Option(None, "--input", help="BxCxHxW, default: 1 x the model's input size"),
    num_classes: int = typer.Option(None, "--num-classes", min=1, help="classifier outputs (default: the model's)"),
    fused: bool = typer.Option(True, "--fused/--no-fused", help="fold BatchNorm into convs (deploy form)"),
    opset: int = typer.Option(None, "--opset", min=7, help="ONNX opset (default: the exporter's)"),
) -> None:
    """Export a model to ONNX; fails unless onnxruntime reproduces PyTorch's output."""
    from leanvision.export import check_onnx, export_onnx
    from leanvision.ops import fuse_bn

    if out.suffix.lower() != ".onnx":
        raise ConfigError(f"--out '{out}' should end in .onnx")
    _, net, x = _model_and_input(model, checkpoint, shape=input_shape, num_classes=num_classes)
    if fused:
        net = fuse_bn(net)
    path = export_onnx(net, x, out, opset=opset, check=True)
    diff = check_onnx(net, path, x)
    console.print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB); max |onnxruntime - torch| = {diff:.2e}")


@app.command("train")
def train_cmd(
    config: Path = typer.Argument(None, help="YAML config (examples in configs/); flags override its values"),
    model: str = typer.Option(None, "--model", help=field_help("model")),
    dataset: str = typer.Option(None, "--dataset", help=field_help("dataset")),
    data_dir: str = typer.Option(None, "--data-dir", help=field_help("data_dir")),
    subset: int = typer.Option(None, "--subset", min=1, help=field_help("subset")),
    val_size: float = typer.Option(None, "--val-size", min=0, help=field_help("val_size") + " (default 0.1)"),
    epochs: int = typer.Option(None, "--epochs", min=1, help=field_help("epochs") + " (default 10)"),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help=field_help("batch_size") + " (default 128)"),
    lr: float = typer.Option(None, "--lr", help=field_help("lr") + " (default 0.1)"),
    optimizer: Optimizer = typer.Option(None, "--optimizer", help=OPTIMIZER_HELP),
    scheduler: Scheduler = typer.Option(None, "--scheduler", help=SCHEDULER_HELP),
    seed: int = typer.Option(None, "--seed", min=0, help=field_help("seed") + " (default 0)"),
    threads: int = typer.Option(None, "--threads", min=1, help=field_help("threads")),
    device: str = typer.Option(None, "--device", help=field_help("device") + " (default cpu)"),
    init_from: str = typer.Option(None, "--init-from", help=field_help("init_from")),
    out_dir: str = typer.Option(None, "--out-dir", help=field_help("out_dir") + " (default runs/train)"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out-dir from its last.pt"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress display"),
) -> None:
    """Train a registered model on a dataset (YAML config and/or flags); best.pt is picked on a validation split."""
    from leanvision.cli.config import load_train_config
    from leanvision.cli.train import run_training

    flags = dict(
        model=model,
        dataset=dataset,
        data_dir=data_dir,
        subset=subset,
        val_size=val_size,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer.value if optimizer else None,
        scheduler=scheduler.value if scheduler else None,
        seed=seed,
        threads=threads,
        device=device,
        init_from=init_from,
        out_dir=out_dir,
    )
    cfg = load_train_config(config, flags)
    console.print(run_training(cfg, resume=resume, progress=not quiet), soft_wrap=True)


@app.command("compress")
def compress_cmd(
    config: Path = typer.Argument(..., help="YAML config (example: configs/compress_synaptic_resnet18.yaml)"),
    data_dir: str = typer.Option(None, "--data-dir", help="dataset root (default: config, else $LEANVISION_DATA)"),
    out_dir: str = typer.Option(None, "--out-dir", help="where the results go (default: the config's out_dir)"),
    device: str = typer.Option(None, "--device", help="cpu, cuda or cuda:N (default: the config's)"),
    threads: int = typer.Option(None, "--threads", min=1, help="CPU threads (default: the config's, else torch's)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress display"),
) -> None:
    """Prune a trained model (or train it first), fine-tune, and write it with a before/after report."""
    from leanvision.cli.compress import load_compress_config, run_compress

    overrides = {"data_dir": data_dir, "out_dir": out_dir, "device": device, "threads": threads}
    cfg = load_compress_config(config, overrides)
    console.print(run_compress(cfg, progress=not quiet), soft_wrap=True)


@app.command("search")
def search_cmd(
    config: Path = typer.Argument(None, help="YAML config (example: configs/search_nb201_evolution.yaml)"),
    resume: Path = typer.Option(None, "--resume", help="continue the search in this run directory"),
    budget: int = typer.Option(None, "--budget", min=1, help="trials in total (default: the config's)"),
    executor: str = typer.Option(None, "--executor", help="inprocess, process or ray (default: the config's)"),
    workers: int = typer.Option(None, "--workers", min=1, help="parallel trials (default: the config's, else cores)"),
    ray_address: str = typer.Option(None, "--ray-address", help="a running Ray cluster, e.g. HEAD_IP:6379"),
    timeout: float = typer.Option(None, "--timeout", min=0.001, help="seconds before a trial is killed (failed)"),
    data_dir: str = typer.Option(None, "--data-dir", help="dataset root (default: config, else $LEANVISION_DATA)"),
    out_dir: str = typer.Option(None, "--out-dir", help="run directory (default: the config's out_dir)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress display"),
) -> None:
    """Search architectures: asynchronous trials on local processes or Ray, journalled so --resume loses nothing."""
    from leanvision.cli.search import load_search_config, resume_search, run_search

    overrides = {"budget": budget, "executor": executor, "workers": workers, "ray_address": ray_address,
                 "timeout": timeout, "data_dir": data_dir}  # fmt: skip
    if resume is not None:
        if config is not None:
            raise ConfigError("give either CONFIG (a new search) or --resume RUN_DIR (its saved config is used)")
        if out_dir is not None:
            raise ConfigError("--out-dir does not apply to --resume: the search continues in RUN_DIR")
        console.print(resume_search(resume, overrides, progress=not quiet), soft_wrap=True)
        return
    if config is None:
        raise ConfigError("give a search config (e.g. configs/search_nb201_evolution.yaml) or --resume RUN_DIR")
    if ray_address is not None and executor is None:
        overrides["executor"] = "ray"
    cfg = load_search_config(config, overrides | {"out_dir": out_dir})
    console.print(run_search(cfg, progress=not quiet), soft_wrap=True)


@app.command("calibrate")
def calibrate_cmd(
    config: Path = typer.Argument(..., help="YAML config (example: configs/calibrate_mnist.yaml)"),
    checkpoint: str = typer.Option(None, "--checkpoint", help="the trained model (default: the config's)"),
    data_dir: str = typer.Option(None, "--data-dir", help="dataset root (default: config, else $LEANVISION_DATA)"),
    out_dir: str = typer.Option(None, "--out-dir", help="where the results go (default: the config's out_dir)"),
    device: str = typer.Option(None, "--device", help="cpu, cuda or cuda:N (default: the config's)"),
    resume: bool = typer.Option(False, "--resume", help="replay the answers saved in out_dir and keep labelling"),
    force: bool = typer.Option(False, "--force", help="start over in an out_dir that holds an earlier run"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress display"),
) -> None:
    """Calibrate a trained model's confidence on operational data with a few selected labels (arXiv 1910.02352)."""
    from leanvision.cli.calibrate import load_calibrate_config, run_calibrate

    overrides = {"checkpoint": checkpoint, "data_dir": data_dir, "out_dir": out_dir, "device": device}
    cfg = load_calibrate_config(config, overrides)
    console.print(run_calibrate(cfg, config=config, resume=resume, force=force, progress=not quiet), soft_wrap=True)


@app.command("report")
def report_cmd(run_dir: Path = typer.Argument(..., help="the run directory of a search")) -> None:
    """Render a search's HTML/Markdown report (best-so-far curve, result table, best architecture's graph)."""
    from leanvision.cli.search import write_search_report

    console.print(f"report: {write_search_report(run_dir)}", soft_wrap=True)


@app.command("evaluate")
def evaluate_cmd(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="a checkpoint written by `leanvision train`"),
    split: Split = typer.Option(Split.test, "--split", help="test, val (held out of train, as in training) or train"),
    data_dir: str = typer.Option(None, "--data-dir", help="dataset root (default: the run's, else $LEANVISION_DATA)"),
    dataset: str = typer.Option(None, "--dataset", help="dataset name (default: the one it was trained on)"),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="images per forward pass"),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
    threads: int = typer.Option(None, "--threads", min=1, help="CPU threads (default: torch's)"),
    calibration: Path = typer.Option(None, "--calibration", help=CALIBRATION_HELP),
) -> None:
    """Accuracy (top-1, top-5) and loss of a trained checkpoint on a dataset split (and calibration metrics)."""
    import torch

    from leanvision.cli.use import evaluate_checkpoint

    check_device(device)
    if check_threads(threads):
        torch.set_num_threads(threads)
    m = evaluate_checkpoint(
        checkpoint,
        split=split.value,
        data_dir=data_dir,
        dataset=dataset,
        batch_size=batch_size,
        device=device,
        calibration=calibration,
    )
    console.print(
        f"{m['dataset']} {m['split']} ({int(m['n'])} images): top-1 {100 * m['acc']:.2f}%, "
        f"top-5 {100 * m.get('top5', m['acc']):.2f}%, loss {m['loss']:.4f}"
    )
    if calibration is not None:
        _print_calibration(m["calibration"], calibration)


def _print_calibration(c: dict, calibration: Path) -> None:
    b, a = c["before"], c["after"]
    console.print(f"calibrated with {calibration} (uncalibrated -> calibrated):", soft_wrap=True)
    console.print(f"  Brier {b['brier']:.4f} -> {a['brier']:.4f}")
    console.print(f"  ECE {100 * b['ece']:.2f}% -> {100 * a['ece']:.2f}%")
    console.print(f"  high-confidence (>0.9) errors {b['hce']} -> {a['hce']}")
    console.print(f"  confident-correct (>0.9) {b['confident_correct']} -> {a['confident_correct']}")
    console.print(f"  accuracy {100 * b['accuracy']:.2f}% (unchanged: calibration never changes a prediction)")


@app.command("predict")
def predict_cmd(
    images: list[Path] = typer.Argument(..., help="image files (PNG, JPEG, ...)"),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="a checkpoint written by `leanvision train`"),
    top_k: int = typer.Option(3, "--top-k", min=1, help="classes to show per image"),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
    calibration: Path = typer.Option(None, "--calibration", help=CALIBRATION_HELP),
) -> None:
    """Classify image files with a trained checkpoint: the top-k classes and their probabilities."""
    from leanvision.cli.use import predict_images

    check_device(device)
    for path, top, calibrated in predict_images(
        checkpoint, images, top_k=top_k, device=device, calibration=calibration
    ):
        shown = ", ".join(f"{name} {100 * p:.1f}%" for name, p in top)
        if calibrated is not None:
            shown += f"; calibrated confidence of {top[0][0]}: {100 * calibrated:.1f}%"
        typer.echo(f"{path}: {shown}")


@app.command("quickstart")
def quickstart_cmd(
    dataset: str = typer.Option("digits", "--dataset", help="digits (embedded), mnist or fashion_mnist"),
    data_dir: str = typer.Option(
        None, "--data-dir", help="dataset root holding MNIST/ or FashionMNIST/ (else $LEANVISION_DATA)"
    ),
    out_dir: Path = typer.Option(Path("runs/quickstart"), "--out-dir", help="where the report goes"),
    epochs: int = typer.Option(None, "--epochs", min=1, help="training epochs (default: per dataset)"),
    subset: int = typer.Option(None, "--subset", min=10, help="training subset size"),
    seed: int = typer.Option(0, "--seed", min=0, help="first seed; each model is trained with 3 seeds from it"),
    threads: int = typer.Option(None, "--threads", min=1, help="CPU threads (default: torch's)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress display"),
) -> None:
    """Train a small CNN and its Ghost twin, profile and time both, and write an HTML/Markdown report."""
    from leanvision.cli.quickstart import run_quickstart

    if dataset not in ("digits", "mnist", "fashion_mnist"):
        raise ConfigError(f"quickstart --dataset must be digits, mnist or fashion_mnist, not '{dataset}'")
    result = run_quickstart(
        dataset=dataset,
        data_dir=data_dir,
        out_dir=writable_dir(out_dir),
        epochs=epochs,
        subset=subset,
        seed=seed,
        threads=check_threads(threads),
        progress=not quiet,
    )
    from leanvision.profile import format_count

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
