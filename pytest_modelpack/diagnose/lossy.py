"""LOSSY ROUND-TRIP: which state pickle.dumps -> pickle.loads lost, and whose code lost it."""

from __future__ import annotations

import re
import types
from collections.abc import Iterable
from typing import Any

from ..fixes import listed
from ..project import is_library_module
from ..statediff import by_path
from ..walk import attempt, defines, is_module, nodes, qualified_name
from .frames import where


def user_class(klass: Any) -> bool:
    """Is ``klass`` (or a function) the user's own code, not the standard library's or an
    installed package's?"""
    return not is_library_module(klass.__module__)


def _method_where(klass: type, name: str, relative_to: Any) -> str:
    return f"{qualified_name(klass)}.{name} ({where(vars(klass)[name], relative_to)})"


def _culprit(owner: Any, attr: str, relative_to: Any) -> str | None:
    """Which user ``__getstate__``/``__setstate__`` lost ``attr`` of ``owner`` (None: unknown)."""
    klass = type(owner)
    getter = defines(klass, "__getstate__")
    setter = defines(klass, "__setstate__")
    if getter is not None and user_class(getter):
        state = attempt(owner.__getstate__)
        if isinstance(state, dict) and attr not in state:
            kept = ", ".join(repr(k) for k in list(state)[:6])
            return (
                f"left out by {_method_where(getter, '__getstate__', relative_to)}, which "
                f"saves only {kept or 'nothing'}"
            )
    if setter is not None and user_class(setter):
        return f"not restored by {_method_where(setter, '__setstate__', relative_to)}"
    if getter is not None and user_class(getter):
        return f"changed by {_method_where(getter, '__getstate__', relative_to)}"
    return None


def parent_path(path: str) -> tuple[str, str] | None:
    """``model.a.b`` -> (``model.a``, ``b``); ``model.a[0]`` -> (``model.a``, ``0``)."""
    match = re.match(r"^(.*)(?:\.([^.\[\]]+)|\[([^\]]*)\])$", path)
    if match is None:
        return None
    return match.group(1), match.group(2) or match.group(3)


_CONTAINERS = (dict, list, tuple, set, frozenset)
_PICKLING = ("__reduce_ex__", "__reduce__", "__getstate__", "__setstate__")


def owner_of(path: str, values: dict[str, Any]) -> Any:
    """The object whose attribute ``path`` is, up through the containers holding it (None:
    the tree does not show it)."""
    while (parent := parent_path(path)) is not None:
        path = parent[0]
        value = values.get(path, _CONTAINERS)
        if value is _CONTAINERS:
            return None
        if not isinstance(value, _CONTAINERS):
            return value
    return None


def library_pickled(owner: Any) -> bool:
    """Is ``owner`` a library's object (numpy's, torch's: never the user's class) saved and
    restored by that library's own pickling? What that leaves out or rebuilds (a masked array's
    fill value, an optimizer's patched ``step``) is its design, and a plain ``pickle.load``
    gives the same: not state the user's code lost (a behaviour change is still caught by
    comparing the live and reloaded models' outputs)."""
    klass = type(owner)
    if owner is None or user_class(klass):
        return False
    makers = [m for m in (defines(klass, name) for name in _PICKLING) if m is not None]
    return bool(makers) and not any(user_class(m) for m in makers)


def _by_design(path: str, values: dict[str, Any]) -> bool:
    """A private field or a method of a library object that its library's own pickling drops or
    rebuilds (a public value, or the user's own object or function, set on it and lost by
    pickle is still LOSSY)."""
    parent = parent_path(path)
    if parent is None or not library_pickled(owner_of(path, values)):
        return False
    value = values.get(path)
    code = getattr(value, "__func__", value)  # (a bound method: its function)
    code = code if isinstance(code, types.FunctionType | type) else type(code)
    if user_class(code):
        return False  # the user's own object or function, on a library object: really lost
    return parent[1].startswith("_") or callable(value)


def _values(obj: Any, walked: Any = None) -> dict[str, Any]:
    """Path -> object of ``obj``'s structure tree."""
    return {path: node.value for path, node in by_path(walked or nodes(obj)).items()}


def explain_lossy(
    live: Any, diff: list[str], relative_to: Any = None, walked: Any = None
) -> tuple[list[str], list[str]]:
    """``(lost paths, detail lines)`` of :func:`~pytest_modelpack.walk.diff_trees` lines (live,
    then reloaded), naming the code that lost them; a missing attribute once, not what is below."""
    entries: list[tuple[str, str, str]] = []  # (sign, path, text)
    for line in diff:
        sign, _, rest = line.partition(" ")
        path, _, text = rest.partition(": ")
        entries.append((sign, path, text))
    missing = [p for s, p, _ in entries if s == "-"]

    def below(path: str, tops: Iterable[str]) -> bool:
        return any(
            path != t and (path.startswith(t + ".") or path.startswith(t + "[")) for t in tops
        )

    lost: list[str] = []
    detail: list[str] = []
    culprits: list[str] = []
    values = _values(live, walked)
    for sign, path, text in entries:
        if sign == "+" or below(path, missing):
            continue
        if sign == "~" and _rebuilt_function(text):
            continue  # a lambda/local function rebuilt by __setstate__: same role, new qualname
        if _by_design(path, values):
            continue
        text = text.removesuffix("  (missing)")
        if sign == "-":
            inner = sum(1 for p in missing if below(p, [path]))
            more = f", and {inner} attribute{'s' if inner != 1 else ''} below it" if inner else ""
            detail.append(f"{path} is missing after reload (was {text}{more})")
        else:
            before, _, after = text.partition("  ->  ")
            detail.append(f"{path} changed: {before} -> {after}")
        lost.append(path)
        parent = parent_path(path)
        if parent is not None and parent[0] in values:
            culprit = _culprit(values[parent[0]], parent[1], relative_to)
            if culprit and culprit not in culprits:
                culprits.append(culprit)
                detail.append(f"  {culprit}")
    new = [p for s, p, _ in entries if s == "+"]
    added = [p for p in new if not below(p, new)]
    if added and len(detail) < 20:
        detail.append("new after reload: " + listed(added, 5))
    return lost, detail


def _rebuilt_function(change: str) -> bool:
    before, _, after = change.partition("  ->  ")
    return all(side.startswith("function ") and "<locals>" in side for side in (before, after))


def lost_private_state(
    live: Any,
    reloaded: Any,
    relative_to: Any = None,
    walked: Any = None,
    reloaded_walked: Any = None,
) -> tuple[list[str], list[str], str | None]:
    """Lost paths and detail lines of private ``nn.Module`` state a user ``__setstate__`` or
    ``__getstate__`` failed to restore: the tree shows public attributes only, and torch keeps
    caches such as an RNN's ``_flat_weight_refs`` in private ones, rebuilt by its own
    ``__setstate__``; compared with what torch's own pickling would restore. Third: the fix when
    every loss is a library layer's own (see :func:`_module_state_lost`), else None."""
    lost: list[str] = []
    lines: list[str] = []
    layer_fixes: list[str] = []
    pitfalls = 0
    after_values = _values(reloaded, reloaded_walked)
    for path, before in _values(live, walked).items():
        after = after_values.get(path)
        if not is_module(before) or after is None:
            continue
        if broken := _module_state_lost(path, before, after, relative_to):
            lost.extend(broken[0])
            lines.extend(broken[1])
            layer_fixes.append(broken[2])
            continue
        klass = type(before)
        base = next((b for b in klass.__mro__ if b.__module__.startswith("torch.")), None)
        setter, getter = defines(klass, "__setstate__"), defines(klass, "__getstate__")
        overrides = [m for m in (setter, getter) if m is not None and user_class(m)]
        if base is None or not overrides:
            continue
        base_get, base_set = defines(base, "__getstate__"), defines(base, "__setstate__")
        try:  # what torch itself would have restored, without the user's override
            model = object.__new__(klass)
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
        pitfalls += 1
        culprit = overrides[0]  # the user's __setstate__, else their __getstate__
        method = "__setstate__" if culprit is setter else "__getstate__"
        lost.extend(f"{path}.{k}" for k in gone)
        names = listed((f"{path}.{k}" for k in gone), 4)
        lines.append(f"{names} missing after reload (torch's own state of {base.__qualname__})")
        rebuilt = (
            f"{qualified_name(base_set)}.__setstate__ rebuilds it"
            if base_set is not None and base_set.__module__.startswith("torch")
            else "torch's own __setstate__ restores it"
        )
        lines.append(
            f"  {_method_where(culprit, method, relative_to)} does not call "
            f"super().{method}(...): {rebuilt}; a plain pickle.load of this model fails with "
            f"AttributeError: '{klass.__name__}' object has no attribute '{gone[0]}'"
        )
    return lost, lines, layer_fixes[0] if layer_fixes and not pitfalls else None


#: nn.Module's own state: a module without it cannot be called (``_call_impl`` reads the hooks).
MODULE_STATE = ("_parameters", "_buffers", "_modules", "_backward_hooks", "_forward_hooks")


def _module_state_lost(
    path: str, before: Any, after: Any, relative_to: Any
) -> tuple[list[str], list[str], str] | None:
    """A library module whose own ``__setstate__`` skips nn.Module's (torch's quantized
    convolutions): reloaded, it has no ``_modules``, ``_backward_hooks`` ..., and calling it,
    ``eval()``, ``.to()`` or ``state_dict()`` raises, after a plain ``pickle.load`` and a
    ``torch.load`` alike. (A user ``__setstate__`` that does this is the pitfall below.)"""
    klass = type(before)
    setter = defines(klass, "__setstate__")
    gone = [k for k in MODULE_STATE if k in vars(before) and k not in vars(after)]
    if not gone or setter is None or user_class(setter):
        return None
    names = listed((f"{path}.{k}" for k in gone), 3)
    first = next((k for k in ("_backward_hooks", "_forward_hooks") if k in gone), gone[0])
    quantized = ".quantized." in f"{klass.__module__}."
    quantize = "pickle the float model and quantize it after loading, or " if quantized else ""
    fix = (
        f"{quantize}pickle the {klass.__name__}'s state_dict() and load_state_dict() it into a "
        f"freshly built {klass.__name__}"
    )
    method = _method_where(setter, "__setstate__", relative_to)
    lines = [
        f"{names} missing after reload (nn.Module's own state of {klass.__qualname__})",
        f"  {method} sets the layer's own fields but never nn.Module's: the reloaded "
        f"{klass.__name__} cannot be called (AttributeError: '{klass.__name__}' object has no "
        f"attribute '{first}'), and torch.load gives the same",
        f"  for this layer: {fix}",
    ]
    return [f"{path}.{k}" for k in gone], lines, fix


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
            "an nn.Module) with eval()/train() methods that delegate to its layers",
        )
    if "_flat_weight" in text:
        return (
            "an RNN (GRU/LSTM/RNN) subclass's __setstate__ skipped super().__setstate__(state), "
            "which rebuilds _flat_weight_refs/_flat_weights",
            "call super().__setstate__(state) in the subclass's __setstate__ (or do not override "
            "it), or make the wrapper a plain class that holds the RNN",
        )
    return None
