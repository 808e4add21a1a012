"""Export models to ONNX atomically and check that onnxruntime reproduces PyTorch's outputs."""

from __future__ import annotations

import contextlib
import io
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_leaves

from leanvision._io import atomic_path
from leanvision._torch import as_args, eval_mode
from leanvision.errors import ConfigError, ExportError
from leanvision.registry import unknown_choice

# Which torch.onnx exporter, measured with torch 2.14 on 2 CPU cores (torchvision CNNs, batch 1, 224x224):
#   torchscript (dynamo=False): resnet18 0.5 s, mobilenet_v2 2.6 s, shufflenet_v2 2.8 s, mobilenet_v3_small 0.3 s
#   dynamo      (dynamo=True):  resnet18 4.8 s, mobilenet_v2 15 s,  shufflenet_v2 10 s,  mobilenet_v3_small 11 s
# Both reproduce the outputs to ~1e-6 and both keep a dynamic batch axis. The tracing exporter is 5-30x faster
# and is exact for our models, whose graphs do not depend on the data (CNNs), so "auto" uses it. It is
# deprecated upstream, so "auto" falls back to the torch.export-based exporter if it fails or disappears;
# pass exporter="dynamo" for models with data-dependent Python control flow that tracing would freeze.
EXPORTERS = ("auto", "torchscript", "dynamo")

INPUT_NAME = "input"
OUTPUT_NAME = "output"


def _names(prefix: str, n: int) -> list[str]:
    return [prefix] if n == 1 else [f"{prefix}{i}" for i in range(n)]


def _target_path(path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    parent = out.parent
    if out.is_dir():
        raise ConfigError(f"ONNX output path {out} is a directory; pass a file path such as {out / 'model.onnx'}")
    if not parent.is_dir():
        raise ConfigError(
            f"ONNX output directory {parent} does not exist; create it first (mkdir -p {parent}) "
            "or pass a path in an existing directory"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(
            f"ONNX output directory {parent} is not writable; fix its permissions or pass a path elsewhere"
        )
    return out


def _export_torchscript(
    model: nn.Module, args: tuple, f: str, *, opset: int | None, inputs: list[str], outputs: list[str], dynamic: bool
) -> None:
    axes = {name: {0: "batch"} for name in [*inputs, *outputs]} if dynamic else None
    with warnings.catch_warnings():
        # The deprecation notice is about the exporter choice documented above, not about the user's model.
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*will be removed.*")
        # Strided slices (x[..., ::2]) are left for onnxruntime to fold; the exporter warns about each one.
        warnings.filterwarnings("ignore", message=".*Constant folding.*")
        torch.onnx.export(
            model,
            args,
            f,
            dynamo=False,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
        )


def _export_dynamo(
    model: nn.Module, args: tuple, f: str, *, opset: int | None, inputs: list[str], outputs: list[str], dynamic: bool
) -> None:
    shapes = tuple({0: torch.export.Dim("batch")} for _ in args) if dynamic else None
    # The dynamo exporter prints progress lines even with verbose=False in some versions.
    with contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(
            model,
            args,
            f,
            dynamo=True,
            input_names=inputs,
            output_names=outputs,
            dynamic_shapes=shapes,
            opset_version=opset,
            external_data=False,  # one self-contained file, so the atomic rename moves everything
            verbose=False,
        )


def export_onnx(
    model: nn.Module,
    example_input: Tensor | tuple[Tensor, ...],
    path: str | os.PathLike[str],
    *,
    opset: int | None = None,
    dynamic_batch: bool = True,
    exporter: str = "auto",
    check: bool = False,
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> Path:
    """Export `model` (in eval mode) to an ONNX file at `path`, written atomically; returns the path.

    Inputs are named "input" ("input0", "input1", ... for several) and outputs "output" likewise; with
    `dynamic_batch` the first axis of every input and output is the symbolic "batch".

    With `check`, onnxruntime runs the new file on `example_input` before it replaces `path`: a NaN/inf, a
    shape mismatch or ``max|onnx - torch| > atol + rtol * max|torch|`` (per output) raises `ExportError` and
    leaves `path` as it was.
    """
    if exporter not in EXPORTERS:
        raise unknown_choice("ONNX exporter", exporter, EXPORTERS)
    if not (atol >= 0 and rtol >= 0):  # also rejects NaN
        raise ConfigError(f"atol and rtol must be >= 0, got atol={atol!r}, rtol={rtol!r}")
    out = _target_path(path)
    args = as_args(example_input)
    with eval_mode(model):
        outputs = tree_leaves(model(*args))
        names = {"inputs": _names(INPUT_NAME, len(args)), "outputs": _names(OUTPUT_NAME, len(outputs))}
        with atomic_path(out) as tmp:
            try:  # create it now so an unwritable target fails here, not deep inside the exporter
                tmp.touch(exist_ok=False)
            except OSError as err:  # e.g. a read-only filesystem, which os.access cannot see for root
                raise ConfigError(
                    f"cannot write to ONNX output directory {out.parent} ({err.strerror}); pass a path elsewhere"
                ) from err
            kw: dict[str, Any] = {"opset": opset, "dynamic": dynamic_batch, **names}
            f = str(tmp)
            if exporter == "dynamo":
                _export_dynamo(model, args, f, **kw)
            elif exporter == "torchscript":
                _export_torchscript(model, args, f, **kw)
            else:
                try:
                    _export_torchscript(model, args, f, **kw)
                except Exception as first:
                    try:
                        _export_dynamo(model, args, f, **kw)
                    except Exception as second:
                        raise second from first
            if check:  # inside atomic_path: a failure removes the temp file and never touches `out`
                expected = [t.detach().cpu().numpy() for t in outputs]
                session = onnx_session(tmp)
                why = _mismatch(session.run(None, onnx_feed(session, args)), expected, atol=atol, rtol=rtol)
                if why is not None:
                    raise ExportError(
                        f"ONNX export does not match PyTorch: {why}; {out} was not written. Use exporter='dynamo' "
                        "for data-dependent control flow, or pass larger atol/rtol"
                    )
    return out


def _mismatch(got: list[np.ndarray], expected: list[np.ndarray], *, atol: float, rtol: float) -> str | None:
    """Why onnxruntime's outputs `got` fail the tolerance against PyTorch's `expected`; None when they pass."""
    if len(got) != len(expected) or any(g.shape != e.shape for g, e in zip(got, expected, strict=False)):
        return f"output shapes differ (onnxruntime {[g.shape for g in got]}, PyTorch {[e.shape for e in expected]})"
    for name, g, e in zip(_names(OUTPUT_NAME, len(got)), got, expected, strict=True):
        g, e = np.asarray(g, dtype=np.float64), np.asarray(e, dtype=np.float64)
        if not (np.isfinite(g).all() and np.isfinite(e).all()):
            who = "onnxruntime" if not np.isfinite(g).all() else "PyTorch"
            return f"{name} of {who} contains NaN or inf"
        diff = float(np.max(np.abs(g - e), initial=0.0))
        scale = float(np.max(np.abs(e), initial=0.0))
        tol = atol + rtol * scale
        if diff > tol:
            return (
                f"{name}: max |onnxruntime - PyTorch| = {diff:.3g} > tolerance {tol:.3g} "
                f"(atol {atol:g} + rtol {rtol:g} x max|output| {scale:.3g})"
            )
    return None


def onnx_session(path: str | os.PathLike[str], *, threads: int | None = None) -> Any:
    """An onnxruntime CPU session: `threads` intra-op threads (default torch's), sequential, all optimisations."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ONNX file {path} not found; create it with leanvision.export.export_onnx(model, x, path)")
    n = torch.get_num_threads() if threads is None else threads
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"threads must be a positive integer or None, got {threads!r}; pass e.g. threads=1")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = n
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only: ORT's warnings about unused initialisers are noise here
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def onnx_feed(session: Any, example_input: Tensor | tuple[Tensor, ...]) -> dict[str, np.ndarray]:
    """The input dict for `session.run` from the same tensors the PyTorch model takes."""
    args = as_args(example_input)
    names = [i.name for i in session.get_inputs()]
    by_name = dict(zip(_names(INPUT_NAME, len(args)), args, strict=True))
    # The exporter drops inputs the graph never reads, so match by name rather than by position.
    return {name: by_name[name].detach().cpu().numpy() for name in names}


def check_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    example_input: Tensor | tuple[Tensor, ...],
    *,
    threads: int | None = None,
) -> float:
    """Max absolute difference between PyTorch's eval-mode outputs and onnxruntime's on `example_input`.

    Returns inf when the outputs differ in number or shape, or when the difference is NaN (so that
    ``check_onnx(...) > tol`` cannot pass by accident).
    """
    session = onnx_session(path, threads=threads)
    args = as_args(example_input)
    with eval_mode(model):
        expected = [t.detach().cpu().numpy() for t in tree_leaves(model(*args))]
    got = session.run(None, onnx_feed(session, args))
    if len(got) != len(expected) or any(g.shape != e.shape for g, e in zip(got, expected, strict=False)):
        return float("inf")
    diffs = [float(np.max(np.abs(g - e), initial=0.0)) for g, e in zip(got, expected, strict=True)]
    return float("inf") if any(math.isnan(d) for d in diffs) else max(diffs, default=0.0)
