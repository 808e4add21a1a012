"""One CLI grammar: the options every command shares have the same name, type and help text everywhere."""

from __future__ import annotations

import pytest
import typer.main

from leanvision.cli import _common
from leanvision.cli.app import app

SHARED = {
    "--checkpoint": _common.CHECKPOINT_HELP,
    "--out-dir": _common.OUT_DIR_HELP,
    "--threads": _common.THREADS_HELP,
    "--device": _common.DEVICE_HELP,
    "--data-dir": _common.DATA_DIR_HELP,
    "--resume": _common.RESUME_HELP,
    "--quiet": _common.QUIET_HELP,
}
# Commands that run long: each takes every option of a run (where it goes, how fast, continue, silence).
LONG = {"train", "compress", "search", "calibrate"}
RUN_OPTIONS = {"--out-dir", "--threads", "--device", "--data-dir", "--resume", "--quiet"}


def _commands(group, prefix: str = "") -> dict:
    found = {}
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):  # a command group (e.g. `leanvision gan ...`)
            found |= _commands(cmd, f"{prefix}{name} ")
        else:
            found[f"{prefix}{name}"] = cmd
    return found


COMMANDS = _commands(typer.main.get_command(app))


def _visible_options(cmd) -> dict:
    return {o: p for p in cmd.params if p.param_type_name == "option" and not p.hidden for o in p.opts}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_shared_options_have_one_help_text(name):
    options = _visible_options(COMMANDS[name])
    wrong = {o: options[o].help for o in SHARED if o in options and options[o].help != SHARED[o]}
    assert wrong == {}, f"`leanvision {name}` words a shared option its own way: declare it with cli._common"


def _type(option) -> str:
    # typer >= 0.2x keeps the annotation; older typer/click expose the click type
    descriptor = getattr(option, "type_descriptor", None)
    return getattr(descriptor, "annotation", None).__name__ if descriptor else type(option.type).__name__


def test_shared_options_have_one_type_everywhere():
    types: dict[str, set[str]] = {}
    for cmd in COMMANDS.values():
        for o, p in _visible_options(cmd).items():
            if o in SHARED:
                types.setdefault(o, set()).add(f"{_type(p)}/flag={p.is_flag}")
    assert {o: t for o, t in types.items() if len(t) > 1} == {}


@pytest.mark.parametrize("name", sorted(LONG))
def test_long_commands_take_every_run_option(name):
    assert RUN_OPTIONS - set(_visible_options(COMMANDS[name])) == set()


def test_no_command_spells_a_shared_option_another_way():
    # e.g. --out FILE beside --out-dir, --workdir, --ckpt: old spellings may live on hidden, for one release
    other = {"--out", "--ckpt", "--run-dir", "--output-dir", "--outdir", "--num-threads", "--data", "--silent"}
    found = {f"{name} {o}" for name, cmd in COMMANDS.items() for o in _visible_options(cmd) if o in other}
    assert found == set()
