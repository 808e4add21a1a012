"""Shared atomic writes: whole-or-nothing files and directories, normal file modes, no temp files left behind."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from leanvision._io import append_jsonl, atomic_path, atomic_write, atomic_write_text, read_jsonl
from leanvision.errors import DataError


@pytest.fixture
def umask_022() -> Iterator[None]:
    # A fixed umask makes mkstemp's owner-only 0600 distinguishable from a normal file's mode on every machine.
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_atomic_write_creates_parents_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out.bin"
    assert atomic_write(target, lambda f: f.write(b"payload")) == target
    assert target.read_bytes() == b"payload"
    assert _names(target.parent) == ["out.bin"]


def test_atomic_write_replaces_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    atomic_write(str(target), lambda f: f.write(b"new"))
    assert target.read_bytes() == b"new"
    assert _names(tmp_path) == ["out.bin"]


@pytest.mark.parametrize("error", [RuntimeError("writer crashed"), KeyboardInterrupt()])
def test_failed_write_keeps_old_file_and_no_temp(tmp_path: Path, error: BaseException) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"previous good copy")

    def broken(f) -> None:
        f.write(b"half a file")
        raise error

    with pytest.raises(type(error)):
        atomic_write(target, broken)
    assert target.read_bytes() == b"previous good copy"
    assert _names(tmp_path) == ["out.bin"]


def test_atomic_write_text_round_trips_utf8(tmp_path: Path) -> None:
    target = tmp_path / "note.md"
    atomic_write_text(target, "naïve ∑ café\n")
    assert target.read_bytes() == "naïve ∑ café\n".encode()


@pytest.mark.usefixtures("umask_022")
def test_file_mode_matches_a_normally_created_file(tmp_path: Path) -> None:
    normal = tmp_path / "normal.txt"
    normal.write_text("x")
    written = atomic_write_text(tmp_path / "atomic.txt", "x")
    replaced = tmp_path / "replaced.txt"
    replaced.write_text("old")
    atomic_write(replaced, lambda f: f.write(b"new"))
    mode = stat.S_IMODE(normal.stat().st_mode)
    assert mode == 0o644
    assert stat.S_IMODE(written.stat().st_mode) == mode
    assert stat.S_IMODE(replaced.stat().st_mode) == mode


def test_atomic_path_yields_distinct_hidden_siblings(tmp_path: Path) -> None:
    final = tmp_path / "thing"
    with atomic_path(final) as a, atomic_path(final) as b:
        assert a != b  # two writers in one process never share a temp
        assert a.parent == final.parent and a.name.startswith(".thing.")
        a.write_bytes(b"a")
        b.write_bytes(b"b")
    assert final.read_bytes() == b"a"  # the last rename wins, and it is always a whole file
    assert _names(tmp_path) == ["thing"]


def test_atomic_path_directory(tmp_path: Path) -> None:
    final = tmp_path / "built"
    with atomic_path(final) as tmp:
        tmp.mkdir()
        (tmp / "part").write_text("1")
    assert (final / "part").read_text() == "1"
    assert _names(tmp_path) == ["built"]


def test_failed_directory_build_leaves_nothing(tmp_path: Path) -> None:
    final = tmp_path / "built"
    with pytest.raises(KeyboardInterrupt), atomic_path(final) as tmp:
        tmp.mkdir()
        (tmp / "half").write_text("partial")
        raise KeyboardInterrupt  # stands in for a run killed mid-build
    assert _names(tmp_path) == []


def test_directory_already_built_by_another_process_is_kept(tmp_path: Path) -> None:
    final = tmp_path / "built"
    with atomic_path(final) as tmp:
        tmp.mkdir()
        (tmp / "part").write_text("mine")
        final.mkdir()  # another process finished first: the rename must fail, and their copy is used
        (final / "part").write_text("theirs")
    assert (final / "part").read_text() == "theirs"
    assert _names(tmp_path) == ["built"]


def test_dead_writers_leftovers_are_removed(tmp_path: Path) -> None:
    host = socket.gethostname()
    dead = 2**30  # above Linux's largest pid_max, so no such process exists
    stale_file = tmp_path / f".out.bin.tmp-{host}-{dead}-abcd1234"
    stale_file.write_bytes(b"half")
    stale_dir = tmp_path / f".out.bin.tmp-{host}-{dead}-deadbeef"
    stale_dir.mkdir()
    (stale_dir / "x").write_text("half")
    live = tmp_path / f".out.bin.tmp-{host}-{os.getpid()}-0000ffff"  # a writer that is still running
    live.write_bytes(b"in progress")
    other_host = tmp_path / f".out.bin.tmp-{host}x-{dead}-0000ffff"  # its pid means nothing here
    other_host.write_bytes(b"elsewhere")
    atomic_write(tmp_path / "out.bin", lambda f: f.write(b"ok"))
    assert _names(tmp_path) == sorted([live.name, other_host.name, "out.bin"])


def test_jsonl_append_survives_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    append_jsonl(path, {"a": 1})
    append_jsonl(path, {"b": [1, 2]})
    with path.open("a") as f:
        f.write('{"c": 3')  # a writer killed mid-append
    assert read_jsonl(path) == [{"a": 1}, {"b": [1, 2]}]
    append_jsonl(path, {"d": 4})  # the unacknowledged torn record is dropped, not extended
    assert read_jsonl(path) == [{"a": 1}, {"b": [1, 2]}, {"d": 4}]
    assert path.read_text().endswith('{"d": 4}\n')


def test_jsonl_corrupt_middle_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text('{"a": 1}\nnot json\n{"b": 2}\n')
    with pytest.raises(DataError, match=r"log\.jsonl: line 2 is not valid JSON"):
        read_jsonl(path)


def test_jsonl_append_fsyncs_each_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    append_jsonl(tmp_path / "x.jsonl", {"a": 1})
    append_jsonl(tmp_path / "x.jsonl", {"a": 2})
    assert len(synced) == 2
