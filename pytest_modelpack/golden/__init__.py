"""The golden store: folders written all-or-nothing (:mod:`.store`), the typed manifest
(:mod:`.manifest`), the examples codec (:mod:`.examples`) and the one atomic-write helper
(:mod:`.fileio`)."""

from .fileio import LFS_MAGIC, write_atomic
from .manifest import CreatedBy, FileEntry, GlobalEntry, Manifest
from .store import BUNDLE, EXAMPLES, MANIFEST, GoldenStore, environment

__all__ = [
    "BUNDLE",
    "EXAMPLES",
    "LFS_MAGIC",
    "MANIFEST",
    "CreatedBy",
    "FileEntry",
    "GlobalEntry",
    "GoldenStore",
    "Manifest",
    "environment",
    "write_atomic",
]
