"""Atomic writes: build a file or directory next to its target, then rename it into place in one step.

Every write here that fails on the disk's side (full, quota, read-only, permissions) raises one ``WriteError`` naming
the file, the cause and what to do, and leaves no temp file or torn line behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from leanvision.errors import DataError, WriteError


def _tmp_prefix(final: Path, host: str) -> str:
    return f".{final.name}.tmp-{host}-"


def _tmp_name(final: Path) -> Path:
    # Host and pid let a later run tell a dead writer's leftovers from a live one's; the token keeps
    # concurrent writers in one process (threads) apart.
    return final.with_name(f"{_tmp_prefix(final, socket.gethostname())}{os.getpid()}-{secrets.token_hex(4)}")


def _remove_stale_tmps(final: Path) -> None:
    prefix = _tmp_prefix(final, socket.gethostname())
    try:
        entries = [e for e in os.scandir(final.parent) if e.name.startswith(prefix)]
    except OSError:  # a missing or unreadable directory has nothing to clean (the write itself will say why)
        return
    for entry in entries:
        pid = entry.name[len(prefix) :].split("-", 1)[0]
        if not pid.isdigit():  # e.g. another host whose name extends this one's ("node" vs "node-2")
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            _remove(Path(entry.path))
        except PermissionError:  # alive, owned by another user
            pass


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        # Cleanup must never hide the error that made it necessary.
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


_DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def _os_error(err: BaseException | None, *mine: Path) -> OSError | None:
    """The OSError behind ``err`` (torch reports a failed write as a RuntimeError raised while handling it) if it
    concerns writing one of ``mine`` (or what is inside them); ``None`` for anything else, e.g. a source's error."""
    for _ in range(8):
        if err is None:
            return None
        if isinstance(err, OSError) and not isinstance(err, WriteError):
            if err.errno is None:  # no system call failed (e.g. PIL's "cannot identify image file")
                return None
            if err.errno in (*_DISK_FULL, errno.EROFS, errno.EFBIG) or err.filename is None:
                return err
            named = Path(os.fsdecode(err.filename))
            return err if any(named == p or p in named.parents for p in mine) else None
        err = err.__cause__ or err.__context__
    return None


def _write_error(path: Path, err: OSError) -> WriteError:
    """One line for a failed write of ``path``: what happened and what the user can do about it."""
    where = path.parent
    if err.errno in _DISK_FULL:
        try:  # statvfs: needs no disk space itself
            free = f"{shutil.disk_usage(where).free / 2**20:.1f} MiB free"
        except OSError:
            free = "free space unknown"
        what = "disk quota is used up" if err.errno != errno.ENOSPC else "disk is full"
        text = f"the {what} ({free}); free space on the filesystem holding {where}"
    elif err.errno == errno.EROFS:
        text = f"{where} is on a read-only filesystem; choose a writable output directory"
    elif err.errno in (errno.EACCES, errno.EPERM):
        text = f"no permission to write in {where}; make it writable or choose another output directory"
    else:
        text = f"{err.strerror or err}; check the disk holding {where} or choose another output directory"
    out = WriteError(f"cannot write {path}: {text}")
    out.errno, out.filename = err.errno, str(path)
    return out


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # persist a rename; not possible on every OS / filesystem
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an unused temp sibling of ``final`` to create (file or directory); rename it over ``final`` on success.

    On error the temp is removed and ``final`` is left as it was. If a directory cannot be renamed because another
    process already put a complete one in place, that copy is kept. Leftovers of dead writers are removed first.
    """
    final = Path(final)
    _remove_stale_tmps(final)
    tmp = _tmp_name(final)
    try:
        yield tmp
        try:
            os.replace(tmp, final)
        except OSError as e:
            # A directory rename fails when another process already put a complete copy in place: use it.
            if not (tmp.is_dir() and final.is_dir() and e.errno in (errno.ENOTEMPTY, errno.EEXIST)):
                raise
        _fsync_dir(final.parent)
    except Exception as e:
        err = _os_error(e, tmp, final)
        if err is None:
            raise
        _remove(tmp)  # first, so that the message tells the space really free
        raise _write_error(final, err) from err
    finally:
        _remove(tmp)


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(f)`` on a new temp file next to ``path`` (parents created), fsync it, rename it over ``path``.

    Readers see the old file or the new one, never half of one; on error the old file is left intact.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.parent.mkdir(parents=True, exist_ok=True)
        # open() rather than mkstemp: the file gets the usual umask-derived mode, not mkstemp's 0600.
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: f.write(text.encode(encoding)))


def append_jsonl(path: str | os.PathLike[str], record: dict) -> None:
    """Append ``record`` as one JSON line and fsync it: once this returns, a crash cannot lose the record.

    A failed append (disk full, ...) is cut back off before ``WriteError`` is raised: the file stays readable.
    """
    path = Path(path)
    line = (json.dumps(record) + "\n").encode("utf-8")
    existed, keep = path.exists(), None
    try:
        with open(path, "a+b") as f:
            keep = f.seek(0, os.SEEK_END)
            if keep:
                f.seek(keep - 1)
                if f.read(1) != b"\n":
                    # A torn last line (a writer killed mid-append) was never acknowledged: drop it, don't extend it.
                    f.seek(0)
                    keep = f.read().rfind(b"\n") + 1
                    f.truncate(keep)
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        if keep is not None:  # opened: cut it back to its acknowledged records (close() may have flushed more)
            with contextlib.suppress(OSError):
                os.truncate(path, keep) if existed else path.unlink()
        err = _os_error(e, path)
        if err is None:
            raise
        raise _write_error(path, err) from err


def read_jsonl(path: str | os.PathLike[str]) -> list[dict]:
    """Records of a JSONL file; a torn last line (a writer killed mid-append) is ignored, any other bad line raises.

    Raises ``DataError`` naming the file and line for a corrupt line that is not the last.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # only the last line can be torn by a crash during append
                break
            raise DataError(f"{path}: line {i + 1} is not valid JSON; the file is corrupt") from None
    return records
