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
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except typer.TyperException as e:  # usage errors: typer prints the usage line and the problem
        e.show()
        sys.exit(e.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
