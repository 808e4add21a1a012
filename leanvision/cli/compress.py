"""`leanvision compress`: read the config and flags, run ``leanvision.compress.run``, return its summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from leanvision.compress.workflow import CONFIG_FILE, CompressConfig
from leanvision.config import load_config
from leanvision.errors import BusyMachine, ConfigError, Interrupted, WriteError
from leanvision.runs import check_run_dir


def load_compress_config(path: str | Path | None, overrides: dict[str, Any] | None = None, *,
                         resume: bool = False) -> CompressConfig:  # fmt: skip
    """The config file (with --resume and no file: the run's own saved config) plus the non-None flags."""
    overrides = overrides or {}
    if path is None:
        if not (resume and overrides.get("out_dir")):
            raise ConfigError("give a compress config (e.g. configs/compress_synaptic_resnet18.yaml), or --out-dir "
                              "RUN --resume to continue a run with its own config")  # fmt: skip
        path = Path(overrides["out_dir"]) / CONFIG_FILE
        check_run_dir(path.parent, what="compress run", held=path.is_file(), resume=True)
    return load_config(CompressConfig, path, overrides)


def compress(path: str | Path | None, overrides: dict[str, Any], *, resume: bool, quiet: bool) -> str:
    """Validate, run, and the summary to print; Ctrl-C says how to continue."""
    from leanvision.compress import run

    cfg = load_compress_config(path, overrides, resume=resume)
    again = f"leanvision compress --out-dir {cfg.out_dir} --resume"
    try:
        return run(cfg, resume=resume, progress=not quiet).summary()
    except KeyboardInterrupt:
        raise Interrupted(f"compress interrupted; continue with: {again}") from None
    except (WriteError, BusyMachine) as e:  # every finished stage is saved whole: say how to go on
        e.args = (f"{e}; the run can be resumed with: {again}",)
        raise
