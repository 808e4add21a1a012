"""Errors a user can cause; the CLI prints their message as one line and exits non-zero."""

from __future__ import annotations

import signal
import sys


class LeanVisionError(Exception):
    """Base class: a mistake the user can fix; the message says what is wrong and how to fix it."""


class UnknownNameError(LeanVisionError, KeyError):
    """A name (model, dataset, backend, ...) that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataError(LeanVisionError):
    """Missing, corrupt or unreadable data."""


class ConfigError(LeanVisionError, ValueError):
    """A bad configuration value, argument or input shape."""


class CheckpointError(LeanVisionError):
    """A checkpoint that cannot be read or does not fit the model."""


class ExportError(LeanVisionError):
    """An exported model whose outputs do not match PyTorch's (the file was not written)."""


class Interrupted(LeanVisionError):
    """Ctrl-C or SIGTERM stopped a run; the message says what was kept and how to continue.

    Raised while handling the KeyboardInterrupt (or ``leanvision.runs.Terminated``), it takes that signal's number:
    the CLI exits 128 + signal, i.e. 130 for Ctrl-C and 143 for SIGTERM.
    """

    def __init__(self, message: str, *, signum: int | None = None) -> None:
        super().__init__(message)
        self.signum = signum if signum is not None else getattr(sys.exc_info()[1], "signum", signal.SIGINT)

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum)


class WriteError(LeanVisionError, OSError):
    """A file the library writes could not be written (disk full, quota, read-only, permissions); nothing torn is
    left behind. The message names the file, the cause and what to do; the CLI exits 74 (EX_IOERR)."""

    exit_code = 74

    def __str__(self) -> str:  # OSError would prefix "[Errno N]"
        return str(self.args[0]) if self.args else ""


class BusyMachine(LeanVisionError):
    """Other processes keep the CPU too busy for a latency measurement the run was told to take only when quiet.

    Everything the run finished is saved; the CLI exits 75 (EX_TEMPFAIL: try again later), and a resume on a quiet
    machine continues from the stage that waited."""

    exit_code = 75


def missing_extra(what: str, extra: str) -> ConfigError:
    """The one-line error for an optional dependency that is not installed: the extra that installs it."""
    return ConfigError(f"{what} needs the '{extra}' extra: pip install 'leanvision[{extra}]'")
