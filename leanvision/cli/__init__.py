"""The `leanvision` command line: thin typer wrappers that validate input and call the library."""

from __future__ import annotations

import sys

import click

from leanvision.errors import LeanVisionError


def main(argv: list[str] | None = None) -> None:
    """Console entry point: a user's mistake ends in one line on stderr and a non-zero exit, never a traceback."""
    from leanvision.cli.app import app

    try:
        code = app(args=argv, prog_name="leanvision", standalone_mode=False)
    except LeanVisionError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
