"""Errors a user can cause; the CLI prints their message as one line and exits non-zero."""

from __future__ import annotations


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
