"""The `leanvision` command line: thin typer wrappers that validate input and call the library."""

from __future__ import annotations

import contextlib
import signal
import sys
import warnings
from collections.abc import Iterator
from typing import NoReturn

import typer

from leanvision.errors import Interrupted, LeanVisionError


def _exit(code: int, line: str) -> NoReturn:
    with contextlib.suppress(OSError):  # stderr may be a file on the full disk: the exit code still tells
        typer.echo(line, err=True)
    sys.exit(code)


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """A warning reaches a user as one line, ``warning: ...``, not with a source line of the library."""
    formatwarning = warnings.formatwarning
    warnings.formatwarning = lambda message, *_, **__: f"warning: {message}\n"
    try:
        yield
    finally:
        warnings.formatwarning = formatwarning


def main(argv: list[str] | None = None) -> None:
    """Console entry point: a user's mistake, a write the disk refused, Ctrl-C or SIGTERM end in one line on stderr,
    never a traceback; exit 2 for a mistake, 74 for a refused write, 75 for a timing that waits for a quiet
    machine, 130 for Ctrl-C and 143 for SIGTERM."""
    from leanvision.runs import sigterm_interrupts

    # SIGTERM takes Ctrl-C's path: the run stops cleanly and says how to resume
    with sigterm_interrupts() as stop, _one_line_warnings():
        try:
            from leanvision.cli.app import app

            code = app(args=argv, prog_name="leanvision", standalone_mode=False)
        except Interrupted as e:  # the message says what was kept and how to continue
            _exit(e.exit_code, str(e))
        except LeanVisionError as e:
            _exit(getattr(e, "exit_code", 2), f"error: {e}")
        except (typer.Abort, KeyboardInterrupt):
            code = 130
        except typer.TyperException as e:  # usage errors: typer prints the usage line and the problem
            e.show()
            sys.exit(e.exit_code)
        if code == 130:  # typer turns Ctrl-C (and so SIGTERM) inside a command into this code without a word
            _exit(128 + (stop.signum or signal.SIGINT), "interrupted")
    sys.exit(code if isinstance(code, int) else 0)
