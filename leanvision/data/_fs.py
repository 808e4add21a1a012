"""Where data lives: root resolution, the cache directory, atomic cache files, streamed archives."""

from __future__ import annotations

import hashlib
import os
import tarfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from leanvision._io import atomic_path, atomic_write
from leanvision.errors import DataError

DATA_ENV = "LEANVISION_DATA"
CACHE_ENV = "LEANVISION_CACHE"


def resolve_root(root: str | os.PathLike[str] | None, *, dataset: str, layouts: str) -> Path:
    """The data directory: ``root`` if given, else ``$LEANVISION_DATA``; a ``DataError`` says where it looked."""
    if root is not None:
        path, origin = Path(root).expanduser(), "the root argument"
    elif os.environ.get(DATA_ENV):
        path, origin = Path(os.environ[DATA_ENV]).expanduser(), f"${DATA_ENV}"
    else:
        raise DataError(
            f"no data directory for '{dataset}': looked at the root argument (not given) and ${DATA_ENV} "
            f"(not set); pass root=... (CLI: --data-dir) or set {DATA_ENV} to a directory holding {layouts}"
        )
    if not path.is_dir():
        raise DataError(
            f"data directory {path} (from {origin}) does not exist or is not a directory; "
            f"point it at a directory holding {layouts}"
        )
    return path


def cache_dir(*parts: str) -> Path:
    """``$LEANVISION_CACHE`` (else ``~/.cache/leanvision``) joined with ``parts``, created if missing."""
    base = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "leanvision").expanduser()
    path = base.joinpath(*parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(
            f"cannot create the cache directory {path} ({e}); set {CACHE_ENV} to a writable directory"
        ) from None
    return path


def save_arrays(path: Path, **arrays: np.ndarray) -> None:
    """Write an uncompressed ``.npz`` atomically (temp file, fsync, rename)."""
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_arrays(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """Read a cache written by :func:`save_arrays`; ``None`` when missing or unreadable (then rebuild it)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in keys}
    except (OSError, ValueError, KeyError, EOFError, zlib.error):
        return None


def _fingerprint(path: Path) -> str:
    st = path.stat()
    return hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]


def archive_files(archive: Path) -> Iterator[tuple[str, bytes]]:
    """Stream ``(relative posix path, bytes)`` of each regular file in a tar archive; unsafe paths refused."""
    try:
        with tarfile.open(archive, "r|*") as tf:
            for member in tf:
                parts = [p for p in member.name.split("/") if p not in ("", ".")]
                if member.name.startswith("/") or ".." in parts:
                    raise DataError(f"{archive} holds an unsafe path {member.name!r}; refusing to unpack it")
                if not member.isfile() or not parts:
                    continue  # directories are implied by file paths; links and devices are skipped
                f = tf.extractfile(member)
                data = f.read() if f is not None else b""
                if len(data) != member.size:
                    raise EOFError(f"member {member.name} is truncated")
                yield "/".join(parts), data
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(
            f"cannot unpack {archive}: {e}; the archive is corrupt or truncated, replace it with a good copy "
            f"(check it against its SHA256SUMS)"
        ) from None


def build_once(source: Path, *, namespace: str, build: Callable[[Path], None]) -> Path:
    """A cache directory derived from ``source``, filled once by ``build(tmp_dir)``.

    Keyed by the source's path, size and mtime; built in a temp dir renamed into place, so a killed run
    never leaves a half-built cache and concurrent builders settle on one complete copy.
    """
    final = cache_dir(namespace) / f"{source.name.split('.')[0]}-{_fingerprint(source)}"
    if final.is_dir():
        return final
    with atomic_path(final) as tmp:
        tmp.mkdir()
        build(tmp)
    return final
