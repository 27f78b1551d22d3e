"""The one pickle interpreter: the same opcode walk scans (judges, builds nothing) and loads.

Modelled on torch's ``_weights_only_unpickler.Unpickler``: one reader for GLOBAL/STACK_GLOBAL, one
dispatch, and every global judged by the role its use gives it (:class:`Role`): referenced,
instantiated (NEWOBJ, NEWOBJ_EX, copyreg), called (REDUCE, only the table of
:mod:`pytest_modelpack.safety.calls` plus what the live model's pickle calls) or built (BUILD, only
for what this stream itself constructed). In scan mode every use is recorded and the walk goes on
over placeholder values (:mod:`pytest_modelpack.safety.values`); in load mode each use is judged
by the policy before it happens and a refusal stops the load. So what is judged is what runs.

Resources are bounded: every read is checked against the bytes present before anything is
allocated, the memo is a dict (an index is not a size), steps and materialised bytes are capped.
"""

from __future__ import annotations

import _compat_pickle
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from pytest_modelpack.safety.calls import (
    REDUCE_TABLE,
    SPECIAL,
    check_call,
    is_latin1_call,
    load_from_bytes_arg,
)
from pytest_modelpack.safety.refs import BytesRef, GlobalRef, Role, ScanError
from pytest_modelpack.safety.sources import Source
from pytest_modelpack.safety.values import Latin1, Sym, TextRef, kind_of

__all__ = ["Persid", "Refused", "Session", "Machine", "call_shape"]

# Text longer than this is not held in scan mode: only a (protocol 0-2) payload is that long.
_TEXT_LIMIT = 64 * 1024
_LINE_LIMIT = 64 * 1024
_LONG_LIMIT = 64 * 1024  # bytes of a LONG4 integer: no model needs a 500k-digit int
_CHUNK = 1 << 20

_LOAD_FROM_BYTES = ("torch.storage", "_load_from_bytes")
_RECONSTRUCTOR_BASES = frozenset(
    ("builtins", n) for n in ("object", "dict", "list", "set", "tuple", "int", "float", "str")
)


class Persid(Enum):
    """What a persistent id means in the stream being read."""

    REFUSE = "refuse"  # a golden: pickle.dump never writes one
    STORAGE = "storage"  # a torch.save stream: ('storage', type, key, location, numel, ...)
    OPAQUE = "opaque"  # the live model's own in-memory pickle: an out-of-band storage


class Refused(Exception):
    """Load mode: a use of a global the policy refuses (or a call whose arguments fail)."""

    def __init__(self, ref: GlobalRef, reason: str) -> None:
        super().__init__(f"{ref.name} ({ref.role}): {reason}")
        self.ref = ref
        self.reason = reason


@dataclass
class Session:
    """State shared by the machines of one file (the top stream and its nested payloads).

    ``judge`` is None in scan mode (uses are recorded in ``refs``); in load mode it decides each
    use. ``nested`` reads a ``_load_from_bytes`` payload (see :mod:`.streams`).
    """

    size: int
    judge: Callable[[GlobalRef], Any] | None = None
    map_location: Any = "cpu"
    nested: Any = None  # a streams.Reader: payload() and storage_record()
    refs: list[GlobalRef] = field(default_factory=list)
    steps: int = 0
    step_limit: int = 0
    materialised: int = 0
    material_limit: int = 0
    seen_payloads: dict[tuple[int, int], Any] = field(default_factory=dict)
    globals_by_id: dict[int, tuple[Any, tuple[str, str]]] = field(default_factory=dict)
    produced: dict[int, tuple[Any, tuple[str, str]]] = field(default_factory=dict)
    placeholders: dict[int, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Each opcode is at least one byte; nested payloads are read at most once more.
        self.step_limit = self.step_limit or 4 * self.size + 1_000_000
        self.material_limit = self.material_limit or 2 * self.size + (16 << 20)

    @property
    def loading(self) -> bool:
        return self.judge is not None

    def take(self, n: int, what: str) -> None:
        """Account ``n`` bytes materialised in load mode; refuse beyond the file's own size."""
        self.materialised += n
        if self.materialised > self.material_limit:
            raise ScanError(
                f"{what} would bring the bytes held to {self.materialised}, more than the "
                f"golden's {self.size} bytes allow"
            )


def call_shape(args: object, session: Session) -> str:
    """The kinds of a call's arguments, the same in both modes: ``str,str`` / ``G:mod.name``."""
    if not isinstance(args, tuple):
        return f"*{kind_of(args)}"
    parts = []
    for value in args:
        name = _global_name(session, value)
        if name is not None:
            parts.append(f"G:{name[0]}.{name[1]}")
            continue
        made = _producer(session, value)
        parts.append(f"O:{made[0]}.{made[1]}" if made is not None else kind_of(value))
    return ",".join(parts)


def _global_name(session: Session, value: object) -> tuple[str, str] | None:
    if isinstance(value, _GlobalSym):
        return value.name
    hit = session.globals_by_id.get(id(value))
    return hit[1] if hit is not None and hit[0] is value else None


def _producer(session: Session, value: object) -> tuple[str, str] | None:
    if isinstance(value, Sym):
        return value.producer
    hit = session.produced.get(id(value))
    return hit[1] if hit is not None and hit[0] is value else None


class _GlobalSym:
    """Scan mode: what GLOBAL pushes."""

    __slots__ = ("name",)

    def __init__(self, name: tuple[str, str]) -> None:
        self.name = name


class _Mark:
    __slots__ = ()


class Machine:
    """Interprets ONE pickle (up to its STOP) of ``src``; :meth:`run` returns what STOP pops."""

    def __init__(
        self, session: Session, src: Source, where: str, depth: int, persid: Persid
    ) -> None:
        self.s = session
        self.src = src
        self.where = where
        self.depth = depth
        self.persid = persid
        self.loading = session.loading
        self.stack: list[Any] = []
        self.marks: list[int] = []
        # pickle.dump numbers the memo 0, 1, 2...: a list holds those (8 bytes a value, where a
        # dict takes ~100: tuple floods are memoized), a dict any index written out of order.
        self.memo_list: list[Any] = []
        self.memo: dict[int, Any] = {}
        self.proto = 0
        self.start = src.tell()

    # -- the Context protocol of calls.py -----------------------------------------------------

    def global_name(self, value: object) -> tuple[str, str] | None:
        return _global_name(self.s, value)

    def producer(self, value: object) -> tuple[str, str] | None:
        return _producer(self.s, value)

    # -- errors and uses ----------------------------------------------------------------------

    def fail(self, pos: int, what: str) -> ScanError:
        return ScanError(f"malformed pickle ({self.where}): {what} at byte {pos}")

    def truncated(self, pos: int) -> ScanError:
        return ScanError(
            f"truncated pickle ({self.where}): data ends inside the opcode at byte {pos}"
        )

    def use(self, ref: GlobalRef) -> Any:
        """Record (scan) or judge (load) one use; a refusal in load mode raises :class:`Refused`."""
        if not self.loading:
            self.s.refs.append(ref)
            return None
        assert self.s.judge is not None
        decision = self.s.judge(ref)
        if not decision.allowed:
            raise Refused(ref, decision.reason)
        return decision

    def problem(self, pos: int, module: str, qualname: str, role: Role, why: str) -> None:
        self.use(GlobalRef(module, qualname, self.where, pos, problem=why, role=role))

    # -- stack ---------------------------------------------------------------------------------

    def pop(self, n: int, pos: int) -> list[Any]:
        base = self.marks[-1] if self.marks else 0
        if len(self.stack) - n < base:
            raise self.fail(pos, "stack underflow")
        if n == 0:
            return []
        items = self.stack[-n:]
        del self.stack[-n:]
        return items

    def pop_mark(self, pos: int) -> list[Any]:
        if not self.marks:
            raise self.fail(pos, "no MARK on the stack")
        base = self.marks.pop()
        items = self.stack[base:]
        del self.stack[base:]
        return items

    def top(self, pos: int) -> Any:
        base = self.marks[-1] if self.marks else 0
        if len(self.stack) <= base:
            raise self.fail(pos, "stack underflow")
        return self.stack[-1]

    # -- readers -------------------------------------------------------------------------------

    def read(self, n: int, pos: int) -> bytes:
        left = self.src.remaining()
        if n < 0 or (left is not None and n > left):
            raise self.truncated(pos)
        if self.loading:
            self.s.take(n, "a bytes value")
        data = self.src.read(n)
        if len(data) != n:
            raise self.truncated(pos)
        return data

    def skip(self, n: int, pos: int) -> int:
        start = self.src.tell()
        if n < 0 or not self.src.skip(n):
            raise self.truncated(pos)
        return start

    def line(self, pos: int) -> tuple[bytes | None, int]:
        """A newline-terminated argument: (content, or None when too long to hold; start)."""
        src = self.src
        start = src.tell()
        data = src.readline(_LINE_LIMIT + 1)
        if data.endswith(b"\n"):
            return data[:-1], start
        if len(data) <= _LINE_LIMIT:
            raise self.truncated(pos)
        while True:
            chunk = src.readline(_CHUNK)
            if not chunk:
                raise self.truncated(pos)
            if chunk.endswith(b"\n"):
                return None, start

    def short_line(self, pos: int, what: str) -> bytes:
        data, _ = self.line(pos)
        if data is None:
            raise self.fail(pos, f"{what} longer than 64 KiB")
        return data

    def sized(self, fmt: str, pos: int) -> int:
        size = struct.calcsize(fmt)
        (n,) = struct.unpack(fmt, self.read_raw(size, pos))
        return int(n)

    def read_raw(self, n: int, pos: int) -> bytes:
        data = self.src.read(n)
        if len(data) != n:
            raise self.truncated(pos)
        return data

    # -- the ONE global reader -----------------------------------------------------------------

    def resolve(self, module: object, qualname: object, pos: int) -> Any:
        """GLOBAL / STACK_GLOBAL / INST: judge the name as a reference, then push it."""
        if type(module) is not str or type(qualname) is not str:
            self.problem(
                pos,
                "<non-literal>",
                "<non-literal>",
                Role.REFERENCE,
                "STACK_GLOBAL operands are not literal strings",
            )
            return Sym("obj")
        if self.proto < 3:  # pickle's fix_imports, from the protocol in force (as pickle does)
            if (module, qualname) in _compat_pickle.NAME_MAPPING:
                module, qualname = _compat_pickle.NAME_MAPPING[(module, qualname)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        name = (module, qualname)
        self.use(GlobalRef(module, qualname, self.where, pos, role=Role.REFERENCE))
        if not self.loading:
            return _GlobalSym(name)
        sys.audit("pickle.find_class", module, qualname)  # as pickle's own find_class does
        if name == _LOAD_FROM_BYTES:
            obj: Any = _LoadFromBytes  # never torch's own: it unpickles with weights_only=False
        else:
            obj = _import(module, qualname)
        self.s.globals_by_id[id(obj)] = (obj, name)
        return obj

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> Any:
        src = self.src
        table = _DISPATCH
        s = self.s
        while True:
            pos = src.tell()
            code = src.read(1)
            if not code:
                if pos == self.start:
                    raise ScanError(f"truncated stream ({self.where}): no pickle at byte {pos}")
                raise ScanError(
                    f"truncated pickle ({self.where}): data ends at byte {pos} before STOP"
                )
            s.steps += 1
            if s.steps > s.step_limit:
                raise ScanError(f"more than {s.step_limit} pickle instructions ({self.where})")
            handler = table.get(code[0])
            if handler is None:
                raise ScanError(
                    f"not a pickle ({self.where}): unknown opcode {code!r} at byte {pos}"
                )
            try:
                result = handler(self, pos)
            except (ValueError, struct.error, UnicodeError, OverflowError) as exc:
                raise self.fail(pos, f"{type(exc).__name__}: {exc}") from None
            if result is not None:
                return result[0]


class _LoadFromBytes:
    """Stands in for ``torch.storage._load_from_bytes`` in load mode: the interpreter reads the
    nested payload itself (torch's own would ``torch.load(weights_only=False)`` it)."""


def _import(module: str, qualname: str) -> Any:
    import importlib

    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


# --------------------------------------------------------------------------- opcode handlers
# Each takes (machine, pos) and returns None, or a 1-tuple with the value STOP pops.


def _push(value: Any) -> Callable[[Machine, int], None]:
    def handler(m: Machine, pos: int) -> None:
        m.stack.append(value)

    return handler


def _container(kind: str, make: Callable[[], Any]) -> Callable[[Machine, int], None]:
    def handler(m: Machine, pos: int) -> None:
        m.stack.append(make() if m.loading else Sym(kind))

    return handler


def op_mark(m: Machine, pos: int) -> None:
    m.marks.append(len(m.stack))


def op_stop(m: Machine, pos: int) -> tuple[Any]:
    (value,) = m.pop(1, pos)
    return (value,)


def op_pop(m: Machine, pos: int) -> None:
    base = m.marks[-1] if m.marks else 0
    if len(m.stack) > base:
        m.stack.pop()
    elif m.marks:
        m.marks.pop()  # pickle's POP discards a MARK when nothing is above it
    else:
        raise m.fail(pos, "stack underflow")


def op_pop_mark(m: Machine, pos: int) -> None:
    m.pop_mark(pos)


def op_dup(m: Machine, pos: int) -> None:
    m.stack.append(m.top(pos))


def op_proto(m: Machine, pos: int) -> None:
    proto = m.read_raw(1, pos)[0]
    if proto > 5:
        raise m.fail(pos, f"unsupported pickle protocol {proto}")
    m.proto = proto


def op_frame(m: Machine, pos: int) -> None:
    m.read_raw(8, pos)  # framing only groups opcodes


def _int_line(m: Machine, pos: int, long: bool) -> None:
    text = m.short_line(pos, "integer")
    if long and text.endswith(b"L"):
        text = text[:-1]
    if text in (b"00", b"01") and not long:
        m.stack.append(text == b"01")
        return
    m.stack.append(int(text))


def op_int(m: Machine, pos: int) -> None:
    _int_line(m, pos, False)


def op_long(m: Machine, pos: int) -> None:
    _int_line(m, pos, True)


def op_binint(m: Machine, pos: int) -> None:
    m.stack.append(struct.unpack("<i", m.read_raw(4, pos))[0])


def op_binint1(m: Machine, pos: int) -> None:
    m.stack.append(m.read_raw(1, pos)[0])


def op_binint2(m: Machine, pos: int) -> None:
    m.stack.append(struct.unpack("<H", m.read_raw(2, pos))[0])


def op_long1(m: Machine, pos: int) -> None:
    n = m.read_raw(1, pos)[0]
    m.stack.append(int.from_bytes(m.read_raw(n, pos), "little", signed=True))


def op_long4(m: Machine, pos: int) -> None:
    n = m.sized("<i", pos)
    if n < 0 or n > _LONG_LIMIT:
        raise m.fail(pos, f"LONG4 of {n} bytes")
    m.stack.append(int.from_bytes(m.read(n, pos), "little", signed=True))


def op_float(m: Machine, pos: int) -> None:
    m.stack.append(float(m.short_line(pos, "float")))


def op_binfloat(m: Machine, pos: int) -> None:
    m.stack.append(struct.unpack(">d", m.read_raw(8, pos))[0])


def _text(m: Machine, n: int, pos: int) -> None:
    if not m.loading and n > _TEXT_LIMIT:
        m.stack.append(TextRef(m.skip(n, pos), n, "utf-8"))
        return
    m.stack.append(m.read(n, pos).decode("utf-8", "surrogatepass"))


def op_short_binunicode(m: Machine, pos: int) -> None:
    _text(m, m.read_raw(1, pos)[0], pos)


def op_binunicode(m: Machine, pos: int) -> None:
    _text(m, m.sized("<I", pos), pos)


def op_binunicode8(m: Machine, pos: int) -> None:
    _text(m, m.sized("<Q", pos), pos)


def op_unicode(m: Machine, pos: int) -> None:
    if m.loading:
        left = m.src.remaining()
        data = m.src.readline(-1 if left is None else left)
        if not data.endswith(b"\n"):
            raise m.truncated(pos)
        m.s.take(len(data), "a text value")
        m.stack.append(data[:-1].decode("raw-unicode-escape"))
        return
    line, start = m.line(pos)
    if line is None:
        m.stack.append(TextRef(start, m.src.tell() - 1 - start, "raw-unicode-escape"))
    else:
        m.stack.append(line.decode("raw-unicode-escape"))


def _str2(m: Machine, n: int, pos: int) -> None:
    """Python 2 str: the default Unpickler decodes it as ASCII."""
    if not m.loading and n > _TEXT_LIMIT:
        m.skip(n, pos)
        m.stack.append(Sym("str"))
        return
    m.stack.append(m.read(n, pos).decode("ascii"))


def op_binstring(m: Machine, pos: int) -> None:
    n = m.sized("<i", pos)
    if n < 0:
        raise m.fail(pos, "BINSTRING with negative length")
    _str2(m, n, pos)


def op_short_binstring(m: Machine, pos: int) -> None:
    _str2(m, m.read_raw(1, pos)[0], pos)


def op_string(m: Machine, pos: int) -> None:
    import codecs

    data = m.short_line(pos, "STRING")
    if len(data) < 2 or data[0] != data[-1] or data[:1] not in (b"'", b'"'):
        raise m.fail(pos, "STRING argument is not quoted")
    m.stack.append(codecs.escape_decode(data[1:-1])[0].decode("ascii"))


def _bytes(m: Machine, n: int, pos: int) -> None:
    if m.loading:
        m.stack.append(m.read(n, pos))
    else:
        m.stack.append(BytesRef(m.skip(n, pos), n))


def op_short_binbytes(m: Machine, pos: int) -> None:
    _bytes(m, m.read_raw(1, pos)[0], pos)


def op_binbytes(m: Machine, pos: int) -> None:
    _bytes(m, m.sized("<I", pos), pos)


def op_binbytes8(m: Machine, pos: int) -> None:
    _bytes(m, m.sized("<Q", pos), pos)


def op_bytearray8(m: Machine, pos: int) -> None:
    n = m.sized("<Q", pos)
    if m.loading:
        m.stack.append(bytearray(m.read(n, pos)))
    else:
        m.skip(n, pos)
        m.stack.append(Sym("bytearray"))  # mutable: never accepted as a nested payload


def op_buffer(m: Machine, pos: int) -> None:
    m.problem(
        pos,
        "<out-of-band buffer>",
        "NEXT_BUFFER",
        Role.REFERENCE,
        "out-of-band buffers (protocol 5 NEXT_BUFFER/READONLY_BUFFER): pickle.dump never writes "
        "them into a file",
    )
    m.stack.append(Sym("obj"))


def op_readonly_buffer(m: Machine, pos: int) -> None:
    m.top(pos)  # acts on the buffer NEXT_BUFFER pushed (already refused)


def op_tuple(m: Machine, pos: int) -> None:
    m.stack.append(tuple(m.pop_mark(pos)))


def _tuple_n(n: int) -> Callable[[Machine, int], None]:
    def handler(m: Machine, pos: int) -> None:
        m.stack.append(tuple(m.pop(n, pos)))

    return handler


def op_list(m: Machine, pos: int) -> None:
    items = m.pop_mark(pos)
    m.stack.append(items if m.loading else Sym("list"))


def op_dict(m: Machine, pos: int) -> None:
    items = m.pop_mark(pos)
    if len(items) % 2:
        raise m.fail(pos, "DICT with an odd number of items")
    if m.loading:
        try:
            m.stack.append({items[i]: items[i + 1] for i in range(0, len(items), 2)})
        except TypeError as exc:  # an unhashable key
            raise m.fail(pos, f"DICT: {exc}") from None
    else:
        m.stack.append(Sym("dict"))


def op_frozenset(m: Machine, pos: int) -> None:
    items = m.pop_mark(pos)
    try:
        m.stack.append(frozenset(items) if m.loading else Sym("set"))
    except TypeError as exc:
        raise m.fail(pos, f"FROZENSET: {exc}") from None


def _target(m: Machine, pos: int, kinds: tuple[type, ...], what: str, op: str) -> Any:
    """The container APPEND(S)/SETITEM(S)/ADDITEMS mutate: only real containers of that kind
    (and instances of classes this stream built, whose methods are those classes' own)."""
    target = m.top(pos)
    if isinstance(target, Sym) and target.kind in (what, "obj"):
        return target
    if not isinstance(target, Sym) and isinstance(target, kinds):
        return target
    # e.g. SETITEM on a bytearray rewrites bytes after they were judged: a mutation gadget.
    kind = kind_of(target)
    m.problem(pos, "<value>", kind, Role.REDUCE, f"{op} mutates a {kind}, not a {what}")
    return None


def op_append(m: Machine, pos: int) -> None:
    (value,) = m.pop(1, pos)
    target = _target(m, pos, (list,), "list", "APPEND")
    if m.loading and target is not None:
        target.append(value)


def op_appends(m: Machine, pos: int) -> None:
    items = m.pop_mark(pos)
    target = _target(m, pos, (list,), "list", "APPENDS")
    if m.loading and target is not None:
        target.extend(items)


def op_setitem(m: Machine, pos: int) -> None:
    key, value = m.pop(2, pos)
    target = _target(m, pos, (dict,), "dict", "SETITEM")
    if m.loading and target is not None:
        try:
            target[key] = value
        except TypeError as exc:
            raise m.fail(pos, f"SETITEM: {exc}") from None


def op_setitems(m: Machine, pos: int) -> None:
    items = m.pop_mark(pos)
    if len(items) % 2:
        raise m.fail(pos, "SETITEMS with an odd number of items")
    target = _target(m, pos, (dict,), "dict", "SETITEMS")
    if m.loading and target is not None:
        try:
            for i in range(0, len(items), 2):
                target[items[i]] = items[i + 1]
        except TypeError as exc:
            raise m.fail(pos, f"SETITEMS: {exc}") from None


def op_additems(m: Machine, pos: int) -> None:
    items = m.pop_mark(pos)
    target = _target(m, pos, (set,), "set", "ADDITEMS")
    if m.loading and target is not None:
        try:
            target.update(items)
        except TypeError as exc:
            raise m.fail(pos, f"ADDITEMS: {exc}") from None


def _memo_index(m: Machine, pos: int, fmt: str | None) -> int:
    if fmt is None:
        return int(m.short_line(pos, "memo index"))
    return m.sized(fmt, pos)


def _put(fmt: str | None) -> Callable[[Machine, int], None]:
    def handler(m: Machine, pos: int) -> None:
        idx = _memo_index(m, pos, fmt)
        if idx < 0:
            raise m.fail(pos, "negative memo index")
        _memo_put(m, idx, m.top(pos), pos)

    return handler


def _memo_put(m: Machine, idx: int, value: Any, pos: int) -> None:
    stored = len(m.memo_list) + len(m.memo)
    if idx == len(m.memo_list):
        m.memo_list.append(value)
        return
    if idx > 2 * stored + 1024:
        # pickle.dump numbers the memo in order; pickle's own unpickler sizes its memo to the
        # index (2 GB from 9 bytes). Ours costs nothing for it, but no honest file does this.
        m.problem(
            pos,
            "<memo>",
            f"index {idx}",
            Role.REFERENCE,
            f"a memo index far beyond the {stored} values stored: a memory bomb for pickle's "
            "own unpickler",
        )
    if idx < len(m.memo_list):
        m.memo_list[idx] = value
    else:
        m.memo[idx] = value


def op_memoize(m: Machine, pos: int) -> None:
    _memo_put(m, len(m.memo_list) + len(m.memo), m.top(pos), pos)


def _get(fmt: str | None) -> Callable[[Machine, int], None]:
    def handler(m: Machine, pos: int) -> None:
        idx = _memo_index(m, pos, fmt)
        if 0 <= idx < len(m.memo_list):
            m.stack.append(m.memo_list[idx])
        elif idx in m.memo:
            m.stack.append(m.memo[idx])
        else:
            raise m.fail(pos, f"memo key {idx} was never stored")

    return handler


def op_ext(m: Machine, pos: int) -> None:
    m.problem(
        pos,
        "<extension registry>",
        "EXT",
        Role.REFERENCE,
        "names a global through the copyreg extension registry, which cannot be checked",
    )
    m.stack.append(Sym("obj"))


def _ext(n: int) -> Callable[[Machine, int], None]:
    def handler(m: Machine, pos: int) -> None:
        m.read_raw(n, pos)
        op_ext(m, pos)

    return handler


def op_global(m: Machine, pos: int) -> None:
    module = m.short_line(pos, "global name").decode("utf-8")
    qualname = m.short_line(pos, "global name").decode("utf-8")
    m.stack.append(m.resolve(module, qualname, pos))


def op_stack_global(m: Machine, pos: int) -> None:
    module, qualname = m.pop(2, pos)
    m.stack.append(m.resolve(module, qualname, pos))


def op_persid(m: Machine, pos: int) -> None:
    data = m.short_line(pos, "persistent id")
    _persistent(m, data.decode("ascii"), pos)


def op_binpersid(m: Machine, pos: int) -> None:
    (pid,) = m.pop(1, pos)
    _persistent(m, pid, pos)


def _persistent(m: Machine, pid: Any, pos: int) -> None:
    if m.persid is Persid.OPAQUE:
        m.stack.append(Sym("storage"))
        return
    if m.persid is Persid.REFUSE:
        m.problem(
            pos,
            "<persistent id>",
            "PERSID",
            Role.REFERENCE,
            "a persistent id: pickle.dump never writes one, and only a custom loader could "
            "resolve it",
        )
        m.stack.append(Sym("obj"))
        return
    assert m.s.nested is not None
    m.stack.append(m.s.nested.storage_record(m, pid, pos))


def _call_args(m: Machine, pos: int, args: Any, op: str) -> tuple[Any, ...] | None:
    if isinstance(args, tuple):
        return args
    m.problem(
        pos, "<arguments>", op, Role.REDUCE, f"{op} arguments are a {kind_of(args)}, not a tuple"
    )
    return None


def op_reduce(m: Machine, pos: int) -> None:
    func, args = m.pop(2, pos)
    m.stack.append(_call(m, pos, func, args, "REDUCE"))


def _call(m: Machine, pos: int, func: Any, args: Any, op: str) -> Any:
    name = m.global_name(func)
    if name is None:
        m.problem(
            pos,
            "<value>",
            kind_of(func),
            Role.REDUCE,
            f"{op} calls a value the pickle built itself, not a named global",
        )
        return Sym("obj")
    call = _call_args(m, pos, args, op)
    if call is None:
        return Sym("obj")
    ref = GlobalRef(name[0], name[1], m.where, pos, role=Role.REDUCE, shape=call_shape(call, m.s))
    why = check_call(name, call, m)
    if why is None and name in SPECIAL:
        why = _special_problem(m, name, call)
    m.use(ref if why is None else replace(ref, problem=f"call refused: {why}"))
    if why is not None:  # scan mode goes on (load mode raised): the call never happens
        return Sym("obj", name)
    if name in SPECIAL:
        return _special(m, pos, name, call)
    if not m.loading:
        return Sym("obj", name, call if name == ("numpy", "dtype") else ())
    if name in REDUCE_TABLE:
        try:
            result = func(*call)
        except Exception as exc:  # a table callable on arguments its check let through
            raise m.fail(pos, f"{name[0]}.{name[1]} failed: {type(exc).__name__}: {exc}") from None
    else:
        result = func(*call)  # trusted code: its own errors are the LOAD ERROR diagnosis's
    if name == ("torch._utils", "_rebuild_sparse_tensor"):
        import torch

        torch._utils._validate_loaded_sparse_tensors()  # indices in range, before any use
    m.s.produced[id(result)] = (result, name)
    return result


def _special_problem(m: Machine, name: tuple[str, str], call: tuple[Any, ...]) -> str | None:
    if name == _LOAD_FROM_BYTES:
        if load_from_bytes_arg(call) is None:
            return "its argument is not literal bytes, so the pickle it loads cannot be read first"
        if m.depth >= 1:
            return "a torch storage nested inside a nested storage: torch never writes one"
        return None
    if name == ("_codecs", "encode"):
        return None if is_latin1_call(call) else "only _codecs.encode(text, 'latin1') is allowed"
    # copyreg._reconstructor(cls, base, state) / copyreg.__newobj__(cls, *args)
    if not call or m.global_name(call[0]) is None:
        return "the class it instantiates is not a named global"
    if name == ("copyreg", "_reconstructor"):
        if len(call) != 3 or m.global_name(call[1]) not in _RECONSTRUCTOR_BASES:
            return "the base class is not a plain builtin type"
    return None


def _special(m: Machine, pos: int, name: tuple[str, str], call: tuple[Any, ...]) -> Any:
    if name == _LOAD_FROM_BYTES:
        assert m.s.nested is not None
        return m.s.nested.payload(m, call[0], pos)
    if name == ("_codecs", "encode"):
        text = call[0]
        if m.loading:
            return text.encode("latin-1")
        return Latin1(text, text.offset if isinstance(text, TextRef) else pos)
    cls = call[0]
    cls_name = m.global_name(cls)
    assert cls_name is not None
    return _instantiate(m, pos, cls, cls_name, call[1:] if name[1] == "__newobj__" else (), call)


def _instantiate(
    m: Machine, pos: int, cls: Any, cls_name: tuple[str, str], args: tuple[Any, ...], rc: Any = None
) -> Any:
    """``cls.__new__(cls, *args)`` (NEWOBJ, copyreg), judged as an instantiation of ``cls``."""
    m.use(GlobalRef(cls_name[0], cls_name[1], m.where, pos, role=Role.NEWOBJ))
    if not m.loading:
        return Sym("obj", cls_name)
    if not isinstance(cls, type):
        raise Refused(GlobalRef(*cls_name, m.where, pos, role=Role.NEWOBJ), "not a class")
    try:
        if rc is not None and len(rc) == 3 and m.global_name(rc[1]) != ("builtins", "object"):
            base = rc[1]
            obj = base.__new__(cls, rc[2])
            if rc[2] is not None:
                base.__init__(obj, rc[2])
        else:
            obj = cls.__new__(cls, *args)
    except (TypeError, ValueError) as exc:
        raise m.fail(pos, f"instantiating {cls_name[0]}.{cls_name[1]}: {exc}") from None
    m.s.produced[id(obj)] = (obj, cls_name)
    return obj


def op_newobj(m: Machine, pos: int) -> None:
    cls, args = m.pop(2, pos)
    m.stack.append(_newobj(m, pos, cls, args, None))


def op_newobj_ex(m: Machine, pos: int) -> None:
    cls, args, kwargs = m.pop(3, pos)
    m.stack.append(_newobj(m, pos, cls, args, kwargs))


def _newobj(m: Machine, pos: int, cls: Any, args: Any, kwargs: Any) -> Any:
    name = m.global_name(cls)
    if name is None:
        m.problem(
            pos, "<value>", kind_of(cls), Role.NEWOBJ, "NEWOBJ of a value that is not a named class"
        )
        return Sym("obj")
    call = _call_args(m, pos, args, "NEWOBJ")
    if call is None:
        return Sym("obj")
    if kwargs is not None and not isinstance(kwargs, dict | Sym):
        raise m.fail(pos, "NEWOBJ_EX keyword arguments are not a dict")
    if not kwargs or isinstance(kwargs, Sym):
        obj = _instantiate(m, pos, cls, name, call)
        if isinstance(kwargs, Sym) or not m.loading:
            return obj
        return obj
    m.use(GlobalRef(name[0], name[1], m.where, pos, role=Role.NEWOBJ))
    obj = cls.__new__(cls, *call, **kwargs)
    m.s.produced[id(obj)] = (obj, name)
    return obj


def _inst_like(m: Machine, pos: int, cls: Any, items: list[Any]) -> Any:
    """INST/OBJ (protocols 0-1): ``cls(*args)`` with arguments (a call), else ``cls.__new__``."""
    if items:
        return _call(m, pos, cls, tuple(items), "INST")
    name = m.global_name(cls)
    if name is None:
        m.problem(
            pos, "<value>", kind_of(cls), Role.NEWOBJ, "OBJ of a value that is not a named class"
        )
        return Sym("obj")
    return _instantiate(m, pos, cls, name, ())


def op_inst(m: Machine, pos: int) -> None:
    module = m.short_line(pos, "global name").decode("utf-8")
    qualname = m.short_line(pos, "global name").decode("utf-8")
    cls = m.resolve(module, qualname, pos)
    items = m.pop_mark(pos)
    m.stack.append(_inst_like(m, pos, cls, items))


def op_obj(m: Machine, pos: int) -> None:
    items = m.pop_mark(pos)
    if not items:
        raise m.fail(pos, "OBJ without a class")
    m.stack.append(_inst_like(m, pos, items[0], items[1:]))


def op_build(m: Machine, pos: int) -> None:
    (state,) = m.pop(1, pos)
    inst = m.top(pos)
    made = m.producer(inst)
    if made is None:
        m.problem(
            pos,
            "<value>",
            kind_of(inst),
            Role.BUILD,
            "BUILD on a value this pickle did not construct (a class, a module, a container)",
        )
        return
    ref = GlobalRef(made[0], made[1], m.where, pos, role=Role.BUILD)
    why = _build_problem(inst, made, state)
    if not m.loading:
        m.use(ref if why is None else replace(ref, problem=why))
        return
    decision = m.use(ref if why is None else replace(ref, problem=why))
    _build(m, inst, made, state, decision, ref)


_FORGED_DTYPE = "sets a numpy dtype's state (flags, item size, fields) to other than its own"


def _build_problem(inst: Any, made: tuple[str, str], state: Any) -> str | None:
    if made != ("numpy", "dtype"):
        return None
    # Never a dtype's flags or item size from a golden: only the state numpy itself gives it.
    code = inst.args[0] if isinstance(inst, Sym) and inst.args else None
    if not isinstance(inst, Sym):
        own = inst.__reduce__()
        if len(own) < 3 or own[2] != state:
            return _FORGED_DTYPE
        code = own[1][0]
    return None if _plain_dtype_state(code, state) else _FORGED_DTYPE


def _plain_dtype_state(code: object, state: object) -> bool:
    """The state numpy writes for a plain (non-structured) dtype of type string ``code``."""
    if not (isinstance(code, str) and code and isinstance(state, tuple) and len(state) in (8, 9)):
        return False
    if state[2:5] != (None, None, None) or not all(type(v) is int for v in state[5:8]):
        return False
    kind = code.lstrip("<>|=")[:1]
    flags = {"O": 63, "U": 8}.get(kind, 0)
    flexible = kind in ("V", "S", "U")
    return state[7] == flags and (flexible or state[5:7] == (-1, -1))


def _build(
    m: Machine, inst: Any, made: tuple[str, str], state: Any, decision: Any, ref: GlobalRef
) -> None:
    if made == ("numpy", "dtype"):
        return  # the state equals the dtype's own: nothing to do
    setstate = getattr(type(inst), "__setstate__", None)
    if setstate is not None:
        if (
            decision is not None
            and decision.kind == "project"
            and not _default_setstate(type(inst))
        ):
            raise Refused(
                ref,
                f"{type(inst).__qualname__} defines its own __setstate__, which the live "
                "model's own pickle never runs",
            )
        inst.__setstate__(state)
        return
    slots = None
    if isinstance(state, tuple) and len(state) == 2:
        state, slots = state
    if state:
        if not isinstance(state, dict):
            raise Refused(ref, "BUILD state is not a dict")
        inst_dict = inst.__dict__
        for k, v in state.items():
            inst_dict[sys.intern(k) if type(k) is str else k] = v
    if slots:
        if not isinstance(slots, dict) or any(
            not isinstance(k, str) or k.startswith("__") for k in slots
        ):
            raise Refused(ref, "BUILD slot state sets something other than plain attributes")
        for k, v in slots.items():
            setattr(inst, k, v)


def _default_setstate(cls: type) -> bool:
    """A ``__setstate__`` that only restores attributes: torch's nn.Module one."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return getattr(cls, "__setstate__", None) is torch.nn.Module.__setstate__


_DISPATCH: dict[int, Callable[[Machine, int], Any]] = {
    ord("("): op_mark,
    ord("."): op_stop,
    ord("0"): op_pop,
    ord("1"): op_pop_mark,
    ord("2"): op_dup,
    ord("F"): op_float,
    ord("I"): op_int,
    ord("J"): op_binint,
    ord("K"): op_binint1,
    ord("L"): op_long,
    ord("M"): op_binint2,
    ord("N"): _push(None),
    ord("P"): op_persid,
    ord("Q"): op_binpersid,
    ord("R"): op_reduce,
    ord("S"): op_string,
    ord("T"): op_binstring,
    ord("U"): op_short_binstring,
    ord("V"): op_unicode,
    ord("X"): op_binunicode,
    ord("a"): op_append,
    ord("b"): op_build,
    ord("c"): op_global,
    ord("d"): op_dict,
    ord("}"): _container("dict", dict),
    ord("e"): op_appends,
    ord("g"): _get(None),
    ord("h"): _get("<B"),
    ord("i"): op_inst,
    ord("j"): _get("<I"),
    ord("l"): op_list,
    ord("]"): _container("list", list),
    ord("o"): op_obj,
    ord("p"): _put(None),
    ord("q"): _put("<B"),
    ord("r"): _put("<I"),
    ord("s"): op_setitem,
    ord("t"): op_tuple,
    ord(")"): _push(()),
    ord("u"): op_setitems,
    ord("G"): op_binfloat,
    0x80: op_proto,
    0x81: op_newobj,
    0x82: _ext(1),
    0x83: _ext(2),
    0x84: _ext(4),
    0x85: _tuple_n(1),
    0x86: _tuple_n(2),
    0x87: _tuple_n(3),
    0x88: _push(True),
    0x89: _push(False),
    0x8A: op_long1,
    0x8B: op_long4,
    ord("B"): op_binbytes,
    ord("C"): op_short_binbytes,
    0x8C: op_short_binunicode,
    0x8D: op_binunicode8,
    0x8E: op_binbytes8,
    0x8F: _container("set", set),
    0x90: op_additems,
    0x91: op_frozenset,
    0x92: op_newobj_ex,
    0x93: op_stack_global,
    0x94: op_memoize,
    0x95: op_frame,
    0x96: op_bytearray8,
    0x97: op_buffer,
    0x98: op_readonly_buffer,
}
