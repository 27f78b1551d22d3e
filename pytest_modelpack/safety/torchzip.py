"""A torch zip file's structure, read with torch's rules (``torch.save`` since 1.6).

Member names are matched case-insensitively (so two names that differ only in case are refused),
there is exactly one end-of-central-directory record (zip64's counts), no entries overlap, and
decompression is capped. :func:`scan_zip` interprets every ``*.pkl`` member; the loader
(:mod:`.streams`) reads ``data.pkl`` and serves the storages from their records.
"""

from __future__ import annotations

import io
import struct
import zlib

from pytest_modelpack.safety.interpreter import interpret
from pytest_modelpack.safety.machine import Persid, Session
from pytest_modelpack.safety.refs import GlobalRef, ScanError
from pytest_modelpack.safety.sources import Window

ZIP_MAGIC = b"PK\x03\x04"


def _zip_problem(session: Session, where: str, why: str) -> None:
    session.use(GlobalRef("<zip archive>", "central directory", where, problem=why))


def zip_members(
    session: Session, src: Window, where: str
) -> list[tuple[str, int, int, int, int]] | None:
    """The members of a torch zip file, ``(name, method, csize, usize, data start)``, checked the
    way torch's reader reads the zip; None after a problem was noted (scan) or refused (load)."""
    size = src.seek(0, 2)
    tail_len = min(size, 65535 + 22)
    src.seek(size - tail_len)
    tail = src.read(tail_len)
    ends = [i for i in range(len(tail) - 3) if tail.startswith(b"PK\x05\x06", i)]
    if not ends:
        raise ScanError(f"unreadable zip file ({where}): no end-of-central-directory record")
    if len(ends) != 1:
        _zip_problem(
            session,
            where,
            f"{len(ends)} end-of-central-directory records: zip readers disagree which counts",
        )
        return None
    eocd = size - tail_len + ends[0]
    rec = tail[ends[0] : ends[0] + 22]
    if len(rec) < 22:
        raise ScanError(f"truncated zip file ({where})")
    _sig, disk, cd_disk, n_disk, n_total, cd_size, cd_offset, comment = struct.unpack(
        "<IHHHHIIH", rec
    )
    if eocd + 22 + comment != size or disk or cd_disk or n_disk != n_total:
        _zip_problem(session, where, "a zip whose end record does not end the file")
        return None
    cd_end = eocd
    loc = b""
    if eocd >= 20:
        src.seek(eocd - 20)
        loc = src.read(20)
    if loc.startswith(b"PK\x06\x07"):  # zip64 (torch always writes it): its record counts
        (z64,) = struct.unpack("<Q", loc[8:16])
        src.seek(z64)
        rec64 = src.read(56)
        if len(rec64) != 56 or not rec64.startswith(b"PK\x06\x06") or z64 + 56 != eocd - 20:
            _zip_problem(session, where, "a zip64 end record out of place")
            return None
        n64, _n2, size64, offset64 = struct.unpack("<QQQQ", rec64[24:56])
        for small, big in ((n_total, n64), (cd_size, size64), (cd_offset, offset64)):
            if small not in (big, 0xFFFF, 0xFFFFFFFF):
                _zip_problem(session, where, "zip and zip64 end records disagree")
                return None
        n_total, cd_size, cd_offset, cd_end = n64, size64, offset64, z64
    elif n_total == 0xFFFF or cd_offset == 0xFFFFFFFF or cd_size == 0xFFFFFFFF:
        raise ScanError(f"zip64 file without its locator ({where})")
    if cd_offset + cd_size != cd_end:
        _zip_problem(session, where, "a second central directory (its size and place disagree)")
        return None
    entries = _central_directory(src, cd_offset, cd_size, n_total, where)
    spans = []
    members = []
    names: dict[str, str] = {}
    for name, method, csize, usize, local in entries:
        src.seek(local)
        head = src.read(30)
        if len(head) != 30 or not head.startswith(ZIP_MAGIC):
            raise ScanError(f"zip entry {name} has no local header ({where})")
        n_len, e_len = struct.unpack("<HH", head[26:30])
        start = local + 30 + n_len + e_len
        if src.read(n_len).decode("utf-8", "replace") != name:
            _zip_problem(session, where, f"zip entry {name}: its local name differs")
            return None
        spans.append((local, start + csize, name))
        members.append((name, method, csize, usize, start))
        folded = name.casefold()
        if folded in names:
            _zip_problem(
                session,
                where,
                f"zip entries {names[folded]} and {name} differ only in case: torch matches "
                "names case-insensitively",
            )
            return None
        names[folded] = name
        if start + csize > cd_offset:
            _zip_problem(session, where, f"zip entry {name} runs into the central directory")
            return None
    spans.sort()
    for (_a, end, name), (start, _b, other) in zip(spans, spans[1:], strict=False):
        if start < end:
            _zip_problem(session, where, f"zip entries {name} and {other} overlap")
            return None
    return members


def scan_zip(session: Session, src: Window, where: str) -> None:
    """Every ``*.pkl`` member of a torch zip file, read the way torch's reader reads the zip."""
    members = zip_members(session, src, where)
    if members is None:
        return
    size = src.seek(0, 2)
    budget = 2 * size + (16 << 20)
    found = False
    for name, method, csize, usize, start in members:
        if not name.casefold().endswith(".pkl"):
            continue
        found = True
        label = f"zip member {name}"
        member_where = label if where == "top level" else f"{where} > {label}"
        sub: Window
        if method == 0:
            sub = Window(src, start, start + csize)
        elif method == 8:
            budget -= usize
            if budget < 0:
                _zip_problem(session, where, "zip members inflate to more than the file allows")
                return
            sub = Window(io.BytesIO(inflate(src, start, csize, usize, member_where)), 0, usize)
        else:
            _zip_problem(session, where, f"zip entry {name} uses compression method {method}")
            return
        interpret(session, sub, member_where, 0, Persid.STORAGE)
    if not found:
        raise ScanError(f"zip file without a .pkl record ({where}): not a torch checkpoint")


def _central_directory(
    src: Window, offset: int, size: int, count: int, where: str
) -> list[tuple[str, int, int, int, int]]:
    if count > size // 46 + 1:
        raise ScanError(f"zip central directory too small for {count} entries ({where})")
    src.seek(offset)
    data = src.read(size)
    if len(data) != size:
        raise ScanError(f"truncated zip central directory ({where})")
    out = []
    pos = 0
    for _ in range(count):
        head = data[pos : pos + 46]
        if len(head) != 46 or not head.startswith(b"PK\x01\x02"):
            raise ScanError(f"malformed zip central directory ({where})")
        (method,) = struct.unpack("<H", head[10:12])
        csize, usize = struct.unpack("<II", head[20:28])
        n_len, e_len, c_len = struct.unpack("<HHH", head[28:34])
        (local,) = struct.unpack("<I", head[42:46])
        name = data[pos + 46 : pos + 46 + n_len].decode("utf-8", "replace")
        extra = data[pos + 46 + n_len : pos + 46 + n_len + e_len]
        csize, usize, local = _zip64_sizes(extra, csize, usize, local)
        out.append((name, method, csize, usize, local))
        pos += 46 + n_len + e_len + c_len
    if pos != size:
        raise ScanError(f"zip central directory holds more than its {count} entries ({where})")
    return out


def _zip64_sizes(extra: bytes, csize: int, usize: int, local: int) -> tuple[int, int, int]:
    i = 0
    while i + 4 <= len(extra):
        tag, n = struct.unpack("<HH", extra[i : i + 4])
        body = extra[i + 4 : i + 4 + n]
        if tag == 1:
            values = [v for (v,) in struct.iter_unpack("<Q", body[: len(body) // 8 * 8])]
            if usize == 0xFFFFFFFF and values:
                usize = values.pop(0)
            if csize == 0xFFFFFFFF and values:
                csize = values.pop(0)
            if local == 0xFFFFFFFF and values:
                local = values.pop(0)
        i += 4 + n
    return csize, usize, local


def inflate(src: Window, start: int, csize: int, usize: int, where: str) -> bytes:
    src.seek(start)
    d = zlib.decompressobj(-15)
    out = bytearray()
    left = csize
    while left > 0:
        chunk = src.read(min(left, 1 << 20))
        if not chunk:
            raise ScanError(f"truncated zip member ({where})")
        left -= len(chunk)
        out += d.decompress(chunk, usize + 1 - len(out))
        if len(out) > usize:
            raise ScanError(f"zip member inflates beyond its declared size ({where})")
    return bytes(out)


# --------------------------------------------------------------------------- top level
