"""The one place that writes files: atomic file writes, atomic folder swaps, the folder lock.

Every write of pytest-modelpack (a golden, ``examples.json`` written on its own, the JSON report)
goes through :func:`write_atomic` or :func:`swap_folder`, so a crash, a kill or a full disk leaves
the old content or the new one, never half of each, and never a stray temporary file once the next
write has run.

A golden folder changes in one step: the new golden is written into a sibling temporary folder
(``.<name>.new-XXXX``) and swapped in. On Linux ``renameat2(RENAME_EXCHANGE)`` exchanges the two
folders atomically; elsewhere the old folder is first renamed aside (``.<name>.old-XXXX``) and the
new one renamed into place, and a reader that finds the folder missing beside an ``.old`` folder
knows a swap was interrupted (:func:`interrupted_swap`); regen then repairs it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import mmap
import os
import queue
import shutil
import stat
import struct
import sys
import tempfile
import threading
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

try:
    import fcntl
except ImportError:  # Windows: no locks; the swap is still two renames, detected if interrupted
    fcntl = None  # type: ignore[assignment]

#: The first bytes of a Git LFS pointer file: the real content was never fetched.
LFS_MAGIC = b"version https://git-lfs.github.com/spec/v1"

#: ``os.preadv`` reads at an offset without moving the descriptor's (none on Windows).
POSITIONAL = hasattr(os, "preadv")
#: Large writes go down in pieces of this size (see :class:`HashingWriter`).
_WRITE_CHUNK = 16 << 20
#: How many bytes :class:`HashingWriter` lets pile up before it asks for them on disk.
_SYNC_EVERY = 64 << 20
_datasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync
#: Marks of our own temporary files and folders: ``.<final name>.<random><suffix>``.
_TMP_SUFFIX = ".tmp"
_NEW_MARK = ".new-"
_OLD_MARK = ".old-"


# The umask can only be read by setting it: read once, at import.
_UMASK = os.umask(0)
os.umask(_UMASK)


class HashingWriter:
    """A write-only file wrapper that hashes, counts and flushes what passes through it.

    The hash runs on a background thread (hashlib releases the GIL on large updates): sha256
    costs about 0.6 s/GiB, which would otherwise stall the pickler. Each piece is handed to that
    thread *before* it is written, so hashing and writing overlap. Large writes (the bytes of a
    pickled tensor storage arrive as one object) go down in :data:`_WRITE_CHUNK` pieces, and
    given ``fd`` the same thread calls ``fdatasync`` on the file every :data:`_SYNC_EVERY` bytes:
    the disk writes behind the pickler instead of all at the final fsync, and the page cache never
    holds a gigabyte of dirty pages (which the kernel throttles). An error of those syncs is
    raised by :meth:`close`, so the final fsync cannot hide it.

    The queue is bounded in items; the bytes it holds are the pickler's own objects (or slices of
    them), which its memo keeps alive until the dump ends anyway, so hashing behind the writes
    costs no memory of its own.
    """

    def __init__(self, raw: IO[bytes], fd: int | None = None) -> None:
        self._raw = raw
        self._fd = fd
        self._hash = hashlib.sha256()
        self.size = 0
        self._error: BaseException | None = None
        self._queue: queue.Queue[bytes | memoryview | threading.Event | None] = queue.Queue(
            maxsize=64
        )
        self._thread: threading.Thread | None = threading.Thread(
            target=self._hash_all, name="modelpack-sha256", daemon=True
        )
        self._thread.start()

    def _hash_all(self) -> None:
        unsynced = 0
        while (data := self._queue.get()) is not None:
            if isinstance(data, threading.Event):
                data.set()  # everything queued before it is hashed
                continue
            if self._error is not None:
                continue  # keep draining: the writer must never block on a full queue
            try:
                self._hash.update(data)
                unsynced += len(data) if isinstance(data, bytes) else data.nbytes
                if self._fd is not None and unsynced >= _SYNC_EVERY:
                    unsynced = 0
                    _datasync(self._fd)  # what is written so far: the disk works meanwhile
            except BaseException as exc:  # noqa: BLE001 - raised again by close()
                self._error = exc

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        n = view.nbytes
        if n <= _WRITE_CHUNK:
            # bytes are immutable: hashed later they are what was written. Anything else is copied.
            self._queue.put(data if type(data) is bytes else view.tobytes())
            self._raw.write(view)
        else:
            for start in range(0, n, _WRITE_CHUNK):
                piece = view[start : start + _WRITE_CHUNK]
                self._queue.put(piece)
                self._raw.write(piece)
            if type(data) is not bytes:
                # A big buffer lent for this call only (torch.save's records are views of tensor
                # memory): hashed in place, so the call returns only once the hash caught up.
                done = threading.Event()
                self._queue.put(done)
                done.wait()
        self.size += n
        return n

    def flush(self) -> None:
        self._raw.flush()

    def close(self, *, raise_error: bool = True) -> None:
        """Wait for the hash of everything written (idempotent); raise what failed in the
        background (a sync's error), unless ``raise_error`` is False (an error of the writer
        itself is on its way already and says more)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self._error is not None and raise_error:
            raise self._error

    @property
    def sha256(self) -> str:
        self.close()
        return self._hash.hexdigest()


@contextlib.contextmanager
def open_regular(path: Path) -> Iterator[tuple[IO[bytes], os.stat_result] | None]:
    """``path`` opened for reading with its stat, or None when it is not a regular file: never
    blocks on a FIFO, never opens a device (it is checked before and after opening)."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        yield None
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        stat_ = os.fstat(f.fileno())
        yield (f, stat_) if stat.S_ISREG(stat_.st_mode) else None


@dataclass(frozen=True)
class MappedFile:
    """A file mapped copy-on-write (``mmap.ACCESS_COPY``): readers share its pages with the page
    cache, and writes through the mapping stay in this process (the file never changes)."""

    path: Path
    mapping: mmap.mmap
    #: A descriptor of the file mapped, open as long as this object lives: a loader copies a
    #: storage out of it with ``os.preadv`` without opening the file again.
    fd: int | None = None


_MAP_CHUNK = 64 << 20
_HASH_CHUNK = 8 << 20


def map_copy(f: IO[bytes], path: Path) -> MappedFile:
    """The whole (non-empty) open file ``f`` mapped copy-on-write."""
    mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    fd = os.dup(f.fileno())
    mapped = MappedFile(Path(path), mapping, fd)
    weakref.finalize(mapped, os.close, fd)
    return mapped


def sha256_mapping(mapping: mmap.mmap) -> str:
    """sha256 of a whole mapping, read sequentially.

    Pages hashed are dropped from this process (``MADV_DONTNEED``: they stay in the page cache),
    so hashing a file larger than free memory costs no resident memory of its own. Only for a
    mapping nothing else uses yet: dropping a copy-on-write page someone wrote to loses the write.
    """
    digest = hashlib.sha256()
    size = len(mapping)
    sequential = getattr(mmap, "MADV_SEQUENTIAL", None)
    drop = getattr(mmap, "MADV_DONTNEED", None)
    if sequential is not None:
        mapping.madvise(sequential)
    with memoryview(mapping) as view:
        for start in range(0, size, _MAP_CHUNK):
            length = min(_MAP_CHUNK, size - start)
            digest.update(view[start : start + length])
            if drop is not None:
                mapping.madvise(drop, start, length)
    if sequential is not None:
        mapping.madvise(mmap.MADV_NORMAL)
    return digest.hexdigest()


def sha256_outside(mapping: mmap.mmap, spans: Iterable[tuple[int, int]]) -> str:
    """A bundle's ``pickle_sha256``: sha256 of the bytes of ``mapping`` outside ``spans`` (sorted,
    disjoint ``(offset, length)`` pairs inside it) in file order, then of each span's offset and
    length (two little-endian 64-bit integers), so that spans moved by a byte hash differently."""
    digest = hashlib.sha256()
    at = 0
    bounds = []
    with memoryview(mapping) as view:
        for offset, length in spans:
            digest.update(view[at:offset])
            at = offset + length
            bounds.append(struct.pack("<QQ", offset, length))
        digest.update(view[at:])
    digest.update(b"".join(bounds))
    return digest.hexdigest()


class BackgroundHash:
    """sha256 of a whole file, computed on a background thread that reads it through a
    descriptor of its own (``os.preadv``, not a mapping: a file truncated meanwhile reads short,
    where a mapping would fault the whole process)."""

    def __init__(self, f: IO[bytes]) -> None:
        self._file = os.fdopen(os.dup(f.fileno()), "rb", buffering=0)
        self._digest: str | None = None
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._run, name="modelpack-sha256", daemon=True)
        try:
            self._thread.start()
        except BaseException:
            self._file.close()
            raise

    def _run(self) -> None:
        digest = hashlib.sha256()
        try:
            with self._file as f, memoryview(bytearray(_HASH_CHUNK)) as view:
                fd, offset = f.fileno(), 0
                if not POSITIONAL:
                    f.seek(0)
                while not self._cancelled.is_set():
                    # positional reads where there are (not on Windows): the descriptor's offset
                    # is shared with the verification's, which reads the file prefetched
                    n = os.preadv(fd, [view], offset) if POSITIONAL else f.readinto(view)
                    if not n:
                        self._digest = digest.hexdigest()
                        return
                    digest.update(view[:n])
                    offset += n
        except BaseException:  # noqa: BLE001 - unreadable now (or no memory): the digest stays
            return  # None, which is a mismatch: CORRUPT GOLDEN says "file sha256 unreadable"

    def result(self) -> str | None:
        """The file's sha256 once hashed (None if cancelled or unreadable)."""
        self._thread.join()
        return self._digest

    def cancel(self) -> None:
        """Stop hashing soon (within one chunk); nobody will ask for the result."""
        self._cancelled.set()


def remove_tree(path: Path, *, ignore_errors: bool = False) -> None:
    """Remove ``path``: a symlink itself (never what it points to), a file, or a folder tree.

    The trees removed here are our own (an old golden swapped out, a temporary folder): one whose
    folders were made read-only (``chmod -R a-w goldens/x``, a checkout of read-only files) is
    made writable first, where a plain ``shutil.rmtree`` would give up half-way and leave it.
    """
    try:
        if os.path.islink(path) or not os.path.isdir(path):
            os.unlink(path)
            return
        try:
            shutil.rmtree(path)
            return
        except PermissionError:
            pass
        with contextlib.suppress(OSError):
            os.chmod(path, stat.S_IRWXU)
        # top-down: each folder is made enterable before os.walk goes into it
        for folder, subfolders, _ in os.walk(path):
            for name in subfolders:
                sub = os.path.join(folder, name)
                if not os.path.islink(sub):
                    with contextlib.suppress(OSError):
                        os.chmod(sub, stat.S_IRWXU)
        shutil.rmtree(path)
    except FileNotFoundError:
        return
    except OSError:
        if not ignore_errors:
            raise


def fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def temporary_file(folder: Path, final_name: str) -> Iterator[tuple[IO[bytes], Path]]:
    """A temporary file beside ``final_name``; removed unless the caller moved it into place."""
    fd, name = tempfile.mkstemp(dir=folder, prefix=f".{final_name}.", suffix=_TMP_SUFFIX)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:  # owns fd from here: closed whatever happens next
            # mkstemp creates 0600 files; a golden is committed and read by others like any source.
            os.chmod(path, 0o666 & ~_UMASK)
            yield f, path
    except BaseException:
        path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[IO[bytes]]:
    """A temporary file beside ``path``, fsynced and moved onto ``path`` when the block ends
    without error; on any error (or interrupt) it is removed and ``path`` keeps its content."""
    with temporary_file(path.parent, path.name) as (f, tmp):
        yield f
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, path)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temporary file in the same folder, fsync, replace."""
    path = Path(path)
    with replacing(path) as f:
        f.write(data)
    fsync_dir(path.parent)


@contextlib.contextmanager
def folder_lock(folder: Path, *, shared: bool = False) -> Iterator[None]:
    """Serialise writers of the goldens in ``folder`` across processes (pytest-xdist workers);
    with ``shared``, a reader's lock: no swap happens while a golden's files are read one by one,
    so a gate beside a running regen never sees the manifest of one golden and the bundle of
    another.

    The lock is on the *parent* of the golden folders: the golden folder itself is swapped, so a
    lock on its inode would not be seen by the next writer.
    """
    if fcntl is None:
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        if not shared:
            raise
        yield  # a folder a reader may not open: read unlocked, as before
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class NewFolder:
    """A sibling temporary folder a new golden is written into, held locked while it is alive
    (so a concurrent writer's cleanup never removes it), and removed unless swapped in."""

    def __init__(self, target: Path) -> None:
        self.target = target
        try:
            self.path = Path(
                tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}{_NEW_MARK}")
            )
        except OSError as exc:  # name the folder that refused, not the random name we wanted
            raise OSError(exc.errno, exc.strerror, str(target.parent)) from None
        os.chmod(self.path, 0o777 & ~_UMASK)
        self._fd: int | None = None
        if fcntl is not None:
            with contextlib.suppress(OSError):
                self._fd = os.open(self.path, os.O_RDONLY)
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def discard(self) -> None:
        self.release()
        remove_tree(self.path, ignore_errors=True)


new_folder = NewFolder


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _renameat2() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        func = libc.renameat2
    except (OSError, AttributeError):  # glibc < 2.28, musl without it
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


_RENAMEAT2 = _renameat2()


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths; False when the OS or file system cannot."""
    if _RENAMEAT2 is None:
        return False
    rc = _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # file system without exchange
        return False
    raise OSError(err, os.strerror(err), str(b))


def swap_folder(new: NewFolder, target: Path) -> None:
    """Put the folder ``new`` in place of ``target`` in one step (see the module docstring).

    The caller holds :func:`folder_lock` on ``target.parent``. Afterwards the old golden is gone.
    """
    new.release()
    parent = target.parent
    if not os.path.lexists(target):
        os.rename(new.path, target)
        fsync_dir(parent)
        return
    if _exchange(new.path, target):
        fsync_dir(parent)
        remove_tree(new.path, ignore_errors=True)  # now holds the old golden (or its link)
        return
    # Two renames; in between, the target is missing and ``.<name>.old-*`` holds the old golden:
    # :func:`interrupted_swap` reports that state and regen repairs it.
    old = Path(tempfile.mkdtemp(dir=parent, prefix=f".{target.name}{_OLD_MARK}"))
    os.rmdir(old)
    os.rename(target, old)
    try:
        os.rename(new.path, target)
    except BaseException:
        # Put the old golden back; if that fails too, the original error is the news (the
        # interrupted swap is left for regen to repair).
        with contextlib.suppress(OSError):
            os.rename(old, target)
        raise
    fsync_dir(parent)
    remove_tree(old, ignore_errors=True)


def leftovers(target: Path) -> list[Path]:
    """Temporary files and folders an interrupted write of ``target`` left behind (and that no
    live writer holds): ``.<name>.new-*`` / ``.<name>.old-*`` beside it, ``.*.tmp`` inside it."""
    found: list[Path] = []
    with contextlib.suppress(OSError):
        marks = (f".{target.name}{_NEW_MARK}", f".{target.name}{_OLD_MARK}")
        found += [e for e in target.parent.iterdir() if e.name.startswith(marks) and not _held(e)]
    with contextlib.suppress(OSError):
        if target.is_dir() and not target.is_symlink():
            found += [
                p
                for p in target.iterdir()
                if p.name.startswith(".") and p.name.endswith(_TMP_SUFFIX)
            ]
    return sorted(found)


def _held(folder: Path) -> bool:
    """Whether a live writer holds ``folder`` (its flock): then it is not a leftover."""
    if fcntl is None:
        return False
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # also drops the lock we may just have taken
    return False


def interrupted_swap(target: Path) -> Path | None:
    """The ``.<name>.old-*`` folder holding the previous golden when a two-rename swap was
    interrupted between its renames (``target`` missing), else None."""
    if os.path.lexists(target):
        return None
    olds = [p for p in leftovers(target) if p.name.startswith(f".{target.name}{_OLD_MARK}")]
    return olds[0] if olds else None


def remove_leftovers(target: Path) -> list[Path]:
    """Remove what :func:`leftovers` finds; first put back an interrupted swap's old folder."""
    old = interrupted_swap(target)
    if old is not None:
        os.rename(old, target)
    removed = []
    for path in leftovers(target):
        remove_tree(path)
        removed.append(path)
    return removed
