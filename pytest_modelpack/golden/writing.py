"""Writing a golden all-or-nothing.

The bundle is streamed through a hash into a sibling temporary folder (its bytes are never held
in memory), its big storages' spans and the examples are added beside it, and :meth:`commit`
writes the manifest, fsyncs and swaps the folder in (:func:`.fileio.swap_folder`) under the
writers' lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import mmap
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import fixes
from ..errors import GoldenIOError
from . import fileio
from .integrity import deferred_spans
from .manifest import CreatedBy, FileEntry, GlobalEntry, Manifest, manifest_bytes

if TYPE_CHECKING:
    from .store import GoldenStore

BUNDLE = "bundle.pkl"  # the pickle family's; torch.save's is bundle.pt (serializers.py)
MANIFEST = "manifest.json"
EXAMPLES = "examples.json"


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, str | None]:
    """Versions that decide how a golden behaves when loaded: recorded, compared as ENV DRIFT."""
    return {
        "python": platform.python_version(),
        "torch": _version("torch"),
        "sentencepiece": _version("sentencepiece"),
        "numpy": _version("numpy"),
        "pytest-modelpack": _version("pytest-modelpack"),
        "platform": f"{platform.system()}-{platform.machine()}",
    }


def prepare(store: GoldenStore, model: Any, by_value: tuple[str, ...] = ()) -> PendingGolden:
    """Dump ``model`` with the store's serializer into a new sibling temporary folder
    (streamed through a hash). ``by_value``: cloudpickle's modules pinned by value."""
    store.check_paths()
    if store.exists() and not store.is_dir(store.folder):
        raise GoldenIOError(
            f"{store.shown()} is a file, not a golden folder",
            name=store.name,
            detail=[f"path: {store.folder}", "regen will not overwrite a file it did not write"],
            fix=f"move or remove the file, then run: {fixes.regen_command(store.nodeid)}",
        )
    with store.io("create", store.folder.parent):
        store.folder.parent.mkdir(parents=True, exist_ok=True)
    with store.io("write", store.folder):
        new = fileio.new_folder(store.folder)
    bundle_name = store.serializer.bundle
    try:
        with store.io("write", store.bundle_path), fileio.replacing(new.path / bundle_name) as f:
            writer = fileio.HashingWriter(f, f.fileno())
            try:
                store.serializer.dump(model, writer, by_value)
            except BaseException:
                writer.close(raise_error=False)
                raise
            writer.close()
    except BaseException:
        new.discard()
        raise
    bundle = FileEntry(
        file=bundle_name,
        size=writer.size,
        sha256=writer.sha256,
        protocol=store.serializer.protocol,
    )
    return PendingGolden(store, new, bundle)


class PendingGolden:
    """A golden written into a sibling temporary folder, not yet swapped into place."""

    def __init__(self, store: GoldenStore, new: fileio.NewFolder, bundle: FileEntry) -> None:
        self.store = store
        self.new = new
        self.bundle = bundle
        self.examples: FileEntry | None = None

    @property
    def bundle_tmp(self) -> Path:
        return self.new.path / self.bundle.file

    def discard(self) -> None:
        self.new.discard()

    @contextlib.contextmanager
    def _writing(self, path: Path) -> Iterator[None]:
        """OS errors as GOLDEN I/O ERROR naming ``path``; on any error the new folder goes."""
        try:
            with self.store.io("write", path):
                yield
        except BaseException:
            self.discard()
            raise

    def commit(self, manifest: Manifest) -> list[Path]:
        """Write the manifest and swap the new folder in, under the writers' lock. Returns the
        leftovers of interrupted earlier writes that were removed on the way."""
        store = self.store
        with self._writing(store.manifest_path):
            fileio.write_atomic(self.new.path / MANIFEST, manifest_bytes(manifest))
            fileio.fsync_dir(self.new.path)
            with fileio.folder_lock(store.folder.parent):
                removed = fileio.remove_leftovers(store.folder)
                fileio.swap_folder(self.new, store.folder)
        return removed

    def add_storages(self, spans: list[tuple[int, int]] | None) -> None:
        """Record where the new bundle's big storages lie (``spans``: its scan's), with the
        sha256 of every other byte: the gate then hashes their data while it runs."""
        big = deferred_spans(spans)
        if not big:
            return
        with self._writing(self.store.bundle_path), open(self.bundle_tmp, "rb") as f:
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapping:
                outside = fileio.sha256_outside(mapping, big)
        self.bundle = dataclasses.replace(self.bundle, storages=big, pickle_sha256=outside)

    def add_examples(self, data: bytes, count: int) -> None:
        with self._writing(self.store.examples_path):
            fileio.write_atomic(self.new.path / EXAMPLES, data)
        self.examples = FileEntry(
            file=EXAMPLES, size=len(data), sha256=hashlib.sha256(data).hexdigest(), count=count
        )

    def manifest(
        self,
        *,
        created_by: CreatedBy,
        globals_: list[GlobalEntry],
        code: dict[str, Any],
        structure: dict[str, str],
    ) -> Manifest:
        assert self.examples is not None
        serializer = self.store.serializer
        return Manifest(
            name=self.store.name,
            bundle=self.bundle,
            examples=self.examples,
            created_by=created_by,
            environment=environment(),
            globals=globals_,
            code=code,
            structure=structure,
            serializer={"name": serializer.name, "version": serializer.version()},
        )
