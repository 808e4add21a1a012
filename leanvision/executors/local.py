"""A local process pool with per-job timeouts: a job that hangs is killed, a dead worker is replaced."""

from __future__ import annotations

import collections
import multiprocessing as mp
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from leanvision.errors import ConfigError, LeanVisionError
from leanvision.executors.base import Failure

# A spawned worker re-imports the parent's main script; if that script starts a pool at top level, the worker
# (still bootstrapping) exits with this code and the parent raises the error below instead of respawning forever.
_UNGUARDED_EXIT = 86
UNGUARDED_MAIN = (
    "worker processes re-import your script, which starts the process pool again at import time: put the code "
    'that starts the search (or the pool) under `if __name__ == "__main__":`'
)


def _exit_with(parent: int) -> None:
    # The parent closes its pool when it stops; this covers a parent killed outright (kill -9, the OOM killer).
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _worker_main(conn: Connection, threads: int | None, parent: int) -> None:
    """Worker loop: receive functions (once) and jobs; send back ``(key, ok, value)``."""
    # Ctrl-C reaches the whole process group: the parent decides and closes the pool, a worker never prints a
    # traceback. SIGINT was blocked since the fork (see _spawn), so none slips in before it is ignored.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()
    if threads:
        import torch

        torch.set_num_threads(threads)
    conn.send(("ready",))  # jobs start only once the imports are done
    fns: dict[int, Callable[[Any], Any]] = {}
    while True:
        try:
            msg = conn.recv()
        except EOFError:  # the parent went away
            return
        if msg[0] == "fn":
            fns[msg[1]] = pickle.loads(msg[2])
            continue
        _, key, fn_id, item = msg
        conn.send(("started", key))  # the timeout counts from here: not the imports that loading the function took
        try:
            out = (key, True, fns[fn_id](item))
        except Exception as err:
            out = (key, False, Failure.from_exception(err))
        try:
            conn.send(out)
        except Exception as err:  # an unpicklable result is the job's error, not the worker's death
            conn.send((key, False, Failure.from_exception(err)))


@dataclass
class _Slot:
    proc: Any
    conn: Connection
    fns: set[int] = field(default_factory=set)
    key: Any = None
    ready: bool = False
    busy: bool = False
    deadline: float = float("inf")


class ProcessExecutor:
    """``workers`` spawned processes (``threads`` torch threads each). A job running past ``timeout`` seconds is
    killed and reported as a ``Failure("timeout")``; a worker that dies (segfault, OOM kill) as ``"crash"``;
    either way a fresh worker takes its place and the other jobs go on."""

    def __init__(self, workers: int = 2, *, timeout: float | None = None, threads: int | None = 1) -> None:
        if workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        if timeout is not None and timeout <= 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {timeout}")
        if getattr(mp.current_process(), "_inheriting", False):  # in a worker importing the unguarded script
            raise SystemExit(_UNGUARDED_EXIT)  # silent: the parent says what to do, once
        self.workers, self.timeout, self.threads = workers, timeout, threads
        # spawn, not fork: a forked child of a process that already ran OpenMP threads can hang in torch.
        self._ctx = mp.get_context("spawn")
        self._slots = [self._spawn() for _ in range(workers)]
        self._queue: collections.deque[tuple[Any, Callable[[Any], Any], Any]] = collections.deque()
        self._fn_bytes: dict[int, tuple[Callable[[Any], Any], bytes]] = {}
        self._done: collections.deque[tuple[Any, Any]] = collections.deque()

    def _spawn(self) -> _Slot:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_worker_main, args=(child, self.threads, os.getpid()), daemon=True)
        masked = hasattr(signal, "pthread_sigmask")
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if masked else None
        try:  # the child inherits the blocked SIGINT through exec, for the seconds its imports take
            proc.start()
        finally:
            if masked:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)
        child.close()
        return _Slot(proc, parent)

    def submit(self, key: Any, fn: Callable[[Any], Any], item: Any) -> None:
        if id(fn) not in self._fn_bytes:
            try:
                self._fn_bytes[id(fn)] = (fn, pickle.dumps(fn))  # keep fn alive so its id stays unique
            except Exception as err:
                raise ConfigError(f"the evaluator cannot be sent to worker processes: {err}") from err
        self._queue.append((key, fn, item))
        self._dispatch()

    def _dispatch(self) -> None:
        for slot in self._slots:
            if not self._queue:
                return
            if slot.busy or not slot.ready:
                continue
            key, fn, item = self._queue.popleft()
            try:
                if id(fn) not in slot.fns:
                    slot.conn.send(("fn", id(fn), self._fn_bytes[id(fn)][1]))
                    slot.fns.add(id(fn))
                slot.conn.send(("run", key, id(fn), item))
            except (BrokenPipeError, OSError):  # died while idle: replace it and fail nothing
                self._queue.appendleft((key, fn, item))
                self._replace(slot)
                return self._dispatch()
            except Exception as err:  # the item itself cannot be pickled
                self._done.append((key, Failure.from_exception(err)))
                continue
            slot.key, slot.busy, slot.deadline = key, True, float("inf")  # until the worker says it started

    def _replace(self, slot: _Slot) -> None:
        if slot.proc.is_alive():
            slot.proc.kill()
        slot.proc.join()
        slot.conn.close()
        if slot.proc.exitcode == _UNGUARDED_EXIT:
            self.close()
            raise LeanVisionError(UNGUARDED_MAIN) from None  # one line, not the EOFError it was found in
        fresh = self._spawn()
        slot.proc, slot.conn, slot.fns = fresh.proc, fresh.conn, set()
        slot.key, slot.ready, slot.busy, slot.deadline = None, False, False, float("inf")

    def running(self) -> int:
        return len(self._queue) + len(self._done) + sum(s.busy for s in self._slots)

    def next_done(self) -> tuple[Any, Any]:
        while not self._done:
            if not self._queue and not any(s.busy for s in self._slots):
                raise RuntimeError("next_done() with no job submitted")
            # Busy workers, and starting ones while jobs wait for them.
            watched = [s for s in self._slots if s.busy or (self._queue and not s.ready)]
            first = min(s.deadline for s in watched)
            wait_s = None if first == float("inf") else max(0.0, first - time.monotonic())
            ready = set(wait([s.conn for s in watched] + [s.proc.sentinel for s in watched], timeout=wait_s))
            for slot in watched:
                if slot.conn in ready:
                    try:
                        msg = slot.conn.recv()
                    except (EOFError, OSError):  # died while sending
                        if slot.busy:
                            self._fail(slot, "crash", self._death(slot))
                        else:
                            self._replace(slot)
                        continue
                    if msg == ("ready",):
                        slot.ready = True
                        continue
                    if len(msg) == 2 and msg[0] == "started":
                        slot.deadline = time.monotonic() + self.timeout if self.timeout else float("inf")
                        continue
                    self._done.append((msg[0], msg[2]))
                    slot.key, slot.busy = None, False
                elif slot.proc.sentinel in ready and not slot.busy:  # died while starting
                    self._replace(slot)
                elif slot.proc.sentinel in ready:
                    self._fail(slot, "crash", self._death(slot))
                elif time.monotonic() >= slot.deadline:
                    self._fail(slot, "timeout", f"killed after the {self.timeout:g} s timeout")
            self._dispatch()
        return self._done.popleft()

    @staticmethod
    def _death(slot: _Slot) -> str:
        slot.proc.join(timeout=5)
        code = slot.proc.exitcode
        return f"worker process died (exit code {code})" + (f", signal {-code}" if code and code < 0 else "")

    def _fail(self, slot: _Slot, kind: str, message: str) -> None:
        self._done.append((slot.key, Failure(kind, message)))  # type: ignore[arg-type]
        self._replace(slot)

    def close(self) -> None:
        for slot in self._slots:
            if slot.proc.is_alive():
                slot.proc.kill()
            slot.proc.join()
            slot.conn.close()
        self._slots = []
        self._queue.clear()

    def __enter__(self) -> ProcessExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_slots", None):
            self.close()


def default_workers() -> int:
    """One worker per CPU core available to this process."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
