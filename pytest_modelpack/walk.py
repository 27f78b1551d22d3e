"""Walking an object's state the way pickle does: the one walker."""

from __future__ import annotations

import functools
import io
import pickle
import sys
import types
from collections.abc import Iterator
from typing import Any

#: Values pickle saves as themselves: never walked into.
ATOMS = (str, bytes, bytearray, int, float, complex, bool, type(None), range, slice)
#: How deep the walks go; pickle itself hits the recursion limit long before this matters.
MAX_DEPTH = 100
#: How many objects :func:`locate_globals` visits before giving up (a huge model's lists).
MAX_NODES = 200_000
#: What slot_value returns for a slot that is declared but not set.
MISSING = object()


class NullWriter(io.RawIOBase):
    """A file that discards what is written: lets pickle run without keeping bytes."""

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return memoryview(data).nbytes


# -- walking what pickle walks -----------------------------------------------------------------


def pickles(value: Any) -> Exception | None:
    try:
        pickle.dump(value, NullWriter(), protocol=pickle.DEFAULT_PROTOCOL)
    except Exception as exc:  # pickle raises PicklingError, TypeError, AttributeError ...
        return exc
    return None


def is_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def is_module(value: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.nn.Module)


def defines(klass: type, name: str) -> type | None:
    """The class in ``klass``'s MRO that defines ``name`` (None: only ``object`` does)."""
    for base in klass.__mro__:
        if base is object:
            return None
        if name in vars(base):
            return base
    return None


def custom_reduce(klass: type) -> bool:
    return (
        getattr(klass, "__reduce_ex__", None) is not object.__reduce_ex__
        or getattr(klass, "__reduce__", None) is not object.__reduce__
    )


def slot_names(klass: type) -> list[str]:
    """The attribute names of every slot ``klass`` and its bases declare, in every form Python
    accepts: one string (``__slots__ = "weights"``), an iterable of strings, or a dict whose keys
    are the names; private names mangled (``__w`` in class ``C`` is ``_C__w``)."""
    names: list[str] = []
    for base in klass.__mro__:
        if base is object:
            continue
        slots = vars(base).get("__slots__", ())
        if isinstance(slots, str):
            slots = (slots,)
        try:
            declared = list(slots)
        except TypeError:
            continue
        for slot in declared:
            if not isinstance(slot, str) or slot in ("__dict__", "__weakref__"):
                continue
            if slot.startswith("__") and not slot.endswith("__"):
                slot = f"_{base.__name__.lstrip('_')}{slot}"
            if slot not in names:
                names.append(slot)
    return names


def instance_state(value: Any) -> dict[str, Any]:
    """An object's own state as default pickling sees it: its ``__dict__`` and set slots."""
    state: dict[str, Any] = dict(getattr(value, "__dict__", None) or {})
    for slot in slot_names(type(value)):
        found = slot_value(value, slot)
        if found is not MISSING:
            state.setdefault(slot, found)
    return state


def state_of(value: Any) -> tuple[Any, bool]:
    """What pickle saves as ``value``'s state, and whether a custom ``__getstate__`` made it."""
    if defines(type(value), "__getstate__") is not None:
        try:
            return value.__getstate__(), True
        except Exception:
            return getattr(value, "__dict__", None), False
    return instance_state(value), False


def state_children(value: Any, state: Any, path: str, custom: bool) -> Iterator[tuple[str, Any]]:
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
        state = {**(state[0] or {}), **state[1]}  # the (dict, slots) form
    if not isinstance(state, dict):
        if state is not None and state is not value:
            yield f"{path}.__getstate__()", state
        return
    own = getattr(value, "__dict__", None) or {}
    module = is_module(value)
    for key, item in state.items():
        if not isinstance(key, str):
            yield f"{path}.__getstate__()[{key!r}]", item
        elif module and key in ("_modules", "_parameters", "_buffers") and isinstance(item, dict):
            for sub, sub_item in item.items():
                if sub_item is not None:
                    yield f"{path}.{sub}", sub_item
        elif not custom or own.get(key, MISSING) is item or slot_value(value, key) is item:
            yield f"{path}.{key}", item
        else:  # a __getstate__ that renames or recomputes: say where the value really lives
            yield f"{path}.__getstate__()[{key!r}]", item


def slot_value(value: Any, key: str) -> Any:
    try:
        return object.__getattribute__(value, key)
    except Exception:
        return MISSING


def children(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    """The parts pickle saves for ``value``, each with the path a user would write."""
    if isinstance(value, ATOMS) or is_tensor(value):
        return
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType, type, types.ModuleType)):
        return  # saved by reference (module + qualified name): nothing inside is pickled
    if isinstance(value, dict):
        for index, (key, item) in enumerate(value.items()):
            if not isinstance(key, ATOMS):
                yield f"{path}.keys()[{index}]", key
            yield f"{path}[{key!r}]", item
        if type(value) is dict:
            return
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield f"{path}[{index}]", item
        if type(value) in (list, tuple):
            return
    elif isinstance(value, (set, frozenset)):
        for index, item in enumerate(value):
            yield f"{path}.<item {index}>", item
        if type(value) in (set, frozenset):
            return
    if isinstance(value, functools.partial):
        yield f"{path}.func", value.func
        for index, item in enumerate(value.args):
            yield f"{path}.args[{index}]", item
        for key, item in (value.keywords or {}).items():
            yield f"{path}.keywords[{key!r}]", item
        return
    if isinstance(value, types.MethodType):
        yield f"{path}.__self__", value.__self__
        return
    klass = type(value)
    if custom_reduce(klass) and not isinstance(value, (dict, list, tuple, set, frozenset)):
        try:
            reduced = value.__reduce_ex__(pickle.DEFAULT_PROTOCOL)
        except Exception:
            return  # the object itself refuses: it is the smallest part
        if not isinstance(reduced, tuple):
            return
        parts = list(reduced) + [None] * (5 - len(reduced))
        func, args, state = parts[0], parts[1], parts[2]
        if func is not None and not isinstance(func, type):
            yield f"{path}.__reduce__()[0]", func
        for index, item in enumerate(args or ()):
            if index == 0 and item is klass:
                continue
            yield f"{path}.__reduce__()[1][{index}]", item
        if state is not None:
            yield from state_children(value, state, path, custom=True)
        return
    state, custom = state_of(value)
    yield from state_children(value, state, path, custom)
