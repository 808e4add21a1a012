"""Faults the user did not cause: a full disk, a read-only directory and SIGTERM end a run in one line, with every
file already written still whole, and a resume after the fault gives the run an uninterrupted one would have."""

from __future__ import annotations

import builtins
import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from test_cli import assert_one_line_error, run  # shared CLI helpers (tests/ is on sys.path)

import leanvision._io as lio
from leanvision._io import append_jsonl, atomic_write, atomic_write_text, read_jsonl
from leanvision.engine import load_checkpoint, save_checkpoint
from leanvision.errors import Interrupted, WriteError
from leanvision.executors import ProcessExecutor
from leanvision.runs import Terminated, interruptible, sigterm_interrupts
from leanvision.search import Journal

CLI = [sys.executable, "-m", "leanvision.cli"]
TRAIN = ["train", "--model", "quickstart_cnn", "--dataset", "digits", "--lr", "0.05", "--batch-size", "64", "--quiet",
         "--threads", "1"]  # fmt: skip


class _Disk:
    """A filesystem with ``free`` bytes left, as the library's writes see it: a write past them puts what fits on
    disk and raises ENOSPC, like a real full disk (freed space is not given back: the fault stays once reached)."""

    def __init__(self, free: int) -> None:
        self.free, self.failures = free, 0

    def open(self, file, mode="r", *args, **kwargs):
        f = builtins.open(file, mode, *args, **kwargs)  # noqa: SIM115 - the caller closes it
        return f if set(mode) <= {"r", "b", "t"} else _OnDisk(f, self)


class _OnDisk:
    def __init__(self, f, disk: _Disk) -> None:
        self._f, self._disk = f, disk

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        if view.nbytes > self._disk.free:
            self._f.write(view[: self._disk.free])
            self._f.flush()  # what fitted really is in the file, as on a real disk
            self._disk.free, self._disk.failures = 0, self._disk.failures + 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._disk.free -= view.nbytes
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()


def full_disk(monkeypatch, free: int) -> _Disk:
    disk = _Disk(free)
    monkeypatch.setattr(lio, "open", disk.open, raising=False)  # every write of the library goes through _io
    return disk


def refuse(monkeypatch, code: int) -> None:
    """Every file the library opens for writing raises ``code`` (EROFS, EACCES: root could write a chmod'ed dir)."""

    def opener(file, mode="r", *args, **kwargs):
        if set(mode) <= {"r", "b", "t"}:
            return builtins.open(file, mode, *args, **kwargs)
        raise OSError(code, os.strerror(code), str(file))

    monkeypatch.setattr(lio, "open", opener, raising=False)


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ---- the write primitives --------------------------------------------------------------------------------------


def test_full_disk_during_torch_save_is_one_write_error_and_the_old_checkpoint_stays(tmp_path, monkeypatch):
    ckpt = tmp_path / "last.pt"
    save_checkpoint(ckpt, w=torch.ones(10))
    full_disk(monkeypatch, free=1000)  # torch.save fails half way (torch itself says "unexpected pos")
    with pytest.raises(WriteError) as e:
        save_checkpoint(ckpt, w=torch.zeros(100_000))
    assert str(e.value).startswith(f"cannot write {ckpt}: the disk is full (")
    assert f"free space on the filesystem holding {tmp_path}" in str(e.value)
    assert isinstance(e.value, OSError) and e.value.errno == errno.ENOSPC
    assert names(tmp_path) == ["last.pt"]  # no temp file left
    assert torch.equal(load_checkpoint(ckpt)["w"], torch.ones(10))


@pytest.mark.parametrize(
    ("code", "says"),
    [
        (errno.ENOSPC, "the disk is full"),
        (errno.EDQUOT, "the disk quota is used up"),
        (errno.EROFS, "is on a read-only filesystem; choose a writable output directory"),
        (errno.EACCES, "no permission to write in"),
    ],
)
def test_each_refused_write_says_why_and_what_to_do(tmp_path, monkeypatch, code, says):
    (tmp_path / "plan.json").write_text("old")
    refuse(monkeypatch, code)
    for write in (lambda: atomic_write_text(tmp_path / "plan.json", "new"),
                  lambda: append_jsonl(tmp_path / "journal.jsonl", {"kind": "header"})):  # fmt: skip
        with pytest.raises(WriteError) as e:
            write()
        assert str(e.value).startswith(f"cannot write {tmp_path}/") and says in str(e.value), e.value
    assert names(tmp_path) == ["plan.json"] and (tmp_path / "plan.json").read_text() == "old"


def test_a_real_read_only_directory(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only directories (the refused write is injected in the test above)")
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    try:
        with pytest.raises(WriteError, match="no permission to write in"):
            atomic_write(tmp_path / "ro" / "x.bin", lambda f: f.write(b"x"))
    finally:
        (tmp_path / "ro").chmod(0o755)
    assert names(tmp_path / "ro") == []


def test_a_failed_append_is_cut_back_and_the_journal_stays_readable(tmp_path, monkeypatch):
    path = tmp_path / "journal.jsonl"
    for i in range(3):
        append_jsonl(path, {"i": i})
    before = path.read_bytes()
    with monkeypatch.context() as m:
        full_disk(m, free=5)  # half a line reaches the disk, then ENOSPC
        with pytest.raises(WriteError, match=r"journal\.jsonl: the disk is full"):
            append_jsonl(path, {"i": 3, "pad": "x" * 100})
    assert path.read_bytes() == before
    with monkeypatch.context() as m:  # the data is written but cannot be made durable: not acknowledged either
        m.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "Input/output error")))
        with pytest.raises(WriteError, match="Input/output error; check the disk holding"):
            append_jsonl(path, {"i": 3})
    assert path.read_bytes() == before
    append_jsonl(path, {"i": 3})  # space freed: the next append goes on where the file ends
    assert [r["i"] for r in read_jsonl(path)] == [0, 1, 2, 3]
    with monkeypatch.context() as m:  # a file that could not get its first line is not left behind empty
        full_disk(m, free=0)
        with pytest.raises(WriteError):
            append_jsonl(tmp_path / "new.jsonl", {"kind": "header"})
    assert not (tmp_path / "new.jsonl").exists()


def test_errors_that_are_not_the_disks_pass_unchanged(tmp_path):
    def reads_a_missing_source(f) -> None:
        f.write(open(tmp_path / "missing.bin", "rb").read())  # noqa: SIM115 - the read fails before anything

    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "out.bin", reads_a_missing_source)
    assert names(tmp_path) == []


# ---- SIGTERM, the library side ---------------------------------------------------------------------------------


def test_sigterm_takes_the_path_of_ctrl_c_and_says_how_to_resume(tmp_path):
    saved = tmp_path / "last.pt"
    hint = "leanvision train --out-dir x --resume"
    with pytest.raises(Interrupted) as e, interruptible("training", lambda: hint if saved.exists() else None):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises here
    assert str(e.value) == "training interrupted; nothing saved yet" and e.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # put back when the workflow ends
    saved.touch()
    with pytest.raises(Interrupted) as e, interruptible("training", lambda: hint if saved.exists() else None):
        raise KeyboardInterrupt
    assert str(e.value) == "training interrupted; resume with: leanvision train --out-dir x --resume"
    assert e.value.exit_code == 130
    with (pytest.raises(WriteError, match=r"disk is full.*; the run can be resumed with: leanvision train --out-dir x"),
          interruptible("training", lambda: hint)):  # fmt: skip
        raise lio._write_error(tmp_path / "last.pt", OSError(errno.ENOSPC, "No space left on device"))


def test_a_program_with_its_own_sigterm_handler_keeps_it():
    seen = []
    mine = signal.signal(signal.SIGTERM, lambda *_: seen.append(1))
    try:
        with sigterm_interrupts() as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
        assert seen == [1] and stop.signum is None
    finally:
        signal.signal(signal.SIGTERM, mine)
    with pytest.raises(Terminated), sigterm_interrupts() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    assert stop.signum == signal.SIGTERM


def test_the_error_line_needs_no_disk(monkeypatch, capsys):
    import typer

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(typer, "echo", no_space)  # stderr is a file on the full disk
    code, _, _ = run(capsys, "train", "--model", "no_such_model", "--dataset", "digits", "--quiet")
    assert code == 2


# ---- worker processes --------------------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait is missing


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            children.setdefault(int(stat.read_text().rsplit(")", 1)[1].split()[1]), []).append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def _wait_gone(pids: list[int], seconds: float = 10.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads processes from /proc (Linux)")


@needs_proc
def test_workers_ignore_ctrl_c_and_die_with_a_killed_parent(tmp_path):
    script = tmp_path / "pool.py"
    script.write_text(
        textwrap.dedent("""
        import sys, time
        from leanvision.executors import ProcessExecutor
        if __name__ == "__main__":
            ex = ProcessExecutor(2)
            ex.submit(0, time.sleep, 60)
            print(" ".join(str(s.proc.pid) for s in ex._slots), flush=True)
            time.sleep(60)
    """)
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert len(workers) == 2
        os.kill(workers[1], signal.SIGINT)  # Ctrl-C reaches the whole process group; the parent decides
        time.sleep(0.5)
        assert all(_alive(p) for p in workers)
        proc.kill()  # kill -9 of the parent: its close() never runs
        proc.wait(timeout=10)
        assert _wait_gone(workers) == []
        assert "Traceback" not in proc.stderr.read()
    finally:
        proc.kill()


def test_closing_the_pool_leaves_no_process():
    ex = ProcessExecutor(2)
    pids = [s.proc.pid for s in ex._slots]
    ex.close()
    assert _wait_gone(pids, 1.0) == []


# ---- whole commands ----------------------------------------------------------------------------------------------


def _same_weights(a: Path, b: Path) -> bool:
    x, y = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_train_on_a_disk_that_fills_at_the_second_checkpoint(tmp_path, monkeypatch, capsys):
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    code, _, err = run(capsys, *TRAIN, "--epochs", "2", "--out-dir", str(straight))
    assert code == 0, err
    size = (straight / "last.pt").stat().st_size
    with monkeypatch.context() as m:
        disk = full_disk(m, free=int(2.5 * size))  # epoch 1: best.pt + last.pt fit, epoch 2's checkpoint does not
        code, _, err = run(capsys, *TRAIN, "--epochs", "2", "--out-dir", str(cut))
    assert disk.failures == 1
    assert code == 74
    assert_one_line_error(code, err, f"error: cannot write {cut}/", ".pt: the disk is full",
                          f"the run can be resumed with: leanvision train --out-dir {cut} --resume")  # fmt: skip
    assert names(cut) == ["best.pt", "last.pt", "metrics.jsonl"]  # no temp file, nothing torn
    assert load_checkpoint(cut / "last.pt")["epoch"] == 1 and load_checkpoint(cut / "best.pt")["epoch"] == 1
    assert len(read_jsonl(cut / "metrics.jsonl")) >= 1

    code, _, err = run(capsys, "train", "--out-dir", str(cut), "--resume", "--quiet")  # space freed
    assert code == 0, err
    assert _same_weights(straight / "last.pt", cut / "last.pt") and _same_weights(straight / "best.pt", cut / "best.pt")

    def untimed(run_dir: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in read_jsonl(run_dir / "metrics.jsonl")]

    assert untimed(cut) == untimed(straight)  # one line per epoch, as if the disk had never filled


def _real_small_filesystem(tmp_path: Path) -> Path:
    """A directory on a 64 KiB tmpfs in a private mount namespace (nothing outside the test sees it)."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1)")
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            f"mount -t tmpfs -o size=64k tmpfs {tmp_path}"], capture_output=True)  # fmt: skip
    if probe.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root or user namespaces)")
    return tmp_path


def test_train_on_a_real_full_filesystem_then_resume(tmp_path, capsys):
    straight = tmp_path / "straight"
    code, _, err = run(capsys, *TRAIN, "--epochs", "2", "--out-dir", str(straight))
    assert code == 0, err
    size = (straight / "last.pt").stat().st_size
    mnt, kept = tmp_path / "mnt", tmp_path / "kept"
    mnt.mkdir()
    _real_small_filesystem(mnt)
    # Inside the namespace: a filesystem that fills at the second checkpoint; what it held is copied out.
    script = f"""
        mount -t tmpfs -o size={int(2.6 * size)} tmpfs {mnt} || exit 99
        {" ".join(CLI + TRAIN)} --epochs 2 --out-dir {mnt}/run 2> {tmp_path}/err; echo $? > {tmp_path}/code
        cp -r {mnt}/run {kept}
    """
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", textwrap.dedent(script)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    code, err = int((tmp_path / "code").read_text()), (tmp_path / "err").read_text()
    assert_one_line_error(code, err, "the disk is full", f"the run can be resumed with: leanvision train --out-dir "
                          f"{mnt}/run --resume")  # fmt: skip
    assert code == 74
    assert names(kept) == ["best.pt", "last.pt", "metrics.jsonl"]
    assert load_checkpoint(kept / "last.pt")["epoch"] == 1
    code, _, err = run(capsys, "train", "--out-dir", str(kept), "--resume", "--quiet")  # on a disk with space
    assert code == 0, err
    assert _same_weights(straight / "last.pt", kept / "last.pt")


def _wait_for(check, proc: subprocess.Popen, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_sigterm_during_train_then_resume_equals_an_uninterrupted_run(tmp_path, capsys):
    cut, straight = tmp_path / "cut", tmp_path / "straight"
    proc = subprocess.Popen([*CLI, *TRAIN, "--epochs", "4", "--out-dir", str(cut)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    _wait_for(lambda: (cut / "last.pt").is_file(), proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip() == f"training interrupted; resume with: leanvision train --out-dir {cut} --resume"
    assert names(cut) in (["best.pt", "last.pt", "metrics.jsonl"], ["last.pt", "metrics.jsonl"])
    epoch = load_checkpoint(cut / "last.pt")["epoch"]
    assert 1 <= epoch < 4
    code, _, err = run(capsys, "train", "--out-dir", str(cut), "--resume", "--quiet")
    assert code == 0, err
    code, _, err = run(capsys, *TRAIN, "--epochs", "4", "--out-dir", str(straight))
    assert code == 0, err
    assert _same_weights(straight / "last.pt", cut / "last.pt")


SEARCH = {"space": "synthetic", "strategy": "random", "evaluator": "synthetic", "evaluator_kwargs": {"sleep": 0.15},
          "budget": 24, "seed": 3, "executor": "process", "workers": 2, "threads": None}  # fmt: skip


@needs_proc
@pytest.mark.parametrize("executor", ["process", pytest.param("ray", marks=pytest.mark.slow)])
def test_sigterm_during_a_search_stops_its_workers_then_resume_loses_nothing(tmp_path, capsys, executor):
    from leanvision.search import create_evaluator, create_space, create_strategy, search

    if executor == "ray":
        pytest.importorskip("ray")
    cut, cfg = tmp_path / "cut", tmp_path / "cut.yaml"
    cfg.write_text(yaml.safe_dump({**SEARCH, "executor": executor, "out_dir": str(cut)}))
    journal = cut / "journal.jsonl"

    def tells() -> int:
        return sum(r["kind"] == "tell" for r in read_jsonl(journal)) if journal.is_file() else 0

    proc = subprocess.Popen([*CLI, "search", str(cfg), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    _wait_for(lambda: tells() >= 2, proc)
    workers = _descendants(proc.pid)  # the pool's workers, or the whole Ray instance the search started
    assert len(workers) >= 2
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip() == f"search interrupted; resume with: leanvision search {cut / 'config.yaml'} --resume"
    assert _wait_gone(workers, 5.0) == []  # no orphan process
    assert 2 <= len(Journal.open(journal).trials()) < 24

    code, _, err = run(capsys, "search", str(cut / "config.yaml"), "--resume", "--executor", "inprocess", "--quiet")
    assert code == 0, err
    resumed = sorted((t["trial"], t["sample"], t["objective"]) for t in Journal.open(journal).trials())
    assert [t[0] for t in resumed] == list(range(24))  # every trial once: none lost, none repeated
    # The uninterrupted search (the trials' sleep changes no result): random search asks the same samples.
    space = create_space("synthetic")
    straight = search(space, create_strategy("random", space, seed=3), create_evaluator("synthetic"), budget=24)
    assert resumed == sorted((t.trial, t.sample, t.objective) for t in straight.trials)


def test_search_on_a_disk_that_fills_mid_journal_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch, capsys):
    base = {**SEARCH, "strategy": "evolution", "evaluator_kwargs": {}, "executor": "inprocess", "budget": 30}
    (tmp_path / "straight.yaml").write_text(yaml.safe_dump({**base, "out_dir": str(tmp_path / "straight")}))
    code, _, err = run(capsys, "search", str(tmp_path / "straight.yaml"), "--quiet")
    assert code == 0, err
    straight = tmp_path / "straight"
    cut, cfg = tmp_path / "cut", tmp_path / "cut.yaml"
    cfg.write_text(yaml.safe_dump({**base, "out_dir": str(cut)}))
    free = (straight / "config.yaml").stat().st_size + (straight / "journal.jsonl").stat().st_size // 2
    with monkeypatch.context() as m:
        disk = full_disk(m, free=free)
        code, _, err = run(capsys, "search", str(cfg), "--quiet")
    assert disk.failures == 1
    assert code == 74
    assert_one_line_error(code, err, f"error: cannot write {cut / 'journal.jsonl'}: the disk is full",
                          f"the run can be resumed with: leanvision search {cut / 'config.yaml'} --resume")  # fmt: skip
    kept = Journal.open(cut / "journal.jsonl").trials()  # whole records only: the torn one was cut off
    assert 0 < len(kept) < 30

    code, _, err = run(capsys, "search", str(cut / "config.yaml"), "--resume", "--quiet")  # space freed
    assert code == 0, err

    def trials(run_dir: Path) -> list[tuple]:
        return [(t["trial"], t["sample"], t["objective"]) for t in Journal.open(run_dir / "journal.jsonl").trials()]

    assert trials(cut)[: len(kept)] == [(t["trial"], t["sample"], t["objective"]) for t in kept]
    assert trials(cut) == trials(straight)


def test_compress_on_a_full_disk_says_how_to_resume(tmp_path, monkeypatch, capsys):
    import leanvision.compress as compress

    def full(*_a, **_k):
        raise lio._write_error(tmp_path / "run" / "regularise" / "last.pt", OSError(errno.ENOSPC, "No space"))

    monkeypatch.setattr(compress, "run", full)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": "quick_cnn", "dataset": "digits", "out_dir": str(tmp_path / "run")}))
    code, _, err = run(capsys, "compress", str(cfg))
    assert code == 74
    again = f"resumed with: leanvision compress --out-dir {tmp_path / 'run'} --resume"
    assert_one_line_error(code, err, "the disk is full", again)
