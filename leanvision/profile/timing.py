"""Wall-clock latency of forward passes, in PyTorch eager mode or in onnxruntime, alone or side by side."""

from __future__ import annotations

import gc
import itertools
import platform
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from leanvision._torch import as_args, eval_mode, torch_threads
from leanvision.config import cpu_count
from leanvision.errors import ConfigError
from leanvision.names import LATENCY_BACKENDS as BACKENDS
from leanvision.profile.machine import cpu_name, other_cpu


def thread_counts(spec: str | int | Sequence[int | str]) -> list[int]:
    """Thread counts to time at: ``"1,all"`` -> ``[1, cores]`` ("all" = the cores this process may use), deduplicated.

    A verdict is judged at all cores (the headline) with 1 thread beside it: small or odd-shaped ops gain little
    from a second thread, so the two can rank models differently.
    """
    items = spec.split(",") if isinstance(spec, str) else [spec] if isinstance(spec, int) else list(spec)
    cores, out = cpu_count(), []
    for item in items:
        text = str(item).strip().lower()
        n = cores if text == "all" else int(text) if text.isdigit() else 0
        if not 1 <= n <= cores:
            raise ConfigError(
                f"thread counts are integers from 1 to the {cores} cores available, or 'all'; got {item!r} in {spec!r}"
            )
        if n not in out:
            out.append(n)
    return out


class _BatchNormCount(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if "batch_norm" in func.__name__:
            self.count += 1
        return func(*args, **(kwargs or {}))


def batchnorms_computed(model: nn.Module, example_input: Tensor | tuple[Tensor, ...]) -> int:
    """How many batch-norm ops one eval-mode forward of ``model`` runs (0 for a net in its BN-folded deploy form).

    Counted at the op level, so BatchNorms that torch.fx inlined as functions are seen too.
    """
    with eval_mode(model), torch.no_grad(), _BatchNormCount() as mode:
        model(*as_args(example_input))
    return mode.count


def check_deploy_form(models: Mapping[str, nn.Module], example_input: Tensor | tuple[Tensor, ...]) -> None:
    """Refuse to time models side by side when some have their BatchNorms folded and others do not.

    A folded net skips work its unfolded rival still does, so the comparison would flatter it; fold every
    baseline too (``leanvision.ops.fuse_bn`` for torchvision nets, ``torch.fx.experimental.optimization.fuse``
    for timm's). Raises ``ConfigError`` naming an unfolded model.
    """
    counts = {name: batchnorms_computed(m, example_input) for name, m in models.items()}
    folded = [n for n, c in counts.items() if c == 0]
    unfolded = [n for n, c in counts.items() if c > 0]
    if folded and unfolded:
        raise ConfigError(
            f"{unfolded[0]!r} still runs {counts[unfolded[0]]} BatchNorms while {folded[0]!r} is folded: time every "
            "model in its deploy form (leanvision.ops.fuse_bn, or torch.fx.experimental.optimization.fuse for timm)"
        )


@dataclass
class LatencyStats:
    """Per-call latency (milliseconds) over `rounds` x `iters` timed forward passes after `warmup` untimed ones."""

    backend: str
    threads: int
    batch_size: int
    warmup: int
    iters: int
    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    std_ms: float
    torch_version: str
    onnxruntime_version: str | None
    machine: str
    rounds: int = 1
    device: str = "cpu"  # where the timed forward ran ("cuda:0", ...); onnxruntime always runs on "cpu"
    cpu: str = ""  # CPU model name
    gpu: str | None = None  # GPU name when device is a CUDA device
    other_cores: float | None = None  # CPU cores other processes kept busy while timing (None: not measurable)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a model with neither."""
    t = next(itertools.chain(model.parameters(), model.buffers()), None)
    return torch.device("cpu") if t is None else t.device


def _sync_fn(device: torch.device) -> Callable[[], None] | None:
    """What waits for the device's queued kernels, so a timer sees them finish; None for synchronous devices."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return None


@contextmanager
def _gc_paused() -> Iterator[None]:
    # A collection landing inside one timed call would add milliseconds of noise to that sample only.
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _check_args(backend: str, *, warmup: int, iters: int, rounds: int) -> None:
    BACKENDS.check(backend)
    for name, value, low in (("warmup", warmup, 0), ("iters", iters, 1), ("rounds", rounds, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")


def _eager_runner(model: nn.Module, args: tuple, *, device: torch.device, threads: int,
                  stack: ExitStack) -> Callable[[], Any]:  # fmt: skip
    stack.enter_context(eval_mode(model))
    sync = _sync_fn(device)
    if sync is None:
        return lambda: model(*args)

    def run_and_wait() -> Any:
        out = model(*args)
        sync()
        return out

    sync()  # work queued before timing starts must not be billed to the first call
    return run_and_wait


def _onnx_runner(model: nn.Module, args: tuple, *, device: torch.device, threads: int,
                 stack: ExitStack) -> Callable[[], Any]:  # fmt: skip
    from leanvision.export import export_onnx, onnx_feed, onnx_session

    with tempfile.TemporaryDirectory(prefix="leanvision-latency-") as tmp:
        session = onnx_session(export_onnx(model, args, Path(tmp) / "model.onnx"), threads=threads)
    feed = onnx_feed(session, args)
    return lambda: session.run(None, feed)


RUNNERS = {"eager": _eager_runner, "onnxruntime": _onnx_runner}  # keyed by BACKENDS (a test checks)


def _runner(model: nn.Module, args: tuple, *, backend: str, threads: int, stack: ExitStack) -> Callable[[], Any]:
    device = _device_of(model)
    args = tuple(a.to(device) for a in args)
    return RUNNERS[backend](model, args, device=device, threads=threads, stack=stack)


def compare_latency(
    models: Mapping[str, nn.Module],
    example_input: Tensor | tuple[Tensor, ...],
    *,
    backend: str = "eager",
    threads: int | None = None,
    warmup: int = 5,
    iters: int = 10,
    rounds: int = 5,
) -> dict[str, LatencyStats]:
    """Latency of several models measured in interleaved rounds, so machine load drifts hit all of them alike.

    Each round times `iters` consecutive calls of every model in turn (the order rotates between rounds);
    the statistics of a model are over all its `rounds * iters` timed calls. `threads` defaults to torch's
    current count and is used by both backends; torch's own thread count is restored afterwards.

    "eager" runs each model on the device its parameters are on (the input is moved there); on CUDA every
    timed call ends with `torch.cuda.synchronize`, so the time covers the kernels, not just their launch.
    "onnxruntime" always runs on the CPU. Python's garbage collector is paused while timing. Each result's
    ``other_cores`` says how many CPU cores other processes kept busy meanwhile: above ~0.1 the times are noisy.
    """
    _check_args(backend, warmup=warmup, iters=iters, rounds=rounds)
    args = as_args(example_input)
    names = list(models)
    ort_version = None
    if backend == "onnxruntime":
        import onnxruntime

        ort_version = onnxruntime.__version__
    with torch_threads(threads) as n, ExitStack() as stack:
        if backend == "eager":
            stack.enter_context(torch.inference_mode())
        run = {name: _runner(models[name], args, backend=backend, threads=n, stack=stack) for name in names}
        stack.enter_context(_gc_paused())
        load = stack.enter_context(other_cpu({}))  # read when the stack closes, after the timed rounds
        for name in names:
            for _ in range(warmup):
                run[name]()
        times: dict[str, list[float]] = {name: [] for name in names}
        for r in range(rounds):
            k = r % max(len(names), 1)
            for name in names[k:] + names[:k]:
                fn, out = run[name], times[name]
                for _ in range(iters):
                    start = time.perf_counter()
                    fn()
                    out.append(time.perf_counter() - start)
    batch = int(args[0].shape[0]) if args and args[0].dim() else 1
    machine = f"{platform.machine()} {platform.system()}"
    result = {}
    for name in names:
        device = _device_of(models[name]) if backend == "eager" else torch.device("cpu")
        ms = np.asarray(times[name]) * 1e3
        result[name] = LatencyStats(
            backend=backend,
            threads=n,
            batch_size=batch,
            warmup=warmup,
            iters=iters,
            rounds=rounds,
            median_ms=float(np.median(ms)),
            p90_ms=float(np.percentile(ms, 90)),
            mean_ms=float(ms.mean()),
            min_ms=float(ms.min()),
            max_ms=float(ms.max()),
            std_ms=float(ms.std()),
            torch_version=torch.__version__,
            onnxruntime_version=ort_version,
            machine=machine,
            device=str(device),
            cpu=cpu_name(),
            gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            other_cores=load["other_cores"],
        )
    return result


def latency(
    model: nn.Module,
    example_input: Tensor | tuple[Tensor, ...],
    *,
    backend: str = "eager",
    threads: int | None = None,
    warmup: int = 5,
    iters: int = 30,
) -> LatencyStats:
    """Median / p90 wall-clock milliseconds per forward pass (eval mode, no autograd).

    "eager" times `model(x)` under torch.inference_mode on the device of the model's parameters (synchronising
    CUDA after each call); "onnxruntime" exports with `leanvision.export.export_onnx` and times a sequential
    CPU session with all graph optimisations and one inter-op thread. `threads` (default: torch's current
    count) is restored for torch afterwards.
    """
    return compare_latency(
        {"model": model}, example_input, backend=backend, threads=threads, warmup=warmup, iters=iters, rounds=1
    )["model"]
