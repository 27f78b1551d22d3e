"""The golden store: one folder per golden, written atomically, read defensively.

``goldens/<name>/``
    ``bundle.pkl``     exactly what ``pickle.dump(model, f)`` writes (the artifact production ships)
    ``manifest.json``  format version, hashes, environment, globals, code fingerprints, structure
    ``examples.json``  recorded inputs and outputs, JSON only (see :mod:`pytest_modelpack.codec`)

Writing streams the pickle to a temporary file in the golden's folder while hashing it, so the
bundle bytes are never held in memory; every file is fsynced and moved into place with
``os.replace``, the manifest last. Reading checks the manifest's format version, size and sha256
(streaming) before anything else looks at the bundle.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import platform
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .errors import CorruptGolden

__all__ = [
    "FORMAT_VERSION",
    "BUNDLE",
    "MANIFEST",
    "EXAMPLES",
    "GoldenStore",
    "HashingWriter",
    "environment",
    "sha256_file",
]

FORMAT_VERSION = 1
FORMAT_NAME = "pytest-modelpack golden"
BUNDLE = "bundle.pkl"
MANIFEST = "manifest.json"
EXAMPLES = "examples.json"

_LFS_POINTER = b"version https://git-lfs.github.com/spec/v1"
_CHUNK = 1 << 20


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


class HashingWriter:
    """A write-only file wrapper that hashes and counts what passes through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._hash.update(view)
        self.size += view.nbytes
        self._raw.write(view)
        return view.nbytes

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


def sha256_file(path: Path) -> tuple[str, int]:
    """Streaming sha256 and size of a file."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


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


@contextlib.contextmanager
def _temporary(folder: Path, final_name: str) -> Iterator[tuple[IO[bytes], Path]]:
    """A temporary file beside ``final_name``; removed unless the caller moved it into place."""
    fd, name = tempfile.mkstemp(dir=folder, prefix=f".{final_name}.", suffix=".tmp")
    path = Path(name)
    # mkstemp creates 0600 files; a golden is committed and read by others like any source file.
    os.chmod(path, 0o666 & ~_UMASK)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f, path
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Serialise writers of one golden across processes (pytest-xdist workers)."""
    try:
        import fcntl
    except ImportError:  # Windows: os.replace is still atomic per file
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class PendingGolden:
    """A golden written to temporary files, not yet moved into place."""

    def __init__(self, store: GoldenStore) -> None:
        self.store = store
        self.bundle_tmp: Path | None = None
        self.examples_tmp: Path | None = None
        self.manifest: dict[str, Any] = {}
        #: Folders this write created: removed again when the write is discarded (and empty).
        self.created_folders: list[Path] = []

    def discard(self) -> None:
        for path in (self.bundle_tmp, self.examples_tmp):
            if path is not None:
                path.unlink(missing_ok=True)
        self.bundle_tmp = self.examples_tmp = None
        for folder in self.created_folders:  # deepest first
            with contextlib.suppress(OSError):  # not empty: someone else's files, keep them
                folder.rmdir()
        self.created_folders = []

    def commit(self) -> None:
        """Move the files into place: examples and bundle first, the manifest (with their hashes)
        last, so a reader never sees a manifest describing files that are not there yet."""
        folder = self.store.folder
        with _folder_lock(folder):
            data = json.dumps(self.manifest, indent=1, sort_keys=False).encode() + b"\n"
            with _temporary(folder, MANIFEST) as (f, manifest_tmp):
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            assert self.bundle_tmp is not None and self.examples_tmp is not None
            os.replace(self.examples_tmp, folder / EXAMPLES)
            os.replace(self.bundle_tmp, folder / BUNDLE)
            os.replace(manifest_tmp, folder / MANIFEST)
            _fsync_dir(folder)
        self.bundle_tmp = self.examples_tmp = None


class GoldenStore:
    """Paths and safe reading/writing for one golden folder."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = Path(folder)
        self.name = name

    @property
    def bundle_path(self) -> Path:
        return self.folder / BUNDLE

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST

    @property
    def examples_path(self) -> Path:
        return self.folder / EXAMPLES

    def exists(self) -> bool:
        return self.manifest_path.exists() or self.bundle_path.exists()

    # -- reading -------------------------------------------------------------------------------

    def _shown_folder(self) -> str:
        """The golden folder as a user would type it: relative to the working directory if in it."""
        try:
            return (
                os.path.relpath(self.folder)
                if self.folder.resolve().is_relative_to(Path.cwd().resolve())
                else str(self.folder)
            )
        except (OSError, ValueError):
            return str(self.folder)

    def _corrupt(self, summary: str, path: Path, why: str, fix: str | None = None) -> CorruptGolden:
        return CorruptGolden(
            summary,
            name=self.name,
            detail=[f"file: {path}", *([why] if why else [])],
            fix=fix
            or f"restore the golden from version control (git checkout -- {self._shown_folder()}), "
            "or regenerate it with pytest --modelpack-regen",
        )

    def read_manifest(self) -> dict[str, Any]:
        path = self.manifest_path
        if not path.exists():
            raise self._corrupt(
                "manifest.json is missing", path, "the golden folder has no manifest.json"
            )
        raw = path.read_bytes()
        if raw.startswith(_LFS_POINTER):
            raise self._lfs_error(path)
        try:
            manifest = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise self._corrupt("manifest.json is not valid JSON", path, str(exc)) from None
        if not isinstance(manifest, dict):
            raise self._corrupt("manifest.json is not a JSON object", path, "")
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise self._corrupt(
                f"unknown format version {version!r}",
                path,
                f"this pytest-modelpack reads golden format version {FORMAT_VERSION}",
                fix="upgrade pytest-modelpack to the version that wrote this golden, "
                "or regenerate it with pytest --modelpack-regen",
            )
        for key in ("bundle", "examples"):
            entry = manifest.get(key)
            if not isinstance(entry, dict) or "sha256" not in entry or "size" not in entry:
                raise self._corrupt(f"manifest.json has no valid {key!r} entry", path, "")
        return manifest

    def _lfs_error(self, path: Path) -> CorruptGolden:
        return self._corrupt(
            "Git LFS pointer instead of the file",
            path,
            "the file holds a Git LFS pointer: the real content was never fetched",
            fix="run `git lfs pull` (and install git-lfs in CI), or stop tracking goldens with LFS",
        )

    def _verify(self, path: Path, entry: dict[str, Any]) -> None:
        if not path.exists():
            raise self._corrupt(f"{path.name} is missing", path, "the manifest lists it")
        with open(path, "rb") as f:
            head = f.read(len(_LFS_POINTER))
        if head.startswith(_LFS_POINTER):
            raise self._lfs_error(path)
        digest, size = sha256_file(path)
        if size == 0:
            raise self._corrupt(f"{path.name} is empty", path, "0 bytes on disk")
        if size != entry["size"]:
            what = "truncated" if size < entry["size"] else "longer than recorded"
            raise self._corrupt(
                f"{path.name} is {what}",
                path,
                f"manifest says {entry['size']} bytes, the file has {size}",
            )
        if digest != entry["sha256"]:
            raise self._corrupt(
                f"{path.name} does not match its sha256",
                path,
                f"manifest sha256 {entry['sha256']}, file sha256 {digest}",
            )

    def verify(self, manifest: dict[str, Any]) -> None:
        """Check size and sha256 of bundle and examples against the manifest (streaming)."""
        self._verify(self.bundle_path, manifest["bundle"])
        self._verify(self.examples_path, manifest["examples"])

    def read_examples(self) -> list[Any]:
        from .codec import load_examples

        try:
            return load_examples(self.examples_path)
        except CorruptGolden as exc:
            raise self._corrupt(
                "examples.json cannot be decoded", self.examples_path, exc.summary, fix=exc.fix
            ) from None

    # -- writing -------------------------------------------------------------------------------

    def prepare(self, model: Any, examples_data: bytes) -> PendingGolden:
        """Dump ``model`` and the examples to temporary files in the golden folder.

        The pickle is streamed through a hashing writer: the bundle bytes never sit in memory.
        """
        pending = PendingGolden(self)
        missing = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
        self.folder.mkdir(parents=True, exist_ok=True)
        pending.created_folders = missing
        try:
            with _temporary(self.folder, BUNDLE) as (f, bundle_tmp):
                writer = HashingWriter(f)
                pickle.dump(model, writer, protocol=pickle.DEFAULT_PROTOCOL)
                f.flush()
                os.fsync(f.fileno())
            pending.bundle_tmp = bundle_tmp
            with _temporary(self.folder, EXAMPLES) as (f, examples_tmp):
                f.write(examples_data)
                f.flush()
                os.fsync(f.fileno())
            pending.examples_tmp = examples_tmp
        except BaseException:
            pending.discard()
            raise
        pending.manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "bundle": {
                "file": BUNDLE,
                "size": writer.size,
                "sha256": writer.sha256,
                "protocol": pickle.DEFAULT_PROTOCOL,
            },
            "examples": {
                "file": EXAMPLES,
                "size": len(examples_data),
                "sha256": hashlib.sha256(examples_data).hexdigest(),
            },
        }
        return pending
