"""What the plugin keeps for one pytest session, stored under a ``pytest.StashKey``."""

from __future__ import annotations

import dataclasses
import os
import time
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
    #: The manifests read whole for :attr:`written_by`, per folder: (file identity, bytes).
    manifests: dict[Path, tuple[tuple[int, ...], bytes]] = dataclasses.field(default_factory=dict)

    def prefetch(self, nodeid: str, golden_dirs: Iterable[str]) -> None:
        """Start hashing the big bundle of the golden test ``nodeid`` wrote (gate, at its setup):
        the hash runs on another core while the fixtures build the model. Only for a test that
        wrote one golden: which of several a parametrized test's item checks is not known."""
        from .golden import GoldenStore

        if self.written_by is None:
            self.written_by = _goldens_by_test(golden_dirs, self.root, self.manifests)
        test = test_of(nodeid)
        folders = self.written_by.get(test, [])
        if len(folders) != 1 or (nodeid, str(folders[0])) in self.early:
            return
        store = GoldenStore(folders[0], folders[0].name, nodeid=test, project_root=self.root)
        store.manifest_seen = self.manifests.pop(folders[0], None)  # read once, not again
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
#: At most this many bytes of manifests are kept for the gate to take (then it reads them again).
_KEPT = 32 << 20
#: A file changed this recently is not trusted to show its next change in its timestamps.
_RACY_NS = 2_000_000_000


def _head(path: Path, root: Path) -> tuple[bytes, tuple[int, ...] | None]:
    """The first bytes of a regular file inside the project, and the file's identity when they
    are all of it; nothing from anything else (a FIFO would block, a device may act on being
    opened, a link may lead out of the project)."""
    from .golden.fileio import open_regular
    from .golden.integrity import file_identity

    real = Path(os.path.realpath(path))
    if not real.is_relative_to(Path(os.path.realpath(root))):
        return b"", None
    with open_regular(real) as opened:
        if opened is None:
            return b"", None
        head = opened[0].read(_HEAD)
        whole = len(head) == opened[1].st_size < _HEAD
        # git's "racy" rule: a file changed in the last seconds could change again within the
        # same timestamp tick, unseen by its identity: such bytes are not kept (read again).
        settled = time.time_ns() - opened[1].st_mtime_ns > _RACY_NS
        return head, file_identity(opened[1]) if whole and settled else None


def _goldens_by_test(
    golden_dirs: Iterable[str], root: Path, manifests: dict[Path, Any]
) -> dict[str, list[Path]]:
    """Test node id -> the golden folders its manifests say it wrote, in ``golden_dirs``; each
    manifest read whole is kept in ``manifests`` (folder -> (identity, bytes)), up to
    :data:`_KEPT` bytes in all."""
    from .golden.manifest import created_by_test

    found: dict[str, list[Path]] = {}
    kept = 0
    for directory in sorted(set(golden_dirs)):
        try:
            folders = sorted(Path(directory).iterdir())
        except OSError:
            continue
        for folder in folders:
            if folder.name.startswith("."):
                continue
            try:
                head, identity = _head(folder / "manifest.json", root)
                test = created_by_test(head)
            except OSError:
                continue
            if test is not None:
                found.setdefault(test, []).append(folder)
                if identity is not None and kept + len(head) <= _KEPT:
                    manifests[folder] = (identity, head)
                    kept += len(head)
    return found
