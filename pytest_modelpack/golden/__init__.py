"""The golden store: folders read and verified (:mod:`.store`), written all-or-nothing
(:mod:`.writing`), the typed manifest (:mod:`.manifest`), the examples codec (:mod:`.examples`,
its tensor and array bodies in :mod:`.arrays`) and the one atomic-write helper (:mod:`.fileio`)."""

from .fileio import LFS_MAGIC, write_atomic
from .manifest import CreatedBy, FileEntry, GlobalEntry, Manifest
from .store import BUNDLE, EXAMPLES, MANIFEST, GoldenStore
from .writing import environment

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
