"""Run directories: one resume rule for every long workflow (train, compress, search, calibrate, benchmarks).

A run directory holds one run. Starting a run where one already is, resuming where none is, or resuming with a
setting that changes what the run computes are refused with the same one-line messages everywhere. Settings that
only say where or how fast a run goes (``RESUMABLE_KEYS``) may change on resume. A run stopped by Ctrl-C or SIGTERM,
or by a write the disk refused, ends with one line saying how to continue it (:func:`interruptible`).
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from leanvision.errors import ConfigError, Interrupted, WriteError

# Where and how fast a run goes, never what it computes: the only settings a resume may change.
RESUMABLE_KEYS = frozenset({"data_dir", "threads", "device", "channels_last", "out_dir", "workers", "executor",
                            "ray_address", "timeout", "quiet", "progress", "max_other_cores"})  # fmt: skip


def _same(a: Any, b: Any) -> bool:
    # compared in JSON form, so a tuple read back as a list, or 1 vs 1.0 from YAML, is not a change
    return json.loads(json.dumps(a, default=str)) == json.loads(json.dumps(b, default=str))


def changed_settings(saved: Mapping[str, Any], requested: Mapping[str, Any], *, keys: Iterable[str] | None = None,
                     resumable: Iterable[str] = RESUMABLE_KEYS) -> list[str]:  # fmt: skip
    """``"key new (run: old)"`` for each of ``keys`` (default: all requested) whose value differs from the run's."""
    free = set(resumable)
    names = sorted(set(requested if keys is None else keys) - free)
    return [f"{k} {requested.get(k)!r} (run: {saved.get(k)!r})" for k in names
            if not _same(saved.get(k), requested.get(k))]  # fmt: skip


def check_run_dir(out_dir: str | Path, *, what: str, held: bool, resume: bool, changed: Iterable[str] = ()) -> None:
    """Refuse a start over an existing run, a resume of nothing, or a resume with changed settings (one line each).

    ``held``: ``out_dir`` already holds a run of this kind; ``changed``: :func:`changed_settings` of the resume.
    """
    out = Path(out_dir)
    if resume and not held:
        raise ConfigError(f"--resume: '{out}' holds no {what} to continue; start without --resume, or point "
                          "--out-dir at the run")  # fmt: skip
    if not resume and held:
        raise ConfigError(f"'{out}' already holds a {what}: pass --resume to continue it, or choose another --out-dir")
    changed = list(changed)
    if resume and changed:
        raise ConfigError(f"--resume continues the {what} in '{out}' as it was started, but you changed "
                          f"{', '.join(changed)}; drop those, or start a new run in another --out-dir")  # fmt: skip


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch scheduler, ``timeout``, Kubernetes, a shutdown), raised where Ctrl-C raises KeyboardInterrupt
    so that one path stops a run for both: ``finally`` blocks run, worker pools and Ray shut down, temp files go."""

    signum = signal.SIGTERM


class Stop:
    """The signal that stopped the code inside :func:`sigterm_interrupts` (``None`` while none came)."""

    signum: int | None = None


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[Stop]:
    """Inside, the first SIGTERM raises :class:`Terminated` instead of killing the process on the spot.

    Only in the main thread and only while SIGTERM has its default action: a program that installed its own handler
    keeps it. Later SIGTERMs are ignored so they cannot break the cleanup the first one started.
    """
    stop = Stop()
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield stop
        return

    def terminate(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, lambda *_: None)
        stop.signum = signum
        raise Terminated()

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def interruptible(what: str, resume: Callable[[], str | None]) -> Iterator[None]:
    """The long part of a workflow: SIGTERM stops it like Ctrl-C (:func:`sigterm_interrupts`), and either ends as
    ``Interrupted("{what} interrupted; resume with: CMD")``; a failed write (``WriteError``) gets the same hint.

    ``resume()`` is asked only then: the command that continues the run, or ``None`` while nothing is saved yet.
    """
    with sigterm_interrupts():
        try:
            yield
        except KeyboardInterrupt:
            cmd = resume()
            raise Interrupted(f"{what} interrupted; {f'resume with: {cmd}' if cmd else 'nothing saved yet'}") from None
        except WriteError as e:
            cmd = resume()
            if cmd:
                e.args = (f"{e}; the run can be resumed with: {cmd}",)
            raise
