"""The interpreter's machine: its state (stack, marks, memo), readers, and the ONE global reader.

:class:`Machine` interprets one pickle with a dispatch table of opcode handlers (built in
:mod:`.interpreter` from :mod:`.opcodes` and :mod:`.construct`); :class:`Session` is what the
machines of one file share (budgets, recorded uses in scan mode, the judge in load mode).
"""

from __future__ import annotations

import _compat_pickle
import struct
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pytest_modelpack.safety.byvalue import CODE_BUILDERS
from pytest_modelpack.safety.classes import CLASS_MAKERS
from pytest_modelpack.safety.nnclasses import TORCH_MODULE_CLASSES, is_module_class
from pytest_modelpack.safety.refs import GlobalRef, Role, ScanError
from pytest_modelpack.safety.sources import Source
from pytest_modelpack.safety.values import Sym, TextRef, kind_of

# Text longer than this is not held in scan mode: only a (protocol 0-2) payload is that long.
TEXT_LIMIT = 64 * 1024
LINE_LIMIT = 64 * 1024
LONG_LIMIT = 64 * 1024  # bytes of a LONG4 integer: no model needs a 500k-digit int
CHUNK = 1 << 20

LOAD_FROM_BYTES = ("torch.storage", "_load_from_bytes")


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
    # Load mode: the golden mapped copy-on-write; storages whose bytes lie in it are views of it.
    mapping: Any = None
    refs: list[GlobalRef] = field(default_factory=list)
    steps: int = 0
    step_limit: int = 0
    materialised: int = 0
    material_limit: int = 0
    seen_payloads: dict[tuple[int, int], Any] = field(default_factory=dict)
    globals_by_id: dict[int, tuple[Any, tuple[str, str]]] = field(default_factory=dict)
    produced: dict[int, tuple[Any, tuple[str, str]]] = field(default_factory=dict)
    #: Values fetched from the memo or duplicated (DUP): another reference may use them, so a
    #: numpy dtype among them is never changed by BUILD (arrays of it would read other bytes).
    fetched: set[int] = field(default_factory=set)
    #: Objects a BUILD restored (pickle.dump writes one BUILD per object), and the containers a
    #: BUILD handed over as state (see :func:`.construct.op_build`): never changed afterwards.
    built: dict[int, Any] = field(default_factory=dict)
    sealed: dict[int, Any] = field(default_factory=dict)
    #: The state each ``functools.partial`` was built with (see :func:`.construct._partial_new`).
    partials: dict[int, tuple[Any, Any]] = field(default_factory=dict)
    #: Load mode: the digest of each code object and class built by value (:mod:`.byvalue`).
    digests: dict[int, tuple[Any, str]] = field(default_factory=dict)
    #: Load mode: the arguments of each property, staticmethod and classmethod built (a class
    #: fingerprints it by them, see :mod:`.classes`).
    wrapped: dict[int, tuple[tuple[Any, ...], Any]] = field(default_factory=dict)
    # Scan mode: where storages' bytes lie in the file (offset, length), found as the loader finds
    # them; None once a storage's place is unknown (text payloads, malformed streams).
    spans: list[tuple[int, int]] | None = field(default_factory=list)
    root: Any = None  # the file under every window: spans are offsets in it

    def __post_init__(self) -> None:
        # Each opcode is at least one byte; nested payloads are read at most once more.
        self.step_limit = self.step_limit or 4 * self.size + 1_000_000
        self.material_limit = self.material_limit or 2 * self.size + (16 << 20)

    @property
    def loading(self) -> bool:
        return self.judge is not None

    def use(self, ref: GlobalRef) -> Any:
        """Record (scan) or judge (load) one use; a refusal in load mode raises :class:`Refused`."""
        if self.judge is None:
            self.refs.append(ref)
            return None
        decision = self.judge(ref)
        if not decision.allowed:
            raise Refused(ref, decision.reason)
        return decision

    def take(self, n: int, what: str) -> None:
        """Account ``n`` bytes materialised in load mode; refuse beyond the file's own size."""
        self.materialised += n
        if self.materialised > self.material_limit:
            raise ScanError(
                f"{what} would bring the bytes held to {self.materialised}, more than the "
                f"golden's {self.size} bytes allow"
            )


class _GlobalSym:
    """Scan mode: what GLOBAL pushes."""

    __slots__ = ("name",)

    def __init__(self, name: tuple[str, str]) -> None:
        self.name = name


class Machine:
    """Interprets ONE pickle (up to its STOP) of ``src``; :meth:`run` returns what STOP pops."""

    def __init__(
        self,
        session: Session,
        src: Source,
        where: str,
        depth: int,
        persid: Persid,
        dispatch: dict[int, Callable[[Machine, int], Any]],
    ) -> None:
        self.s = session
        self.src = src
        self.where = where
        self.depth = depth
        self.persid = persid
        self.loading = session.loading
        self.dispatch = dispatch
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
        if isinstance(value, _GlobalSym):
            return value.name
        hit = self.s.globals_by_id.get(id(value))
        return hit[1] if hit is not None and hit[0] is value else None

    def producer(self, value: object) -> tuple[str, str] | None:
        if isinstance(value, Sym):
            return value.producer
        hit = self.s.produced.get(id(value))
        return hit[1] if hit is not None and hit[0] is value else None

    def call_shape(self, args: object) -> str:
        """The kinds of a call's arguments, the same in both modes: ``str,str`` / ``G:mod.name``."""
        if not isinstance(args, tuple):
            return f"*{kind_of(args)}"
        parts = []
        for value in args:
            name = self.global_name(value)
            if name is not None:
                parts.append(f"G:{name[0]}.{name[1]}")
                continue
            made = self.producer(value)
            parts.append(f"O:{made[0]}.{made[1]}" if made is not None else kind_of(value))
        return ",".join(parts)

    # -- errors and uses ----------------------------------------------------------------------

    def fail(self, pos: int, what: str) -> ScanError:
        return ScanError(f"malformed pickle ({self.where}): {what} at byte {pos}")

    def truncated(self, pos: int) -> ScanError:
        return ScanError(
            f"truncated pickle ({self.where}): data ends inside the opcode at byte {pos}"
        )

    def problem(self, pos: int, module: str, qualname: str, role: Role, why: str) -> None:
        self.s.use(GlobalRef(module, qualname, self.where, pos, problem=why, role=role))

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

    def named(self, obj: Any, name: tuple[str, str]) -> Any:
        """``obj`` (load mode) or its placeholder (scan mode) as the global ``name``: what a
        resolver call returns, after the name was judged as a reference."""
        if not self.loading:
            return _GlobalSym(name)
        self.s.globals_by_id[id(obj)] = (obj, name)
        return obj

    def digest_of(self, value: object) -> str | None:
        """The digest of a code object or class this stream built by value, else None."""
        if isinstance(value, Sym):
            made = value.producer
            return str(value.args[0]) if value.args and (made in _DIGESTED) else None
        hit = self.s.digests.get(id(value))
        return hit[1] if hit is not None and hit[0] is value else None

    def read_ref(self, value: Any) -> Any:
        """The bytes of a :class:`BytesRef` (text of a :class:`TextRef`) of this stream."""
        saved = self.src.tell()
        try:
            self.src.seek(value.offset)
            data = self.read_raw(value.length, value.offset)
        finally:
            self.src.seek(saved)
        if isinstance(value, TextRef):
            return data.decode(value.encoding, "surrogatepass")
        return data

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
        data = src.readline(LINE_LIMIT + 1)
        if data.endswith(b"\n"):
            return data[:-1], start
        if len(data) <= LINE_LIMIT:
            raise self.truncated(pos)
        while True:
            chunk = src.readline(CHUNK)
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
        ref = GlobalRef(module, qualname, self.where, pos, role=Role.REFERENCE)
        decision = self.s.use(ref)
        if not self.loading:
            return _GlobalSym(name)
        sys.audit("pickle.find_class", module, qualname)  # as pickle's own find_class does
        if name == LOAD_FROM_BYTES:
            obj: Any = _LoadFromBytes  # never torch's own: it unpickles with weights_only=False
        else:
            obj = _import(module, qualname)
            if getattr(decision, "kind", None) in ("builtin", "third-party") and isinstance(
                obj, types.ModuleType | dict | list | set
            ):
                # A name allowed by its place (torch.nn.functional.*) that is a module or a
                # mutable registry: never a class, function or value a model holds.
                raise Refused(ref, f"resolves to a {type(obj).__name__}, not a class or function")
            if name in TORCH_MODULE_CLASSES and getattr(decision, "kind", None) == "third-party":
                if not is_module_class(obj, module, qualname):  # the list, as torch says today
                    why = "not an nn.Module class defined in that module"
                    raise Refused(ref, why)
        self.s.globals_by_id[id(obj)] = (obj, name)
        return obj

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> Any:
        src = self.src
        table = self.dispatch
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


_DIGESTED = CODE_BUILDERS | CLASS_MAKERS


class _LoadFromBytes:
    """Stands in for ``torch.storage._load_from_bytes`` in load mode: the interpreter reads the
    nested payload itself (torch's own would ``torch.load(weights_only=False)`` it)."""


def _import(module: str, qualname: str) -> Any:
    import importlib

    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj
