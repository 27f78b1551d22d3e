"""A bundle's whole-file sha256, hashed in the background while the gate runs.

For a golden whose manifest lists its big storages (``bundle.storages``, at least
:data:`DEFER_MIN` bytes each), the store verifies every other byte before anything reads the
bundle (``pickle_sha256``) and hashes the whole file on a background thread: started by
:meth:`DeferredHash.prefetch` before the round-trip (so it runs on another core meanwhile), taken
over by ``verify(defer=True)`` if the file is still the same one, waited for before the golden
runs and before any verdict (``GoldenStore.settle``/``settled``).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import IO

from . import fileio
from .manifest import FileEntry

#: Storages at least this large are listed in the manifest (``bundle.storages``) and hashed while
#: the gate runs; the bytes of smaller ones are hashed with the pickle, before it is read.
DEFER_MIN = 1 << 20


def deferred_spans(spans: list[tuple[int, int]] | None) -> tuple[tuple[int, int], ...]:
    """The spans of ``spans`` (a scan's storage spans) the manifest records."""
    return tuple(span for span in spans or () if span[1] >= DEFER_MIN)


def file_identity(stat_: os.stat_result) -> tuple[int, ...]:
    """Which file, and which content of it (a rewrite changes the size, mtime or ctime)."""
    return (stat_.st_dev, stat_.st_ino, stat_.st_size, stat_.st_mtime_ns, stat_.st_ctime_ns)


def is_interrupt(exc: BaseException) -> bool:
    """Ctrl-C, ``sys.exit`` or ``pytest.exit`` (an ``Exception`` in pytest, named here so the
    store does not import pytest)."""
    if isinstance(exc, KeyboardInterrupt | SystemExit | GeneratorExit):
        return True
    kind = type(exc)
    return kind.__name__ == "Exit" and kind.__module__.startswith("_pytest")


class DeferredHash:
    """One golden's background hash: started early (:meth:`prefetch`), taken over by the
    verification (:meth:`take_early`, :meth:`defer`), waited for (:meth:`wait`)."""

    def __init__(self) -> None:
        #: the prefetched hash, the identity of the file it reads, and that file (kept open:
        #: the verification reads it, so the bundle is opened once)
        self._early: tuple[fileio.BackgroundHash, tuple[int, ...], IO[bytes] | None] | None = None
        self._pending: tuple[fileio.BackgroundHash, FileEntry] | None = None

    def prefetch(self, path: Path) -> None:
        """Start hashing ``path`` if it is a regular file of at least :data:`DEFER_MIN` bytes
        (a smaller one is not even opened); silent on any error (the verification says what is
        wrong, in its order). Once: a hash already started is kept."""
        if self._early is not None:
            return
        try:
            found = os.stat(path)
            if not stat.S_ISREG(found.st_mode) or found.st_size < DEFER_MIN:
                return
            with fileio.open_regular(path) as opened:
                if opened is None or opened[1].st_size < DEFER_MIN:
                    return
                # without positional reads the hash reads at the shared offset: not kept
                kept = os.fdopen(os.dup(opened[0].fileno()), "rb") if fileio.POSITIONAL else None
                try:
                    background = fileio.BackgroundHash(kept or opened[0])
                except BaseException:
                    if kept is not None:
                        kept.close()
                    raise
                self._early = (background, file_identity(opened[1]), kept)
        except (OSError, ValueError, RuntimeError):  # RuntimeError: no thread to be had
            return

    def take_early(self, path: Path) -> tuple[fileio.BackgroundHash, IO[bytes] | None] | None:
        """The prefetched hash and the open file it reads (None: not kept, open the path), if
        ``path`` is still that file."""
        early, self._early = self._early, None
        if early is None:
            return None
        try:
            same = file_identity(os.stat(path)) == early[1]
        except OSError:
            same = False
        if not same:  # another file now (a regen swapped it in): hash this one
            early[0].cancel()
            if early[2] is not None:
                early[2].close()
            return None
        return early[0], early[2]

    def defer(self, background: fileio.BackgroundHash, entry: FileEntry) -> None:
        """``background`` hashes the bundle ``entry`` describes: :meth:`wait` checks it."""
        self._pending = (background, entry)

    def wait(self) -> tuple[FileEntry, str | None] | None:
        """Wait for the deferred hash: (the entry, the file's digest) when they differ."""
        if self._pending is None:
            return None
        background, entry = self._pending
        digest = background.result()
        return None if digest == entry.sha256 else (entry, digest)

    def release(self) -> None:
        """Stop hashing nobody will wait for."""
        for started in (self._early, self._pending):
            if started is not None:
                started[0].cancel()
        if self._early is not None and self._early[2] is not None:
            self._early[2].close()
        self._early = None
