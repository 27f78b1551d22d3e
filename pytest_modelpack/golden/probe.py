"""What stands at a path the CLI was given, without blocking and without reading it whole.

``modelpack scan`` and ``inspect`` take any path: a FIFO (a read blocks for good), a device
(``/dev/zero`` never ends), a symlink loop, a file the user may not read. :func:`file_problem`
says what is wrong in one line (and the fix, for an OS error) before anything opens the file for
a scan; :func:`found_format` names a known file format from its first bytes, so "unreadable"
says what was found instead (a gzip file, a PNG image ...).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .oserrors import blocking_folder, in_the_way, remedy, what_is


@dataclass(frozen=True)
class Problem:
    """Why a path cannot be scanned, and (for an OS error) the fix."""

    why: str
    fix: str | None = None


def _os_problem(path: Path, exc: OSError, doing: str = "read it") -> Problem:
    name = errno.errorcode.get(exc.errno or 0, "OSError")
    where = Path(exc.filename or path)
    if exc.errno in (errno.EACCES, errno.EPERM):
        where = blocking_folder(where) or where
    with contextlib.suppress(ValueError, OSError):
        if Path(os.path.abspath(where)).is_relative_to(Path.cwd()):
            where = Path(os.path.relpath(where))
    why, fix = remedy(exc.errno, "read", str(where), "pytest --modelpack-regen")
    return Problem(f"cannot {doing}: {why} ({name}: {exc.strerror or exc})", fix)


def listing_problem(exc: OSError) -> Problem:
    """A folder of goldens that cannot be listed (``goldens/`` without its r bit)."""
    return _os_problem(Path(str(exc.filename)), exc, "list it")


def file_problem(path: Path) -> Problem | None:
    """None when ``path`` is a regular file this process may open; else what is wrong."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        found = in_the_way(path)
        if found is not None and found[0] != Path(os.path.abspath(path)):
            return Problem(f"no such file: {found[0]} is {found[1]}, not a folder")
        return Problem("no such file")
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            found = in_the_way(path)
            where = f": {found[0]} is {found[1]}, not a folder" if found else ""
            return Problem(f"no such file{where}")
        return _os_problem(path, exc)
    if stat.S_ISLNK(info.st_mode):
        try:
            info = os.stat(path)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return Problem(f"a symlink to nothing (it points to {os.readlink(path)})")
            return _os_problem(path, exc)
    if not stat.S_ISREG(info.st_mode):
        return Problem(f"not a regular file: {what_is(path)}")
    try:  # O_NONBLOCK: a FIFO swapped in since the stat above must not block the open
        os.close(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)))
    except OSError as exc:
        return _os_problem(path, exc)
    return None


#: Leading bytes of formats a bundle is sometimes confused with, and their names.
_MAGIC = [
    (b"\x1f\x8b", "gzip data"),
    (b"BZh", "bzip2 data"),
    (b"\xfd7zXZ\x00", "xz data"),
    (b"\x28\xb5\x2f\xfd", "zstd data"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"PK\x03\x04", "a zip archive"),
    (b"PK\x05\x06", "an empty zip archive"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"\x7fELF", "an ELF executable"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (Keras/h5py)"),
    (b"\x93NUMPY", "a NumPy .npy array"),
    (b"\x08\x01\x12", "a protobuf message (ONNX?)"),
    (b"SQLite format 3\x00", "an SQLite database"),
]


def found_format(path: Path) -> str | None:
    """What the file at ``path`` looks like, to follow "the file": "starts like gzip data",
    "is all zero bytes", "is plain text" ... (None: nothing known)."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return None
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return f"starts like {name}"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "starts like a tar archive"
    if head and head.count(0) == len(head):
        return "is all zero bytes"
    if len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 32:
        return "starts like a safetensors file"
    if len(head) < 16:  # too short to tell text from a truncated pickle
        return None
    if head.lstrip()[:1] in (b"{", b"[") and b"\x00" not in head:
        return "starts like JSON text"
    if all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return "is plain text"
    return None


#: What ``torch.load`` unpickles first out of a legacy tar archive (torch < 0.4): a tar holding
#: it runs code under ``torch.load`` whatever else it lacks.
TORCH_TAR_MEMBER = "storages"


def tar_members(path: Path, limit: int = 64) -> list[str] | None:
    """The first ``limit`` member names of the tar archive at ``path`` (None: not one)."""
    import tarfile

    try:
        with tarfile.open(path, mode="r:") as tar:
            names = []
            for member in tar:
                names.append(member.name)
                if len(names) >= limit:
                    break
            return names
    except (tarfile.TarError, OSError, EOFError, ValueError, UnicodeError):
        return None


_ALL_MEMBERS = 100_000
#: Refusals of things a file that is no pickle holds by chance: nothing runs from them when the
#: stream then turns out malformed (pickle.load fails; torch.load finds no legacy members).
_INERT = {"<persistent id>", "<out-of-band buffer>", "<tar archive>"}


def not_a_bundle(verdict: Any, path: Path | None) -> bool:
    """Whether a scan's refusals are of a file in no format a loader reads (garbage holding a
    PERSID byte, a tar archive without torch's members), not of a payload: "unreadable",
    never "UNSAFE" (the gate's own mapping, :func:`~pytest_modelpack.safety.verdict_error`,
    reads such garbage as corrupt too)."""
    if verdict.error is None or any(ref.module not in _INERT for ref, _ in verdict.refused):
        return False
    if any(ref.module == "<tar archive>" for ref, _ in verdict.refused):
        # (every member, up to a bound: torch's legacy loader finds `storages` anywhere; past
        # the bound, a tar is judged as the payload it may be)
        names = tar_members(path, _ALL_MEMBERS) if path is not None else None
        return names is not None and len(names) < _ALL_MEMBERS and TORCH_TAR_MEMBER not in names
    return True


def unreadable_why(verdict: Any, path: Path | None) -> str:
    """What the scan found, and what the file looks like if it is some other known format."""
    tarred = path is not None and any(r.module == "<tar archive>" for r, _ in verdict.refused)
    names = tar_members(path) if tarred and path is not None else None
    if names is not None:
        shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
        return (
            f"a tar archive without the members of a legacy torch file ({shown}): not a pickle "
            "or a torch file"
        )
    found = found_format(path) if path is not None else None
    return f"{verdict.error}" + (f" (the file {found})" if found else "")
