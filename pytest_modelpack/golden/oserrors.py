"""OS errors of the golden store as GOLDEN I/O ERROR: the path, what the OS said, and the fix."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import fixes
from ..errors import GoldenIOError, ModelpackError

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
        return "permission denied", (
            f"give your user {need} permission on {where} (chmod/chown), {then}"
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
    if err in (errno.ENAMETOOLONG,):
        return "the path is too long", f"shorten the golden's name or folder, {then}"
    return "the operating system refused", f"check {where}, {then}"


class IOErrors:
    """A context that turns an OSError into a GoldenIOError naming the path and the fix."""

    def __init__(self, store: GoldenStore, action: str, path: Path) -> None:
        self.store, self.action, self.path = store, action, path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if not isinstance(exc, OSError) or isinstance(exc, ModelpackError):
            return
        # The summary names the file the user knows (goldens/x/bundle.pkl); the detail and the
        # fix name the path the OS refused (a temporary file, or the folder lacking permission).
        path = Path(exc.filename) if exc.filename else self.path
        name = errno.errorcode.get(exc.errno or 0, "")
        why, fix = remedy(
            exc.errno, self.action, self.store.shown(path), fixes.regen_command(self.store.nodeid)
        )
        raise GoldenIOError(
            f"cannot {self.action} {self.store.shown(self.path)}: {why}",
            name=self.store.name,
            detail=[
                f"path: {path}",
                f"{name or 'OSError'}: {exc.strerror or exc}",
                "nothing was half-written: the golden on disk is unchanged"
                if self.action != "read"
                else "the gate writes nothing",
            ],
            fix=fix,
        ) from None
