"""Opcode handlers that construct objects, each use judged by its role before it runs.

REDUCE and INST/OBJ with arguments call (only the table of :mod:`.calls`, plus what the live
model's pickle calls); NEWOBJ, NEWOBJ_EX, copyreg and OBJ instantiate; BUILD restores state only
of what this stream itself constructed (never a numpy dtype's flags); a persistent id is refused
in a golden, a storage record in a torch stream, an opaque storage in the live model's own pickle.
"""

from __future__ import annotations

import inspect
import sys
import types
from dataclasses import replace
from typing import Any

from pytest_modelpack.safety.byvalue import (
    BY_VALUE_TABLE,
    CODE_BUILDERS,
    FUNCTION_BUILDERS,
    GETATTR,
    GETATTR_FOUND,
    MODULE,
    RESOLVERS,
    NotLiteral,
    build_function,
    code_shape,
    fetch,
    function_state_problem,
    is_method,
    location_free,
    method_of_built_problem,
    nameable,
    resolved_name,
)
from pytest_modelpack.safety.calls import (
    PLAIN_TYPES,
    REDUCE_TABLE,
    SPECIAL,
    is_latin1_call,
    kw_shape,
    load_from_bytes_arg,
    sparse_problem,
)
from pytest_modelpack.safety.classes import (
    CLASS_CALLS,
    CLASS_MAKERS,
    SETSTATES,
    SKELETONS,
    WRAPPERS,
    NotFingerprinted,
    by_value_name,
    class_shape,
    is_class_setattr,
)
from pytest_modelpack.safety.dtypes import dtype_problem
from pytest_modelpack.safety.machine import (
    LOAD_FROM_BYTES,
    Machine,
    Persid,
    Refused,
)
from pytest_modelpack.safety.planted import (
    class_slot_problem,
    private_callables,
    seal,
    state_form,
)
from pytest_modelpack.safety.policy import Kind
from pytest_modelpack.safety.refs import GlobalRef, Role
from pytest_modelpack.safety.restorers import attributes_view, restored_attributes
from pytest_modelpack.safety.values import INERT_DUNDERS, Latin1, Sym, TextRef, kind_of


def op_persid(m: Machine, pos: int) -> None:
    data = m.short_line(pos, "persistent id")
    _persistent(m, data.decode("ascii"), pos)


def op_binpersid(m: Machine, pos: int) -> None:
    (pid,) = m.pop(1, pos)
    _persistent(m, pid, pos)


def _persistent(m: Machine, pid: Any, pos: int) -> None:
    if m.persid is Persid.OPAQUE:
        m.stack.append(Sym("storage"))
        return
    if m.persid is Persid.REFUSE:
        m.problem(
            pos,
            "<persistent id>",
            "PERSID",
            Role.REFERENCE,
            "a persistent id: pickle.dump never writes one, and only a custom loader could "
            "resolve it",
        )
        m.stack.append(Sym("obj"))
        return
    assert m.s.nested is not None
    m.stack.append(m.s.nested.storage_record(m, pid, pos))


def _call_args(m: Machine, pos: int, args: Any, op: str) -> tuple[Any, ...] | None:
    if isinstance(args, tuple):
        return args
    m.problem(
        pos, "<arguments>", op, Role.REDUCE, f"{op} arguments are a {kind_of(args)}, not a tuple"
    )
    return None


def op_reduce(m: Machine, pos: int) -> None:
    func, args = m.pop(2, pos)
    m.stack.append(_call(m, pos, func, args, "REDUCE"))


def _call(m: Machine, pos: int, func: Any, args: Any, op: str) -> Any:
    name = m.global_name(func)
    if name is None and (made := _partial_new(m, pos, func, args)) is not None:
        return made
    if name is None:
        m.problem(
            pos,
            "<value>",
            kind_of(func),
            Role.REDUCE,
            f"{op} calls a value the pickle built itself, not a named global",
        )
        return Sym("obj")
    call = _call_args(m, pos, args, op)
    if call is None:
        return Sym("obj")
    if name in RESOLVERS and (name != GETATTR or (call and m.global_name(call[0]) is not None)):
        # (getattr of an object the stream built is a bound method: a call judged as any other)
        return _resolve(m, pos, func, name, call)
    check = REDUCE_TABLE.get(name) or BY_VALUE_TABLE.get(name)
    why = None if check is None else check(call, m)
    if name == GETATTR:
        why = why or method_of_built_problem(call)
    shape, digest = _shape(m, name, call, why)
    if shape is None:
        why, shape = digest, ""
    elif name == GETATTR and why is None:
        shape += f",attr:{call[1]}"  # trusted only for the attribute the live pickle fetches
    ref = GlobalRef(name[0], name[1], m.where, pos, role=Role.REDUCE, shape=shape)
    if why is None and name in SPECIAL:
        why = _special_problem(m, name, call)
    m.s.use(ref if why is None else replace(ref, problem=f"call refused: {why}"))
    if why is not None:  # scan mode goes on (load mode raised): the call never happens
        return Sym("obj", name)
    if name in SPECIAL:
        return _special(m, pos, name, call)
    if name == ("builtins", "bytes") and not call:
        return b""  # protocols 0-2 write b"" so: a literal in both modes (a code's parts)
    if not m.loading:
        return _made(m, name, call, Sym("obj", name, _kept(m, name, call, digest)), digest)
    if name in CODE_BUILDERS:
        call = location_free(name, call)
    elif name in SKELETONS:  # never the class this process tracks by that id: a fresh one
        at = SKELETONS[name]
        call = (*call[:at], None, *call[at + 1 :])
    if check is not None:
        try:
            result = func(*call)
        except Exception as exc:  # a table callable on arguments its check let through
            raise m.fail(pos, f"{name[0]}.{name[1]} failed: {type(exc).__name__}: {exc}") from None
    else:
        result = func(*call)  # trusted code: its own errors are the LOAD ERROR diagnosis's
    if name == GETATTR and not is_method(result):
        why = f"getattr of {call[1]!r} of a built object gave a {kind_of(result)}, not a method"
        raise Refused(replace(ref, problem=why), why)
    if name in CODE_BUILDERS:
        m.s.digests[id(result)] = (result, digest)
    elif name in WRAPPERS:
        m.s.wrapped[id(result)] = (call, result)
    if name == ("torch._utils", "_rebuild_sparse_tensor"):
        why = sparse_problem()  # indices in range, before any use
        if why is not None:
            raise Refused(replace(ref, problem=why), why)
    if result is not None and not isinstance(result, bool | int | float | str | bytes):
        # (a setter's None, an interned value: never a producer's own object)
        m.s.produced[id(result)] = (result, name)
    return _made(m, name, call, result, digest)


def _partial_new(m: Machine, pos: int, func: Any, args: Any) -> Any:
    """Protocols 2-3 write ``cls.__new__(cls, *args, **kwargs)`` (what NEWOBJ_EX is at 4) as a
    call of ``functools.partial(cls.__new__, cls, *args, **kwargs)``: judged as that NEWOBJ_EX,
    keyword arguments by their shape (None: ``func`` is no such partial)."""
    hit = m.s.partials.get(id(func))
    if hit is None or hit[0] is not func or args != ():
        return None
    state = hit[1]
    if not (isinstance(state, tuple) and len(state) == 4 and state[3] is None):
        return None
    new, call, kwargs = state[0], state[1], state[2]
    named = m.global_name(new)
    if not (named and named[1].endswith(".__new__") and isinstance(call, tuple) and call):
        return None
    if m.global_name(call[0]) != (named[0], named[1].removesuffix(".__new__")):
        return None
    return _newobj(m, pos, call[0], call[1:], kwargs)


def _kept(m: Machine, name: tuple[str, str], call: tuple[Any, ...], digest: str) -> tuple[Any, ...]:
    """What a scan-mode result keeps of its call: a code object or class its digest, a function
    its code's, a descriptor what it wraps, a numpy dtype its arguments."""
    if name in CODE_BUILDERS or name in CLASS_MAKERS:
        return (digest,)
    if name in FUNCTION_BUILDERS:
        return (m.digest_of(call[0]),) if call else ()
    return call if name in WRAPPERS or name == ("numpy", "dtype") else ()


def _made(
    m: Machine, name: tuple[str, str], call: tuple[Any, ...], result: Any, digest: str
) -> Any:
    """A class built by value: it stands as its ``<by_value>`` global from now on (both modes),
    and once its dict is set, its digest covers that dict too."""
    if name in CLASS_MAKERS:
        m.s.globals_by_id[id(result)] = (result, by_value_name(digest))
        if m.loading:
            m.s.digests[id(result)] = (result, digest)
    elif name in SETSTATES or digest.startswith("class:"):  # (its dict set; dill's setattr)
        cls = call[0]
        if isinstance(cls, Sym):
            cls.args = (digest,)
        else:
            m.s.digests[id(cls)] = (cls, digest)
        m.s.globals_by_id[id(cls)] = (cls, by_value_name(digest))
        if name in SETSTATES:
            return cls  # what _class_setstate returns, in scan mode too
    return result


def _shape(
    m: Machine, name: tuple[str, str], call: tuple[Any, ...], why: str | None
) -> tuple[str | None, str]:
    """(the call's shape, the digest of a code builder's or class call's) or (None, why it has
    none)."""
    by_class = name in CLASS_CALLS or is_class_setattr(name, call, m)
    if why is not None or not (name in CODE_BUILDERS or by_class):
        return m.call_shape(call), ""
    try:
        if by_class:
            shape = class_shape(name, call, m)
        else:
            shape = code_shape(name, call, m.read_ref, m.digest_of, m)
    except (NotLiteral, NotFingerprinted) as exc:
        return None, str(exc)
    return shape, shape


def _resolve(m: Machine, pos: int, func: Any, name: tuple[str, str], call: tuple[Any, ...]) -> Any:
    """A resolver call (:data:`.byvalue.RESOLVERS`): its result judged as a reference to the name
    it fetches, as if the golden had written that global itself."""
    target = resolved_name(name, call, m)
    if isinstance(target, str):
        m.problem(pos, name[0], name[1], Role.REDUCE, f"call refused: {target}")
        return Sym("obj")
    m.s.use(GlobalRef(target[0], target[1], m.where, pos, role=Role.REFERENCE))
    found: tuple[str, str] | None = None
    if len(call) == 3:
        # getattr(G, name, default): the attribute, where it exists, is what the call returns;
        # both names are judged, in both modes, so the scan is as strict as the loader.
        base = m.global_name(call[0])
        assert base is not None
        found = (base[0], call[1] if base[1] == MODULE else f"{base[1]}.{call[1]}")
        m.s.use(GlobalRef(*found, m.where, pos, role=Role.REFERENCE, shape=GETATTR_FOUND))
    if not m.loading:
        return m.named(None, target)
    sys.audit("pickle.find_class", *target)
    try:
        obj = fetch(name, call, target)
    except (ImportError, AttributeError, LookupError) as exc:
        raise m.fail(pos, f"{name[0]}.{name[1]} failed: {type(exc).__name__}: {exc}") from None
    if found is not None and obj is not call[2]:
        target = found  # the attribute itself, judged above
    if not nameable(obj):
        raise m.fail(pos, f"{target[0]}.{target[1]} is a {type(obj).__name__}, not a global")
    return m.named(obj, target)


def _special_problem(m: Machine, name: tuple[str, str], call: tuple[Any, ...]) -> str | None:
    if name == LOAD_FROM_BYTES:
        if load_from_bytes_arg(call) is None:
            return "its argument is not literal bytes, so the pickle it loads cannot be read first"
        if m.depth >= 1:
            return "a torch storage nested inside a nested storage: torch never writes one"
        return None
    if name == ("_codecs", "encode"):
        return None if is_latin1_call(call) else "only _codecs.encode(text, 'latin1') is allowed"
    # copyreg._reconstructor(cls, base, state) / copyreg.__newobj__(cls, *args)
    if not call or m.global_name(call[0]) is None:
        return "the class it instantiates is not a named global"
    if name == ("copyreg", "_reconstructor"):
        if len(call) != 3 or m.global_name(call[1]) not in PLAIN_TYPES:
            return "the base class is not a plain builtin type"
    return None


def _special(m: Machine, pos: int, name: tuple[str, str], call: tuple[Any, ...]) -> Any:
    if name == LOAD_FROM_BYTES:
        assert m.s.nested is not None
        return m.s.nested.payload(m, call[0], pos)
    if name == ("_codecs", "encode"):
        text = call[0]
        if m.loading:
            return text.encode("latin-1")
        return Latin1(text, text.offset if isinstance(text, TextRef) else pos)
    cls = call[0]
    cls_name = m.global_name(cls)
    assert cls_name is not None
    if name[1] == "__newobj__":
        return _instantiate(m, pos, cls, cls_name, call[1:])
    return _instantiate(m, pos, cls, cls_name, (), call)  # copyreg._reconstructor


def _instantiate(
    m: Machine,
    pos: int,
    cls: Any,
    cls_name: tuple[str, str],
    args: tuple[Any, ...],
    rc: Any = None,
    kwargs: dict[str, Any] | None = None,
    shape: str | None = None,
) -> Any:
    """``cls.__new__(cls, *args, **kwargs)`` (NEWOBJ, NEWOBJ_EX, copyreg), judged as an
    instantiation of ``cls`` (with keyword arguments: of that ``shape``, see
    :func:`.calls.kw_shape`)."""
    ref = GlobalRef(cls_name[0], cls_name[1], m.where, pos, role=Role.NEWOBJ, shape=shape)
    m.s.use(ref)
    if not m.loading:
        return Sym("obj", cls_name)
    if not isinstance(cls, type):
        raise Refused(ref, "not a class")
    try:
        if rc is not None and len(rc) == 3 and m.global_name(rc[1]) != ("builtins", "object"):
            base = rc[1]
            obj = base.__new__(cls, rc[2])
            if rc[2] is not None:
                base.__init__(obj, rc[2])
        elif rc is not None and len(rc) == 3:  # copyreg._reconstructor(cls, object, None)
            obj = object.__new__(cls)  # (as copyreg does: never cls's own __new__)
        else:
            obj = cls.__new__(cls, *args, **(kwargs or {}))
    except (TypeError, ValueError) as exc:
        raise m.fail(pos, f"instantiating {cls_name[0]}.{cls_name[1]}: {exc}") from None
    m.s.produced[id(obj)] = (obj, cls_name)
    return obj


def op_newobj(m: Machine, pos: int) -> None:
    cls, args = m.pop(2, pos)
    m.stack.append(_newobj(m, pos, cls, args, None))


def op_newobj_ex(m: Machine, pos: int) -> None:
    cls, args, kwargs = m.pop(3, pos)
    m.stack.append(_newobj(m, pos, cls, args, kwargs))


def _class_named(m: Machine, pos: int, cls: Any, op: str) -> tuple[str, str] | None:
    """The name of the class NEWOBJ/OBJ instantiates; None (a problem noted) for a value that
    is not a named global."""
    name = m.global_name(cls)
    if name is None:
        why = f"{op} of a value that is not a named class"
        m.problem(pos, "<value>", kind_of(cls), Role.NEWOBJ, why)
    return name


def _newobj(m: Machine, pos: int, cls: Any, args: Any, kwargs: Any) -> Any:
    name = _class_named(m, pos, cls, "NEWOBJ")
    if name is None:
        return Sym("obj")
    call = _call_args(m, pos, args, "NEWOBJ")
    if call is None:
        return Sym("obj")
    if kwargs is not None and not (
        isinstance(kwargs, dict) or (isinstance(kwargs, Sym) and kwargs.kind == "dict")
    ):
        raise m.fail(pos, "NEWOBJ_EX keyword arguments are not a dict")
    shape = None if kwargs is None else kw_shape(m, kwargs)
    if not shape:  # NEWOBJ_EX without keyword arguments is NEWOBJ
        return _instantiate(m, pos, cls, name, call)
    given = kwargs if isinstance(kwargs, dict) else None  # (scan mode: a Sym)
    return _instantiate(m, pos, cls, name, call, kwargs=given, shape=shape)


def _inst_like(m: Machine, pos: int, cls: Any, items: list[Any]) -> Any:
    """INST/OBJ (protocols 0-1): ``cls(*args)`` with arguments (a call), else ``cls.__new__``."""
    if items:
        return _call(m, pos, cls, tuple(items), "INST")
    name = _class_named(m, pos, cls, "OBJ")
    return Sym("obj") if name is None else _instantiate(m, pos, cls, name, ())


def op_inst(m: Machine, pos: int) -> None:
    module = m.short_line(pos, "global name").decode("utf-8")
    qualname = m.short_line(pos, "global name").decode("utf-8")
    cls = m.resolve(module, qualname, pos)
    items = m.pop_mark(pos)
    m.stack.append(_inst_like(m, pos, cls, items))


def op_obj(m: Machine, pos: int) -> None:
    items = m.pop_mark(pos)
    if not items:
        raise m.fail(pos, "OBJ without a class")
    m.stack.append(_inst_like(m, pos, items[0], items[1:]))


def op_build(m: Machine, pos: int) -> None:
    (state,) = m.pop(1, pos)
    inst = m.top(pos)
    made = m.producer(inst)
    if made is None:
        m.problem(
            pos,
            "<value>",
            kind_of(inst),
            Role.BUILD,
            "BUILD on a value this pickle did not construct (a class, a module, a container)",
        )
        return
    ref = GlobalRef(made[0], made[1], m.where, pos, role=Role.BUILD)
    if id(inst) in m.s.built:
        twice = "a second BUILD on one object: pickle.dump restores each object's state once"
        m.s.use(replace(ref, problem=twice))
        return
    m.s.built[id(inst)] = inst
    if made == ("functools", "partial"):
        m.s.partials[id(inst)] = (inst, state)  # (a protocol 2-3 NEWOBJ_EX: see _partial_new)
    if made in FUNCTION_BUILDERS:  # dill: a by-value function's attributes
        why = function_state_problem(state, m)
        m.s.use(ref if why is None else replace(ref, problem=why))
        if m.loading:
            try:
                build_function(inst, state)
            except (AttributeError, TypeError, ValueError) as exc:
                raise m.fail(pos, f"BUILD of a function: {exc}") from None
        return
    # What the state is, as a call's shape: an object trusted only because the live model's own
    # pickle restores it (functools.partial) is restored only with state of the same shape.
    # (the globals a tuple state names: partial's function; kinds may differ, a __dict__ set
    # since the live pickle was made)
    if isinstance(state, tuple):
        named = [p for p in m.call_shape(state).split(",") if p.startswith("G:")]
        ref = replace(ref, shape=",".join(named))
    form = state_form(state)
    if form:  # (a list of pairs: nn.Module.__setstate__ sets whatever names it holds)
        ref = replace(ref, shape=f"{ref.shape} {form}" if ref.shape else form)
    seal(m, state)
    # A pydantic model's state is judged as the attributes it restores (see .restorers).
    attributes = attributes_view(state)
    planted = private_callables(m, attributes)  # hooks, _compiled_call_impl: see .planted
    if planted:
        ref = replace(ref, shape=f"{ref.shape} {planted}" if ref.shape else planted)
    # (scan mode: the state's dunder keys; load mode checks the object built, see _build)
    why = dtype_problem(inst, made, state, used=id(inst) in m.s.fetched) or (
        None if m.loading else state_keys_problem(object, attributes)
    )
    decision = m.s.use(ref if why is None else replace(ref, problem=why))
    if m.loading:
        _build(m, inst, made, state, decision, ref)


def _build(
    m: Machine, inst: Any, made: tuple[str, str], state: Any, decision: Any, ref: GlobalRef
) -> None:
    if made == ("numpy", "dtype"):
        if inst.__reduce__()[2] != state:  # a structured dtype: numpy's own state (judged)
            inst.__setstate__(state)
        return  # a plain one: the state equals the dtype's own, nothing to do
    setstate = getattr(type(inst), "__setstate__", None)
    attributes, problem = restored_attributes(type(inst), state)  # see .restorers
    problem = problem or state_keys_problem(type(inst), attributes, compiled=_compiled(setstate))
    if problem is None and not _compiled(setstate):
        live = getattr(decision, "kind", None) in (Kind.LIVE, Kind.EXTRA)
        problem = class_slot_problem(type(inst), attributes, live)
    if problem is not None:  # no configuration lifts it: the ref carries the problem
        raise Refused(replace(ref, problem=problem), problem)
    if setstate is not None:
        if (
            decision is not None
            and decision.kind == Kind.PROJECT
            and not _default_setstate(type(inst))
        ):
            raise Refused(
                ref,
                f"{type(inst).__qualname__} defines its own __setstate__, which the live "
                "model's own pickle never runs",
            )
        if _default_setstate(type(inst)) and type(state) is not dict:
            why = (
                f"BUILD state of an nn.Module is a {kind_of(state)}, not a dict: "
                "nn.Module.__setstate__ would set whatever names it holds"
            )
            raise Refused(replace(ref, problem=why), why)
        # The type's own method, never an instance attribute of the same name.
        setstate(inst, state)
        return
    slots = None
    if isinstance(state, tuple) and len(state) == 2:
        state, slots = state
    if state:
        if not isinstance(state, dict):
            raise Refused(ref, "BUILD state is not a dict")
        inst_dict = inst.__dict__
        for k, v in state.items():
            inst_dict[sys.intern(k) if type(k) is str else k] = v
    if slots:
        if not isinstance(slots, dict) or any(
            not isinstance(k, str) or k.startswith("__") for k in slots
        ):
            raise Refused(ref, "BUILD slot state sets something other than plain attributes")
        for k, v in slots.items():
            setattr(inst, k, v)


def state_keys_problem(cls: type, state: Any, compiled: bool = False) -> str | None:
    """Why a BUILD ``state`` must not be restored onto an instance of ``cls``, or None.

    Restored state may set data attributes only: never a dunder (``__setstate__``, ``__class__``,
    ``__reduce__`` ...) but a wrapper's metadata (:data:`~.values.INERT_DUNDERS`: ``__module__``,
    ``__wrapped__`` ...), and never a name the class defines as a method, property or other
    descriptor — an instance attribute would shadow it, and whoever calls ``model.preprocess`` or
    ``tokenizer.encode`` would run what the golden planted there. Two exceptions shadow nothing:
    a cache (``functools.cached_property``, torch.distributions' ``lazy_property``) that the
    class itself fills in the instance dict, holding a value that is not callable; and the state
    of a class whose ``__setstate__`` is compiled (``compiled``: numpy's generators), which
    reads the keys it knows rather than setting attributes.
    """
    parts = state if isinstance(state, tuple) and len(state) == 2 else (state,)
    for part in parts:
        if isinstance(part, Sym) and part.special_keys:
            # Scan mode: no object is built, but the dunder keys of a state dict are known.
            key = part.special_keys[0]
            return f"BUILD state sets {key!r}: a special attribute, never plain state"
        if not isinstance(part, dict):
            continue  # a custom __setstate__'s own state: judged by the type (proven safe)
        for key in part:
            if not isinstance(key, str):
                return "BUILD state has a key that is not an attribute name"
            if key in INERT_DUNDERS:
                value = part[key]
                if key != "__wrapped__" and not (
                    isinstance(value, str) or (value is None and key == "__doc__")
                ):
                    return f"BUILD state sets {key!r} to other than text"
                continue  # a wrapper's metadata: shadows nothing anything calls
            if key.startswith("__") and key.endswith("__"):
                return f"BUILD state sets {key!r}: a special attribute, never plain state"
            found = inspect.getattr_static(cls, key, None)
            if isinstance(found, types.MemberDescriptorType) or compiled:
                continue  # a __slots__ member (uuid.UUID's int): data, not code
            if _is_cache(found) and not callable(part[key]):
                continue  # the value the class caches there itself
            if found is not None and (callable(found) or hasattr(found, "__get__")):
                return (
                    f"BUILD state sets {key!r}, which {cls.__qualname__} defines as a method or "
                    "descriptor: restored state may not replace code"
                )
    return None


def _compiled(setstate: Any) -> bool:
    """A ``__setstate__`` in compiled code (C, Cython), not a Python function that may update
    the instance dict with whatever the state holds."""
    compiled = (types.BuiltinFunctionType, types.WrapperDescriptorType, types.MethodDescriptorType)
    return isinstance(setstate, compiled) or type(setstate).__name__ == "cython_function_or_method"


def _is_cache(found: Any) -> bool:
    """A descriptor that computes a value once and keeps it in the instance dict."""
    import functools

    if isinstance(found, functools.cached_property):
        return True
    kind = type(found)
    return (kind.__module__, kind.__qualname__) == ("torch.distributions.utils", "lazy_property")


def _default_setstate(cls: type) -> bool:
    """A ``__setstate__`` that only restores attributes: torch's nn.Module one."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return getattr(cls, "__setstate__", None) is torch.nn.Module.__setstate__
