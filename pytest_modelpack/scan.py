"""Static, streaming safety scan of pickle files: which globals would unpickling import?

A golden is untrusted input, so it is scanned before any byte of it is unpickled. The scanner walks
the opcode stream (``pickletools`` opcode tables) and simulates the unpickler's stack just far
enough to know every global the stream would import, including the globals of pickles nested
inside torch storages (``torch.storage._load_from_bytes``) and torch zip files. It never imports
or calls anything, and it never reads tensor payloads: byte strings are skipped with ``seek``, so
a 1 GiB model scans in milliseconds with bounded memory.

Public API: :func:`iter_globals`, :func:`scan_stream`, :func:`scan_file`, :func:`pickle_protocol`,
:class:`GlobalRef`, :class:`Verdict`, :class:`ScanError`.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import io
import os
import pickletools
import struct
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, cast

from pytest_modelpack.errors import CorruptGolden, LoadError, UnsafeGolden

if TYPE_CHECKING:
    from pytest_modelpack.allowlist import Allowlist

__all__ = [
    "BytesRef",
    "GlobalRef",
    "ScanError",
    "Verdict",
    "iter_globals",
    "pickle_protocol",
    "scan_file",
    "scan_stream",
]

#: ``torch.serialization.MAGIC_NUMBER``: the first pickle of a legacy ``torch.save`` stream.
TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
#: A legacy torch stream is these many pickles (magic, protocol version, sys info, the object,
#: storage keys) followed by raw storage bytes, which torch.load never unpickles.
_LEGACY_PICKLES = 5
_ZIP_MAGIC = b"PK\x03\x04"
_LFS_MAGIC = b"version https://git-lfs"

_LOAD_FROM_BYTES = ("torch.storage", "_load_from_bytes")
_CODECS_ENCODE = ("_codecs", "encode")
# Protocols 0-2 have no bytes opcode: pickle writes bytes as _codecs.encode(text, 'latin1').
_LATIN1_NAMES = frozenset({"latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1", "l1"})

# Text longer than this is not held in memory: it can only be a (protocol 0-2) tensor payload,
# never a module or class name, so the scanner keeps where it lies instead of its value.
_TEXT_LIMIT = 64 * 1024
# Newline-terminated arguments (protocol 0) longer than this are skipped, not read.
_LINE_LIMIT = 64 * 1024
# torch storages nested in torch storages: torch itself never writes more than one level.
_MAX_DEPTH = 4
_CHUNK = 1 << 20

_NON_LITERAL = "(non-literal argument)"


class ScanError(Exception):
    """The stream cannot be scanned: empty, truncated, not a pickle, or malformed."""


@dataclass(frozen=True)
class GlobalRef:
    """One global a pickle stream would import when unpickled.

    ``module`` and ``qualname`` are the names the unpickler would look up (after Python 2 name
    mapping for protocols 0-2). ``where`` says which stream it was found in (``"top level"``,
    ``"zip member archive/data.pkl"``, ``"nested storage (torch.storage._load_from_bytes) at byte
    87"``, joined with ``" > "`` when nested deeper) and ``offset`` is the opcode's byte offset in
    that stream. ``problem`` is set when the reference is refused whatever the allowlist says
    (a global the scanner cannot resolve, or a nested-pickle loader it cannot follow).
    """

    module: str
    qualname: str
    where: str = "top level"
    offset: int = 0
    problem: str | None = None

    @property
    def name(self) -> str:
        """``module.qualname``."""
        return f"{self.module}.{self.qualname}"


@dataclass(frozen=True)
class BytesRef:
    """A bytes value of the stream, by position: ``length`` bytes at ``offset``, never read."""

    offset: int
    length: int


@dataclass
class Verdict:
    """The safety verdict for one file or stream.

    ``globals`` lists every global referenced (first-seen order, one entry per name), ``refused``
    the ones not allowed with the reason, ``missing`` those refused ones that do not resolve at
    all (a renamed or moved project module or class: a load error rather than an attack), and
    ``error`` why the stream could not be scanned (an unscannable stream is never safe).
    """

    path: str
    globals: list[GlobalRef] = field(default_factory=list)
    refused: list[tuple[GlobalRef, str]] = field(default_factory=list)
    error: str | None = None
    missing: list[GlobalRef] = field(default_factory=list)

    @property
    def safe(self) -> bool:
        """True when the stream was scanned completely and every global is allowed."""
        return self.error is None and not self.refused

    def raise_if_unsafe(self, name: str | None = None) -> None:
        """Raise unless :attr:`safe`: :class:`UnsafeGolden` for refused globals (even when the
        scan stopped early: a payload followed by garbage still runs when unpickled, so the
        attack is the news), :class:`LoadError` when every refused global merely no longer exists,
        else :class:`CorruptGolden` when unscannable."""
        if self.error is not None and not self.refused:
            raise CorruptGolden(
                f"{self.path} cannot be scanned: {self.error}",
                name=name,
                fix="restore the file from version control, or regenerate it with "
                "pytest --modelpack-regen",
            )
        if self.refused and len(self.missing) == len(self.refused) and self.error is None:
            count = len(self.missing)
            raise LoadError(
                f"{self.path} references {count} global{'s' if count > 1 else ''} "
                "that no longer exist",
                name=name,
                detail=[f"{ref.name}: {reason}" for ref, reason in self.refused],
                fix="restore the module or class, keep an alias under the old name, or "
                "regenerate the golden with pytest --modelpack-regen",
            )
        if self.refused:
            count = len(self.refused)
            stopped = [] if self.error is None else [f"(the scan then stopped: {self.error})"]
            raise UnsafeGolden(
                f"{self.path} references {count} global{'s' if count > 1 else ''} "
                "that are not allowed; nothing was unpickled",
                name=name,
                detail=[
                    *(f"{ref.name} ({ref.where}): {reason}" for ref, reason in self.refused),
                    *stopped,
                ],
                fix="do not load this file; regenerate it from trusted code with "
                "pytest --modelpack-regen, or list a trusted global in the extra safe globals",
            )


# --------------------------------------------------------------------------- symbolic values


class _Unknown:
    """Any value whose content the scan does not need (numbers, containers, objects...)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<unknown>"


_UNKNOWN = _Unknown()


class _Global:
    """The object a GLOBAL / STACK_GLOBAL pushes."""

    __slots__ = ("module", "qualname")

    def __init__(self, module: str, qualname: str) -> None:
        self.module = module
        self.qualname = qualname


class _Tuple:
    """A tuple with its items, so REDUCE can inspect call arguments."""

    __slots__ = ("items", "tainted")

    def __init__(self, items: list[object] | tuple[object, ...]) -> None:
        self.items = tuple(items)
        # Computed once so consuming a deeply nested tuple stays O(1).
        self.tainted = any(_tainted(item) for item in self.items)


@dataclass(frozen=True)
class _TextRef:
    """Text too long to hold, by position: ``length`` encoded bytes at ``offset``."""

    offset: int
    length: int
    encoding: str


@dataclass(frozen=True)
class _Latin1:
    """``_codecs.encode(text, 'latin1')``: how protocols 0-2 write a bytes value."""

    text: str | _TextRef
    offset: int


def _tainted(value: object) -> bool:
    """Does ``value`` hold ``torch.storage._load_from_bytes`` itself?

    The nested pickle loader is only allowed where the scanner can follow it: called directly by
    REDUCE on literal bytes. Passed anywhere else (functools.partial, a container, BUILD state,
    INST/OBJ) it could later run on bytes nobody scanned.
    """
    if isinstance(value, _Global):
        return (value.module, value.qualname) == _LOAD_FROM_BYTES
    return isinstance(value, _Tuple) and value.tainted


def _compat_name(module: str, qualname: str) -> tuple[str, str]:
    """Map a Python 2 name the way ``pickle.Unpickler.find_class`` does for protocols 0-2."""
    if (module, qualname) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, qualname)]
    if module in _compat_pickle.IMPORT_MAPPING:
        return _compat_pickle.IMPORT_MAPPING[module], qualname
    return module, qualname


def _fix_imports(head: bytes) -> bool:
    """Whether names are mapped from Python 2, from the first two bytes of a pickle.

    pickle maps names while its protocol is below 3. The scanner and the loader both take the
    protocol from the leading PROTO opcode only, so they agree even on a crafted stream that
    repeats PROTO (the loader imports exactly the names the allowlist approved either way).
    """
    return not (len(head) >= 2 and head[0] == 0x80 and head[1] >= 3)


# --------------------------------------------------------------------------- readers


class _Window:
    """A read-only, seekable view of bytes ``[start, end)`` of a seekable binary file.

    Nested pickles live inside the outer file; a window bounds every read to the payload so a
    nested stream can never read past its own end. It is also file-like enough for ``zipfile``.
    """

    def __init__(self, f: IO[bytes] | _Window | _Latin1Reader, start: int, end: int) -> None:
        self._f = f
        self._start = start
        self._size = max(0, end - start)
        self._pos = 0
        f.seek(start)

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence == 1:
            pos += self._pos
        elif whence == 2:
            pos += self._size
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        self._f.seek(self._start + min(pos, self._size))
        return pos

    def skip(self, n: int) -> bool:
        """Move ``n`` bytes forward without reading them; False when that passes the end."""
        if self._pos + n > self._size:
            return False
        self.seek(self._pos + n)
        return True

    def read(self, n: int | None = -1) -> bytes:
        left = self._size - self._pos
        if left <= 0:
            return b""
        if n is None or n < 0 or n > left:
            n = left
        data = self._f.read(n)
        self._pos += len(data)
        return data

    def readline(self, limit: int | None = -1) -> bytes:
        left = self._size - self._pos
        if left <= 0:
            return b""
        if limit is None or limit < 0 or limit > left:
            limit = left
        data = self._f.readline(limit)
        self._pos += len(data)
        return data


class _Latin1Reader:
    """The bytes ``_codecs.encode(text, 'latin1')`` would produce, decoded lazily from the stream.

    For a protocol 0-2 pickle the nested torch stream is stored as text (UTF-8 for BINUNICODE,
    raw-unicode-escape for UNICODE). Only the first few small pickles of it are ever scanned, so
    decoding on demand keeps memory bounded for any payload size. Seeking backwards restarts the
    decoder; ``seek(0, 2)`` decodes once to learn the size (only zipfile does that).
    """

    def __init__(self, raw: _Window, encoding: str) -> None:
        self._raw = raw
        self._encoding = encoding
        self._size: int | None = None
        self._restart()

    def _restart(self) -> None:
        self._raw.seek(0)
        errors = "surrogatepass" if self._encoding == "utf-8" else "strict"
        self._decoder = codecs.getincrementaldecoder(self._encoding)(errors)
        self._buf = bytearray()
        self._pos = 0  # decoded bytes handed out so far (position of _buf[0])
        self._eof = False

    def _fill(self, want: int, stop_at_newline: bool = False) -> None:
        while len(self._buf) < want and not self._eof:
            if stop_at_newline and b"\n" in self._buf:
                return
            chunk = self._raw.read(64 * 1024)
            try:
                text = self._decoder.decode(chunk, final=not chunk)
                self._buf += text.encode("latin-1")
            except UnicodeError as exc:
                raise ScanError(f"storage payload text is not latin-1 bytes: {exc}") from None
            if not chunk:
                self._eof = True

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            out = bytearray()
            while True:
                piece = self.read(_CHUNK)
                if not piece:
                    return bytes(out)
                out += piece
        self._fill(n)
        data = bytes(self._buf[:n])
        del self._buf[:n]
        self._pos += len(data)
        return data

    def readline(self, limit: int | None = -1) -> bytes:
        want = _CHUNK if limit is None or limit < 0 else limit
        while True:
            self._fill(want, stop_at_newline=True)
            nl = self._buf.find(b"\n", 0, want)
            if nl >= 0:
                return self.read(nl + 1)
            if len(self._buf) >= want or self._eof:
                return self.read(want)
            if limit is None or limit < 0:
                want += _CHUNK

    def skip(self, n: int) -> bool:
        while n > 0:
            piece = self.read(min(n, _CHUNK))
            if not piece:
                return False
            n -= len(piece)
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence == 1:
            pos += self._pos
        elif whence == 2:
            if self._size is None:
                self.seek(0)
                while self.read(_CHUNK):
                    pass
                self._size = self._pos
            pos += self._size
        if pos < 0:
            raise ValueError("negative seek position")
        if pos < self._pos:
            self._restart()
        self.skip(pos - self._pos)
        return self._pos


# --------------------------------------------------------------------------- opcode tables

_OPS: dict[int, pickletools.OpcodeInfo] = {ord(op.code): op for op in pickletools.opcodes}

# Length-prefixed values: (struct format of the length, what the value is).
_SIZED = {
    "BINSTRING": ("<i", "str2"),
    "SHORT_BINSTRING": ("<B", "str2"),
    "BINUNICODE": ("<I", "text"),
    "SHORT_BINUNICODE": ("<B", "text"),
    "BINUNICODE8": ("<Q", "text"),
    "BINBYTES": ("<I", "bytes"),
    "SHORT_BINBYTES": ("<B", "bytes"),
    "BINBYTES8": ("<Q", "bytes"),
    "BYTEARRAY8": ("<Q", "bytes"),
    "LONG4": ("<i", "long"),
}


def _read_arg(op: pickletools.OpcodeInfo, f: object) -> Any:
    """Decode ``op``'s argument from ``f`` with the pickletools descriptor's reader."""
    assert op.arg is not None
    return op.arg.reader(cast(IO[bytes], f))


def _shape(op: pickletools.OpcodeInfo) -> tuple[bool, int, int]:
    """(pops to a mark, items popped besides the mark slice, items pushed) of a generic opcode."""
    before = op.stack_before
    if pickletools.markobject in before:
        return True, before.index(pickletools.markobject), len(op.stack_after)
    return False, len(before), len(op.stack_after)


_SHAPES = {code: _shape(op) for code, op in _OPS.items()}


# --------------------------------------------------------------------------- the scanner


class _PickleScanner:
    """Scans ONE pickle (PROTO ... STOP) of ``src``, yielding GlobalRefs as it finds them."""

    def __init__(self, src: _Window | _Latin1Reader, where: str, depth: int) -> None:
        self.src = src
        self.where = where
        self.depth = depth
        self.stack: list[object] = []
        self.marks: list[int] = []  # stack heights at each MARK, like pickle's metastack
        self.memo: dict[int, object] = {}
        self.out: list[GlobalRef] = []
        self.fix_imports = True
        self.start = src.tell()

    # -- stack helpers -------------------------------------------------------------------------

    def _fail(self, pos: int, what: str) -> ScanError:
        return ScanError(f"malformed pickle ({self.where}): {what} at byte {pos}")

    def _truncated(self, pos: int) -> ScanError:
        return ScanError(
            f"truncated pickle ({self.where}): data ends inside the opcode at byte {pos}"
        )

    def _pop(self, n: int, pos: int) -> list[object]:
        base = self.marks[-1] if self.marks else 0
        if len(self.stack) - n < base:
            raise self._fail(pos, "stack underflow")
        if n == 0:
            return []
        items = self.stack[-n:]
        del self.stack[-n:]
        return items

    def _pop_mark(self, pos: int) -> list[object]:
        if not self.marks:
            raise self._fail(pos, "no MARK on the stack")
        base = self.marks.pop()
        items = self.stack[base:]
        del self.stack[base:]
        return items

    def _top(self, pos: int) -> object:
        base = self.marks[-1] if self.marks else 0
        if len(self.stack) <= base:
            raise self._fail(pos, "stack underflow")
        return self.stack[-1]

    def _check_taint(self, values: list[object], pos: int) -> None:
        for value in values:
            if _tainted(value):
                self._emit_lfb_problem(
                    pos,
                    "torch.storage._load_from_bytes is used other than as a direct call on "
                    "literal bytes, so the pickle it would load cannot be scanned",
                )
                return

    def _emit_lfb_problem(self, pos: int, problem: str) -> None:
        self.out.append(
            GlobalRef(*_LOAD_FROM_BYTES, f"{self.where} {_NON_LITERAL}", pos, problem=problem)
        )

    def _global(self, module: str, qualname: str, pos: int) -> _Global:
        if self.fix_imports:
            module, qualname = _compat_name(module, qualname)
        self.out.append(GlobalRef(module, qualname, self.where, pos))
        return _Global(module, qualname)

    # -- argument readers ----------------------------------------------------------------------

    def _line(self, pos: int) -> tuple[bytes | None, int, int]:
        """A newline-terminated argument: (content or None when too long to hold, start, end)."""
        src = self.src
        start = src.tell()
        data = src.readline(_LINE_LIMIT + 1)
        if data.endswith(b"\n"):
            return data[:-1], start, src.tell() - 1
        if len(data) <= _LINE_LIMIT:
            raise self._truncated(pos)
        while True:  # too long to hold: find its end without keeping it
            chunk = src.readline(_CHUNK)
            if not chunk:
                raise self._truncated(pos)
            if chunk.endswith(b"\n"):
                return None, start, src.tell() - 1

    def _read_exact(self, n: int, pos: int) -> bytes:
        data = self.src.read(n)
        if len(data) != n:
            raise self._truncated(pos)
        return data

    def _name_pair(self, pos: int) -> tuple[str, str]:
        """GLOBAL / INST argument: module and name lines, UTF-8 like the C unpickler reads them."""
        names = []
        for _ in range(2):
            line, _start, _end = self._line(pos)
            if line is None:
                raise self._fail(pos, "global name longer than 64 KiB")
            try:
                names.append(line.decode("utf-8"))
            except UnicodeDecodeError:
                raise self._fail(pos, "global name is not UTF-8") from None
        return names[0], names[1]

    # -- the opcode loop -----------------------------------------------------------------------

    def scan(self) -> Generator[GlobalRef, None, object]:
        """Yield the globals of one pickle; the generator returns the value STOP pops."""
        src = self.src
        out = self.out
        handlers = self._handlers()
        while True:
            pos = src.tell()
            code = src.read(1)
            if not code:
                if pos == self.start:
                    raise ScanError(f"truncated stream ({self.where}): no pickle at byte {pos}")
                raise ScanError(
                    f"truncated pickle ({self.where}): data ends at byte {pos} before STOP"
                )
            entry = handlers.get(code[0])
            if entry is None:
                raise ScanError(
                    f"not a pickle ({self.where}): unknown opcode {code!r} at byte {pos}"
                )
            handler, op = entry
            try:
                result = handler(op, pos)
            except (ValueError, struct.error, UnicodeError, OverflowError) as exc:
                # pickletools argument readers raise ValueError on short or bad arguments.
                if out:
                    yield from out
                    out.clear()
                raise self._fail(pos, f"{op.name}: {exc}") from None
            if out:
                yield from out
                out.clear()
            if result is not None:
                if isinstance(result, _Stop):
                    return result.value
                yield from result

    def _handlers(self) -> dict[int, tuple[Any, pickletools.OpcodeInfo]]:
        """Opcode byte -> (bound handler, descriptor): a table lookup instead of an if-chain,
        since scanning a large vocabulary runs the loop once per string."""
        special = {
            "GLOBAL": self._op_global,
            "INST": self._op_inst,
            "STACK_GLOBAL": self._op_stack_global,
            "REDUCE": self._op_reduce,
            "BINPUT": self._op_put,
            "LONG_BINPUT": self._op_put,
            "PUT": self._op_put,
            "MEMOIZE": self._op_memoize,
            "BINGET": self._op_get,
            "LONG_BINGET": self._op_get,
            "GET": self._op_get,
            "MARK": self._op_mark,
            "POP": self._op_pop,
            "POP_MARK": self._op_pop_mark,
            "DUP": self._op_dup,
            "TUPLE": self._op_tuple,
            "TUPLE1": self._op_tuple_n,
            "TUPLE2": self._op_tuple_n,
            "TUPLE3": self._op_tuple_n,
            "EMPTY_TUPLE": self._op_empty_tuple,
            "EXT1": self._op_ext,
            "EXT2": self._op_ext,
            "EXT4": self._op_ext,
            "PROTO": self._op_proto,
            "FRAME": self._op_frame,
            "STOP": self._op_stop,
            "UNICODE": self._op_unicode,
            "BUILD": self._op_build,
        }
        table: dict[int, tuple[Any, pickletools.OpcodeInfo]] = {}
        for code, op in _OPS.items():
            handler = special.get(op.name)
            if handler is None:
                if op.name in _SIZED:
                    handler = self._op_sized
                elif op.arg is None and not op.stack_before and len(op.stack_after) == 1:
                    handler = self._op_push_unknown  # NONE, EMPTY_LIST, NEWTRUE...
                else:
                    handler = self._op_generic
            table[code] = (handler, op)
        return table

    # -- opcode handlers: each returns None, a _Stop, or a nested-scan iterator ----------------

    def _op_sized(self, op: pickletools.OpcodeInfo, pos: int) -> None:
        fmt, kind = _SIZED[op.name]
        src = self.src
        stack = self.stack
        n = struct.unpack(fmt, self._read_exact(struct.calcsize(fmt), pos))[0]
        if n < 0:
            raise self._fail(pos, f"{op.name} with negative length")
        start = src.tell()
        if kind == "text" and n <= _TEXT_LIMIT:
            stack.append(self._read_exact(n, pos).decode("utf-8", "surrogatepass"))
        elif kind == "str2" and n <= _TEXT_LIMIT:
            data = self._read_exact(n, pos)
            # Python 2 str: the default Unpickler decodes it as ASCII.
            stack.append(data.decode("ascii") if data.isascii() else _UNKNOWN)
        elif kind == "long" and n <= _TEXT_LIMIT:
            stack.append(int.from_bytes(self._read_exact(n, pos), "little", signed=True))
        else:
            # Payloads (tensor bytes) are skipped, never read: memory stays bounded.
            if not src.skip(n):
                raise self._truncated(pos)
            if kind == "bytes":
                stack.append(BytesRef(start, n))
            elif kind == "text":
                stack.append(_TextRef(start, n, "utf-8"))
            else:
                stack.append(_UNKNOWN)

    def _op_global(self, op: pickletools.OpcodeInfo, pos: int) -> None:
        module, qualname = self._name_pair(pos)
        self.stack.append(self._global(module, qualname, pos))

    def _op_inst(self, op: pickletools.OpcodeInfo, pos: int) -> None:
        module, qualname = self._name_pair(pos)
        glob = self._global(module, qualname, pos)
        items = self._pop_mark(pos)
        self._check_taint(items, pos)
        if _tainted(glob):
            # INST calls a non-class with the marked items as arguments.
            self._emit_lfb_problem(pos, "torch.storage._load_from_bytes called through INST")
        self.stack.append(_UNKNOWN)

    def _op_stack_global(self, op: pickletools.OpcodeInfo, pos: int) -> None:
        module, qualname = self._pop(2, pos)
        if type(module) is str and type(qualname) is str:
            self.stack.append(self._global(module, qualname, pos))
            return
        self.out.append(
            GlobalRef(
                "<non-literal>",
                "<non-literal>",
                self.where,
                pos,
                problem="STACK_GLOBAL operands are not literal strings",
            )
        )
        self.stack.append(_UNKNOWN)

    def _op_reduce(self, op: pickletools.OpcodeInfo, pos: int) -> Iterator[GlobalRef] | None:
        func, args = self._pop(2, pos)
        return self._reduce(func, args, pos)

    def _op_put(self, op: pickletools.OpcodeInfo, pos: int) -> None:
        idx = self._int_arg(op, pos)
        self.memo[idx] = self._top(pos)

    def _op_memoize(self, op: pickletools.OpcodeInfo, pos: int) -> None:
        self.memo[len(self.memo)] = self._top(pos)

    def _op_get(self, op: pickletools.OpcodeInfo, pos: int) -> None:
        idx = self._int_arg(op, pos)
        if idx not in self.memo:
            raise self._fail(pos, f"memo key {idx} was never stored")
        self.stack.append(self.memo[idx])

    def _op_mark(self, op: pickletools.OpcodeInfo, pos: int) -> None:
        self.marks.append(len(self.stack))

    def _op_pop(self, op: pickletools.OpcodeInfo, pos: int) -> None:
        base = self.marks[-1] if self.marks else 0
        if len(self.stack) > base:
            self.stack.pop()
        elif self.marks:
            self.marks.pop()  # pickle's POP discards a MARK when nothing is above it
        else:
            raise self._fail(pos, "stack underflow")

    def _op_pop_mark(self, op: pickletools.OpcodeInfo, pos: int) -> None:
        self._pop_mark(pos)

    def _op_dup(self, op: pickletools.OpcodeInfo, pos: int) -> None:
        self.stack.append(self._top(pos))

    def _op_tuple(self, op: pickletools.OpcodeInfo, pos: int) -> None:
        self.stack.append(_Tuple(self._pop_mark(pos)))

    def _op_tuple_n(self, op: pickletools.OpcodeInfo, pos: int) -> None:
        self.stack.append(_Tuple(self._pop(len(op.stack_before), pos)))

    def _op_empty_tuple(self, op: pickletools.OpcodeInfo, pos: int) -> None:
        self.stack.append(_Tuple(()))

    def _op_ext(self, op: pickletools.OpcodeInfo, pos: int) -> None:
        ext = _read_arg(op, self.src)
        self.out.append(
            GlobalRef(
                "<extension registry>",
                f"<code {ext}>",
                self.where,
                pos,
                problem=f"{op.name} names a global through the copyreg extension registry, "
                "which cannot be checked statically",
            )
        )
        self.stack.append(_UNKNOWN)

    def _op_proto(self, op: pickletools.OpcodeInfo, pos: int) -> None:
        proto = _read_arg(op, self.src)
        if pos == self.start:
            self.fix_imports = proto < 3

    def _op_frame(self, op: pickletools.OpcodeInfo, pos: int) -> None:
        _read_arg(op, self.src)  # framing only groups opcodes; nothing to simulate

    def _op_stop(self, op: pickletools.OpcodeInfo, pos: int) -> _Stop:
        (value,) = self._pop(1, pos)
        return _Stop(value)

    def _op_unicode(self, op: pickletools.OpcodeInfo, pos: int) -> None:
        line, start, end = self._line(pos)
        if line is None:
            self.stack.append(_TextRef(start, end - start, "raw-unicode-escape"))
        else:
            self.stack.append(line.decode("raw-unicode-escape"))

    def _op_build(self, op: pickletools.OpcodeInfo, pos: int) -> None:
        inst, state = self._pop(2, pos)
        self._check_taint([inst, state], pos)
        self.stack.append(inst)  # BUILD leaves the object it updated on the stack

    def _op_push_unknown(self, op: pickletools.OpcodeInfo, pos: int) -> None:
        self.stack.append(_UNKNOWN)

    def _op_generic(self, op: pickletools.OpcodeInfo, pos: int) -> None:
        """Any other opcode: its stack effect comes from the pickletools descriptor."""
        arg = self._generic_arg(op, pos)
        to_mark, n_before, n_after = _SHAPES[ord(op.code)]
        popped = self._pop_mark(pos) if to_mark else []
        if n_before:
            popped += self._pop(n_before, pos)
        if popped:
            self._check_taint(popped, pos)
        if n_after == 1 and isinstance(arg, int | str) and op.name != "PERSID":
            self.stack.append(arg)  # ints (the legacy torch magic number) and strings
        else:
            self.stack.extend([_UNKNOWN] * n_after)

    def _int_arg(self, op: pickletools.OpcodeInfo, pos: int) -> int:
        if op.arg is not None and op.arg.n == pickletools.UP_TO_NEWLINE:
            line, _start, _end = self._line(pos)
            if line is None:
                raise self._fail(pos, f"{op.name} argument longer than 64 KiB")
            value = _read_arg(op, io.BytesIO(line + b"\n"))
        else:
            value = _read_arg(op, self.src)
        if not isinstance(value, int):
            raise self._fail(pos, f"{op.name} argument is not an integer")
        return value

    def _generic_arg(self, op: pickletools.OpcodeInfo, pos: int) -> object:
        if op.arg is None:
            return None
        if op.arg.n == pickletools.UP_TO_NEWLINE:
            line, _start, _end = self._line(pos)
            if line is None:
                return _UNKNOWN  # e.g. a huge protocol 0 integer: harmless, value unneeded
            return _read_arg(op, io.BytesIO(line + b"\n"))
        # At most 255 bytes (LONG1); longer variable-length arguments are all in _SIZED.
        if op.arg.n < 0 and op.arg.n != pickletools.TAKEN_FROM_ARGUMENT1:  # pragma: no cover
            raise self._fail(pos, f"unsupported opcode {op.name}")
        return _read_arg(op, self.src)

    def _reduce(self, func: object, args: object, pos: int) -> Iterator[GlobalRef] | None:
        stack = self.stack
        if isinstance(func, _Global) and (func.module, func.qualname) == _LOAD_FROM_BYTES:
            payload = args.items[0] if isinstance(args, _Tuple) and len(args.items) == 1 else None
            stack.append(_UNKNOWN)
            if isinstance(payload, BytesRef | _Latin1):
                return self._nested(payload, pos)
            self._emit_lfb_problem(
                pos,
                "torch.storage._load_from_bytes is called on something other than literal "
                "bytes, so the pickle it would load cannot be scanned",
            )
            return None
        self._check_taint([func, args], pos)
        if (
            isinstance(func, _Global)
            and (func.module, func.qualname) == _CODECS_ENCODE
            and isinstance(args, _Tuple)
            and len(args.items) == 2
            and isinstance(args.items[0], str | _TextRef)
            and isinstance(args.items[1], str)
            and args.items[1].lower() in _LATIN1_NAMES
        ):
            text = args.items[0]
            stack.append(_Latin1(text, text.offset if isinstance(text, _TextRef) else pos))
        else:
            stack.append(_UNKNOWN)
        return None

    def _nested(self, payload: BytesRef | _Latin1, pos: int) -> Iterator[GlobalRef]:
        """Scan the torch stream ``_load_from_bytes`` would load; restores our position after."""
        if self.depth >= _MAX_DEPTH:
            raise ScanError(f"torch storages nested more than {_MAX_DEPTH} deep ({self.where})")
        offset = payload.offset
        label = f"nested storage (torch.storage._load_from_bytes) at byte {offset}"
        where = label if self.where == "top level" else f"{self.where} > {label}"
        src = self.src
        saved = src.tell()
        try:
            sub: _Window | _Latin1Reader
            if isinstance(payload, BytesRef):
                sub = _Window(src, payload.offset, payload.offset + payload.length)
            elif isinstance(payload.text, str):
                try:
                    data = payload.text.encode("latin-1")
                except UnicodeEncodeError:
                    raise ScanError(
                        f"storage payload text is not latin-1 bytes ({where})"
                    ) from None
                sub = _Window(io.BytesIO(data), 0, len(data))
            else:
                ref = payload.text
                sub = _Latin1Reader(_Window(src, ref.offset, ref.offset + ref.length), ref.encoding)
            yield from _scan_torch_payload(sub, where, self.depth + 1)
        finally:
            src.seek(saved)


class _Stop:
    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value


# --------------------------------------------------------------------------- stream kinds


def _scan_pickles(
    src: _Window | _Latin1Reader, where: str, depth: int, count: int
) -> Iterator[GlobalRef]:
    """Scan ``count`` consecutive pickles (a legacy torch stream is 5 of them)."""
    for i in range(count):
        value = yield from _PickleScanner(src, where, depth).scan()
        if i == 0 and not (isinstance(value, int) and value == TORCH_LEGACY_MAGIC):
            raise ScanError(f"{where} is not a torch.save stream (no torch magic number)")


def _scan_zip(src: _Window | _Latin1Reader, where: str, depth: int) -> Iterator[GlobalRef]:
    """Scan every ``*.pkl`` record of a torch zip file (``archive/data.pkl``...)."""
    import zipfile
    import zlib

    zip_errors: tuple[type[BaseException], ...] = (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        RuntimeError,
        NotImplementedError,
        OSError,
        EOFError,
        ValueError,
        zlib.error,
    )
    try:
        archive = zipfile.ZipFile(src)  # type: ignore[arg-type]
        # Every entry, duplicates included: a zip reader other than Python's (torch uses miniz)
        # might pick a different one of two records with the same name.
        members = [info for info in archive.infolist() if info.filename.endswith(".pkl")]
    except zip_errors as exc:
        raise ScanError(f"unreadable zip file ({where}): {exc}") from None
    if not members:
        raise ScanError(f"zip file without a .pkl record ({where}): not a torch checkpoint")
    for info in members:
        label = f"zip member {info.filename}"
        member_where = label if where == "top level" else f"{where} > {label}"
        try:
            with archive.open(info) as member:
                sub = _Window(member, 0, info.file_size)  # type: ignore[arg-type]
                yield from _PickleScanner(sub, member_where, depth).scan()
        except zip_errors as exc:
            raise ScanError(f"unreadable zip member ({member_where}): {exc}") from None


def _scan_torch_payload(
    src: _Window | _Latin1Reader, where: str, depth: int
) -> Iterator[GlobalRef]:
    """What ``torch.load(io.BytesIO(payload))`` would unpickle: a zip file or a legacy stream."""
    head = src.read(4)
    src.seek(0)
    if head == _ZIP_MAGIC:
        yield from _scan_zip(src, where, depth)
    else:
        yield from _scan_pickles(src, where, depth, _LEGACY_PICKLES)


def _scan_top(src: _Window, where: str) -> Iterator[GlobalRef]:
    head = src.read(4)
    src.seek(0)
    if not head:
        raise ScanError("empty file")
    if head == _ZIP_MAGIC:
        yield from _scan_zip(src, where, 0)
        return
    value = yield from _PickleScanner(src, where, 0).scan()
    if isinstance(value, int) and value == TORCH_LEGACY_MAGIC:
        # A legacy torch.save file: torch.load unpickles four more pickles after the magic
        # number, so a plain one-pickle scan would miss the object itself.
        for _ in range(_LEGACY_PICKLES - 1):
            yield from _PickleScanner(src, where, 0).scan()


# --------------------------------------------------------------------------- public API


def iter_globals(f: IO[bytes], where: str = "top level") -> Iterator[GlobalRef]:
    """Yield every global the pickle in binary file ``f`` would import, as it is found.

    ``f`` is read from its current position to its end: a pickle (protocols 0-5), a legacy
    ``torch.save`` stream, or a torch zip file. Pickles nested in torch storages are followed.
    Byte payloads are skipped with ``seek``, never read; an unseekable ``f`` is first spooled to a
    temporary file. Raises :class:`ScanError` when the stream is empty, truncated or not a
    pickle; globals found before that point have already been yielded.
    """
    seekable = False
    try:
        seekable = f.seekable()
    except (AttributeError, OSError, ValueError):
        pass
    if seekable:
        yield from _iter_seekable(f, where)
        return
    import shutil
    import tempfile

    # A pipe or socket: spool it (to disk beyond 16 MiB) so payloads can still be skipped.
    with tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024) as spool:
        shutil.copyfileobj(f, spool, _CHUNK)
        spool.seek(0)
        yield from _iter_seekable(spool, where)  # type: ignore[arg-type]


def _iter_seekable(f: IO[bytes], where: str) -> Iterator[GlobalRef]:
    start = f.tell()
    end = f.seek(0, os.SEEK_END)
    f.seek(start)
    yield from _scan_top(_Window(f, start, end), where)


def _iter_payload_globals(f: IO[bytes], where: str) -> Iterator[GlobalRef]:
    """Globals of a torch storage payload (what ``torch.load(f)`` unpickles); for the loader."""
    start = f.tell()
    end = f.seek(0, os.SEEK_END)
    yield from _scan_torch_payload(_Window(f, start, end), where, 1)


def scan_stream(f: IO[bytes], allowlist: Allowlist, label: str = "<stream>") -> Verdict:
    """Scan binary file ``f`` statically and judge every global against ``allowlist``.

    Nothing is imported or unpickled. An unreadable, empty, truncated or non-pickle stream gives
    a Verdict with ``error`` set (never an exception).
    """
    verdict = Verdict(path=label)
    seen: set[tuple[str, str, str | None]] = set()
    try:
        for ref in iter_globals(f):
            key = (ref.module, ref.qualname, ref.problem)
            if key in seen:
                continue
            seen.add(key)
            verdict.globals.append(ref)
            if ref.problem is not None:
                verdict.refused.append((ref, ref.problem))
                continue
            decision = allowlist.check(ref.module, ref.qualname)
            if not decision.allowed:
                verdict.refused.append((ref, decision.reason))
                if decision.missing:
                    verdict.missing.append(ref)
    except ScanError as exc:
        verdict.error = str(exc)
    except OSError as exc:
        verdict.error = f"unreadable: {exc}"
    return verdict


def scan_file(path: str | os.PathLike[str], allowlist: Allowlist) -> Verdict:
    """Scan the pickle or torch file at ``path``; see :func:`scan_stream`."""
    label = os.fspath(path)
    try:
        with open(path, "rb", buffering=256 * 1024) as f:
            head = f.read(len(_LFS_MAGIC))
            if head == _LFS_MAGIC:
                return Verdict(
                    path=label,
                    error="a Git LFS pointer file, not the pickle itself (run `git lfs pull`)",
                )
            f.seek(0)
            return scan_stream(f, allowlist, label)
    except OSError as exc:
        return Verdict(path=label, error=f"unreadable: {exc}")


def pickle_protocol(path: str | os.PathLike[str]) -> int:
    """The protocol of the pickle at ``path``: its leading PROTO opcode, 0 when it has none."""
    with open(path, "rb") as f:
        head = f.read(2)
    if len(head) == 2 and head[0] == 0x80:
        return head[1]
    return 0
