"""Every example in README.md and docs/*.md runs as written: each Python block as a script, each command line.

A block is run the way a user runs it: saved to a file and started with ``python FILE`` (so process-pool code
needs its ``if __name__ == "__main__":`` guard), in a fresh directory with the repository's ``configs/`` beside it
and ``$LEANVISION_DATA`` pointing at the data. A comment line right above a block's fence changes how it runs:

- ``<!-- example: fragment -->``: deliberately partial (a signature, a sketch); not run. Keep these few.
- ``<!-- example: slow -->``: trains for minutes; run with ``pytest -m slow``.
- ``<!-- example: quick ARGS -->`` (command blocks): ARGS are appended to every ``leanvision`` line, so a long
  command runs with small settings (e.g. ``--epochs 1``); the block still shows the full command.

The command blocks of one page run in order in one directory, so a later line can use what an earlier wrote.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MARKER = r"(?:<!--\s*example:\s*(?P<mark>[a-z-]+)(?P<args>[^>]*?)\s*-->\s*\n)?"
FENCE = re.compile(MARKER + r"```(?P<lang>\w*)\n(?P<body>.*?)```", re.S)
MARKS = {None, "fragment", "slow", "quick"}
PYTHON_TIMEOUT = 600  # generous: a busy machine runs a 30 s example several times slower
COMMAND_TIMEOUT = 300


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    mark: str | None
    args: str
    body: str

    @property
    def id(self) -> str:
        return f"{self.page.name}:{self.line}"


def _blocks() -> list[Block]:
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            line = text.count("\n", 0, m.start("lang")) + 1
            found.append(Block(page, line, m["lang"], m["mark"], (m["args"] or "").strip(), m["body"]))
    return found


BLOCKS = _blocks()
PYTHON = [b for b in BLOCKS if b.lang == "python" and b.mark != "fragment"]


def _commands(block: Block) -> list[list[str]]:
    """The ``leanvision`` command lines of a shell block (continuations joined), with the block's quick ARGS."""
    text = re.sub(r"\\\n\s*", " ", block.body)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("leanvision ")]
    return [[*shlex.split(ln, comments=True), *shlex.split(block.args)] for ln in lines]


# README's two commands set up a fresh machine: CI runs them itself (tests/test_readme.py keeps them true).
COMMAND_PAGES = sorted({b.page for b in BLOCKS if b.lang in ("bash", "sh", "") and b.mark != "fragment"
                        and _commands(b)})  # fmt: skip


def _env(shared_data: Path) -> dict[str, str]:
    env = dict(os.environ, LEANVISION_DATA=str(shared_data), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("PYTHONPATH", None)
    return env


def _workdir(tmp_path: Path) -> Path:
    (tmp_path / "configs").symlink_to(REPO / "configs")
    return tmp_path


def test_every_marker_is_known():
    assert {b.mark for b in BLOCKS} <= MARKS, "unknown <!-- example: ... --> marker"


def test_fragments_are_few():
    fragments = [b.id for b in BLOCKS if b.lang == "python" and b.mark == "fragment"]
    assert len(fragments) <= 6, fragments


def _params(blocks):
    return [pytest.param(b, id=b.id, marks=[pytest.mark.slow] if b.mark == "slow" else []) for b in blocks]


@pytest.mark.parametrize("block", _params(PYTHON))
def test_python_example_runs_as_a_script(block: Block, tmp_path: Path, shared_data: Path):
    script = _workdir(tmp_path) / "example.py"
    script.write_text(block.body, encoding="utf-8")
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=_env(shared_data), capture_output=True,
                         text=True, timeout=PYTHON_TIMEOUT)  # fmt: skip
    assert run.returncode == 0, f"{block.id} failed:\n{run.stderr[-3000:]}"


def _leanvision() -> str:
    exe = Path(sys.executable).with_name("leanvision")
    return str(exe) if exe.exists() else "leanvision"


def _shell_blocks(page: Path, *, slow: bool) -> list[Block]:
    return [b for b in BLOCKS if b.page == page and b.lang in ("bash", "sh", "") and b.mark != "fragment"
            and (slow or b.mark != "slow")]  # fmt: skip


@pytest.mark.parametrize("page", [pytest.param(p, id=p.name) for p in COMMAND_PAGES])
def test_command_lines_run(page: Path, tmp_path: Path, shared_data: Path, request):
    markexpr = request.config.getoption("-m") or ""
    commands = [(b, argv) for b in _shell_blocks(page, slow="slow" in markexpr.replace("not slow", ""))
                for argv in _commands(b)]  # fmt: skip
    if not commands:
        pytest.skip(f"{page.name}: its commands are all marked slow (run with -m slow)")
    cwd = _workdir(tmp_path)
    for block, argv in commands:
        run = subprocess.run([_leanvision(), *argv[1:]], cwd=cwd, env=_env(shared_data), capture_output=True,
                             text=True, timeout=COMMAND_TIMEOUT, stdin=subprocess.DEVNULL)  # fmt: skip
        assert run.returncode == 0, f"{block.id}: `{shlex.join(argv)}` failed:\n{run.stderr[-3000:]}"
