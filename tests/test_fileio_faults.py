"""Issue 22: the atomic-write helpers leak nothing and hide no error when the OS refuses a step."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from pytest_modelpack.golden import fileio


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


needs_proc = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")


@needs_proc
def test_a_temporary_file_whose_chmod_fails_is_closed_and_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def chmod(path: object, mode: int) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted", str(path))

    monkeypatch.setattr(os, "chmod", chmod)
    before = _fds()
    with pytest.raises(PermissionError):
        with fileio.temporary_file(tmp_path, "bundle.pkl"):
            pytest.fail("the block must not run")
    assert _fds() == before
    assert list(tmp_path.iterdir()) == []


@needs_proc
def test_a_lock_that_cannot_be_taken_is_the_error_and_leaks_no_descriptor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fcntl = pytest.importorskip("fcntl")
    real = fcntl.flock
    calls: list[int] = []

    def flock(fd: int, op: int) -> None:
        calls.append(op)
        if op != fcntl.LOCK_UN:
            raise OSError(errno.ENOLCK, "No locks available")
        real(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock)
    before = _fds()
    with pytest.raises(OSError, match="No locks available"):
        with fileio.folder_lock(tmp_path):
            pytest.fail("the block must not run")
    assert _fds() == before
    assert calls == [fcntl.LOCK_EX]  # no unlock of a lock never taken


def test_a_swap_that_cannot_put_the_old_golden_back_raises_the_first_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The two-rename swap (no renameat2): the new folder cannot be moved in, and the old one
    cannot be moved back. The error is the first one; the old golden waits in its .old- folder,
    where regen finds and repairs it (interrupted_swap)."""
    target = tmp_path / "golden"
    target.mkdir()
    (target / "manifest.json").write_text("old")
    new = fileio.new_folder(target)
    (new.path / "manifest.json").write_text("new")
    monkeypatch.setattr(fileio, "_exchange", lambda a, b: False)
    real = os.rename
    moves: list[tuple[str, str]] = []

    def rename(src: object, dst: object) -> None:
        moves.append((Path(src).name, Path(dst).name))
        if len(moves) == 1:
            return real(src, dst)  # the old golden moved aside
        if len(moves) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        raise OSError(errno.EIO, "Input/output error")  # putting it back fails too

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="No space left on device"):
        fileio.swap_folder(new, target)
    monkeypatch.undo()
    aside = [p for p in tmp_path.iterdir() if p.name.startswith(".golden.old-")]
    assert len(aside) == 1 and (aside[0] / "manifest.json").read_text() == "old"
    assert fileio.leftovers(target) == sorted([*aside, new.path])
