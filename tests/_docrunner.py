"""Runs documentation examples in forked copies of one interpreter that imported torch and leanvision once.

Started as ``python _docrunner.py``, it reads one JSON request per line on stdin: ``{"cwd", "argv", "script",
"log", "timeout"}``. For each it forks a child that behaves like a fresh ``python SCRIPT`` (or ``leanvision ARGS``
when ``script`` is null) started in ``cwd``: ``__main__`` is the script, stdin is empty, stdout and stderr go to
``log``, atexit hooks run at the end. The reply line is ``{"rc": EXIT_CODE}`` (-9 when the child ran past
``timeout`` seconds and was killed with its process group). The import (about 4 s per example) is paid once: that
is the whole point; each example still gets a fresh namespace, working directory and exit.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import runpy
import signal
import sys
import time
import traceback

PRELOAD = ("torch", "torchvision", "leanvision.cli.app", *(f"leanvision.{room}" for room in (
    "ops", "models", "data", "engine", "profile", "report", "export", "compress", "search", "augment", "generative",
    "calibrate")))  # fmt: skip


def _exit_code(e: SystemExit) -> int:
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code
    print(e.code, file=sys.stderr)  # what the interpreter does with sys.exit("message")
    return 1


def _child(req: dict) -> None:
    rc = 1
    try:
        os.setpgid(0, 0)  # a timeout kills everything the example started
        os.chdir(req["cwd"])
        null = os.open(os.devnull, os.O_RDONLY)
        log = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        for src, dst in ((null, 0), (log, 1), (log, 2)):
            os.dup2(src, dst)
        os.close(null)
        os.close(log)
        sys.stdin = os.fdopen(0, closefd=False)  # the parent's stdin buffer held requests, not the example's input
        sys.argv = list(req["argv"])
        try:
            if req["script"]:
                runpy.run_path(req["script"], run_name="__main__")
            else:
                from leanvision.cli import main

                main(sys.argv[1:])
            rc = 0
        except SystemExit as e:
            rc = _exit_code(e)
        except BaseException:
            traceback.print_exc()
            rc = 1
        atexit._run_exitfuncs()  # e.g. Ray's shutdown, as at a normal interpreter exit
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(rc)


def _wait(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -9
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError, PermissionError):  # leftovers of the example must not outlive it
        os.killpg(pid, signal.SIGKILL)
    return os.waitstatus_to_exitcode(status)


def serve() -> None:
    """Preload the heavy imports (no tensor ops: a forked child must not inherit a started thread pool), then serve."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)

    for line in sys.stdin:
        req = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            _child(req)
        print(json.dumps({"rc": _wait(pid, req["timeout"])}), flush=True)


if __name__ == "__main__":
    serve()
