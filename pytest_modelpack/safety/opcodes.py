"""Opcode handlers for values: numbers, text, bytes, containers, the memo, the stack, GLOBAL.

Each takes (machine, position) and returns None, or a 1-tuple with the value STOP pops. In scan
mode containers are placeholders (:class:`~.values.Sym`) and payloads are skipped, never read.
"""

from __future__ import annotations

import collections
import re
import struct
from collections.abc import Callable
from typing import Any

from pytest_modelpack.safety.machine import LOAD_FROM_BYTES, LONG_LIMIT, TEXT_LIMIT, Machine
from pytest_modelpack.safety.refs import BytesRef, Role
from pytest_modelpack.safety.values import Sym, TextRef, kind_of


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
    m.s.fetched.add(id(m.top(pos)))
    m.stack.append(m.top(pos))


def op_proto(m: Machine, pos: int) -> None:
    proto = m.read_raw(1, pos)[0]
    if proto > 5:
        raise m.fail(pos, f"unsupported pickle protocol {proto}")
    m.proto = proto


def op_frame(m: Machine, pos: int) -> None:
    m.read_raw(8, pos)  # framing only groups opcodes


def _int_line(long: bool) -> Callable[[Machine, int], None]:
    """INT (``00``/``01`` are protocol 0's False/True) or LONG (a trailing ``L``)."""

    def handler(m: Machine, pos: int) -> None:
        text = m.short_line(pos, "integer")
        if long and text.endswith(b"L"):
            text = text[:-1]
        if text in (b"00", b"01") and not long:
            m.stack.append(text == b"01")
            return
        m.stack.append(int(text))

    return handler


def _unpacked(fmt: str) -> Callable[[Machine, int], None]:
    """BININT, BININT1, BININT2, BINFLOAT: one value of a fixed size."""

    def handler(m: Machine, pos: int) -> None:
        m.stack.append(struct.unpack(fmt, m.read_raw(struct.calcsize(fmt), pos))[0])

    return handler


def _sized(fmt: str, then: Callable[[Machine, int, int], None]) -> Callable[[Machine, int], None]:
    """An opcode whose argument is a length (of ``fmt``) followed by that many bytes."""

    def handler(m: Machine, pos: int) -> None:
        then(m, m.sized(fmt, pos), pos)

    return handler


def op_long1(m: Machine, pos: int) -> None:
    n = m.read_raw(1, pos)[0]
    m.stack.append(int.from_bytes(m.read_raw(n, pos), "little", signed=True))


def op_long4(m: Machine, pos: int) -> None:
    n = m.sized("<i", pos)
    if n < 0 or n > LONG_LIMIT:
        raise m.fail(pos, f"LONG4 of {n} bytes")
    m.stack.append(int.from_bytes(m.read(n, pos), "little", signed=True))


def op_float(m: Machine, pos: int) -> None:
    m.stack.append(float(m.short_line(pos, "float")))


def _text(m: Machine, n: int, pos: int) -> None:
    if not m.loading and n > TEXT_LIMIT:
        m.stack.append(TextRef(m.skip(n, pos), n, "utf-8"))
        return
    m.stack.append(m.read(n, pos).decode("utf-8", "surrogatepass"))


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
    if not m.loading and n > TEXT_LIMIT:
        m.skip(n, pos)
        m.stack.append(Sym("str"))
        return
    m.stack.append(m.read(n, pos).decode("ascii"))


def op_binstring(m: Machine, pos: int) -> None:
    n = m.sized("<i", pos)
    if n < 0:
        raise m.fail(pos, "BINSTRING with negative length")
    _str2(m, n, pos)


def op_string(m: Machine, pos: int) -> None:
    import codecs

    data = m.short_line(pos, "STRING")
    if len(data) < 2 or data[0] != data[-1] or data[:1] not in (b"'", b'"'):
        raise m.fail(pos, "STRING argument is not quoted")
    m.stack.append(codecs.escape_decode(data[1:-1])[0].decode("ascii"))


# What pickle.dump writes after a storage's payload: [FRAME] [memo] TUPLE1 [FRAME] [memo] REDUCE.
_PAYLOAD_TAIL = re.compile(
    rb"(?:\x95.{8})?(?:\x94|q.|r.{4})?(?:\x95.{8})?\x85(?:\x95.{8})?(?:\x94|q.|r.{4})?"
    rb"(?:\x95.{8})?R",
    re.DOTALL,
)


def _bytes(m: Machine, n: int, pos: int) -> None:
    if m.loading and not _mapped_payload(m, n):
        m.stack.append(m.read(n, pos))
    else:
        m.stack.append(BytesRef(m.skip(n, pos), n))


def _mapped_payload(m: Machine, n: int) -> bool:
    """Load mode over a mapped golden: are these ``n`` bytes the argument of
    ``torch.storage._load_from_bytes(...)``, the very next call? Then they stay in the file (a
    :class:`BytesRef`) and the storage is built over the mapping, never read into ``bytes``. Only
    that exact opcode shape qualifies, so a :class:`BytesRef` can reach nothing but the memo
    (where :func:`_get` reads it into real bytes) and that one call."""
    if m.s.mapping is None or m.depth or not m.stack:
        return False
    if m.global_name(m.stack[-1]) != LOAD_FROM_BYTES:
        return False
    src = m.src
    start = src.tell()
    try:
        if not src.skip(n):
            return False
        return _PAYLOAD_TAIL.match(src.read(40)) is not None
    finally:
        src.seek(start)


def _materialised(m: Machine, value: Any) -> Any:
    """A memoized value, with a mapped payload (:func:`_mapped_payload`) read into bytes: used
    anywhere but its own ``_load_from_bytes`` call, it is plain bytes as pickle would make."""
    if isinstance(value, BytesRef):
        m.s.take(value.length, "a bytes value")
        return m.read_ref(value)
    if type(value) is tuple and any(isinstance(v, BytesRef) for v in value):
        return tuple(_materialised(m, v) for v in value)
    return value


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


def _tuple(n: int | None) -> Callable[[Machine, int], None]:
    """TUPLE1/2/3 (``n`` items) or TUPLE (``n`` None: the items above the MARK)."""

    def handler(m: Machine, pos: int) -> None:
        m.stack.append(tuple(m.pop_mark(pos) if n is None else m.pop(n, pos)))

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
            m.stack.append(dict(zip(items[0::2], items[1::2], strict=True)))
        except TypeError as exc:  # an unhashable key
            raise m.fail(pos, f"DICT: {exc}") from None
    else:
        made = Sym("dict")
        _note(m, made, items)
        m.stack.append(made)


def op_frozenset(m: Machine, pos: int) -> None:
    items = m.pop_mark(pos)
    try:
        # Scan mode keeps a small set's items: a code object's constants are digested (byvalue).
        kept = tuple(items) if len(items) <= 4096 else ()
        m.stack.append(frozenset(items) if m.loading else Sym("set", args=kept))
    except TypeError as exc:
        raise m.fail(pos, f"FROZENSET: {exc}") from None


def _target(m: Machine, pos: int, kinds: tuple[type, ...], what: str, op: str) -> Any:
    """The container APPEND(S)/SETITEM(S)/ADDITEMS mutate: only real containers of that kind
    (and instances of classes this stream built, whose methods are those classes' own)."""
    target = m.top(pos)
    if m.global_name(target) is not None:
        # A global's own container (dill's ``module.__dict__``): mutating it rewrites the module.
        m.problem(pos, "<value>", kind_of(target), Role.REDUCE, f"{op} mutates a global")
        return None
    if id(target) in m.s.sealed:
        why = (
            f"{op} changes a container a BUILD already restored as an object's state: pickle.dump "
            "fills every container before an object's state uses it"
        )
        m.problem(pos, "<value>", kind_of(target), Role.BUILD, why)
        return None
    if isinstance(target, Sym) and target.kind in (what, "obj"):
        return target
    if not isinstance(target, Sym) and isinstance(target, kinds):
        return target
    # e.g. SETITEM on a bytearray rewrites bytes after they were judged: a mutation gadget.
    kind = kind_of(target)
    m.problem(pos, "<value>", kind, Role.REDUCE, f"{op} mutates a {kind}, not a {what}")
    return None


#: What APPEND(S) may extend: lists, and the deques ``collections.deque(...)`` builds (pickle
#: writes a deque as that call, then APPENDS of its items).
_APPENDABLE = (list, collections.deque)


def _appends(op: str, n: int | None) -> Callable[[Machine, int], None]:
    """APPEND (``n`` = 1 item) or APPENDS (``n`` None: the items above the MARK)."""

    def handler(m: Machine, pos: int) -> None:
        items = m.pop_mark(pos) if n is None else m.pop(n, pos)
        target = _target(m, pos, _APPENDABLE, "list", op)
        if m.loading and target is not None:
            target.extend(items)

    return handler


def _setitems(op: str, n: int | None) -> Callable[[Machine, int], None]:
    """SETITEM (``n`` = 2: a key and its value) or SETITEMS (the pairs above the MARK)."""

    def handler(m: Machine, pos: int) -> None:
        items = m.pop_mark(pos) if n is None else m.pop(n, pos)
        if len(items) % 2:
            raise m.fail(pos, f"{op} with an odd number of items")
        target = _target(m, pos, (dict,), "dict", op)
        if isinstance(target, Sym):
            _note(m, target, items)
        if m.loading and target is not None:
            try:
                for key, value in zip(items[0::2], items[1::2], strict=True):
                    target[key] = value  # (never update(): Counter's adds counts)
            except TypeError as exc:
                raise m.fail(pos, f"{op}: {exc}") from None

    return handler


def _note(m: Machine, made: Sym, items: list[Any]) -> None:
    """Scan mode: what a dict's (key, value, ...) ``items`` tell of it (see :class:`Sym`)."""
    made.note_items(items)
    made.named_values |= any(m.global_name(v) is not None for v in items[1::2])


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
            value = m.memo_list[idx]
        elif idx in m.memo:
            value = m.memo[idx]
        else:
            raise m.fail(pos, f"memo key {idx} was never stored")
        m.s.fetched.add(id(value))
        m.stack.append(_materialised(m, value) if m.loading else value)

    return handler


def _ext(n: int) -> Callable[[Machine, int], None]:
    def handler(m: Machine, pos: int) -> None:
        m.read_raw(n, pos)
        m.problem(
            pos,
            "<extension registry>",
            "EXT",
            Role.REFERENCE,
            "names a global through the copyreg extension registry, which cannot be checked",
        )
        m.stack.append(Sym("obj"))

    return handler


def op_global(m: Machine, pos: int) -> None:
    module = m.short_line(pos, "global name").decode("utf-8")
    qualname = m.short_line(pos, "global name").decode("utf-8")
    m.stack.append(m.resolve(module, qualname, pos))


def op_stack_global(m: Machine, pos: int) -> None:
    module, qualname = m.pop(2, pos)
    m.stack.append(m.resolve(module, qualname, pos))
