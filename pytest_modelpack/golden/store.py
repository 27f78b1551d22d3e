"""The golden store: one folder per golden, read defensively, changed all-or-nothing.

``goldens/<name>/``
    ``bundle.pkl``     exactly what the serializer writes (``bundle.pt`` for ``torch.save``)
    ``manifest.json``  format version, hashes, environment, globals, code fingerprints, structure
    ``examples.json``  recorded inputs and outputs, JSON only (see :mod:`.examples`)

Reading checks the manifest's types and format version, then the files' sizes and sha256 (a big
bundle's tensor data in the background, :mod:`.integrity`), before anything else looks at the
bundle. Writing is :mod:`.writing`. Every OS error becomes a
:class:`~pytest_modelpack.errors.GoldenIOError` naming the path and the remedy
(:mod:`.oserrors`); symlinks leading out of the project are refused.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import fixes
from ..errors import CorruptGolden, MissingGolden, ModelpackError, UnsafeGolden
from ..serializers import SERIALIZERS, Serializer
from . import fileio
from .examples import parse_examples
from .integrity import DeferredHash, file_identity, is_interrupt
from .manifest import (
    FORMAT_VERSION,
    DuplicateKey,
    FileEntry,
    InvalidManifest,
    Manifest,
    UnknownVersion,
    parse_manifest,
)
from .oserrors import in_the_way, io_errors, what_is
from .writing import BUNDLE, EXAMPLES, MANIFEST, PendingGolden, prepare

#: No manifest regen writes is larger (the structure tree and code sources are capped well below).
MANIFEST_LIMIT = 64 << 20


class GoldenStore:
    """Paths and safe reading/writing for one golden folder.

    ``nodeid`` names the test in fix lines; ``project_root`` is where the golden must stay
    (symlinks out of it are refused).
    """

    def __init__(
        self,
        folder: Path,
        name: str,
        *,
        nodeid: str | None = None,
        project_root: Path | None = None,
        serializer: str | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.name = name
        self.nodeid = nodeid
        self.project_root = project_root
        #: What regen writes with; reading follows the manifest (see :meth:`read_manifest`).
        self.serializer: Serializer = SERIALIZERS[serializer or "pickle"]
        #: The bundle's file name: the serializer's, then the one the manifest records. Without
        #: a serializer (``modelpack inspect``, the prefetch), whichever bundle is there.
        self.bundle_name = self.serializer.bundle
        torch_bundle = SERIALIZERS["torch"].bundle
        if serializer is None and not os.path.lexists(self.folder / BUNDLE):
            if os.path.lexists(self.folder / torch_bundle):
                self.bundle_name = torch_bundle
        self._bundle: fileio.MappedFile | None = None  # mapped by verify()
        self._examples: bytes | None = None  # read and verified by verify(): parsed from these
        # the bundle's whole-file sha256 hashed in the background (prefetch, verify(defer=True))
        self._hashes = DeferredHash()
        #: The manifest as the session read it to route the prefetch, with its file's identity:
        #: :meth:`read_manifest` takes those bytes while the file is still that one.
        self.manifest_seen: tuple[tuple[int, ...], bytes] | None = None

    @property
    def bundle_path(self) -> Path:
        return self.folder / self.bundle_name

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST

    @property
    def examples_path(self) -> Path:
        return self.folder / EXAMPLES

    def lstat(self, path: Path, *, follow: bool = False) -> os.stat_result | None:
        """``os.lstat(path)`` (``os.stat`` with ``follow``), None only when nothing is there
        (ENOENT; ENOTDIR: a file stands where a folder on the path belongs, which the folder
        check names). Any other error (EACCES, EPERM, EIO, ELOOP...) is a GOLDEN I/O ERROR naming
        the path: never "missing"."""
        try:
            return os.stat(path) if follow else os.lstat(path)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            with self.io("read", path):
                raise

    def lexists(self, path: Path) -> bool:
        return self.lstat(path) is not None

    def is_dir(self, path: Path) -> bool:
        """A real folder (a symlink to one counts: the path check judges where links lead)."""
        info = self.lstat(path)
        if info is not None and stat.S_ISLNK(info.st_mode):
            with self.io("read", path):
                try:
                    info = os.stat(path)
                except OSError as exc:
                    if exc.errno != errno.ENOENT:
                        raise
                    return False
        return info is not None and stat.S_ISDIR(info.st_mode)

    def exists(self) -> bool:
        """Whether anything stands at the golden's path (an empty folder counts as missing)."""
        info = self.lstat(self.folder)
        if info is None:
            return False
        if stat.S_ISDIR(info.st_mode):
            try:
                return any(self.folder.iterdir())
            except OSError:
                return True  # unreadable: let the read say so, with the path and the fix
        return True

    # -- errors --------------------------------------------------------------------------------

    def shown(self, path: Path | None = None) -> str:
        """A path as a user would type it: relative to the working directory if in it."""
        path = self.folder if path is None else path
        try:
            if Path(os.path.abspath(path)).is_relative_to(Path.cwd()):
                return os.path.relpath(path)
        except (OSError, ValueError):
            pass
        return str(path)

    def _corrupt(self, summary: str, path: Path, why: str, fix: str | None = None) -> CorruptGolden:
        return CorruptGolden(
            summary,
            name=self.name,
            detail=[f"file: {path}", *([why] if why else [])],
            fix=fix or fixes.restore_or_regen(self.nodeid, self.shown()),
        )

    def io(self, action: str, path: Path) -> contextlib.AbstractContextManager[None]:
        """A context that turns an OSError into a GoldenIOError naming the path and the fix."""
        return io_errors(self, action, path)

    # -- paths ---------------------------------------------------------------------------------

    def check_paths(self) -> None:
        """Refuse a golden folder, or a file in it, that is a symlink leading out of the project:
        the gate would read, and regen write, files elsewhere on the machine."""
        self._refuse_dangling_folder()
        if self.project_root is None:
            return
        root = Path(os.path.realpath(self.project_root))
        for path in (self.folder, self.bundle_path, self.manifest_path, self.examples_path):
            if not self.lexists(path):
                continue
            absolute = Path(os.path.abspath(path))
            real = Path(os.path.realpath(path))
            # Only a link *leads* somewhere: a golden folder configured outside the project (an
            # absolute modelpack_golden_dir) is the user's choice, not a surprise.
            inside = absolute.is_relative_to(self.project_root) or absolute.is_relative_to(root)
            if inside and not real.is_relative_to(root):
                raise UnsafeGolden(
                    f"{path.name} is a symlink leading outside the project",
                    name=self.name,
                    detail=[
                        f"path: {path}",
                        f"leads to: {real}",
                        f"project root: {root}",
                        "goldens are read by the gate and written by regen; a link out of the "
                        "project would make them read or write files elsewhere",
                    ],
                    fix=f"replace the symlink with the real files (or remove it and run: "
                    f"{fixes.regen_command(self.nodeid)})",
                )

    def interrupted(self) -> Path | None:
        """The folder holding the previous golden when a regen was interrupted mid-swap."""
        return fileio.interrupted_swap(self.folder)

    def leftovers(self) -> list[Path]:
        return fileio.leftovers(self.folder)

    def leftover_warning(self) -> str | None:
        found = self.leftovers()
        if not found:
            return None
        shown = ", ".join(self.shown(p) for p in found[:3]) + (" ..." if len(found) > 3 else "")
        return (
            f"{len(found)} leftover(s) of an interrupted regen: {shown} — not part of the golden, "
            f"do not commit them; {fixes.regen_command(self.nodeid)} removes them"
        )

    def missing_error(self, shown: str) -> ModelpackError:
        """MISSING GOLDEN, or the one line saying a regen was interrupted mid-swap; when what
        stands on the way is not a folder (``goldens`` a file, a FIFO, a symlink to nothing),
        the error naming it: the golden is not missing, the path to it is broken."""
        blocked = self.blocked()
        if blocked is not None:
            return blocked
        old = self.interrupted()
        if old is not None:
            return CorruptGolden(
                f"a regen was interrupted: {shown} is missing, the previous golden is in "
                f"{self.shown(old)}",
                name=self.name,
                detail=["the process was stopped between the two renames that swap a golden in"],
                fix=f"repair it with: {fixes.regen_command(self.nodeid)}  (or rename the folder "
                "back)",
            )
        leftover = self.leftover_warning()
        return MissingGolden(
            f"no golden at {shown}",
            name=self.name,
            detail=[
                "the gate compares the live model with a committed golden, and there is none",
                *([leftover] if leftover else []),
            ],
            fix=f"create it with: {fixes.regen_command(self.nodeid)}  (then commit the folder)",
        )

    def blocked(self) -> ModelpackError | None:
        """The error for a folder on the way to the golden that is not a folder, or None."""
        found = in_the_way(self.folder.parent)
        if found is None:
            return None
        where, what = found
        if what.startswith("a symlink to nothing"):
            return self._corrupt(
                f"{self.shown(where)} is {what}",
                where,
                "the golden folder lies under it",
                fix=f"remove the link {self.shown(where)} (or restore what it points to), then "
                f"run: {fixes.regen_command(self.nodeid)}",
            )
        code = errno.ELOOP if what.startswith("a loop") else errno.ENOTDIR
        try:
            with self.io("read", self.folder):
                raise OSError(code, f"{os.strerror(code)} ({what})", str(where))
        except ModelpackError as exc:
            return exc
        raise AssertionError("unreachable")  # pragma: no cover

    # -- reading -------------------------------------------------------------------------------

    def _refuse_dangling_folder(self) -> None:
        info = self.lstat(self.folder)
        if info is not None and stat.S_ISLNK(info.st_mode) and not self.is_dir(self.folder):
            if os.path.lexists(os.path.realpath(self.folder)):
                return  # a link to a file: the folder check names it
            raise self._corrupt(
                "the golden folder is a symlink to nothing",
                self.folder,
                f"it points to {os.readlink(self.folder)}, which does not exist",
                fix=f"remove the link {self.shown()} (or restore what it points to), then run: "
                f"{fixes.regen_command(self.nodeid)}",
            )

    def _check_folder(self) -> None:
        self._refuse_dangling_folder()
        if self.exists() and not self.is_dir(self.folder):
            what = what_is(self.folder)
            thing = f"the file {self.shown()}" if what == "a file" else f"{self.shown()} ({what})"
            raise self._corrupt(
                f"the golden folder is {what}",
                self.folder,
                "a golden is a folder holding bundle.pkl, manifest.json and examples.json",
                fix=f"remove {thing}, then run: {fixes.regen_command(self.nodeid)}",
            )

    def read_manifest(self) -> Manifest:
        self._check_folder()
        path = self.manifest_path
        self._open_checked(path, "the golden folder has no manifest.json")
        with self.io("read", path):
            found = path.stat()
            size = found.st_size
            if size > MANIFEST_LIMIT:  # read nothing: a committed file must not exhaust memory
                raise self._corrupt(
                    "manifest.json is too large",
                    path,
                    f"{size} bytes; regen never writes a manifest over {MANIFEST_LIMIT} bytes",
                )
            seen, self.manifest_seen = self.manifest_seen, None
            same = seen is not None and seen[0] == file_identity(found)
            raw = seen[1] if seen is not None and same else path.read_bytes()
        self._refuse_lfs(path, raw)
        try:
            manifest = parse_manifest(raw)
            self.bundle_name = manifest.bundle.file  # validated: one of the serializers' names
            return manifest
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise self._corrupt("manifest.json is not valid JSON", path, str(exc)) from None
        except DuplicateKey as exc:
            raise self._corrupt(
                f"manifest.json gives the key {exc.key!r} twice",
                path,
                "JSON readers keep one of the two silently: a review would read one manifest, "
                "the gate another; regen never writes a key twice",
            ) from None
        except UnknownVersion as exc:
            raise self._corrupt(
                f"unknown format version {exc.version!r}",
                path,
                f"this pytest-modelpack reads golden format version {FORMAT_VERSION}",
                fix="upgrade pytest-modelpack to the version that wrote this golden, "
                f"or regenerate it with {fixes.regen_command(self.nodeid)}",
            ) from None
        except InvalidManifest as exc:
            raise self._corrupt(
                f"manifest.json field {exc.field!r} is invalid",
                path,
                f"{exc.field}: {exc.why}",
            ) from None
        except ValueError as exc:  # e.g. an integer past Python's digit limit
            raise self._corrupt("manifest.json is not decodable", path, str(exc)) from None

    def _refuse_lfs(self, path: Path, head: bytes) -> None:
        if head.startswith(fileio.LFS_MAGIC):
            raise self._corrupt(
                "Git LFS pointer instead of the file",
                path,
                "the file holds a Git LFS pointer: the real content was never fetched",
                fix="run `git lfs pull` (and install git-lfs in CI), or stop tracking goldens "
                "with LFS",
            )

    def _check_file(self, path: Path) -> None:
        info = self.lstat(path, follow=True)  # None: a dangling link, not a file
        if info is None or not stat.S_ISREG(info.st_mode):
            what = what_is(path)
            if what.startswith("a symlink to nothing"):
                raise self._corrupt(f"{path.name} is a symlink to nothing", path, f"it is {what}")
            raise self._corrupt(f"{path.name} is not a file", path, f"it is {what}")

    def _check_size(self, path: Path, entry: FileEntry, size: int) -> None:
        if size == 0:
            raise self._corrupt(f"{path.name} is empty", path, "0 bytes on disk")
        if size != entry.size:
            what = "truncated" if size < entry.size else "longer than recorded"
            raise self._corrupt(
                f"{path.name} is {what}",
                path,
                f"manifest says {entry.size} bytes, the file has {size}",
            )

    def _hash_mismatch(self, path: Path, entry: FileEntry, digest: str | None) -> CorruptGolden:
        return self._corrupt(
            f"{path.name} does not match its sha256",
            path,
            f"manifest sha256 {entry.sha256}, file sha256 {digest or 'unreadable'}",
        )

    def _open_checked(self, path: Path, why: str = "the manifest lists it") -> None:
        if not self.lexists(path):
            raise self._corrupt(f"{path.name} is missing", path, why)
        self._check_file(path)

    def _verify_examples(self, entry: FileEntry) -> None:
        """Size and sha256 of examples.json: read once, and kept, so that what is parsed is the
        very bytes that were verified (and the file is opened once)."""
        path = self.examples_path
        self._open_checked(path)
        with self.io("read", path), open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            # read nothing more than the manifest allows
            data = f.read(entry.size + 1 if size == entry.size else len(fileio.LFS_MAGIC))
        self._refuse_lfs(path, data)
        self._check_size(path, entry, size if size != entry.size else len(data))
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry.sha256:
            raise self._hash_mismatch(path, entry, digest)
        self._examples = data

    def _verify_bundle(self, entry: FileEntry, defer: bool) -> fileio.MappedFile:
        """The bundle mapped copy-on-write, its size and hashes checked.

        Every byte the interpreter reads is verified before :meth:`verify` returns: the whole
        file's sha256, or, for a bundle whose manifest records its big storages' spans, the
        ``pickle_sha256`` of every byte outside them. With ``defer`` the whole file's sha256 is
        then computed on a background thread (the storages' bytes are never interpreted: they
        are mapped into tensors), and :meth:`settle` waits for it.
        """
        path = self.bundle_path
        self._open_checked(path)
        prefetched = self._hashes.take_early(path)  # its file: the bundle is opened once
        early, kept = prefetched or (None, None)
        try:
            with self.io("read", path), kept or open(path, "rb") as f:
                self._refuse_lfs(path, f.read(len(fileio.LFS_MAGIC)))
                self._check_size(path, entry, os.fstat(f.fileno()).st_size)
                mapped = fileio.map_copy(f, path)
                if entry.storages is not None:
                    outside = fileio.sha256_outside(mapped.mapping, entry.storages)
                    if outside != entry.pickle_sha256:
                        raise self._corrupt(
                            f"{path.name} does not match its sha256",
                            path,
                            f"its bytes outside the tensor data differ: manifest pickle_sha256 "
                            f"{entry.pickle_sha256}, file {outside}",
                        )
                    if defer:
                        try:
                            background = early or fileio.BackgroundHash(f)
                        except RuntimeError:  # no thread to be had: hash it now instead
                            background = None
                        if background is not None:
                            self._hashes.defer(background, entry)
                            return mapped
                digest = early.result() if early else fileio.sha256_mapping(mapped.mapping)
        except BaseException:
            if early is not None:
                early.cancel()
            raise
        if digest != entry.sha256:
            raise self._hash_mismatch(path, entry, digest)
        return mapped

    def verify(self, manifest: Manifest, *, defer: bool = False) -> None:
        """Check size and sha256 of bundle and examples against the manifest.

        The bundle is hashed through a copy-on-write mapping kept for
        :meth:`open_verified_bundle`, so loading it does not read the file a second time. With
        ``defer`` (the gate), a big bundle's tensor data is hashed in the background: call
        :meth:`settle` (or run inside :meth:`settled`) before trusting anything computed from it.
        """
        self._bundle = self._verify_bundle(manifest.bundle, defer)
        self._verify_examples(manifest.examples)

    def settle(self) -> None:
        """Wait for the bundle's deferred sha256: CORRUPT GOLDEN when the file differs from it."""
        mismatch = self._hashes.wait()
        if mismatch is not None:
            entry, digest = mismatch
            error = self._hash_mismatch(self.bundle_path, entry, digest)
            error.detail.append(
                "its tensor data differ from what regen wrote (found while the golden was "
                "checked, so nothing computed from it counts)"
            )
            raise error

    @contextlib.contextmanager
    def settled(self) -> Iterator[None]:
        """Run a check of this golden: on the way out, normal or not, wait for a deferred
        sha256; a mismatch is CORRUPT GOLDEN, whatever else the damaged data made happen. An
        interrupt (Ctrl-C, ``pytest.exit``) passes through without waiting."""
        try:
            yield
        except BaseException as exc:
            if not is_interrupt(exc):
                self.settle()
            raise
        self.settle()

    def prefetch(self) -> None:
        """Start hashing a big bundle on a background thread now, before the round-trip, so the
        hash runs on another core meanwhile; :meth:`verify` takes it over if the file is still
        the same one. Silent: whatever is wrong with the golden is for the gate to say, in its
        order. Nothing is read through a path that leads out of the project."""
        try:
            self.check_paths()
        except ModelpackError:
            return
        self._hashes.prefetch(self.bundle_path)

    def release(self) -> None:
        """Stop background hashing nobody will wait for (the check ended before the gate)."""
        self._hashes.release()

    def open_verified_bundle(self) -> fileio.MappedFile:
        """The bundle as :meth:`verify` hashed it: mapped copy-on-write, its size and sha256
        checked before any byte of it is interpreted (``safety.load_bundle`` takes it)."""
        if self._bundle is None:
            self.verify(self.read_manifest())
        assert self._bundle is not None  # verify() refuses an empty bundle
        return self._bundle

    def read_examples(self) -> list[Any]:
        data, self._examples = self._examples, None
        path = self.examples_path
        if data is None:
            self._check_file(path)
            with self.io("read", path):
                data = path.read_bytes()
        try:
            return parse_examples(data)
        except CorruptGolden as exc:
            # The store knows the test: its fix names it (the codec's own fix cannot).
            raise self._corrupt("examples.json cannot be decoded", path, exc.summary) from None

    def read_verified(self) -> tuple[Manifest, list[Any]]:
        """Everything a reader relies on: paths inside the project, manifest valid, sizes and
        hashes match, examples decodable. Raises the first problem found."""
        self.check_paths()
        with self.reading():
            manifest = self.read_manifest()
            self.verify(manifest)
            return manifest, self.read_examples()

    def reading(self) -> contextlib.AbstractContextManager[None]:
        """Hold off a concurrent regen's swap while this golden's files are read one by one."""
        parent = self.folder.parent
        if not self.is_dir(parent):
            return contextlib.nullcontext()
        return fileio.folder_lock(parent, shared=True)

    def prepare(self, model: Any, by_value: tuple[str, ...] = ()) -> PendingGolden:
        """Dump ``model`` into a new sibling temporary folder (:mod:`.writing`)."""
        return prepare(self, model, by_value)
