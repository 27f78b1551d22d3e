"""Third-party ``__setstate__`` methods whose state has one known form, judged as attributes.

A pydantic (v2) model pickles as ``{'__dict__': fields, '__pydantic_extra__': extra,
'__pydantic_fields_set__': names, '__pydantic_private__': private}`` (a ``RootModel``: the first
and third only) and restores it with pydantic's own ``__setstate__``, which only sets those four
slots (``object.__setattr__``): the instance dict becomes ``fields``, and pydantic's
``__getattr__`` serves ``extra`` and ``private`` for names ordinary lookup does not find.
Restored, that is attribute state and nothing else, so it is judged as attribute state:

* :func:`attributes_view` (both modes, by the state's form alone, so the live model's pickle and
  the golden get the same BUILD shape): the three dicts merged into one, which the BUILD checks
  (dunder keys, names the class defines as code, callables planted in private attributes) judge
  as they judge any plain state;
* :func:`restores_by_pydantic` and :func:`pydantic_problem` (load mode): the class built runs
  pydantic's own ``__setstate__`` (never an override of it), and the state is exactly the form
  that method reads. A state of this form for any other class is judged as it is: its dunder
  keys are refused.
"""

from __future__ import annotations

import inspect
import os
import types
from typing import Any

from pytest_modelpack.safety.values import Sym

_FIELDS, _FIELDS_SET = "__dict__", "__pydantic_fields_set__"
#: The keys of a pydantic model's state whose values are attribute dicts (or None).
_ATTRIBUTE_PARTS = (_FIELDS, "__pydantic_extra__", "__pydantic_private__")
#: Every key pydantic's ``BaseModel.__getstate__`` writes, and what ``RootModel``'s does.
_MODEL_KEYS = frozenset((*_ATTRIBUTE_PARTS, _FIELDS_SET))
_ROOT_KEYS = frozenset((_FIELDS, _FIELDS_SET))


def _is_form(keys: list[Any]) -> bool:
    return _FIELDS in keys and len(keys) == len(set(keys)) and set(keys) <= _MODEL_KEYS


def attributes_view(state: Any) -> Any:
    """The attributes a pydantic-form ``state`` restores, as one dict (a scan-mode dict in scan
    mode), for the BUILD checks; any other state (or one whose parts repeat a name): itself."""
    if isinstance(state, Sym):
        return _scan_view(state)
    if type(state) is not dict or not _is_form(list(state)):
        return state
    view: dict[Any, Any] = {}
    for key in _ATTRIBUTE_PARTS:
        part = state.get(key)
        if part is None:
            continue
        if type(part) is not dict or any(k in view for k in part):
            return state
        view.update(part)
    return view


def _scan_view(state: Sym) -> Any:
    if state.kind != "dict" or state.items is None:
        return state
    if not _is_form([k for k, _ in state.items]):
        return state
    view = Sym("dict")
    names: set[Any] = set()
    for key, part in state.items:
        if key == _FIELDS_SET or part is None:
            continue
        if not (isinstance(part, Sym) and part.kind == "dict") or part.items is None:
            return state
        if names & {k for k, _ in part.items}:
            return state
        names.update(k for k, _ in part.items)
        view.special_keys.extend(part.special_keys)
        view.named_values = view.named_values or part.named_values
        assert view.items is not None
        view.items.extend(part.items)
    return view


#: pydantic's own ``__setstate__`` functions, and the keys of the state each reads.
_PYDANTIC_SETSTATES = {
    ("pydantic.main", "BaseModel.__setstate__"): _MODEL_KEYS,
    ("pydantic.root_model", "RootModel.__setstate__"): _ROOT_KEYS,
}


def _pydantic_dir() -> str | None:
    import importlib.util

    try:
        spec = importlib.util.find_spec("pydantic")
    except (ImportError, ValueError):
        return None
    places = list(spec.submodule_search_locations or ()) if spec is not None else []
    return os.path.realpath(places[0]) if places else None


def restores_by_pydantic(cls: type) -> frozenset[str] | None:
    """The state keys pydantic's own ``__setstate__`` reads, when that is what ``cls`` runs
    (found on the class itself, never an instance); None for any other class. pydantic's own:
    that function of that module, compiled from a file of the installed pydantic package (by
    name and place, not identity: a re-imported pydantic makes new functions of the same
    code)."""
    found = inspect.getattr_static(cls, "__setstate__", None)
    if found is None or getattr(cls, "__setstate__", None) is not found:
        return None  # (what BUILD calls must be that same function)
    if not isinstance(found, types.FunctionType):
        return None  # (a compiled class's method: torch's packed params)
    keys = _PYDANTIC_SETSTATES.get((found.__module__, found.__qualname__))
    home = _pydantic_dir()
    if keys is None or home is None:
        return None
    source = os.path.realpath(found.__code__.co_filename)
    return keys if source.startswith(home + os.sep) else None


def pydantic_problem(keys: frozenset[str], state: Any) -> str | None:
    """Load mode: why ``state`` is not what pydantic's ``__setstate__`` (reading ``keys``)
    restores: a dict of those keys, the fields a dict, the names set a set of text, extra and
    private attributes a dict or None."""
    if type(state) is not dict or not _is_form(list(state)) or not set(state) <= keys:
        return "BUILD state of a pydantic model is not the dict pydantic's own __getstate__ writes"
    if keys == _ROOT_KEYS and set(state) != keys:
        return "BUILD state of a pydantic RootModel lacks its fields or the names set"
    if type(state[_FIELDS]) is not dict:
        return "BUILD state of a pydantic model: its fields are not a dict"
    names = state.get(_FIELDS_SET, set())
    if type(names) is not set or any(type(n) is not str for n in names):
        return "BUILD state of a pydantic model: the names of its set fields are not a set of text"
    for key in _ATTRIBUTE_PARTS[1:]:
        part = state.get(key)
        if part is not None and type(part) is not dict:
            return f"BUILD state of a pydantic model: {key} is not a dict"
    if attributes_view(state) is state:
        return "BUILD state of a pydantic model names one attribute twice"
    return None


def restored_attributes(cls: type, state: Any) -> tuple[Any, str | None]:
    """Load mode: the attributes BUILD restores onto an instance of ``cls`` from ``state``,
    for the checks of plain state, and why that state is refused (None: judge the attributes).
    For a pydantic model, the attributes of pydantic's own state; for any class, ``state``."""
    keys = restores_by_pydantic(cls)
    if keys is None:
        return state, None
    problem = pydantic_problem(keys, state)
    return (state, problem) if problem is not None else (attributes_view(state), None)
