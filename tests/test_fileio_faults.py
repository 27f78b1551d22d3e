"""Issue 22: the atomic-write helpers leak nothing and hide no error when the OS refuses a step."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
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


READ_ONLY_SWAP = """\
import os, sys
from pathlib import Path
from pytest_modelpack.golden import fileio
target = Path(sys.argv[1])
new = fileio.new_folder(target)
(new.path / "manifest.json").write_text("new")
fileio.swap_folder(new, target)
print(sorted(p.name for p in target.parent.iterdir()))
"""


def test_a_read_only_old_golden_is_swapped_out_without_a_leftover(tmp_path: Path) -> None:
    """Issue 22: a golden folder at mode 555 (a read-only checkout): the swap worked, but the
    old golden, now in ``.golden.new-*``, could not be emptied (rmtree, errors ignored) and
    stayed beside the new one, a leftover the next regen failed to remove (EACCES)."""
    from .test_faults import REPO, without_dac_override

    prefix = without_dac_override()
    target = tmp_path / "golden"
    (target / "sub").mkdir(parents=True)
    (target / "manifest.json").write_text("old")
    (target / "sub" / "x").write_text("old")
    os.chmod(target / "sub", 0o555)
    os.chmod(target, 0o555)
    try:
        done = subprocess.run(
            [*prefix, sys.executable, "-c", READ_ONLY_SWAP, str(target)],
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        for folder in tmp_path.rglob("*"):
            if folder.is_dir() and not folder.is_symlink():
                os.chmod(folder, 0o755)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['golden']", done.stdout
    assert (target / "manifest.json").read_text() == "new"


def test_a_golden_folder_that_is_a_link_is_replaced_without_a_leftover(tmp_path: Path) -> None:
    """A golden folder that is a symlink (inside the project): the exchange puts the link under
    the temporary name, and rmtree refuses a link, so ``.golden.new-*`` stayed for good. Now the
    link itself is removed; what it pointed to is left untouched."""
    real = tmp_path / "real"
    real.mkdir()
    (real / "manifest.json").write_text("old")
    target = tmp_path / "golden"
    target.symlink_to(real)
    new = fileio.new_folder(target)
    (new.path / "manifest.json").write_text("new")
    fileio.swap_folder(new, target)
    assert fileio.leftovers(target) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["golden", "real"]
    assert not target.is_symlink() and (target / "manifest.json").read_text() == "new"
    assert (real / "manifest.json").read_text() == "old"


def test_leftovers_with_read_only_folders_are_removed(tmp_path: Path) -> None:
    """remove_leftovers() on an interrupted regen's folder made read-only: before, rmtree raised
    EACCES (as a user without root's override) and regen failed on its own leftover."""
    target = tmp_path / "golden"
    target.mkdir()
    stale = tmp_path / ".golden.new-abc"
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "x").write_text("x")
    os.chmod(stale / "sub", 0o555)
    os.chmod(stale, 0o555)
    calls: list[str] = []
    real = shutil.rmtree

    def rmtree(path: object, *args: object, **kwargs: object) -> None:
        # As root the modes do not bind: refuse the first attempt as a user would see it.
        calls.append(str(path))
        if len(calls) == 1:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        real(path, *args, **kwargs)  # type: ignore[arg-type]

    mp = pytest.MonkeyPatch()
    mp.setattr(shutil, "rmtree", rmtree)
    try:
        assert fileio.remove_leftovers(target) == [stale]
    finally:
        mp.undo()
    assert not stale.exists()
    assert len(calls) == 2
