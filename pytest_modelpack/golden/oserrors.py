"""OS errors of the golden store as GOLDEN I/O ERROR: the path, what the OS said, and the fix."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .. import fixes
from ..errors import GoldenIOError

if TYPE_CHECKING:
    from .store import GoldenStore


def remedy(err: int | None, action: str, where: str, regen: str) -> tuple[str, str]:
    """(why, fix) for an OS error number."""
    then = f"then regenerate: {regen}" if action != "read" else "then run the tests again"
    if err in (errno.ENOSPC, errno.EDQUOT):
        return "the disk (or your quota) is full", (
            f"free space on the file system holding {where}, {then}"
        )
    if err == errno.EROFS:
        return "the file system is read-only", (
            f"regenerate goldens on a writable checkout ({regen}) and commit them; "
            "the gate (--modelpack-golden) only reads"
        )
    if err == errno.EFBIG:
        return "the file is larger than the process's file-size limit (ulimit -f)", (
            f"raise the limit (ulimit -f unlimited), {then}"
        )
    if err in (errno.EACCES, errno.EPERM):
        need = "read" if action == "read" else "write"
        how = "chmod/chown"
        if os.path.isdir(where) and not os.access(where, os.X_OK):
            how = f"chmod u+rx {where}: a folder is entered through its x bit"
        return "permission denied", f"give your user {need} permission on {where} ({how}), {then}"
    if err == errno.EEXIST:
        return "something that is not a folder stands where a folder belongs", (
            f"remove or move {where} ({what_is(where)}), then run: {regen}"
        )
    if err == errno.EISDIR:
        return "a directory stands where a file belongs", (
            f"remove the directory {where}, then run: {regen}"
        )
    if err == errno.ENOTDIR:
        return "a file stands where a folder belongs", (
            f"remove or move the file in the way of {where}, then run: {regen}"
        )
    if err == errno.ELOOP:
        return "a loop of symbolic links", (
            f"replace the symlinks on the way to {where} with the real folder or file, {then}"
        )
    if err == errno.EIO:
        return "an I/O error: the disk or file system failed", (
            f"check the disk (dmesg, fsck) or restore {where} from version control, {then}"
        )
    if err == errno.ENAMETOOLONG:
        return "the path is too long", f"shorten the golden's name or folder, {then}"
    return "the operating system refused", f"check {where}, {then}"


def what_is(path: str | os.PathLike[str]) -> str:
    """What stands at ``path``, in words: "a FIFO", "a symlink to nothing" ... ("nothing")."""
    try:
        info = os.lstat(path)
    except OSError:
        return "nothing"
    if stat.S_ISLNK(info.st_mode):
        try:
            info = os.stat(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "a loop of symbolic links"
            return f"a symlink to nothing (it points to {os.readlink(path)})"
    kinds = [
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISREG, "a file"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ]
    return next((word for test, word in kinds if test(info.st_mode)), "a special file")


def in_the_way(path: Path) -> tuple[Path, str] | None:
    """The first path on the way to ``path`` (itself included) that is not a folder (a file, a
    FIFO, a symlink to nothing or a loop), with what it is; None when each one there is a
    folder (what is missing is missing for real)."""
    absolute = Path(os.path.abspath(path))
    for folder in [*reversed(absolute.parents[:-1]), absolute]:
        if not os.path.lexists(folder):
            return None
        what = what_is(folder)
        if what != "a folder":
            return folder, what
    return None


def blocking_folder(path: Path) -> Path | None:
    """The first folder on the way to ``path`` this process may not enter (no x bit): the one a
    permission error is really about."""
    absolute = Path(os.path.abspath(path))
    for folder in reversed(absolute.parents[:-1]):
        if os.path.isdir(folder) and not os.access(folder, os.X_OK):
            return folder
        if not os.path.lexists(folder):
            return None
    return None


@contextlib.contextmanager
def io_errors(store: GoldenStore, action: str, path: Path) -> Iterator[None]:
    """A context that turns an OSError into a GoldenIOError naming the path and the fix."""
    try:
        yield
    except OSError as exc:
        # The summary names the file the user knows (goldens/x/bundle.pkl); the detail and the
        # fix name the path the OS refused (a temporary file, or the folder lacking permission).
        refused = Path(exc.filename) if exc.filename else path
        if exc.errno in (errno.EACCES, errno.EPERM):
            refused = blocking_folder(refused) or refused
        elif exc.errno in (errno.ENOTDIR, errno.EEXIST):
            found = in_the_way(refused)
            refused = found[0] if found else refused
        name = errno.errorcode.get(exc.errno or 0, "")
        why, fix = remedy(
            exc.errno, action, store.shown(refused), fixes.regen_command(store.nodeid)
        )
        raise GoldenIOError(
            f"cannot {action} {store.shown(path)}: {why}",
            name=store.name,
            detail=[
                f"path: {refused}",
                f"{name or 'OSError'}: {exc.strerror or exc}",
                "nothing was half-written: the golden on disk is unchanged"
                if action != "read"
                else "the gate writes nothing",
            ],
            fix=fix,
        ) from None
