"""What the plugin keeps for one pytest session, stored under a ``pytest.StashKey``."""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .options import Settings
from .report import Report

__all__ = ["SessionState"]


@dataclasses.dataclass
class SessionState:
    """What the plugin keeps for one pytest session (stored under a StashKey)."""

    settings: Settings
    root: Path
    report: Report
    claims: dict[str, str] = dataclasses.field(default_factory=dict)
    #: Gate: the stores of the goldens a test's check will read, per (test node id, folder),
    #: their bundles' hashes started at the test's setup (golden.GoldenStore).
    early: dict[tuple[str, str], Any] = dataclasses.field(default_factory=dict)
    #: Gate: which golden folders each test wrote (from their manifests), read once.
    written_by: dict[str, list[Path]] | None = None

    def prefetch(self, nodeid: str, golden_dirs: Iterable[str]) -> None:
        """Start hashing the big bundles of the goldens test ``nodeid`` wrote (gate, at its
        setup): the hash runs on another core while the fixtures build the model."""
        from .golden import GoldenStore

        if self.written_by is None:
            self.written_by = _goldens_by_test(golden_dirs)
        base = nodeid.split("[", 1)[0]
        for folder in self.written_by.get(base, []):
            key = (nodeid, str(folder))
            if key not in self.early:
                store = GoldenStore(folder, folder.name, nodeid=base, project_root=self.root)
                store.prefetch()
                self.early[key] = store

    def claim(self, golden: Path, claimant: str) -> str | None:
        """Record that ``claimant`` owns ``golden``; return the other owner when there is one."""
        key = str(golden)
        owner = self.claims.setdefault(key, claimant)
        return None if owner == claimant else owner

    def take_prefetched(self, nodeid: str, folder: Path) -> Any:
        """The store :meth:`prefetch` made for ``nodeid``'s golden at ``folder``, or None."""
        return self.early.pop((nodeid, str(folder)), None)

    def release_prefetched(self) -> None:
        """Stop every hash no check took (a test that failed before its check, say)."""
        for store in self.early.values():
            store.release()
        self.early.clear()


#: How much of a manifest is read to learn which test wrote it (``created_by`` comes early).
_HEAD = 256 << 10


def _head(path: Path) -> bytes:
    """The first bytes of a regular file; nothing from anything else (a FIFO would block)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return b""
        return f.read(_HEAD)


def _goldens_by_test(golden_dirs: Iterable[str]) -> dict[str, list[Path]]:
    """Test node id -> the golden folders its manifests say it wrote, in ``golden_dirs``."""
    from .golden.manifest import created_by_test

    found: dict[str, list[Path]] = {}
    for directory in sorted(set(golden_dirs)):
        try:
            folders = sorted(Path(directory).iterdir())
        except OSError:
            continue
        for folder in folders:
            if folder.name.startswith("."):
                continue
            try:
                test = created_by_test(_head(folder / "manifest.json"))
            except OSError:
                continue
            if test is not None:
                found.setdefault(test, []).append(folder)
    return found
