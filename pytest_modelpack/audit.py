"""Audit a live object graph for parts pickle refuses, and say where they are and how to fix them.

Python's own message names neither the attribute nor the fix (on 3.11 a lambda attribute gives
``Can't pickle local object 'MyCompoundClass.__init__.<locals>.<lambda>'``). When ``pickle.dumps``
fails, :func:`find_unpicklable` walks what pickle would walk — instance state (or the
``__getstate__`` result where a class defines one), slots, containers, ``nn.Module`` internals —
and bisects down to the smallest parts that fail on their own.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import os
import pickle
import sys
import types
from collections.abc import Iterator
from typing import Any

__all__ = ["Finding", "find_unpicklable", "describe_object", "not_importable_reason", "NullWriter"]


class NullWriter(io.RawIOBase):
    """A file that discards what is written: lets pickle run without keeping bytes."""

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return memoryview(data).nbytes


@dataclasses.dataclass(frozen=True)
class Finding:
    path: str
    what: str
    why: str
    fix: str

    def lines(self) -> list[str]:
        return [f"{self.path}: {self.what}", f"  why: {self.why}", f"  fix: {self.fix}"]


def _pickles(value: Any) -> Exception | None:
    try:
        pickle.dump(value, NullWriter(), protocol=pickle.DEFAULT_PROTOCOL)
    except Exception as exc:  # pickle raises PicklingError, TypeError, AttributeError ...
        return exc
    return None


def _where(obj: Any) -> str:
    try:
        file = inspect.getsourcefile(obj) or inspect.getfile(obj)
        _, line = inspect.getsourcelines(obj)
        return f"{os.path.relpath(file)}:{line}"
    except (TypeError, OSError, ValueError):
        return "unknown location"


def _test_module(module: str) -> bool:
    leaf = module.rsplit(".", 1)[-1]
    return leaf == "conftest" or leaf.startswith("test_") or leaf.endswith("_test")


def not_importable_reason(module: str, qualname: str) -> str | None:
    """Why a class/function referenced as ``module.qualname`` will not load in another process."""
    if module == "__main__":
        return (
            "it is defined in __main__: another process (the CI gate, production) has a different "
            '__main__, so loading fails with "AttributeError: Can\'t get attribute"'
        )
    if "<locals>" in qualname:
        return "it is defined inside a function: pickle cannot look it up by name"
    if _test_module(module):
        return (
            f"it is defined in the test module {module!r}: test modules are importable only "
            "while pytest runs them, so production (and any other process) cannot load it"
        )
    target: Any = sys.modules.get(module)
    if target is None:
        return None
    for part in qualname.split("."):
        target = getattr(target, part, None)
        if target is None:
            return (
                f"{module}.{qualname} cannot be found by that name: it was renamed, deleted or "
                "created dynamically"
            )
    return None


def describe_object(value: Any) -> str:
    """What an object is, in words a user recognises."""
    if isinstance(value, types.LambdaType) and value.__name__ == "<lambda>":
        return f"a lambda defined at {_where(value)}"
    if isinstance(value, types.FunctionType) and "<locals>" in value.__qualname__:
        return f"a local function {value.__qualname__} defined at {_where(value)}"
    if isinstance(value, types.FunctionType):
        return f"the function {value.__module__}.{value.__qualname__}"
    if isinstance(value, type):
        return f"the class {value.__module__}.{value.__qualname__}"
    if isinstance(value, types.MethodType):
        return f"a bound method {value.__qualname__}"
    if isinstance(value, types.GeneratorType):
        return "a generator"
    if isinstance(value, types.ModuleType):
        return f"the module {value.__name__}"
    if isinstance(value, io.IOBase):
        name = getattr(value, "name", None)
        return (
            f"an open file {name!r}"
            if name is not None
            else f"a file object {type(value).__name__}"
        )
    kind = type(value)
    if kind.__module__ == "_thread" or "lock" in kind.__name__.lower():
        return f"a lock ({kind.__module__}.{kind.__qualname__})"
    return f"an object of type {kind.__module__}.{kind.__qualname__}"


def _fix_for(value: Any, path: str) -> str:
    attr = path.rsplit(".", 1)[-1]
    if isinstance(value, (types.FunctionType, types.MethodType)) or (
        isinstance(value, type) and "<locals>" in value.__qualname__
    ):
        return (
            "define it at module level (a named function), use functools.partial of a "
            f"module-level function, or leave {attr!r} out with __getstate__ and rebuild it in "
            "__setstate__"
        )
    if (
        isinstance(value, (io.IOBase, types.GeneratorType, types.ModuleType))
        or "lock" in type(value).__name__.lower()
    ):
        return (
            f"do not keep it on the model: store what is needed to recreate it, and leave {attr!r} "
            "out with __getstate__ (recreate it in __setstate__)"
        )
    return (
        f"give {type(value).__qualname__} a __reduce__/__getstate__ that pickles, or leave "
        f"{attr!r} out with __getstate__"
    )


def _state_of(value: Any) -> Any:
    """What pickle would save for ``value``'s state (``__getstate__`` where a class defines one)."""
    getstate = getattr(type(value), "__getstate__", None)
    if getstate is not None and getstate is not getattr(object, "__getstate__", None):
        try:
            return value.__getstate__()
        except Exception:
            return getattr(value, "__dict__", None)
    state: dict[str, Any] = dict(getattr(value, "__dict__", {}) or {})
    for klass in type(value).__mro__:
        if klass is object:
            continue
        for slot in getattr(klass, "__slots__", ()):
            if isinstance(slot, str) and hasattr(value, slot):
                state[slot] = getattr(value, slot)
    return state


def _children(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield f"{path}[{key!r}]", item
        return
    if isinstance(value, (list, tuple, set, frozenset)):
        for index, item in enumerate(value):
            yield f"{path}[{index}]", item
        return
    if isinstance(value, (types.FunctionType, type, types.ModuleType)):
        return
    state = _state_of(value)
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
        state = {**(state[0] or {}), **state[1]}  # (dict, slots) form
    if isinstance(state, dict):
        nn_module = type(value).__module__.startswith("torch") or hasattr(value, "_modules")
        for key, item in state.items():
            if (
                nn_module
                and key in ("_modules", "_parameters", "_buffers")
                and isinstance(item, dict)
            ):
                for sub, sub_item in item.items():
                    yield f"{path}.{sub}", sub_item
            else:
                yield f"{path}.{key}", item
    elif state is not None and state is not value:
        yield f"{path}.__getstate__()", state


def find_unpicklable(obj: Any, root: str = "model", limit: int = 10) -> list[Finding]:
    """Every smallest part of ``obj`` that pickle refuses (empty when ``obj`` pickles)."""
    findings: list[Finding] = []
    seen: set[int] = set()

    def visit(value: Any, path: str) -> None:
        if len(findings) >= limit or id(value) in seen:
            return
        seen.add(id(value))
        error = _pickles(value)
        if error is None:
            return
        culprits_before = len(findings)
        for child_path, child in _children(value, path):
            visit(child, child_path)
        if len(findings) == culprits_before:
            findings.append(
                Finding(
                    path=path,
                    what=describe_object(value),
                    why=f"pickle refuses it: {type(error).__name__}: {error}",
                    fix=_fix_for(value, path),
                )
            )

    visit(obj, root)
    return findings
