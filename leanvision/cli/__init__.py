"""The `leanvision` command line: thin typer wrappers that validate input and call the library."""

from __future__ import annotations

import sys

import typer

from leanvision.errors import LeanVisionError


def main(argv: list[str] | None = None) -> None:
    """Console entry point: a user's mistake ends in one line on stderr and a non-zero exit, never a traceback."""
    from leanvision.cli.app import app

    try:
        code = app(args=argv, prog_name="leanvision", standalone_mode=False)
    except LeanVisionError as e:
        code = getattr(e, "exit_code", 2)
        typer.echo(f"{e}" if code == 130 else f"error: {e}", err=True)  # 130: Ctrl-C, with how to continue
        sys.exit(code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except typer.TyperException as e:  # usage errors: typer prints the usage line and the problem
        e.show()
        sys.exit(e.exit_code)
    if code == 130:  # typer turns Ctrl-C into this exit code without a word
        typer.echo("interrupted", err=True)
    sys.exit(code if isinstance(code, int) else 0)
