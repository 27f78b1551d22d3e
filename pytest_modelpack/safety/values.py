"""The values of the pickle interpreter in scan mode, and predicates true of both modes.

In scan mode nothing is built: bytes stay in the file (:class:`BytesRef`), long text too
(:class:`TextRef`), and containers and objects are :class:`Sym` placeholders that remember what
produced them. The argument checks of :mod:`pytest_modelpack.safety.calls` run on these and on
real values alike, through the predicates below, so both modes judge the same calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import UnionType

from pytest_modelpack.safety.refs import BytesRef

#: Dunder names restored state may set on an instance: the metadata ``functools.wraps`` copies
#: onto a wrapper object (torch.compile's wrappers, decorators kept as attributes). Nothing looks
#: them up as a hook: pickle, copy and the data model look up ``__setstate__``, ``__reduce_ex__``,
#: ``__deepcopy__``, ``__class__`` ... (never allowed). The names must be text (or None for
#: ``__doc__``); ``__wrapped__`` may be any object: only introspection follows it
#: (``inspect.unwrap``), nothing calls it. ``__annotations__`` is not among them:
#: ``typing.get_type_hints`` evaluates string annotations.
INERT_DUNDERS = frozenset({"__module__", "__name__", "__qualname__", "__doc__", "__wrapped__"})
#: The items a scan-mode dict keeps: more than any class dict holds.
ITEMS_KEPT = 4096


class Sym:
    """A container or object in scan mode: ``kind`` (list, dict, set, bytearray, obj, storage)
    and ``producer`` (the global whose call or instantiation made it, for BUILD judgement)."""

    __slots__ = ("kind", "producer", "args", "special_keys", "named_values", "items")

    def __init__(
        self, kind: str, producer: tuple[str, str] | None = None, args: tuple[object, ...] = ()
    ) -> None:
        self.kind = kind
        self.producer = producer
        self.args = args  # the call's arguments, kept only where BUILD needs them (numpy.dtype)
        #: Dunder string keys set in this dict (``__setstate__``): BUILD state may not set them.
        self.special_keys: list[str] = []
        #: A value set in this dict is a named global (a module's dict, a registry...).
        self.named_values = False
        #: A dict's (key, value) pairs, in order, while it has at most :data:`ITEMS_KEPT` (None
        #: beyond): a by-value class's dict is fingerprinted from them (see :mod:`.classes`).
        self.items: list[tuple[object, object]] | None = []

    def note_items(self, items: list[object]) -> None:
        """Remember the dunder string keys among ``items`` (key, value, key, value...) and the
        pairs themselves, as far as :data:`ITEMS_KEPT` (scan mode builds no dict)."""
        keys = items[0::2]
        for key in keys:
            if isinstance(key, str) and key.startswith("__") and key.endswith("__"):
                if key not in INERT_DUNDERS:
                    self.special_keys.append(key)
        if self.items is not None:
            self.items.extend(zip(keys, items[1::2], strict=True))
            if len(self.items) > ITEMS_KEPT:
                self.items = None

    def __repr__(self) -> str:
        return f"<{self.kind}>"


@dataclass(frozen=True)
class TextRef:
    """Text too long to hold, by position: ``length`` encoded bytes at ``offset``."""

    offset: int
    length: int
    encoding: str


@dataclass(frozen=True)
class Latin1:
    """``_codecs.encode(text, 'latin1')`` in scan mode: how protocols 0-2 write bytes."""

    text: str | TextRef
    offset: int


#: In order: a bool is an int too.
_KINDS: tuple[tuple[type | UnionType, str], ...] = (
    (bool, "bool"),
    (int, "int"),
    (float, "float"),
    (str | TextRef, "str"),
    (bytes | BytesRef | Latin1, "bytes"),
    (bytearray, "bytearray"),
    (tuple, "tuple"),
    (dict, "dict"),
    (list, "list"),
    (set | frozenset, "set"),
)


def kind_of(value: object) -> str:
    """A short, mode-independent kind: ``int``, ``str``, ``bytes``, ``tuple``, ``dict``..."""
    if isinstance(value, Sym):
        return value.kind
    if value is None:
        return "None"
    return next((kind for types, kind in _KINDS if isinstance(value, types)), "obj")


def is_int(value: object) -> bool:
    return type(value) is int


def is_ints(value: object, limit: int = 64) -> bool:
    """A tuple (or torch.Size) of at most ``limit`` non-negative ints."""
    return (
        isinstance(value, tuple)
        and len(value) <= limit
        and all(type(v) is int and v >= 0 for v in value)
    )


def is_text(value: object) -> bool:
    return isinstance(value, str | TextRef)


def is_bytes(value: object) -> bool:
    """Immutable bytes: a literal (either mode) or protocol 0-2's latin-1 encoding of text."""
    return isinstance(value, bytes | BytesRef | Latin1)
