"""Every example in README.md and docs/*.md runs as written: each Python block as a script, each command line.

A block is run the way a user runs it: saved to a file and started with ``python FILE`` (so process-pool code
needs its ``if __name__ == "__main__":`` guard), in a fresh directory with the repository's ``configs/`` beside it
and ``$LEANVISION_DATA`` pointing at the data. A comment line right above a block's fence changes how it runs:

- ``<!-- example: fragment -->``: deliberately partial (a signature, a sketch); not run. Keep these few.
- ``<!-- example: slow -->``: trains for minutes; run with ``pytest -m slow``.
- ``<!-- example: quick ARGS -->`` (command blocks): ARGS are appended to every ``leanvision`` line, so a long
  command runs with small settings (e.g. ``--epochs 1``); the block still shows the full command.

The command blocks of one page run in order in one directory, so a later line can use what an earlier wrote.

To save the ~4 s import of torch and leanvision per example, each runs in a forked copy of one interpreter that
imported them once (``tests/_docrunner.py``): a fresh namespace, directory, stdin and exit, like a new process.
``LEANVISION_DOCS_FRESH=1`` runs every example in a new interpreter instead, as a user's shell does.
"""

from __future__ import annotations

import json
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


def _leanvision() -> str:
    exe = Path(sys.executable).with_name("leanvision")
    return str(exe) if exe.exists() else "leanvision"


class Runner:
    """Runs a script (``python SCRIPT``) or a command line (``leanvision ARGS``) in ``cwd``: exit code and output."""

    def __init__(self, env: dict[str, str], logs: Path):
        self.env, self.logs, self.calls = env, logs, 0
        self.server = None
        if not os.environ.get("LEANVISION_DOCS_FRESH"):
            server = Path(__file__).with_name("_docrunner.py")
            self.server = subprocess.Popen([sys.executable, str(server)], env=env, stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, text=True)  # fmt: skip

    def __call__(self, cwd: Path, argv: list[str], *, script: Path | None, timeout: float) -> tuple[int, str]:
        if self.server is None:
            cmd = [sys.executable, str(script)] if script else [_leanvision(), *argv[1:]]
            run = subprocess.run(cmd, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=timeout,
                                 stdin=subprocess.DEVNULL)  # fmt: skip
            return run.returncode, run.stderr
        self.calls += 1
        log = self.logs / f"{self.calls}.log"
        req = {"cwd": str(cwd), "argv": argv, "script": str(script) if script else None, "log": str(log),
               "timeout": timeout}  # fmt: skip
        self.server.stdin.write(json.dumps(req) + "\n")
        self.server.stdin.flush()
        reply = self.server.stdout.readline()
        assert reply, "the example runner died (tests/_docrunner.py); rerun with LEANVISION_DOCS_FRESH=1"
        rc, output = json.loads(reply)["rc"], log.read_text(encoding="utf-8", errors="replace")
        return rc, output + (f"\n(killed: still running after {timeout} s)" if rc == -9 else "")

    def close(self) -> None:
        if self.server is not None:
            self.server.stdin.close()
            self.server.wait(timeout=60)


@pytest.fixture(scope="module")
def runner(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    r = Runner(_env(shared_data), tmp_path_factory.mktemp("example-logs"))
    yield r
    r.close()


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
def test_python_example_runs_as_a_script(block: Block, tmp_path: Path, runner: Runner):
    script = _workdir(tmp_path) / "example.py"
    script.write_text(block.body, encoding="utf-8")
    rc, output = runner(tmp_path, [str(script)], script=script, timeout=PYTHON_TIMEOUT)
    assert rc == 0, f"{block.id} failed:\n{output[-3000:]}"


def _shell_blocks(page: Path, *, slow: bool) -> list[Block]:
    return [b for b in BLOCKS if b.page == page and b.lang in ("bash", "sh", "") and b.mark != "fragment"
            and (slow or b.mark != "slow")]  # fmt: skip


@pytest.mark.parametrize("page", [pytest.param(p, id=p.name) for p in COMMAND_PAGES])
def test_command_lines_run(page: Path, tmp_path: Path, runner: Runner, request):
    markexpr = request.config.getoption("-m") or ""
    commands = [(b, argv) for b in _shell_blocks(page, slow="slow" in markexpr.replace("not slow", ""))
                for argv in _commands(b)]  # fmt: skip
    if not commands:
        pytest.skip(f"{page.name}: its commands are all marked slow (run with -m slow)")
    cwd = _workdir(tmp_path)
    for block, argv in commands:
        rc, output = runner(cwd, argv, script=None, timeout=COMMAND_TIMEOUT)
        assert rc == 0, f"{block.id}: `{shlex.join(argv)}` failed:\n{output[-3000:]}"
