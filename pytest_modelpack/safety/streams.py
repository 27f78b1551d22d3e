"""The kinds of file and payload the interpreter reads, exactly as torch and pickle read them.

* a plain pickle (``pickle.dump``: a golden);
* a legacy ``torch.save`` stream: five pickles (magic number, protocol version, system info, the
  object, the storage keys) then each storage's raw bytes. Every pickled torch storage is one
  (``torch.storage._load_from_bytes(b)``, depth 1); the interpreter reads it itself, building
  the storage from the bytes present (load) or checking it (scan), never ``torch.load``;
* a torch zip file (``torch.save`` since 1.6), its structure read with torch's rules
  (:mod:`.torchzip`): scanned member by member, loaded as ``torch.load`` reads it (``data.pkl``,
  each storage served from its record). A zip inside a pickled storage is refused: torch never
  writes one;
* a legacy tar archive (torch < 0.4), detected as torch detects it (``tarfile.open`` succeeds on
  the file): refused, since torch.load would unpickle members that a pickle reader never sees.
"""

from __future__ import annotations

import io
import mmap
import os
import struct
from typing import Any

from pytest_modelpack.safety.interpreter import interpret
from pytest_modelpack.safety.machine import LOAD_FROM_BYTES, Machine, Persid, Refused, Session
from pytest_modelpack.safety.refs import (
    STORAGE_ELEMENT_SIZE,
    TORCH_LEGACY_MAGIC,
    BytesRef,
    GlobalRef,
    Role,
    ScanError,
)
from pytest_modelpack.safety.sources import Latin1Reader, Source, Window
from pytest_modelpack.safety.torchzip import ZIP_MAGIC, inflate, scan_zip, zip_members
from pytest_modelpack.safety.values import Latin1, Sym

_LEGACY_PROTOCOL = 1001
_STORAGE_TYPES = frozenset(
    [("torch", f"{t}Storage") for t in STORAGE_ELEMENT_SIZE]
    + [("torch.storage", "UntypedStorage"), ("torch", "UntypedStorage")]
)


class _Record:
    """Load mode: a storage a legacy stream declares, filled from the bytes after its pickles."""

    __slots__ = ("key", "dtype", "numel", "location", "storage")

    def __init__(self, key: str, dtype: Any, numel: int, location: str) -> None:
        self.key, self.dtype, self.numel, self.location = key, dtype, numel, location
        self.storage: Any = None


class Reader:
    """Follows nested payloads and persistent ids for one :class:`Session` (its ``nested``)."""

    def __init__(self, session: Session, golden_fd: int | None = None) -> None:
        self.s = session
        #: Load mode: a descriptor of the mapped golden's file, to copy misaligned storages from.
        self.golden_fd = golden_fd
        self.records: dict[str, _Record] = {}
        self.declared: list[tuple[str, int, Machine, int]] = []
        self.numels: dict[str, int] = {}  # scan mode: each storage key's first declared numel
        #: Load mode, a torch zip: its file and storage records, key -> (method, csize, usize,
        #: data start); storages are built as their persistent ids come, as torch.load does.
        self.zip_records: Any = None

    # -- called by the interpreter -------------------------------------------------------------

    def payload(self, m: Machine, value: Any, pos: int) -> Any:
        """``torch.storage._load_from_bytes(value)``: read the torch stream in ``value``."""
        offset = value.offset if isinstance(value, BytesRef | Latin1) else pos
        label = f"nested storage (torch.storage._load_from_bytes) at byte {offset}"
        where = label if m.where == "top level" else f"{m.where} > {label}"
        if not self.s.loading:
            key = (offset, value.length if isinstance(value, BytesRef) else -1)
            if key in self.s.seen_payloads:  # one payload memoized and loaded N times: read once
                return Sym("storage", LOAD_FROM_BYTES)
            self.s.seen_payloads[key] = True
        saved = m.src.tell()
        try:
            sub: Source
            if isinstance(value, BytesRef):  # (load mode: still in the mapped golden: read there)
                sub = Window(m.src, value.offset, value.offset + value.length)
            elif self.s.loading or isinstance(value, bytes):  # (a call's result, in scan mode)
                data = bytes(value)
                sub = Window(io.BytesIO(data), 0, len(data))
            elif not isinstance(value, Latin1):
                raise ScanError(f"storage payload is not bytes ({where})")
            elif isinstance(value.text, str):
                try:
                    data = value.text.encode("latin-1")
                except UnicodeEncodeError:
                    raise ScanError(
                        f"storage payload text is not latin-1 bytes ({where})"
                    ) from None
                sub = Window(io.BytesIO(data), 0, len(data))
            else:
                ref = value.text
                sub = Latin1Reader(Window(m.src, ref.offset, ref.offset + ref.length), ref.encoding)
            result = self.torch_payload(sub, where, m)
        finally:
            m.src.seek(saved)
        return result if self.s.loading else Sym("storage", LOAD_FROM_BYTES)

    def torch_payload(self, sub: Source, where: str, m: Machine) -> Any:
        head = sub.read(4)
        sub.seek(0)
        if head == ZIP_MAGIC:
            why = "a zip archive inside a pickled storage: torch never writes one"
            m.s.use(GlobalRef("<zip archive>", "data.pkl", where, 0, problem=why))
            return Sym("storage")
        return self.legacy(sub, where, 1)

    def storage_record(self, m: Machine, pid: Any, pos: int) -> Any:
        """A persistent id of a torch stream: ``('storage', type, key, location, numel[, view])``,
        or in a legacy whole-module save ``('module', cls, file, source)``: the class itself."""
        if (
            not self.s.loading
            and isinstance(pid, tuple)
            and len(pid) == 4
            and pid[0] == "module"
            and m.global_name(pid[1]) is not None
        ):
            return pid[1]  # torch.load returns the class; its uses are judged as they come
        ok = (
            isinstance(pid, tuple)
            and len(pid) in (5, 6)
            and pid[0] == "storage"
            and m.global_name(pid[1]) in _STORAGE_TYPES
            and isinstance(pid[2], str)
            and isinstance(pid[3], str)
            and type(pid[4]) is int
            and pid[4] >= 0
            and (len(pid) == 5 or pid[5] is None)
        )
        if not ok:
            m.problem(
                pos,
                "<persistent id>",
                "PERSID",
                Role.REFERENCE,
                "a persistent id that is not a plain torch storage record",
            )
            return Sym("storage")
        name = m.global_name(pid[1])
        assert name is not None
        size = STORAGE_ELEMENT_SIZE.get(name[1][: -len("Storage")], 1) * pid[4]
        self.declared.append((pid[2], size, m, pos))
        if not self.s.loading:
            self.numels.setdefault(pid[2], pid[4])
            return Sym("storage")
        key = pid[2]
        if key in self.records:
            found = self.records[key]
            return found.storage if found.storage is not None and m.depth == 0 else found
        dtype = pid[1].dtype if hasattr(pid[1], "dtype") else None
        import torch

        record = _Record(
            key, dtype if isinstance(dtype, torch.dtype) else torch.uint8, pid[4], pid[3]
        )
        self.records[key] = record
        if self.zip_records is not None and m.depth == 0:
            record.storage = _zip_storage(self, record)
            return record.storage
        return record

    # -- legacy torch.save stream ----------------------------------------------------------------

    def legacy(self, src: Source, where: str, depth: int) -> Any:
        """Read a legacy torch.save stream; return the object (load) or a placeholder (scan)."""
        magic = interpret(self.s, src, where, depth, Persid.REFUSE)
        if not (type(magic) is int and magic == TORCH_LEGACY_MAGIC):
            raise ScanError(f"{where} is not a torch.save stream (no torch magic number)")
        version = interpret(self.s, src, where, depth, Persid.REFUSE)
        if self.s.loading and version != _LEGACY_PROTOCOL:
            raise ScanError(f"{where}: torch.save protocol {version!r}, expected 1001")
        info = interpret(self.s, src, where, depth, Persid.REFUSE)
        if self.s.loading and not (isinstance(info, dict) and info.get("little_endian") is True):
            raise ScanError(f"{where}: not a little-endian torch.save stream")
        outer, self.records = self.records, {}
        declared, self.declared = self.declared, []
        numels, self.numels = self.numels, {}
        try:
            obj = interpret(self.s, src, where, depth, Persid.STORAGE)
            keys = interpret(self.s, src, where, depth, Persid.REFUSE)
            self._check_sizes(src, where)
            if not self.s.loading:
                self._note_spans(src)
                return obj
            return self._fill(src, where, obj, keys)
        finally:
            self.records, self.declared, self.numels = outer, declared, numels

    def _note_spans(self, src: Source) -> None:
        """Scan mode: where the storage's bytes lie in the file, found the way :meth:`_fill` finds
        them (its numel header, then its bytes); ``spans`` None when unknown. Only for the one
        storage a pickled storage holds (scan mode does not build the keys list, so the order of
        several is unknown)."""
        spans = self.s.spans
        if spans is None:
            return
        sizes = {key: size for key, size, _m, _pos in reversed(self.declared)}  # first wins
        if not (isinstance(src, Window) and src.origin()[0] is self.s.root and len(sizes) == 1):
            self.s.spans = None
            return
        ((key, size),) = sizes.items()
        header = src.read(8)
        at = src.origin()[1]
        if len(header) != 8 or struct.unpack("<q", header)[0] != self.numels[key]:
            self.s.spans = None
        elif not src.skip(size):
            self.s.spans = None
        elif size:
            spans.append((at, size))

    def _check_sizes(self, src: Source, where: str) -> None:
        """Storages may not declare more bytes than follow them (torch.load allocates what a
        storage declares before reading it: 4 TB from a few bytes)."""
        total = sum(size for _key, size, _m, _pos in self.declared)
        left = src.remaining()
        if left is None or not self.declared:
            return
        if total + 8 * len(self.declared) > left:
            _key, _size, m, pos = self.declared[0]
            why = (
                f"its storages declare {total} bytes, {left} are present: a memory bomb for "
                "torch.load"
            )
            m.s.use(GlobalRef("<storage>", "size", where, pos, problem=why))

    def _fill(self, src: Source, where: str, obj: Any, keys: Any) -> Any:
        import torch

        if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
            raise ScanError(f"{where}: storage keys are not a list of strings")
        if not isinstance(obj, _Record) or len(self.records) != 1:
            raise Refused(
                GlobalRef("torch.storage", "_load_from_bytes", where, role=Role.REDUCE),
                "a pickled storage that holds something other than one storage: torch never "
                "writes that",
            )
        for key in keys:
            record = self.records.get(key)
            if record is None or record.storage is not None:
                raise ScanError(f"{where}: storage key {key!r} was not declared once")
            header = src.read(8)
            if len(header) != 8:
                raise ScanError(f"truncated storage data ({where})")
            (numel,) = struct.unpack("<q", header)
            if numel != record.numel:
                raise ScanError(
                    f"{where}: storage {key} holds {numel} elements, declared {record.numel}"
                )
            nbytes = numel * torch._utils._element_size(record.dtype)
            left = src.remaining()
            if left is not None and nbytes > left:
                raise ScanError(
                    f"{where}: storage {key} declares {nbytes} bytes, {left} are present"
                )
            self.s.take(nbytes, "a storage")
            root, at = src.origin() if isinstance(src, Window) else (None, 0)
            if self.s.mapping is not None and root is self.s.mapping:
                if not src.skip(nbytes):
                    raise ScanError(f"truncated storage data ({where})")
                record.storage = _mapped_storage(
                    self.s.mapping, at, nbytes, record, self.s, self.golden_fd
                )
                continue
            data = src.read(nbytes)
            if len(data) != nbytes:
                raise ScanError(f"truncated storage data ({where})")
            record.storage = _typed_storage(data, record, self.s.map_location)
        if obj.storage is None:
            raise ScanError(f"{where}: storage {obj.key} has no data")
        return obj.storage


def _typed_storage(data: bytes, record: _Record, map_location: Any) -> Any:
    import torch

    untyped = (
        torch.UntypedStorage.from_buffer(data, dtype=torch.uint8)
        if data
        else torch.UntypedStorage(0)
    )
    device = _device(record.location, map_location)
    if device.type != "cpu":
        untyped = untyped.to(device=device)
    return torch.storage.TypedStorage(wrap_storage=untyped, dtype=record.dtype, _internal=True)


def _mapped_storage(
    mapping: Any,
    at: int,
    nbytes: int,
    record: _Record,
    session: Session,
    golden_fd: int | None = None,
) -> Any:
    """The storage over bytes ``[at, at + nbytes)`` of the golden, mapped copy-on-write: a view
    on CPU (writes stay private, the file never changes), one copy on another device.

    pickle places a storage's bytes at any offset; torch's kernels assume a pointer aligned for
    the dtype (complex128 ops fault on a misaligned one; matmul-family results round by the
    pointer's alignment), so a storage misaligned for its dtype is copied once into an aligned
    buffer (torch's allocator: 64 bytes; from 16 MiB a mapped temporary file, see
    :func:`_map_aligned`), read from ``golden_fd`` with ``os.preadv``: the
    mapping's pages are never touched, so they do not join this process' resident memory beside
    the copy. Without a descriptor (none given, or no ``os.preadv``) the copy reads the mapping."""
    import torch

    device = _device(record.location, session.map_location)
    if nbytes == 0:
        untyped = torch.UntypedStorage(0, device=device)
    else:
        copy = None
        if device.type == "cpu" and at % record.dtype.itemsize:
            if golden_fd is not None and hasattr(os, "preadv"):  # not on Windows
                copy = _map_aligned(golden_fd, at, nbytes)
                if copy is None:
                    copy = _read_aligned(golden_fd, at, nbytes)
        if copy is not None:
            view = copy
        else:
            view = torch.frombuffer(mapping, dtype=torch.uint8, count=nbytes, offset=at)
            if device.type != "cpu":
                view = view.to(device=device)
            elif at % record.dtype.itemsize:
                view = view.clone()
        untyped = view.untyped_storage()
    return torch.storage.TypedStorage(wrap_storage=untyped, dtype=record.dtype, _internal=True)


#: A misaligned storage at least this large is copied into a temporary file and mapped, not read
#: into memory: its pages join the process' memory only as they are used, as the golden's do.
MAP_COPY_BYTES = 16 << 20


def _map_aligned(fd: int, at: int, nbytes: int) -> Any:
    """Bytes ``[at, at + nbytes)`` of the file ``fd`` copied by the kernel (``copy_file_range``:
    no pass through this process' memory) into an unlinked temporary file, mapped copy-on-write
    at offset 0 (page aligned), as a uint8 tensor. None when the storage is small, or the copy
    cannot be made (no such call, another file system, a full disk, a file that ends first):
    then it is read instead. Nothing is left on disk whatever happens: the file has no name."""
    if nbytes < MAP_COPY_BYTES or not hasattr(os, "copy_file_range"):
        return None
    import tempfile

    import torch

    try:
        with tempfile.TemporaryFile() as tmp:
            done = 0
            while done < nbytes:
                n = os.copy_file_range(fd, tmp.fileno(), nbytes - done, at + done, done)
                if n == 0:  # the golden ends first: the read says so
                    return None
                done += n
            mapping = mmap.mmap(tmp.fileno(), nbytes, access=mmap.ACCESS_COPY)
    except OSError:
        return None
    return torch.frombuffer(mapping, dtype=torch.uint8)


def _read_aligned(fd: int, at: int, nbytes: int) -> Any:
    """Bytes ``[at, at + nbytes)`` of the file ``fd`` in a new uint8 tensor (torch's allocator
    aligns it at 64 bytes), read with ``os.preadv``; a file that ends before them (truncated
    while loaded) is a :class:`ScanError`. None when the buffer cannot be exported (no numpy)."""
    import torch

    t = torch.empty(nbytes, dtype=torch.uint8)
    try:
        array: Any = t.numpy()  # shares t's memory
    except (ImportError, RuntimeError):  # torch without numpy
        return None
    view = memoryview(array)
    with view:
        done = 0
        while done < nbytes:
            try:
                n = os.preadv(fd, [view[done:]], at + done)
            except OSError as exc:
                raise ScanError(
                    f"cannot read storage bytes {at + done}..{at + nbytes} of the golden's "
                    f"file: {exc.strerror or exc}"
                ) from None
            if n == 0:
                raise ScanError(
                    f"truncated storage data: the golden's file ends at byte {at + done}, the "
                    f"storage's bytes run to {at + nbytes} (was it truncated while loaded?)"
                )
            done += n
    return t


def _device(location: str, map_location: Any) -> Any:
    """Where a storage saved at ``location`` goes: ``map_location`` as torch.load takes it (a
    device or its name, or a dict of location names); a CUDA golden loads on CPU by default."""
    import torch

    if isinstance(map_location, dict):
        location = map_location.get(location, location)
        map_location = None
    target = map_location if map_location is not None else location
    try:
        device = torch.device(target)
    except (RuntimeError, TypeError, ValueError):
        raise ScanError(f"unknown storage location {target!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        return torch.device("cpu")
    return device


# --------------------------------------------------------------------------- zip (scan only)


def _load_zip(session: Session, src: Window, where: str) -> Any:
    """A ``torch.save`` zip, loaded as torch.load reads it: ``<archive>/data.pkl`` with each
    storage record ``<archive>/data/<key>`` served from the file (torch aligns them at 64 bytes:
    views of the mapping, never copied on CPU). Its structure and every use are judged first,
    exactly as the scan judges them."""
    # Judged first exactly as the scan judges it (an attack is UNSAFE before anything builds).
    probe = Session(size=session.size)
    probe.nested = Reader(probe)
    scan_zip(probe, src, where)
    for ref in probe.refs:
        session.use(ref)
    members = zip_members(session, src, where)
    if members is None:
        raise ScanError(f"unreadable zip file ({where})")
    archive = members[0][0].split("/", 1)[0] + "/" if members and "/" in members[0][0] else ""
    by_name = {name: (method, csize, usize, start) for name, method, csize, usize, start in members}
    pkl = by_name.get(archive + "data.pkl")
    if pkl is None:
        raise ScanError(f"zip file without {archive}data.pkl ({where}): not a torch checkpoint")
    byteorder = by_name.get(archive + "byteorder")
    if byteorder is not None:
        src.seek(byteorder[3])
        if byteorder[0] != 0 or src.read(byteorder[1]) != b"little":
            raise ScanError(f"{where}: not a little-endian torch.save file")
    records = {
        name[len(archive) + len("data/") :]: entry
        for name, entry in by_name.items()
        if name.startswith(archive + "data/")
    }
    assert session.nested is not None
    session.nested.zip_records = (src, records)
    method, csize, usize, start = pkl
    label = f"zip member {archive}data.pkl"
    member_where = label if where == "top level" else f"{where} > {label}"
    if method == 0:
        sub = Window(src, start, start + csize)
    elif method == 8:
        session.take(usize, "an inflated zip member")
        sub = Window(io.BytesIO(inflate(src, start, csize, usize, member_where)), 0, usize)
    else:
        raise ScanError(f"zip entry {archive}data.pkl uses compression method {method}")
    return interpret(session, sub, member_where, 0, Persid.STORAGE)


def _zip_storage(reader: Reader, record: _Record) -> Any:
    """Load mode, torch zip: the storage ``record`` declares, from its zip record."""
    import torch

    src, records = reader.zip_records
    entry = records.get(record.key)
    if entry is None:
        raise ScanError(f"storage {record.key!r} has no data/{record.key} record in the zip")
    method, csize, _usize, start = entry
    nbytes = record.numel * torch._utils._element_size(record.dtype)
    if method != 0:
        raise ScanError(f"storage record data/{record.key} is compressed: torch never writes one")
    if nbytes != csize:
        raise ScanError(f"storage {record.key} declares {nbytes} bytes, its record holds {csize}")
    session = reader.s
    saved = src.tell()  # data.pkl is read through src: its place is kept
    try:
        src.seek(start)
        root, at = src.origin()
        if session.mapping is not None and root is session.mapping:
            return _mapped_storage(session.mapping, at, nbytes, record, session, reader.golden_fd)
        session.take(nbytes, "a storage")
        data = src.read(nbytes)
    finally:
        src.seek(saved)
    if len(data) != nbytes:
        raise ScanError(f"truncated storage record data/{record.key}")
    return _typed_storage(data, record, session.map_location)


def _is_tar(src: Window) -> bool:
    """What torch's legacy loader tries first on a real file: ``tarfile.open(mode='r:')``, here
    with at least one member whose header checksum is valid (tarfile checks it). A file of zeros
    opens as an empty tar, but holds nothing torch would unpickle: it is read as what it is."""
    import tarfile

    src.seek(0)
    try:
        with tarfile.open(fileobj=src, mode="r:", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            return tar.next() is not None
    except (tarfile.TarError, EOFError, OSError, ValueError, UnicodeError, struct.error):
        return False
    finally:
        src.seek(0)


def interpret_file(
    session: Session,
    src: Window,
    where: str,
    whole_file: bool,
    golden_fd: int | None = None,
) -> Any:
    """Read the file in ``src`` as pickle or torch would: scan or load (``session``).

    ``whole_file``: ``src`` is a file of its own (torch.load only tries the tar format there).
    ``golden_fd``: load mode, a descriptor of the file ``session.mapping`` maps (its misaligned
    storages are copied from it), borrowed: the caller closes it.
    """
    reader = session.nested = Reader(session, golden_fd)
    session.root = src.origin()[0]
    head = src.read(4)
    src.seek(0)
    if not head:
        raise ScanError("empty file")
    if head == ZIP_MAGIC:
        if session.loading:
            return _load_zip(session, src, where)
        scan_zip(session, src, where)
        return None
    if whole_file and _is_tar(src):
        why = (
            "a legacy torch tar archive: torch.load would unpickle its members, which a "
            "pickle reader never sees"
        )
        session.use(GlobalRef("<tar archive>", "members", where, problem=why))
    value = interpret(session, src, where, 0, Persid.REFUSE)
    if not session.loading and type(value) is int and value == TORCH_LEGACY_MAGIC:
        # A legacy torch.save file: torch.load reads four more pickles after the magic number.
        src.seek(0)
        reader.legacy(src, where, 0)
    return value
