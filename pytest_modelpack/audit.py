"""Audit a live object graph: where pickle fails, what a round-trip lost, where an error came from.

Python's own messages name neither the attribute nor the fix (on 3.11 a lambda attribute gives
``PicklingError: Can't pickle <function <lambda> ...>: attribute lookup <lambda> on package
failed``). This module walks what pickle walks — instance state (or the ``__getstate__`` result
where a class defines one), slots, containers, ``nn.Module`` submodules/parameters/buffers/hooks,
``__reduce__`` results — and turns failures into attribute paths a user recognises
(``model.function``, ``model.layer._forward_hooks[3]``), with what each part is, why pickle refuses
it and how to fix it. It also explains lossy round-trips (which attribute went missing, and which
``__getstate__``/``__setstate__`` dropped it), nondeterminism, renamed classes, and picks the user's
own frame out of a traceback.

Nothing here imports pytest; torch is imported only when the object graph holds torch objects.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import inspect
import io
import os
import pickle
import re
import sys
import traceback
import types
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = [
    "Finding",
    "Frame",
    "NullWriter",
    "describe_object",
    "explain_lossy",
    "explain_missing",
    "leaf_name",
    "find_unpicklable",
    "lost_private_state",
    "locate_globals",
    "nondeterminism_hints",
    "not_importable_reason",
    "recorded_source",
    "rename_hints",
    "resolve_path",
    "setstate_pitfall",
    "user_frame",
]

#: Values pickle saves as themselves: never walked into.
_ATOMS = (str, bytes, bytearray, int, float, complex, bool, type(None), range, slice)
#: How deep the walks go; pickle itself hits the recursion limit long before this matters.
_MAX_DEPTH = 100
#: How many objects :func:`locate_globals` visits before giving up (a huge model's lists).
_MAX_NODES = 200_000
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


class NullWriter(io.RawIOBase):
    """A file that discards what is written: lets pickle run without keeping bytes."""

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return memoryview(data).nbytes


@dataclasses.dataclass(frozen=True)
class Finding:
    """One part of an object graph that pickle refuses."""

    path: str
    what: str
    why: str
    fix: str
    #: The source line that created it (a lambda's line), when known.
    source: str | None = None

    def lines(self, nested: bool = True) -> list[str]:
        """Detail lines; ``nested`` indents why/fix under the path (one of several findings),
        else the fix is left to the error's own fix line."""
        indent = "  " if nested else ""
        out = [f"{self.path}: {self.what}"]
        if self.source:
            out.append(f"    {self.source}")
        out.append(f"{indent}why: {self.why}")
        if nested:
            out.append(f"{indent}fix: {self.fix}")
        return out


# -- locations ---------------------------------------------------------------------------------


def _relative(file: str, relative_to: str | os.PathLike[str] | None) -> str:
    base = os.fspath(relative_to) if relative_to is not None else os.getcwd()
    try:
        rel = os.path.relpath(file, base)
    except ValueError:  # another drive (Windows)
        return file
    return file if rel.startswith(".." + os.sep + "..") else rel.replace(os.sep, "/")


def _where(obj: Any, relative_to: Any = None) -> str:
    try:
        file = inspect.getsourcefile(obj) or inspect.getfile(obj)
        _, line = inspect.getsourcelines(obj)
    except (TypeError, OSError, ValueError):
        code = getattr(obj, "__code__", None)
        if code is not None:
            return f"{_relative(code.co_filename, relative_to)}:{code.co_firstlineno}"
        return "an unknown location"
    return f"{_relative(file, relative_to)}:{line}"


def _source_line(obj: Any) -> str | None:
    try:
        lines, _ = inspect.getsourcelines(obj)
    except (TypeError, OSError, ValueError):
        return None
    return lines[0].strip() if lines else None


@dataclasses.dataclass(frozen=True)
class Frame:
    """A frame of the user's code: where an error came from."""

    file: str
    line: int
    function: str
    text: str
    #: The class of ``self`` in that frame, as ``module.qualname`` (None: not a method).
    owner: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line} in {self.function}"
        return f"{where}: {self.text}" if self.text else where


def _library_dirs() -> list[str]:
    dirs = [os.path.dirname(os.path.abspath(__file__))]
    for name in ("torch", "hypothesis", "_pytest", "pluggy"):
        module = sys.modules.get(name)
        file = getattr(module, "__file__", None)
        if file:
            dirs.append(os.path.dirname(os.path.abspath(file)))
    return [d + os.sep for d in dirs]


_LIBRARY_FILES = ("pickle.py", "copyreg.py", "_compat_pickle.py")


def user_frame(exc: BaseException, relative_to: Any = None) -> Frame | None:
    """The last traceback frame of ``exc`` outside pytest-modelpack, torch, pickle and hypothesis.

    That is the user's own code where the error came from (``package.py:66 in __setstate__``), even
    when torch raised it (``Module.__setattr__``).
    """
    libraries = _library_dirs()
    stdlib = os.path.dirname(os.path.abspath(os.__file__)) + os.sep
    chosen: Any = None
    tb = exc.__traceback__
    while tb is not None:
        file = os.path.abspath(tb.tb_frame.f_code.co_filename)
        library = any(file.startswith(d) for d in libraries) or (
            file.startswith(stdlib) and os.path.basename(file) in _LIBRARY_FILES
        )
        if not library and not file.startswith("<"):
            chosen = tb
        tb = tb.tb_next
    if chosen is None:
        return None
    frame = chosen.tb_frame
    summary = traceback.FrameSummary(
        frame.f_code.co_filename, chosen.tb_lineno, frame.f_code.co_name, lookup_line=True
    )
    owner = None
    this = frame.f_locals.get("self")
    if this is not None:
        klass = type(this)
        owner = f"{klass.__module__}.{klass.__qualname__}"
    return Frame(
        file=_relative(summary.filename, relative_to),
        line=chosen.tb_lineno,
        function=frame.f_code.co_qualname if hasattr(frame.f_code, "co_qualname") else summary.name,
        text=(summary.line or "").strip(),
        owner=owner,
    )


# -- walking what pickle walks -----------------------------------------------------------------


def _pickles(value: Any) -> Exception | None:
    try:
        pickle.dump(value, NullWriter(), protocol=pickle.DEFAULT_PROTOCOL)
    except Exception as exc:  # pickle raises PicklingError, TypeError, AttributeError ...
        return exc
    return None


def _is_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _is_module(value: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.nn.Module)


def _defines(klass: type, name: str) -> type | None:
    """The class in ``klass``'s MRO that defines ``name`` (None: only ``object`` does)."""
    for base in klass.__mro__:
        if base is object:
            return None
        if name in vars(base):
            return base
    return None


def _custom_reduce(klass: type) -> bool:
    return (
        getattr(klass, "__reduce_ex__", None) is not object.__reduce_ex__
        or getattr(klass, "__reduce__", None) is not object.__reduce__
    )


def _state_of(value: Any) -> tuple[Any, bool]:
    """What pickle saves as ``value``'s state, and whether a custom ``__getstate__`` made it."""
    if _defines(type(value), "__getstate__") is not None:
        try:
            return value.__getstate__(), True
        except Exception:
            return getattr(value, "__dict__", None), False
    state: dict[str, Any] = dict(getattr(value, "__dict__", {}) or {})
    for klass in type(value).__mro__:
        if klass is object:
            continue
        slots = getattr(klass, "__slots__", ())
        for slot in (slots,) if isinstance(slots, str) else slots:
            if isinstance(slot, str) and slot not in ("__dict__", "__weakref__"):
                try:
                    state[slot] = getattr(value, slot)
                except AttributeError:
                    pass
    return state, False


def _state_children(value: Any, state: Any, path: str, custom: bool) -> Iterator[tuple[str, Any]]:
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
        state = {**(state[0] or {}), **state[1]}  # the (dict, slots) form
    if not isinstance(state, dict):
        if state is not None and state is not value:
            yield f"{path}.__getstate__()", state
        return
    own = getattr(value, "__dict__", None) or {}
    module = _is_module(value)
    for key, item in state.items():
        if not isinstance(key, str):
            yield f"{path}.__getstate__()[{key!r}]", item
        elif module and key in ("_modules", "_parameters", "_buffers") and isinstance(item, dict):
            for sub, sub_item in item.items():
                if sub_item is not None:
                    yield f"{path}.{sub}", sub_item
        elif not custom or own.get(key, _MISSING) is item or _slot_value(value, key) is item:
            yield f"{path}.{key}", item
        else:  # a __getstate__ that renames or recomputes: say where the value really lives
            yield f"{path}.__getstate__()[{key!r}]", item


_MISSING = object()


def _slot_value(value: Any, key: str) -> Any:
    try:
        return object.__getattribute__(value, key)
    except Exception:
        return _MISSING


def _children(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    """The parts pickle saves for ``value``, each with the path a user would write."""
    if isinstance(value, _ATOMS) or _is_tensor(value):
        return
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType, type, types.ModuleType)):
        return  # saved by reference (module + qualified name): nothing inside is pickled
    if isinstance(value, dict):
        for index, (key, item) in enumerate(value.items()):
            if not isinstance(key, _ATOMS):
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
    if _custom_reduce(klass) and not isinstance(value, (dict, list, tuple, set, frozenset)):
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
            yield from _state_children(value, state, path, custom=True)
        return
    state, custom = _state_of(value)
    yield from _state_children(value, state, path, custom)


# -- what a part is, why pickle refuses it, how to fix it --------------------------------------


def _is_lambda(value: Any) -> bool:
    return isinstance(value, types.FunctionType) and value.__name__ == "<lambda>"


def _lock_type(value: Any) -> bool:
    kind = type(value)
    return kind.__module__ in ("_thread", "threading") and (
        "lock" in kind.__name__.lower() or kind.__name__ in ("Condition", "Semaphore", "Event")
    )


def describe_object(value: Any, relative_to: Any = None) -> str:
    """What an object is, in words a user recognises."""
    if _is_lambda(value):
        return f"a lambda defined at {_where(value, relative_to)}"
    if isinstance(value, types.FunctionType) and "<locals>" in value.__qualname__:
        return f"a local function {value.__qualname__} defined at {_where(value, relative_to)}"
    if isinstance(value, types.FunctionType):
        reason = not_importable_reason(value.__module__, value.__qualname__) or ""
        extra = " (not importable by that name)" if "cannot be found" in reason else ""
        return f"the function {value.__module__}.{value.__qualname__}{extra}"
    if isinstance(value, type):
        if "<locals>" in value.__qualname__:
            return f"a local class {value.__qualname__} defined at {_where(value, relative_to)}"
        return f"the class {value.__module__}.{value.__qualname__}"
    if isinstance(value, types.MethodType):
        return f"a bound method {value.__qualname__}"
    if isinstance(value, types.GeneratorType):
        return f"a generator ({value.__qualname__})"
    if isinstance(value, types.ModuleType):
        return f"the module {value.__name__}"
    if isinstance(value, io.IOBase):
        name = getattr(value, "name", None)
        if isinstance(name, str):
            return f"an open file {name!r} ({type(value).__name__})"
        return f"a file object ({type(value).__name__})"
    kind = type(value)
    if _lock_type(value):
        return f"a lock ({kind.__module__}.{kind.__qualname__})"
    if "<locals>" in kind.__qualname__:
        return (
            f"an instance of the local class {kind.__qualname__} defined at "
            f"{_where(kind, relative_to)}"
        )
    return f"an object of type {kind.__module__}.{kind.__qualname__}"


def _why(value: Any, error: Exception) -> str:
    said = f"{type(error).__name__}: {_ADDRESS.sub('', str(error))}"
    if isinstance(value, types.FunctionType) or (
        isinstance(value, type) and "<locals>" in value.__qualname__
    ):
        what = "a lambda" if _is_lambda(value) else "a function defined inside another function"
        if isinstance(value, type):
            what = "a class defined inside a function"
        return (
            "pickle saves a function or class by reference (module + qualified name) and imports "
            f"it again when loading; {what} has no name it can be imported by (pickle says: "
            f"{said})"
        )
    if "<locals>" in type(value).__qualname__:
        return (
            "pickle saves an instance's class by reference (module + qualified name); a class "
            f"defined inside a function cannot be imported by name (pickle says: {said})"
        )
    if isinstance(value, io.IOBase):
        return (
            "an open file is operating-system state of this process (a descriptor and a "
            f"position), not data (pickle says: {said})"
        )
    if _lock_type(value):
        return f"a lock is synchronisation state of this process, not data (pickle says: {said})"
    if isinstance(value, types.GeneratorType):
        return f"a generator is a paused function call; its frame cannot be saved ({said})"
    if isinstance(value, types.ModuleType):
        return f"pickle saves classes and functions by reference, never modules ({said})"
    return f"pickle refuses it: {said}"


def leaf_name(path: str) -> str:
    """The last attribute, key or index of ``path`` (``model.layer.rnn`` -> ``rnn``)."""
    tail = re.split(r"[.\[]", path)[-1].rstrip("]")
    return tail.strip("'\"") or path


def _owner_attr(path: str) -> str:
    """The attribute of the first object on ``path`` below the root: what __getstate__ drops."""
    parts = path.split(".")
    return re.split(r"[\[(]", parts[1])[0] if len(parts) > 1 else path


def _fix_for(value: Any, path: str, relative_to: Any = None) -> str:
    attr = leaf_name(path)
    top = _owner_attr(path)
    leave_out = (
        f"or leave {top!r} out in __getstate__ and rebuild it in __setstate__"
        if top.isidentifier()
        else "or leave it out in __getstate__ and rebuild it in __setstate__"
    )
    if "_hooks" in path or "_hooks_" in path:
        return (
            "register a module-level function as the hook (pickle saves a reference to it), or "
            "remove the hook (handle.remove()) before pickling and register it again after loading"
        )
    if isinstance(value, (types.FunctionType, types.MethodType)) or (
        isinstance(value, type) and "<locals>" in value.__qualname__
    ):
        target = getattr(value, "__func__", value)
        file = _where(target, relative_to).rsplit(":", 1)[0]
        where = f" of {file}" if file.endswith(".py") else ""
        name = attr if attr.isidentifier() and attr != "<lambda>" else "a_name"
        return (
            f"define it at module level{where} (def {name}(...): ...) and assign that function, "
            f"or use functools.partial of a module-level function; {leave_out}"
        )
    if "<locals>" in type(value).__qualname__:
        return f"define the class {type(value).__name__} at module level; {leave_out}"
    if isinstance(value, io.IOBase):
        return f"keep the file's path instead and open it when needed, {leave_out}"
    if _lock_type(value):
        return f"leave {top!r} out in __getstate__ and create a new lock in __setstate__"
    if isinstance(value, types.GeneratorType):
        return f"store the data (a list) or what recreates the generator instead, {leave_out}"
    if isinstance(value, types.ModuleType):
        return (
            f"import the module where it is used instead of storing it on the object, {leave_out}"
        )
    return (
        f"give {type(value).__qualname__} a __reduce__ or __getstate__/__setstate__ that pickles, "
        f"{leave_out}"
    )


def find_unpicklable(
    obj: Any, root: str = "model", limit: int = 10, relative_to: Any = None
) -> list[Finding]:
    """Every smallest part of ``obj`` that pickle refuses (empty when ``obj`` pickles).

    A part is reported by attribute path from ``root``; file locations are relative to
    ``relative_to`` (default: the working directory).
    """
    findings: list[Finding] = []
    seen: set[int] = set()
    keep: list[Any] = []  # __getstate__ results are temporaries: keep them alive so ids stay unique

    def visit(value: Any, path: str, depth: int) -> None:
        if len(findings) >= limit or id(value) in seen:
            return
        seen.add(id(value))
        keep.append(value)
        error = _pickles(value)
        if error is None:
            return
        before = len(findings)
        if depth < _MAX_DEPTH:
            for child_path, child in _children(value, path):
                visit(child, child_path, depth + 1)
        local_class = "<locals>" in type(value).__qualname__ and not isinstance(value, type)
        if len(findings) == before or local_class:
            findings.append(
                Finding(
                    path=path,
                    what=describe_object(value, relative_to),
                    why=_why(value, error),
                    fix=_fix_for(value, path, relative_to),
                    source=_source_line(value) if _is_lambda(value) else None,
                )
            )

    visit(obj, root, 0)
    return findings


# -- classes that pickle here but will not load elsewhere --------------------------------------


def _test_module(module: str) -> bool:
    leaf = module.rsplit(".", 1)[-1]
    return leaf == "conftest" or leaf.startswith("test_") or leaf.endswith("_test")


def not_importable_reason(module: str, qualname: str) -> str | None:
    """Why a class/function referenced as ``module.qualname`` will not load in another process."""
    if module == "__main__":
        return (
            "it is defined in __main__: another process (the CI gate, production) has a different "
            "__main__, so loading fails with \"AttributeError: Can't get attribute "
            f"'{qualname}' on <module '__main__'>\""
        )
    if "<locals>" in qualname:
        return "it is defined inside a function: pickle cannot import it by name"
    if _test_module(module):
        return (
            f"it is defined in the test module {module!r}: test modules are importable only "
            "while pytest runs them (from the tests' folder, under the name pytest gave them), "
            "so production or any other process fails with ModuleNotFoundError"
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


def locate_globals(
    obj: Any, names: Iterable[str], root: str = "model", limit: int = 3
) -> dict[str, list[str]]:
    """Where in ``obj`` each ``module.qualname`` in ``names`` is used.

    An instance of such a class is reported by its path (``model.decoder``); a function or class
    stored as a value by its path too (``model.function``). At most ``limit`` paths per name.
    """
    wanted = set(names)
    found: dict[str, list[str]] = {}
    seen: set[int] = set()
    keep: list[Any] = []
    stack: list[tuple[Any, str, int]] = [(obj, root, 0)]
    visited = 0
    while stack and visited < _MAX_NODES:
        value, path, depth = stack.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        keep.append(value)
        visited += 1
        if isinstance(value, (type, types.FunctionType)):
            key = f"{value.__module__}.{value.__qualname__}"
        else:
            key = f"{type(value).__module__}.{type(value).__qualname__}"
        if key in wanted and len(found.setdefault(key, [])) < limit:
            found[key].append(path)
        if depth < _MAX_DEPTH:
            try:
                children = list(_children(value, path))
            except Exception:
                continue
            stack.extend((child, child_path, depth + 1) for child_path, child in reversed(children))
    return found


# -- lossy round-trips -------------------------------------------------------------------------


def resolve_path(obj: Any, path: str) -> Any:
    """The object at ``path`` (``model.layer.rnn``, ``model.decoder.d[0]``) below ``obj``.

    Raises ``LookupError`` when the path does not resolve.
    """
    match = re.match(r"[^.\[]+", path)
    if match is None:
        raise LookupError(path)
    i, current = match.end(), obj
    while i < len(path):
        if path[i] == ".":
            j = i + 1
            while j < len(path) and path[j] not in ".[":
                j += 1
            try:
                current = getattr(current, path[i + 1 : j])
            except Exception as exc:
                raise LookupError(path) from exc
            i = j
        elif path[i] == "[":
            for j in (k for k in range(i + 1, len(path)) if path[k] == "]"):
                try:
                    key = ast.literal_eval(path[i + 1 : j])
                except (ValueError, SyntaxError):
                    continue
                try:
                    current = current[key]
                except Exception as exc:
                    raise LookupError(path) from exc
                i = j + 1
                break
            else:
                raise LookupError(path)
        else:
            raise LookupError(path)
    return current


def _parent(path: str) -> tuple[str, str] | None:
    """``model.a.b`` -> (``model.a``, ``b``); ``model.a[0]`` -> (``model.a``, ``0``)."""
    match = re.match(r"^(.*)(?:\.([^.\[\]]+)|\[([^\]]*)\])$", path)
    if match is None:
        return None
    return match.group(1), match.group(2) or match.group(3)


def _user_class(klass: type) -> bool:
    module = sys.modules.get(klass.__module__)
    top = klass.__module__.partition(".")[0]
    if top in sys.stdlib_module_names or top in ("builtins", "torch", "numpy", "sentencepiece"):
        return False
    file = getattr(module, "__file__", None) or ""
    return "site-packages" not in file and "dist-packages" not in file


def _qualified(klass: type) -> str:
    return f"{klass.__module__}.{klass.__qualname__}"


def _method_where(klass: type, name: str, relative_to: Any) -> str:
    return f"{_qualified(klass)}.{name} ({_where(vars(klass)[name], relative_to)})"


def _culprit(owner: Any, attr: str, relative_to: Any) -> str | None:
    """Which user ``__getstate__``/``__setstate__`` lost ``attr`` of ``owner`` (None: unknown)."""
    klass = type(owner)
    getter = _defines(klass, "__getstate__")
    setter = _defines(klass, "__setstate__")
    if getter is not None and _user_class(getter):
        try:
            state = owner.__getstate__()
        except Exception:
            state = None
        if isinstance(state, dict) and attr not in state:
            kept = ", ".join(repr(k) for k in list(state)[:6])
            return (
                f"left out by {_method_where(getter, '__getstate__', relative_to)}, which "
                f"saves only {kept or 'nothing'}"
            )
    if setter is not None and _user_class(setter):
        return f"not restored by {_method_where(setter, '__setstate__', relative_to)}"
    if getter is not None and _user_class(getter):
        return f"changed by {_method_where(getter, '__getstate__', relative_to)}"
    return None


def explain_lossy(
    live: Any, diff: list[str], root: str = "model", relative_to: Any = None
) -> tuple[list[str], list[str]]:
    """Group structure-tree differences into what was lost, and say which code lost it.

    ``diff`` holds :func:`~pytest_modelpack.structure.diff_trees` lines (live before, reloaded
    after). Returns ``(lost paths, detail lines)``: a missing attribute is reported once, not with
    every path below it.
    """
    entries: list[tuple[str, str, str]] = []  # (sign, path, text)
    for line in diff:
        sign, _, rest = line.partition(" ")
        path = rest.split(": ", 1)[0]
        entries.append((sign, path, rest.split(": ", 1)[1] if ": " in rest else ""))
    missing = [p for s, p, _ in entries if s == "-"]

    def below(path: str, tops: Iterable[str]) -> bool:
        return any(
            path != t and (path.startswith(t + ".") or path.startswith(t + "[")) for t in tops
        )

    lost: list[str] = []
    detail: list[str] = []
    culprits: list[str] = []
    for sign, path, text in entries:
        if sign == "-" and below(path, missing):
            continue
        if sign == "+":
            continue
        if sign == "~" and below(path, missing):
            continue
        if sign == "~" and _rebuilt_function(text):
            continue  # a lambda/local function rebuilt by __setstate__: same role, new qualname
        inner = sum(1 for p in missing if below(p, [path])) if sign == "-" else 0
        text = text.removesuffix("  (missing)")
        if sign == "-":
            more = f", and {inner} attribute{'s' if inner != 1 else ''} below it" if inner else ""
            detail.append(f"{path} is missing after reload (was {text}{more})")
        else:
            before, _, after = text.partition("  ->  ")
            detail.append(f"{path} changed: {before} -> {after}")
        lost.append(path)
        parent = _parent(path)
        if parent is not None:
            try:
                owner = resolve_path(live, parent[0])
            except LookupError:
                continue
            culprit = _culprit(owner, parent[1], relative_to)
            if culprit and culprit not in culprits:
                culprits.append(culprit)
                detail.append(f"  {culprit}")
    added = [
        p
        for s, p, _ in entries
        if s == "+" and not below(p, [q for t, q, _ in entries if t == "+"])
    ]
    if added and len(detail) < 20:
        detail.append(
            "new after reload: " + ", ".join(added[:5]) + (" ..." if len(added) > 5 else "")
        )
    return lost, detail


def _rebuilt_function(change: str) -> bool:
    before, _, after = change.partition("  ->  ")
    return all(side.startswith("function ") and "<locals>" in side for side in (before, after))


def _torch_base(klass: type) -> type | None:
    for base in klass.__mro__:
        if base.__module__.startswith("torch."):
            return base
    return None


def lost_private_state(
    live: Any, reloaded: Any, module_paths: Iterable[str], relative_to: Any = None
) -> tuple[list[str], list[str]]:
    """Private ``nn.Module`` state a user ``__setstate__``/``__getstate__`` failed to restore.

    The structure tree shows public attributes only; torch keeps caches such as an RNN's
    ``_flat_weight_refs`` in private ones, rebuilt by torch's own ``__setstate__``. For every module
    whose class overrides ``__getstate__``/``__setstate__`` of its torch base, compare what torch's
    own pickling would restore with what the reloaded module has. Returns the lost paths and
    detail lines.
    """
    lost: list[str] = []
    lines: list[str] = []
    for path in module_paths:
        try:
            before, after = resolve_path(live, path), resolve_path(reloaded, path)
        except LookupError:
            continue
        klass = type(before)
        base = _torch_base(klass)
        setter, getter = _defines(klass, "__setstate__"), _defines(klass, "__getstate__")
        overrides = [m for m in (setter, getter) if m is not None and _user_class(m)]
        if base is None or not overrides:
            continue
        try:  # what torch itself would have restored, without the user's override
            model = object.__new__(klass)
            base_get = _defines(base, "__getstate__")
            base_set = _defines(base, "__setstate__")
            get_state: Any = vars(base_get)["__getstate__"] if base_get else vars
            state = dict(get_state(before))
            if base_set is not None:
                vars(base_set)["__setstate__"](model, state)
            else:
                model.__dict__.update(state)
            expected = set(vars(model))
        except Exception:
            expected = set(vars(before))
        gone = sorted(k for k in expected - set(vars(after)) if k.startswith("_"))
        if not gone:
            continue
        culprit = setter if setter is not None and _user_class(setter) else getter
        assert culprit is not None
        method = "__setstate__" if culprit is setter else "__getstate__"
        lost.extend(f"{path}.{k}" for k in gone)
        names = ", ".join(f"{path}.{k}" for k in gone[:4]) + (" ..." if len(gone) > 4 else "")
        lines.append(f"{names} missing after reload (torch's own state of {base.__qualname__})")
        torch_set = _defines(base, "__setstate__")
        rebuilt = (
            f"{_qualified(torch_set)}.__setstate__ rebuilds it"
            if torch_set is not None and torch_set.__module__.startswith("torch")
            else "torch's own __setstate__ restores it"
        )
        lines.append(
            f"  {_method_where(culprit, method, relative_to)} does not call "
            f"super().{method}(...): {rebuilt}; a plain pickle.load of this model fails with "
            f"AttributeError: '{klass.__name__}' object has no attribute '{gone[0]}'"
        )
    return lost, lines


def setstate_pitfall(exc: BaseException) -> tuple[str, str] | None:
    """(explanation, fix) for the two nn.Module ``__setstate__`` pitfalls, when ``exc`` is one."""
    text = str(exc)
    if "before Module.__init__() call" in text:
        return (
            "pickle does not call __init__: it creates the object with __new__ and calls "
            "__setstate__(state). A __setstate__ on an nn.Module subclass that assigns a module, "
            "parameter or buffer before nn.Module's own state (_modules, _parameters, _buffers) "
            "exists hits torch's Module.__setattr__ check",
            "either call torch.nn.Module.__init__(self) (or super().__setstate__(...) with the "
            "module's full state) first in __setstate__, or make the wrapper a plain class (not "
            "an nn.Module) with eval()/train() methods that delegate to its layers, as the seed "
            "post finally did",
        )
    if "_flat_weight" in text:
        return (
            "an RNN (GRU/LSTM/RNN) subclass's __setstate__ skipped super().__setstate__(state), "
            "which rebuilds _flat_weight_refs/_flat_weights",
            "call super().__setstate__(state) in the subclass's __setstate__ (or do not override "
            "it), or make the wrapper a plain class that holds the RNN",
        )
    return None


# -- nondeterminism ----------------------------------------------------------------------------

_RANDOM = re.compile(
    r"\b(torch\.(rand|randn|randint|randperm|bernoulli|multinomial|normal|poisson)\w*"
    r"|\w+\.(rand|randn|randint)_like|random\.\w+|np\.random\.\w+|numpy\.random\.\w+"
    r"|F\.dropout\w*|functional\.dropout\w*|\.uniform_|\.normal_|\.bernoulli_)\s*\("
)


def nondeterminism_hints(model: Any, relative_to: Any = None) -> list[str]:
    """Likely reasons ``model`` disagrees with itself: modules left in train mode, random calls.

    Looks at every module reachable from ``model`` after ``model.eval()`` (restoring modes
    afterwards) and scans the user's own ``preprocess``/``forward``/``postprocess``/``__call__``
    methods for random number calls and functional dropout.
    """
    hints: list[str] = []
    torch = sys.modules.get("torch")
    modules: list[tuple[str, Any]] = []
    if torch is not None:
        from .structure import structure_tree

        for path, text in structure_tree(model).items():
            if text.endswith("(nn.Module)"):
                try:
                    modules.append((path, resolve_path(model, path)))
                except LookupError:
                    pass
        everything = [m for _, top in modules for m in top.modules()]
        flags = [(m, m.training) for m in everything]
        try:
            if callable(getattr(model, "eval", None)):
                model.eval()
            else:
                for _, module in modules:
                    module.eval()
            training = [
                path for path, module in modules if module.training and _mode_matters(module)
            ]
        except Exception:
            training = []
        finally:
            for module, flag in flags:
                module.training = flag
        if training:
            hints.append(
                "still in train mode after model.eval(): "
                + ", ".join(training[:5])
                + (" ..." if len(training) > 5 else "")
                + " (eval() does not reach them, so dropout/batch-norm stay random)"
            )
    classes: list[type] = [type(model)] + [type(m) for _, m in modules]
    seen: set[type] = set()
    for klass in classes:
        if klass in seen or not _user_class(klass):
            continue
        seen.add(klass)
        for name in ("preprocess", "forward", "postprocess", "__call__"):
            method = vars(klass).get(name)
            if not isinstance(method, types.FunctionType):
                continue
            try:
                lines, start = inspect.getsourcelines(method)
            except (OSError, TypeError):
                continue
            file = _where(method, relative_to).rsplit(":", 1)[0]
            for offset, text in enumerate(lines):
                if _RANDOM.search(text.split("#", 1)[0]):
                    hints.append(
                        f"random call at {file}:{start + offset} in "
                        f"{klass.__qualname__}.{name}: {text.strip()}"
                    )
    return hints


def _mode_matters(module: Any) -> bool:
    """Whether a module's training flag matters: it, or a submodule, is dropout or batch-norm."""
    torch = sys.modules["torch"]
    random_kinds = (torch.nn.modules.dropout._DropoutNd, torch.nn.modules.batchnorm._BatchNorm)
    return any(isinstance(m, random_kinds) for m in module.modules())


# -- renamed and moved classes -----------------------------------------------------------------


def _normalised(source: str, name: str) -> str:
    """Source without indentation, blank lines and the unit's own name: equal for a pure rename."""
    lines = (line.strip() for line in source.splitlines())
    return re.sub(rf"\b{re.escape(name)}\b", "_", "\n".join(line for line in lines if line))


def recorded_source(code: dict[str, Any], name: str) -> str | None:
    """The source of ``name`` in a manifest's ``code`` section, with its methods' source added
    where they are recorded as units of their own."""
    unit = code.get(name)
    if not isinstance(unit, dict) or not isinstance(unit.get("source"), str):
        return None
    parts = [unit]
    if not re.search(r"^\s+def ", unit["source"], re.MULTILINE):
        parts += sorted(
            (u for key, u in code.items() if key.startswith(name + ".") and isinstance(u, dict)),
            key=lambda u: u.get("line") or 0,
        )
    return "\n".join(str(u.get("source", "")) for u in parts)


def rename_hints(
    module: str,
    qualname: str,
    recorded_source: str | None,
    project_root: Any = None,
) -> list[str]:
    """Where the missing ``module.qualname`` may have gone: same name in another project module
    (moved/renamed module), or a class of similar source in the same module (renamed class)."""
    hints: list[str] = []
    root = os.path.realpath(project_root) + os.sep if project_root is not None else None
    leaf = qualname.rsplit(".", 1)[-1]
    current_exists = not _module_gone(module)
    for name, mod in list(sys.modules.items()):
        file = getattr(mod, "__file__", None)
        if name == module or not file or (root and not os.path.realpath(file).startswith(root)):
            continue
        if "site-packages" in file or _test_module(name):
            continue
        target: Any = mod
        for part in qualname.split("."):
            target = getattr(target, part, None)
            if target is None:
                break
        if target is not None and getattr(target, "__module__", None) == name:
            how = "class moved?" if current_exists else "module renamed or moved?"
            hints.append(f"{module}.{qualname} -> {name}.{qualname} ({how})")
    current = sys.modules.get(module)
    if current is not None and recorded_source:
        old = _normalised(recorded_source, leaf)
        best: tuple[float, str] | None = None
        for attr, value in vars(current).items():
            if not isinstance(value, (type, types.FunctionType)) or attr == leaf:
                continue
            if getattr(value, "__module__", None) != module:
                continue
            try:
                source = inspect.getsource(value)
            except (OSError, TypeError):
                continue
            ratio = difflib.SequenceMatcher(None, old, _normalised(source, attr)).ratio()
            if ratio >= 0.6 and (best is None or ratio > best[0]):
                best = (ratio, attr)
        if best is not None:
            how = "same code" if best[0] >= 0.999 else f"{best[0]:.0%} similar code"
            hints.append(f"{module}.{qualname} -> {module}.{best[1]} ({how}: class renamed?)")
    return hints


def _module_gone(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True


def explain_missing(
    missing: list[tuple[str, str]],
    manifest: dict[str, Any],
    project_root: Any,
    regen: str,
    scanned: bool = False,
) -> tuple[str, list[str], str]:
    """(summary, detail, fix) for golden globals that no longer resolve: renamed or moved code.

    ``missing`` holds ``(module, qualname)`` pairs (qualname ``"*"``: the whole module is gone);
    ``manifest`` is the golden's manifest (its globals and recorded source find where the names
    went); ``regen`` is the exact command that regenerates the golden.
    """
    code = manifest.get("code") or {}
    recorded = [
        (g["module"], g["qualname"])
        for g in manifest.get("globals") or []
        if isinstance(g, dict) and "module" in g and "qualname" in g
    ]
    gone = sorted({m for m, q in missing if q == "*" or _module_gone(m)})
    pairs = [(m, q) for m, q in missing if q != "*"]
    pairs += [(m, q) for m, q in recorded if m in gone and (m, q) not in pairs]
    names = [f"{m}.{q}" for m, q in pairs] or [f"{m} (module)" for m in gone]
    moved: dict[str, str] = {}
    renamed: dict[tuple[str, str], str] = {}
    hints: list[str] = []
    for module, qualname in pairs:
        source = recorded_source(code, f"{module}.{qualname}")
        for hint in rename_hints(module, qualname, source, project_root):
            hints.append(hint)
            target = hint.split(" -> ", 1)[1].split(" ", 1)[0]
            if "module renamed" in hint:
                moved.setdefault(module, target[: -len(qualname) - 1])
            else:
                renamed.setdefault((module, qualname), target)
    detail = [f"module {m!r} no longer exists" for m in gone]
    detail.append(
        f"the golden references {len(names)} name{'s' if len(names) != 1 else ''} that "
        f"no longer resolve{'s' if len(names) == 1 else ''}: {', '.join(names)}"
    )
    for module, new in moved.items():  # a whole module moved: one line, not one per name
        inside = [q for m, q in pairs if m == module]
        found = [h for h in hints if h.startswith(f"{module}.") and f" -> {new}." in h]
        if len(inside) > 1 and len(found) == len(inside):
            hints = [h for h in hints if h not in found]
            hints.append(
                f"{module} -> {new}: all {len(inside)} names are defined there (module renamed "
                "or moved?)"
            )
    if hints:
        detail.append("where they may have gone:")
        detail.extend(f"  {h}" for h in dict.fromkeys(hints))
    if scanned:
        detail.append("nothing was unpickled: the safety scan found these names first")
    restore: list[str] = []
    alias: list[str] = []
    for module in gone:
        old_file = module.replace(".", "/") + ".py"
        moved_to = moved.get(module)
        if moved_to:
            restore.append(f"rename {moved_to.replace('.', '/')}.py back to {old_file}")
            alias.append(f'a {old_file} containing "from {moved_to} import *"')
        else:
            restore.append(f"restore {old_file}")
            alias.append(f"a module {module} that re-exports the names from their new home")
    for (module, qualname), target in renamed.items():
        new_module, _, new = target.rpartition(".")
        file = module.replace(".", "/") + ".py"
        if new_module == module:
            restore.append(f"rename {target} back to {qualname}")
            alias.append(f'"{qualname} = {new}" in {file}')
        else:
            restore.append(f"move {target} back to {file}")
            alias.append(f'"from {new_module} import {new}" in {file}')
    for module, qualname in pairs:
        if module not in gone and (module, qualname) not in renamed:
            restore.append(f"restore {module}.{qualname}")
            alias.append(f"{qualname} = <its new name> in {module.replace('.', '/')}.py")
    listed = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    fix = (
        f"restore the old name: {'; '.join(dict.fromkeys(restore))}\n"
        f"or keep an alias: {'; '.join(dict.fromkeys(alias))}, and list {listed} in "
        "modelpack_safe_globals (an alias is not defined under the old name)\n"
        f"or accept the change and regenerate the golden: {regen}"
    )
    if len(gone) == 1 and all(m == gone[0] for m, _ in pairs):
        who = f"the module {gone[0]!r}, which no longer exists"
    else:
        shown = ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
        who = f"{shown}, which no longer {'exists' if len(names) == 1 else 'exist'}"
    return f"the golden references {who} (renamed or moved?)", detail, fix
