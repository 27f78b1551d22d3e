"""Callables a BUILD state plants where something calls them without anyone looking.

``nn.Module.__call__`` calls ``_compiled_call_impl`` (a class attribute of None) when an instance
sets it, and every hook in ``_forward_pre_hooks``, ``_forward_hooks``, ``_backward_hooks``,
``_state_dict_hooks``... (dicts of the instance). The gate's structure tree shows a module's
public attributes only, so these private ones are judged here, in both modes and the same way:

* :func:`private_callables`: the callables (named globals, partials, functions built by value)
  a state puts into a private attribute or into a dict a private attribute holds, as a part of
  the BUILD shape. The policy refuses a BUILD whose shape has one unless the live model's own
  pickle builds that class with that same shape (a registered hook is trusted as the live model
  registers it: its key, its function).
* :func:`class_slot_problem` (load mode): a callable set on a name the class defines as data
  (``_compiled_call_impl = None``, ``preprocess = None``) shadows nothing visible but is called;
  never on one of nn.Module's own (torch never pickles one), elsewhere only where the live
  model's own pickle restores that class.
* :func:`state_form` and :func:`seal`: a state is a dict or pickle's ``(dict, slots)`` pair
  (nn.Module.__setstate__ would set whatever names a list of pairs holds), and the containers a
  BUILD hands over never change afterwards (a hook set after its dict was judged); with the one
  BUILD per object (:func:`.construct.op_build`), what was judged is what the object holds.
"""

from __future__ import annotations

import inspect
from typing import Any

from pytest_modelpack.safety.byvalue import FUNCTION_BUILDERS
from pytest_modelpack.safety.calls import PLAIN_TYPES, Context
from pytest_modelpack.safety.policy import PRIVATE_CALLABLES, STATE_FORM, TORCH_VALUE_NAMES
from pytest_modelpack.safety.values import ITEMS_KEPT, Sym, kind_of

#: Producers whose objects are callables: ``functools.partial`` (a hook bound to arguments), a
#: bound method (``getattr`` of a built object), operator's callables, functions built by value.
_CALLABLE_MAKERS = frozenset(
    {
        ("functools", "partial"),
        ("functools", "partialmethod"),
        ("operator", "attrgetter"),
        ("operator", "itemgetter"),
        ("operator", "methodcaller"),
        ("types", "MethodType"),
        ("builtins", "getattr"),
    }
    | FUNCTION_BUILDERS
)
#: Named globals that are values or plain types (calling ``int`` runs nothing of anyone's).
_HARMLESS = PLAIN_TYPES | {("builtins", "bytes"), ("builtins", "bool")}
_MISSING = object()


def _kind(ctx: Context, value: Any) -> str | None:
    """``G:module.name`` / ``O:module.name`` for a callable of a kind both modes can tell."""
    name = ctx.global_name(value)
    if name is not None:
        if name in _HARMLESS or (name[0] == "torch" and name[1] in TORCH_VALUE_NAMES):
            return None
        return f"G:{name[0]}.{name[1]}"
    made = ctx.producer(value)
    if made is not None and made in _CALLABLE_MAKERS:
        return f"O:{made[0]}.{made[1]}"
    return None


def _pairs(value: Any) -> list[tuple[Any, Any]] | None:
    """A dict's (key, value) pairs ([] for a value that is no dict; None: too many to tell,
    the same limit in both modes)."""
    if isinstance(value, Sym):
        return value.items if value.kind in ("dict", "obj") else []
    if isinstance(value, dict):
        return None if len(value) > ITEMS_KEPT else list(dict.items(value))
    return []


def private_callables(ctx: Context, state: Any) -> str:
    """The part of a BUILD shape naming the callables ``state`` puts into private attributes
    (``_compiled_call_impl=G:...``) and into the dicts they hold (``_forward_hooks[]=G:...``);
    "" when it puts none there."""
    parts = state if isinstance(state, tuple) and len(state) == 2 else (state,)
    found: set[str] = set()
    for part in parts:
        pairs = _pairs(part)
        if pairs is None:
            found.add("?")
            continue
        for key, value in pairs:
            if type(key) is not str or not key.startswith("_") or key.startswith("__"):
                continue  # public attributes: the structure tree; dunders: state_keys_problem
            kind = _kind(ctx, value)
            if kind is not None:
                found.add(f"{key}={kind}")
            inner = _pairs(value)
            if inner is None:
                found.add(f"{key}[]=?")
                continue
            found.update(f"{key}[]={k}" for k in (_kind(ctx, v) for _, v in inner) if k)
    return PRIVATE_CALLABLES + "; ".join(sorted(found)) if found else ""


def class_slot_problem(cls: type, state: Any, live: bool) -> str | None:
    """Load mode: why ``state`` may not set a callable on a name ``cls`` defines as data (None,
    a flag...), or None. ``live``: the live model's own pickle restores ``cls`` (its decision)."""
    parts = state if isinstance(state, tuple) and len(state) == 2 else (state,)
    for part in parts:
        if not isinstance(part, dict):
            continue
        for key, value in dict.items(part):
            if type(key) is not str or key.startswith("__") or not callable(value):
                continue
            found = inspect.getattr_static(cls, key, _MISSING)
            if found is _MISSING or callable(found) or hasattr(found, "__get__"):
                continue  # not the class's (or a method: state_keys_problem refuses it)
            owner = next((c for c in cls.__mro__ if key in vars(c)), None)
            if owner is not None and (owner.__module__, owner.__qualname__) == (
                "torch.nn.modules.module",
                "Module",
            ):
                return (
                    f"BUILD state sets nn.Module's {key!r} to a {type(value).__name__}: "
                    "torch never pickles one there, and nn.Module would call it"
                )
            if not live:
                return (
                    f"BUILD state sets {key!r}, which {cls.__qualname__} defines as "
                    f"{type(found).__name__}, to a {type(value).__name__} where the live "
                    "model's own pickle never restores this class: whoever reads it calls it"
                )
    return None


def state_form(state: Any) -> str:
    """``form:list`` for a BUILD state that is neither a dict (None) nor pickle's own
    ``(dict, slots)`` pair, "" for one that is: the policy refuses such a form on an nn.Module or
    a project class unless the live model's own pickle restores the class so."""
    parts = state if isinstance(state, tuple) and len(state) == 2 else (state,)
    if all(part is None or _is_dict(part) for part in parts):
        return ""
    return STATE_FORM + kind_of(state)


def _is_dict(value: Any) -> bool:
    return type(value) is dict or (isinstance(value, Sym) and value.kind == "dict")


def seal(m: Any, state: Any) -> None:
    """The state's dicts, and the dicts its private attributes hold (hooks), are never changed
    after this BUILD: setting a hook afterwards would escape what :func:`private_callables`
    judged (nn.Module keeps those very dicts; pydantic keeps the state dict as ``__dict__``)."""
    parts = state if isinstance(state, tuple) and len(state) == 2 else (state,)
    for part in parts:
        if not _is_dict(part):
            continue
        m.s.sealed[id(part)] = part
        pairs = part.items if isinstance(part, Sym) else list(dict.items(part))
        for key, value in pairs or ():
            held = isinstance(value, Sym) and value.kind in ("dict", "obj")
            if type(key) is str and key.startswith("_") and (isinstance(value, dict) or held):
                m.s.sealed[id(value)] = value
