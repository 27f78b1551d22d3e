"""Classes pinned by value (dill, cloudpickle): built only as the live model's pickle builds them.

dill writes a by-value class (a ``__main__`` or local class) as one call,
``_create_type(type, name, bases, namespace)``. cloudpickle (also every class of a
``modelpack_by_value`` module) writes two: ``_make_skeleton_class(metaclass, name, bases,
type_kwargs, tracker_id, None)``, an empty class, then ``_class_setstate(cls, (clsdict,
slotstate))``, which sets its methods and attributes (enums: ``_make_skeleton_enum`` and
``_enum_setstate``). Building a class runs its metaclass and its bases' ``__init_subclass__``,
and the names of its dict are the hooks everything else calls (``__setstate__``, ``forward``).
So a class is trusted **by value only**, as code is: the shape of each of these calls is the
digest of the class's :func:`fingerprint`, and the policy allows the call only when the live
model's own pickle, made in the same check, makes one of the same shape.

A class's fingerprint is its metaclass, its bases and every key of its dict with what the key
holds: a function by its code's digest (no method can be swapped for another), a property or
static or class method by the functions it wraps, a global by its name, a class built by value
by its own fingerprint; text by its value (a name, a field, an annotation); numbers by their
kind only, as an instance's data is (``__firstlineno__`` moves with unrelated edits).
cloudpickle's tracker id (random per process) is left out and never used: the loader builds
every class afresh, never one of this process's (``_lookup_class_or_track`` would return the
live class itself for ``_class_setstate`` to rewrite).

A class built by value then stands, for the rest of the stream, as the global
``__by_value__:<name>.<digest>``: a module nothing defines, so only the live model's own pickle
can make instances (NEWOBJ) of that very class, complete, and restore their state (BUILD).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from pytest_modelpack.safety.calls import Check, Context, _arity, _first, _kinds, _takes
from pytest_modelpack.safety.values import Sym, TextRef, kind_of

_DILL = "dill._dill"
_CP = "cloudpickle.cloudpickle"

#: Calls that make a class, with where their tracker id lies (never part of the fingerprint).
SKELETONS = {(_CP, "_make_skeleton_class"): 4, (_CP, "_make_skeleton_enum"): 5}
#: cloudpickle's second half: the class's dict set onto its skeleton.
SETSTATES = frozenset({(_CP, "_class_setstate"), (_CP, "_enum_setstate")})
#: dill: the whole class in one call.
WHOLE = frozenset({(_DILL, "_create_type"), (_DILL, "_create_namedtuple")})
CLASS_MAKERS = frozenset(SKELETONS) | WHOLE
#: dill sets a by-value class's ``__qualname__`` (and ABC registries) after making it.
SETATTR = ("builtins", "setattr")
FUNCTION_BUILDERS = frozenset(
    {(_DILL, "_create_function"), (_CP, "_make_function"), ("types", "FunctionType")}
)
CLASS_CALLS = CLASS_MAKERS | SETSTATES
#: Descriptors fingerprinted by what they wrap (their call's arguments).
WRAPPERS = frozenset(("builtins", n) for n in ("property", "staticmethod", "classmethod"))
#: The module of the global a class built by value stands as (no module has that name).
BY_VALUE = "__by_value__"
_DEPTH = 8

CLASS_CHANGED = (
    "a class pinned by value that the live model's own pickle does not build: its methods, "
    "bases or attributes differ from today's code"
)


class NotFingerprinted(ValueError):
    """A class part the fingerprint cannot follow (too deep, a dict too large to keep)."""


def fingerprint(value: Any, ctx: Any, depth: int = 0) -> str:
    """What ``value`` is, as a class's fingerprint sees it; the same in scan and load mode."""
    if depth > _DEPTH:
        raise NotFingerprinted(f"a class's attributes nested deeper than {_DEPTH} levels")
    digest = ctx.digest_of(value)
    if digest is not None:
        return digest  # code:... / class:...: built by value in this stream
    named = ctx.global_name(value)
    if named is not None:
        return f"G:{named[0]}.{named[1]}"
    made = ctx.producer(value)
    if made in FUNCTION_BUILDERS:
        if isinstance(value, Sym):
            code = value.args[0] if value.args else None
        else:
            code = ctx.digest_of(getattr(value, "__code__", None))
        return f"f:{code}"
    if made in WRAPPERS:
        if isinstance(value, Sym):
            args = value.args
        else:
            hit = ctx.s.wrapped.get(id(value))
            args = hit[0] if hit is not None and hit[1] is value else ()
        return f"{made[1]}({_all(args, ctx, depth)})"
    if made is not None:
        return f"O:{made[0]}.{made[1]}"
    if isinstance(value, tuple):
        return f"({_all(value, ctx, depth)})"
    if isinstance(value, dict) or (isinstance(value, Sym) and value.kind == "dict"):
        return "{" + ",".join(_entries(value, ctx, depth)) + "}"
    if isinstance(value, str | TextRef | bytes):
        # Text by its value: a name, a module, a field, an annotation that get_type_hints
        # evaluates (numbers stay kinds: a line number moves with unrelated edits).
        text = ctx.read_ref(value) if isinstance(value, TextRef) else value
        data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
        return f"{kind_of(value)}:{hashlib.sha256(data).hexdigest()[:16]}"
    return kind_of(value)


def _all(values: Any, ctx: Any, depth: int) -> str:
    return ",".join(fingerprint(v, ctx, depth + 1) for v in values)


def _entries(value: Any, ctx: Any, depth: int) -> list[str]:
    if isinstance(value, Sym):
        if value.items is None:
            raise NotFingerprinted("a class dict of more than 4096 items")
        items = dict(value.items)  # (a key written twice: the last, as a dict keeps it)
    else:
        items = value
    out = []
    for key, item in items.items():
        text = ctx.read_ref(key) if isinstance(key, TextRef) else key
        shown = repr(text) if isinstance(text, str) else kind_of(text)
        out.append(f"{shown}:{fingerprint(item, ctx, depth + 1)}")
    return sorted(out)


def is_class_setattr(name: tuple[str, str], args: tuple[Any, ...], ctx: Any) -> bool:
    """``setattr(cls, name, value)`` on a class this stream built by value."""
    return (
        name == SETATTR
        and len(args) == 3
        and str(ctx.digest_of(args[0])).startswith("class:")
        and _made_by_value(args[0], ctx)
    )


def class_shape(name: tuple[str, str], args: tuple[Any, ...], ctx: Any) -> str:
    """``class:<name>:<digest>``: the shape of a class call, as :func:`.byvalue.code_shape` is
    a code builder's. :class:`NotFingerprinted` for a part it cannot follow."""
    if name in SETSTATES or name == SETATTR:
        skeleton = str(ctx.digest_of(args[0]))
        label = skeleton.split(":")[1] if skeleton.count(":") >= 2 else "?"
        parts = [skeleton, *(fingerprint(a, ctx) for a in args[1:])]
        if name == SETATTR:
            parts[1] = repr(args[1])
    else:
        skip = SKELETONS.get(name)
        parts = [fingerprint(a, ctx) for i, a in enumerate(args) if i != skip]
        text = args[0 if name[1] == "_create_namedtuple" else 1]
        label = re.sub(r"[^\w]", "_", text)[:200] if isinstance(text, str) else "?"
    h = hashlib.sha256("|".join([name[1], *parts]).encode("utf-8", "surrogatepass"))
    return f"class:{label}:{h.hexdigest()[:32]}"


def by_value_name(digest: str) -> tuple[str, str]:
    """The global a class built by value stands as: ``('__by_value__', '<name>.<digest>')``, its
    digest the class's as built so far (a skeleton whose dict is not set yet is not the class
    the live model instantiates). Not its module's name: the class travels without it."""
    parts = digest.split(":")
    label, tail = (parts[1], parts[2]) if len(parts) == 3 else ("_", "_")
    return BY_VALUE, f"{label}.{tail}"


# --------------------------------------------------------------------------- argument checks


def _made_by_value(value: Any, ctx: Context) -> bool:
    return ctx.producer(value) in CLASS_CALLS


def _named(value: Any, ctx: Context, what: str) -> str | None:
    return None if ctx.global_name(value) is not None else f"its {what} is not a named global"


def _bases(value: Any, ctx: Context) -> str | None:
    if not isinstance(value, tuple):
        return f"its bases are a {kind_of(value)}, not a tuple"
    if not all(ctx.global_name(b) is not None for b in value):
        return "a base is neither a named class nor a class built by value"
    return None


def _skeleton_class(args: tuple[Any, ...], ctx: Context) -> str | None:
    if problem := _arity(args, 6):
        return problem
    return _first(
        _named(args[0], ctx, "metaclass"),
        _kinds(args[1:2], ("str",)),
        _bases(args[2], ctx),
        _kinds(args[3:6], ("dict",), ("str", "None"), ("None",)),
    )


def _skeleton_enum(args: tuple[Any, ...], ctx: Context) -> str | None:
    if problem := _arity(args, 7):
        return problem
    return _first(
        _bases(args[0], ctx),
        _kinds(args[1:7], ("str",), ("str",), ("dict",), ("str",), ("str", "None"), ("None",)),
    )


def _setstate(args: tuple[Any, ...], ctx: Context) -> str | None:
    if problem := _arity(args, 2):
        return problem
    if not _made_by_value(args[0], ctx):
        return "its target is not a class this golden built by value"
    state = args[1]
    if not (isinstance(state, tuple) and len(state) == 2):
        return "its state is not a (dict, slot state) pair"
    return _kinds(state, ("dict",), ("dict", "None"))


def _create_type(args: tuple[Any, ...], ctx: Context) -> str | None:
    if problem := _arity(args, 4):
        return problem
    return _first(
        _named(args[0], ctx, "type"),
        _kinds(args[1:2], ("str",)),
        _bases(args[2], ctx),
        _kinds(args[3:4], ("dict",)),
    )


CLASS_TABLE: dict[tuple[str, str], Check] = {
    (_CP, "_make_skeleton_class"): _skeleton_class,
    (_CP, "_make_skeleton_enum"): _skeleton_enum,
    (_CP, "_class_setstate"): _setstate,
    (_CP, "_enum_setstate"): _setstate,
    (_DILL, "_create_type"): _create_type,
    (_DILL, "_create_namedtuple"): _takes(
        3, 4, ("str",), ("tuple",), ("str",), ("list", "tuple", "None")
    ),
}
