"""Code pinned by value (dill, cloudpickle): built only when it is the live model's own code.

dill and cloudpickle write a lambda, a closure or a function of a pinned module as the calls that
rebuild it: a code object from its literal parts (``types.CodeType(...)``,
``dill._dill._create_code(...)``), a function over that code (``_create_function``,
``_make_function``), cells for its closure, then its attributes (BUILD, ``_function_setstate``).
The same globals build a benign lambda and a malicious one: only the code differs. So code is
trusted **by value only**: a code builder's call shape is the digest of its literal arguments
(:func:`code_shape`), and the policy allows it only when the live model's own pickle, made in the
same check, builds a code object with the same digest. Everything else about a by-value function
is judged by kind and by producer: a function only over a code object this stream built (and so
already judged), a closure only of cells, state only the attributes a function has.

Three "resolver" calls fetch a named thing by its name, and their result is judged as a
*reference* to that name, as if the golden had written it as a global: ``builtins.getattr(G,
'name'[, default])``, the serializers' type lookups (``_load_type``/``_builtin_type``) and module
imports (``subimport``/``_import_module``). ``getattr(subimport('os'), 'system')`` is judged as
``os.system``, never as a trusted call shape.

Classes pinned by value (``_make_skeleton_class``, ``_create_type`` ...) are trusted by value
only too, by the fingerprint of :mod:`.classes`.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import types
from collections.abc import Callable
from typing import Any

from pytest_modelpack.safety.calls import Check, Context, _arity, _first, _kinds, _takes
from pytest_modelpack.safety.classes import (
    _CP,
    _DILL,
    BY_VALUE,
    CLASS_CALLS,
    CLASS_TABLE,
    FUNCTION_BUILDERS,
    SETATTR,
    is_class_setattr,
)
from pytest_modelpack.safety.refs import BytesRef
from pytest_modelpack.safety.values import Latin1, Sym, TextRef, is_text, kind_of

CODE_BUILDERS = frozenset({("types", "CodeType"), (_DILL, "_create_code")})
CELL_MAKERS = frozenset(
    {(_DILL, "_create_cell"), (_CP, "_make_cell"), (_CP, "_make_empty_cell"), ("types", "CellType")}
)
#: Code trusted by value only: code objects and classes (see :mod:`.classes`).
PINNED_BUILDERS = CODE_BUILDERS | CLASS_CALLS


def is_pinned(ref: Any) -> bool:
    """A call that builds code by value (a code object, a class or a part of one): trusted only
    where the live model's own pickle makes it, its shape a digest (``code:`` / ``class:``)."""
    return (
        (ref.module, ref.qualname) in PINNED_BUILDERS
        or ref.module == BY_VALUE  # an instance of such a class (refused with it)
        or ((ref.module, ref.qualname) == SETATTR and (ref.shape or "").startswith("class:"))
    )


#: Calls whose result is a named global, judged as a reference to that name.
RESOLVERS = frozenset(
    {
        ("builtins", "getattr"),
        (_DILL, "_load_type"),
        (_CP, "_builtin_type"),
        (_CP, "subimport"),
        (_DILL, "_import_module"),
    }
)
GETATTR = ("builtins", "getattr")
#: The shape of the reference a ``getattr(G, name, default)`` also makes to ``G.name``: a name
#: that may not exist (dill asks for ``dill._dill._setattr``, and gets ``setattr``).
GETATTR_FOUND = "getattr with a default"
#: The qualname a module object is judged by: ``(name, "<module>")``.
MODULE = "<module>"

#: The attributes BUILD / ``_function_setstate`` may give a by-value function (beside plain
#: ``__dict__`` entries): what dill and cloudpickle write, nothing that replaces its code.
FUNCTION_STATE = frozenset(
    {
        "__name__",
        "__qualname__",
        "__module__",
        "__doc__",
        "__annotations__",
        "__kwdefaults__",
        "__defaults__",
        "__closure__",
        "__globals__",
        "_cloudpickle_submodules",
        "__isabstractmethod__",  # an abstract method of a class pinned by value (abc)
        "__wrapped__",  # functools.wraps (a dataclass's __repr__): only introspection reads it
    }
)
#: The dunder names ``getattr(G, name)`` may fetch: cloudpickle's by-value enum keeps its
#: ``_new_member_`` as ``getattr(object, '__new__')`` (judged as the name ``object.__new__``).
_GETATTR_DUNDERS = frozenset({"__new__"})
_TEXT_STATE = frozenset({"__name__", "__qualname__", "__module__"})
#: A string annotation ``typing.get_type_hints`` may evaluate: names, dots, subscripts, unions;
#: no call, no operator that runs anything but a lookup.
_SAFE_ANNOTATION = re.compile(r"^[\w.\[\], |'\"]*$")

CODE_CHANGED = (
    "by-value code that the live model's own pickle does not build: its bytecode, constants or "
    "names differ from today's code"
)
CLASS_REFUSED = (
    "builds a class from its own parts (types.new_class): dill and cloudpickle never write it"
)


class NotLiteral(ValueError):
    """A code builder's argument that is not a literal (text, bytes, numbers, tuples, code)."""


# --------------------------------------------------------------------------- the code digest


def _layout(name: tuple[str, str], args: tuple[Any, ...]) -> tuple[int, tuple[int, ...]]:
    """(where CodeType's arguments start, the positions of its location-only arguments:
    filename, first line number, line table) for the argument list of a code builder."""
    start = 1 if name[1] == "_create_code" and args and not isinstance(args[0], int) else 0
    n = len(args) - start
    if n >= 17:  # 3.11+: ... filename, name, qualname, firstlineno, linetable, exceptiontable
        return start, (start + 10, start + 13, start + 14)
    return start, (start + 10, start + 12, start + 13)  # 3.8-3.10: filename, name, firstlineno


def location_free(name: tuple[str, str], args: tuple[Any, ...]) -> tuple[Any, ...]:
    """``args`` with the line table (and dill's stored lnotab) emptied: only tracebacks read
    them, and they are the one part of a code object the digest leaves out besides the file
    name and first line, so the code built from a golden carries none of the golden's."""
    start, (_, _, table) = _layout(name, args)
    out = list(args)
    if start:
        out[0] = b""
    if table < len(out) and isinstance(out[table], bytes | str):
        out[table] = b""
    return tuple(out)


def code_shape(
    name: tuple[str, str],
    args: tuple[Any, ...],
    read: Callable[[Any], Any],
    digest_of: Callable[[Any], str | None],
    ctx: Context,
) -> str:
    """``code:<qualname>:<digest>``: the call shape of a code builder, the same in scan and load
    mode, for the live pickle and the golden. The digest covers every argument but where the
    code lies (file name, first line, line table: a checkout elsewhere or a line added above it
    changes nothing the code does). :class:`NotLiteral` for a non-literal argument."""
    start, skipped = _layout(name, args)
    h = hashlib.sha256()
    for i, value in enumerate(args[start:], start):
        h.update(b"|")
        if i in skipped:
            continue
        _feed(h, value, read, digest_of, ctx, 0)
    qualname = _qualname(args, start, read)
    return f"code:{qualname}:{h.hexdigest()[:32]}"


def _qualname(args: tuple[Any, ...], start: int, read: Callable[[Any], Any]) -> str:
    at = start + (12 if len(args) - start >= 17 else 11)
    value = args[at] if at < len(args) else None
    text = read(value) if isinstance(value, TextRef) else value
    return re.sub(r"[^\w.<>]", "_", text)[:200] if isinstance(text, str) else "?"


def _feed(
    h: Any,
    value: Any,
    read: Callable[[Any], Any],
    digest_of: Callable[[Any], str | None],
    ctx: Context,
    depth: int,
) -> None:
    if depth > 32:
        raise NotLiteral("constants nested deeper than 32 levels")
    if isinstance(value, TextRef | BytesRef):
        value = read(value)
    elif isinstance(value, Latin1):
        text = read(value.text) if isinstance(value.text, TextRef) else value.text
        value = text.encode("latin-1")
    kind = type(value)
    if value is None or kind is bool or kind is int or kind is float:
        h.update(f"{kind.__name__}:{value!r};".encode())
    elif kind is str:
        data = value.encode("utf-8", "surrogatepass")
        h.update(b"s%d:" % len(data) + data)
    elif kind is bytes:
        h.update(b"b%d:" % len(value) + value)
    elif kind is tuple:
        h.update(b"(%d:" % len(value))
        for item in value:
            _feed(h, item, read, digest_of, ctx, depth + 1)
        h.update(b")")
    elif kind is frozenset or (isinstance(value, Sym) and value.kind == "set" and value.args):
        items = value.args if isinstance(value, Sym) else tuple(value)
        parts = []
        for item in items:
            sub = hashlib.sha256()
            _feed(sub, item, read, digest_of, ctx, depth + 1)
            parts.append(sub.digest())
        h.update(b"{%d:" % len(parts) + b"".join(sorted(parts)) + b"}")
    elif (digest := digest_of(value)) is not None:
        h.update(b"c:" + digest.encode())  # a nested code object this stream built
    elif (named := ctx.global_name(value)) is not None:
        h.update(f"G:{named[0]}.{named[1]};".encode())  # Ellipsis
    else:
        raise NotLiteral(f"a code object's part is a {kind_of(value)}, not a literal")


# --------------------------------------------------------------------------- argument checks


def _code_builder(args: tuple[Any, ...], ctx: Context) -> str | None:
    return None if 16 <= len(args) <= 20 else f"takes 16 to 20 arguments, not {len(args)}"


def _globals_dict(value: Any, ctx: Context, module_dict: bool) -> str | None:
    named = ctx.global_name(value)
    if named is not None:
        if module_dict and named[1] == "__dict__":
            return None  # dill: the function's own module's globals (a reference, judged)
        return "its globals are a global, not a dict this golden built"
    return None if kind_of(value) == "dict" else f"its globals are a {kind_of(value)}, not a dict"


def _closure(value: Any, ctx: Context) -> str | None:
    if value is None or isinstance(value, Sym):
        return None
    if not isinstance(value, tuple):
        return f"its closure is a {kind_of(value)}, not a tuple of cells"
    if ctx.loading and not all(isinstance(c, types.CellType) for c in value):
        return "its closure holds something other than cells"
    return None


def _function_builder(module_dict: bool, high: int) -> Check:
    def check(args: tuple[Any, ...], ctx: Context) -> str | None:
        if problem := _arity(args, 2, high):
            return problem
        if ctx.producer(args[0]) not in CODE_BUILDERS:
            return "its code is not a code object this golden built by value"
        return _first(
            _globals_dict(args[1], ctx, module_dict),
            _kinds(args[2:4], ("str", "None"), ("tuple", "None")),
            _closure(args[4], ctx) if len(args) > 4 else None,
            _kinds(args[5:7], ("dict", "None"), ("dict", "None")),
        )

    return check


def _set_cell(args: tuple[Any, ...], ctx: Context) -> str | None:
    """``setattr(cell, 'cell_contents', value)`` (dill fills a cell so): on a cell only; or
    dill's ``setattr(cls, name, value)`` on a class this golden built by value, trusted by value
    as its other parts (see :func:`.classes.is_class_setattr`)."""
    if problem := _arity(args, 3):
        return problem
    if is_class_setattr(SETATTR, args, ctx):
        return None if isinstance(args[1], str) and args[1].isidentifier() else "not a name"
    if ctx.producer(args[0]) not in CELL_MAKERS or args[1] != "cell_contents":
        return "only setattr(cell, 'cell_contents', value) of a cell this golden built"
    return None


def _function_setstate(args: tuple[Any, ...], ctx: Context) -> str | None:
    """cloudpickle's ``_function_setstate(func, (state, slotstate))``."""
    if problem := _arity(args, 2):
        return problem
    func, state = args
    if ctx.producer(func) not in FUNCTION_BUILDERS:
        return "its target is not a function this golden built by value"
    if ctx.loading and ctx.global_name(getattr(func, "__globals__", None)) is not None:
        return "the function's globals are a module's own: its state may not update them"
    return function_state_problem(state, ctx)


def function_state_problem(state: Any, ctx: Context) -> str | None:
    """Why ``state`` (BUILD's, or ``_function_setstate``'s) must not be set on a by-value
    function: only the attributes a function has (:data:`FUNCTION_STATE`), of their kinds."""
    if isinstance(state, Sym):
        return None if state.kind in ("obj", "tuple") else f"its state is a {state.kind}"
    parts = state if isinstance(state, tuple) and len(state) == 2 else (state,)
    for i, part in enumerate(parts):
        if part is None:
            continue
        if ctx.global_name(part) is not None:
            return "its state is a global's own dict"
        slots = i == 1  # the attributes themselves (the first part only fills __dict__)
        if isinstance(part, Sym):
            bad = [k for k in part.special_keys if k not in FUNCTION_STATE]
            if bad:
                return f"its state sets {bad[0]!r}, which no function state holds"
            if slots and part.named_values:
                return "its state sets an attribute to a global (a module's dict, a registry)"
            continue
        if not isinstance(part, dict):
            return f"its state is a {kind_of(part)}, not a dict"
        for key, value in part.items():
            if slots and ctx.global_name(value) is not None:
                return f"its state sets {key!r} to a global (a module's dict, a registry)"
            if not isinstance(key, str):
                return "its state has a key that is not an attribute name"
            if key.startswith("__") and key not in FUNCTION_STATE:
                return f"its state sets {key!r}, which no function state holds"
            if problem := _state_value(key, value, ctx):
                return problem
    return None


def _state_value(key: str, value: Any, ctx: Context) -> str | None:
    kind = kind_of(value)
    if key in _TEXT_STATE and not is_text(value):
        return f"its {key} is a {kind}, not text"
    if key == "__doc__" and not (value is None or is_text(value)):
        return "its __doc__ is not text"
    if key == "__closure__":
        return _closure(value, ctx)
    if key in ("__globals__", "__kwdefaults__", "__dict__") and kind not in ("dict", "None"):
        return f"its {key} is a {kind}, not a dict"
    if key == "__isabstractmethod__" and not isinstance(value, bool):
        return "its __isabstractmethod__ is not a bool"
    if key == "__defaults__" and kind not in ("tuple", "None"):
        return "its __defaults__ are not a tuple"
    if key == "__annotations__":
        if isinstance(value, dict):
            for text in value.values():
                if isinstance(text, str) and not _SAFE_ANNOTATION.match(text):
                    return "a string annotation that evaluating would run code"
        elif kind not in ("dict", "None"):
            return "its __annotations__ are not a dict"
    return None


def _class_builder(args: tuple[Any, ...], ctx: Context) -> str | None:
    return CLASS_REFUSED


BY_VALUE_TABLE: dict[tuple[str, str], Check] = {
    **{name: _code_builder for name in CODE_BUILDERS},
    (_DILL, "_create_function"): _function_builder(True, 7),
    (_CP, "_make_function"): _function_builder(False, 5),
    ("types", "FunctionType"): _function_builder(False, 5),
    (_DILL, "_create_cell"): _takes(0, 1),
    (_CP, "_make_cell"): _takes(0, 1),
    (_CP, "_make_empty_cell"): _takes(0, 0),
    ("types", "CellType"): _takes(0, 1),
    SETATTR: _set_cell,
    (_CP, "_function_setstate"): _function_setstate,
    **CLASS_TABLE,
    ("types", "new_class"): _class_builder,
}


# --------------------------------------------------------------------------- resolvers


def resolved_name(
    name: tuple[str, str], args: tuple[Any, ...], ctx: Context
) -> tuple[str, str] | str:
    """The name a resolver call's result is judged by, or why the call is refused."""
    if name == GETATTR:
        if problem := _arity(args, 2, 3):
            return problem
        base = ctx.global_name(args[0])
        attr = args[1]
        if base is None:
            return "getattr of a value the golden built, not of a named global"
        if not (
            isinstance(attr, str)
            and attr.isidentifier()
            and (not attr.startswith("__") or attr in _GETATTR_DUNDERS)
        ):
            return "getattr of a name that is not a plain attribute name"
        if len(args) == 3:
            default = ctx.global_name(args[2])
            if default is None:
                return "getattr with a default that is not a named global"
            return default  # dill: getattr(dill._dill, '_setattr', setattr) is setattr today
        return (base[0], attr) if base[1] == MODULE else (base[0], f"{base[1]}.{attr}")
    if problem := _first(_arity(args, 1, 2), _kinds(args[:1], ("str",))):
        return problem
    text = args[0]
    if not isinstance(text, str) or not all(p.isidentifier() for p in text.split(".")):
        return "its name is not a dotted name"
    if name[1] in ("_load_type", "_builtin_type"):
        if "." in text:
            return "its type name is not a plain name"
        found = _serializer_type(name, text)
        if not isinstance(found, type):
            return f"{text!r} names no type the serializer maps"
        if getattr(types, text, None) is found:
            return ("types", text)  # CodeType, FunctionType...: the names the table knows
        return (found.__module__, found.__qualname__)
    return (text, MODULE)


def fetch(name: tuple[str, str], args: tuple[Any, ...], target: tuple[str, str]) -> Any:
    """Load mode: the resolver's result, once ``target`` was judged allowed."""
    import importlib

    if name == GETATTR:
        return getattr(*args)
    if target[1] == MODULE:
        return importlib.import_module(target[0])
    value = _serializer_type(name, args[0])
    if not isinstance(value, type):
        raise LookupError(f"{args[0]!r} names no type")
    return value


def _serializer_type(name: tuple[str, str], text: str) -> Any:
    """The type dill's ``_load_type`` / cloudpickle's ``_builtin_type`` returns for ``text``
    (their own tables, read, never called); None when it has none or dill is not installed."""
    if name[0] == _CP:
        return getattr(types, text, None)
    try:
        import dill._dill
    except ImportError:
        return None
    return dill._dill._reverse_typemap.get(text)


def nameable(value: Any) -> bool:
    """May a resolver's result stand as a named global (a module, class, function, method or
    descriptor: never a plain value, whose identity other values of the stream could share)?"""
    return value is not None and not isinstance(value, _PLAIN_VALUES)


#: Plain values (a bool is an int; None is tested apart).
_PLAIN_VALUES = (int, float, complex, str, bytes, bytearray, tuple, list, dict, set, frozenset)


def build_function(func: Any, state: Any) -> None:
    """What pickle's BUILD does with a function's ``(state, slotstate)``, on the attributes
    :func:`function_state_problem` allowed."""
    parts = state if isinstance(state, tuple) and len(state) == 2 else (state, None)
    if parts[0]:
        func.__dict__.update(parts[0])
    for key, value in (parts[1] or {}).items():
        setattr(func, key, value)


def method_of_built_problem(call: tuple[Any, ...]) -> str | None:
    """Why ``getattr(<built object>, ...)`` is not how pickle writes a bound method (an
    object's public or private method, by its name), or None."""
    if len(call) != 2:
        return "getattr of a built object with a default: pickle writes a bound method as two"
    attr = call[1]
    if not (isinstance(attr, str) and attr.isidentifier()) or attr.startswith("__"):
        return f"getattr of {str(attr)[:40]!r} of a built object: a bound method has a plain name"
    return None


def is_method(value: Any) -> bool:
    return inspect.ismethod(value) or isinstance(
        value, types.BuiltinMethodType | types.MethodWrapperType
    )
