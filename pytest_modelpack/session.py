"""What the plugin keeps for one pytest session, stored under a ``pytest.StashKey``."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .fixes import test_of
from .options import Settings
from .report import Report


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
        """Start hashing the big bundle of the golden test ``nodeid`` wrote (gate, at its setup):
        the hash runs on another core while the fixtures build the model. Only for a test that
        wrote one golden: which of several a parametrized test's item checks is not known."""
        from .golden import GoldenStore

        if self.written_by is None:
            self.written_by = _goldens_by_test(golden_dirs, self.root)
        test = test_of(nodeid)
        folders = self.written_by.get(test, [])
        if len(folders) != 1 or (nodeid, str(folders[0])) in self.early:
            return
        store = GoldenStore(folders[0], folders[0].name, nodeid=test, project_root=self.root)
        store.prefetch()
        self.early[(nodeid, str(folders[0]))] = store

    def claim(self, golden: Path, claimant: str) -> str | None:
        """Record that ``claimant`` owns ``golden``; return the other owner when there is one."""
        key = str(golden)
        owner = self.claims.setdefault(key, claimant)
        return None if owner == claimant else owner

    def take_prefetched(self, nodeid: str, folder: Path) -> Any:
        """The store :meth:`prefetch` made for ``nodeid``'s golden at ``folder``, or None."""
        return self.early.pop((nodeid, str(folder)), None)

    def release_prefetched(self, nodeid: str | None = None) -> None:
        """Stop the hashes no check took: those of test ``nodeid`` (its teardown: it failed
        before its check, or checked another golden), or all (session end)."""
        for key in [k for k in self.early if nodeid is None or k[0] == nodeid]:
            self.early.pop(key).release()


#: How much of a manifest is read to learn which test wrote it (``created_by`` comes early).
_HEAD = 256 << 10


def _head(path: Path, root: Path) -> bytes:
    """The first bytes of a regular file inside the project; nothing from anything else (a FIFO
    would block, a device may act on being opened, a link may lead out of the project)."""
    from .golden.fileio import open_regular

    real = Path(os.path.realpath(path))
    if not real.is_relative_to(Path(os.path.realpath(root))):
        return b""
    with open_regular(real) as opened:
        return opened[0].read(_HEAD) if opened is not None else b""


def _goldens_by_test(golden_dirs: Iterable[str], root: Path) -> dict[str, list[Path]]:
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
                test = created_by_test(_head(folder / "manifest.json", root))
            except OSError:
                continue
            if test is not None:
                found.setdefault(test, []).append(folder)
    return found
