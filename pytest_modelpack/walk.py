"""The one walker of an object's state, and the structure tree that describes it.

:func:`nodes` walks an object's state (``nn.Module`` children, ``__dict__``, every ``__slots__``
form, containers) and yields one :class:`Node` per reachable object: its attribute path, value,
where it is held (``holder[key]``), and its structure-tree line. Everything that asks "what does
this object hold, and where" is a view of it: the structure tree (a golden's manifest, the lossy
diagnosis, the gate's planted-callable check), the state diff, device placement, the
nondeterminism hints. :func:`pickled_nodes` is the same walk over what *pickle* saves
(``__reduce_ex__``, ``__getstate__``): the unpicklable diagnosis, renamed code, storages.

Each distinct object is visited once (by identity: a DAG of shared lists costs its size, not its
paths; cycles end), the walk is iterative (no recursion limit), a path below the tree is a link
to its holder's, a string only when read (a 40,000-deep list is not 40,000 ever longer strings:
:data:`Where`), and a state larger than :data:`MAX_NODES` objects fails with :class:`WalkLimit`
naming where, instead of running for ever.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import pickle
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

from .errors import UsageError

#: Values pickle saves as themselves: never walked into.
ATOMS = (str, bytes, bytearray, int, float, complex, bool, type(None), range, slice)
#: The structure tree shows this deep; the walk goes on below (placement needs it), unshown.
TREE_DEPTH = 12
#: Containers longer than this are one line in the tree; their items are walked, unshown.
TREE_ITEMS = 32
#: Strings up to this length are shown verbatim; longer ones by length only.
MAX_STR = 80
#: How many objects one walk visits before it gives up (:class:`WalkLimit`).
MAX_NODES = 1_000_000
#: How deep the pickle view goes; pickle itself hits the recursion limit long before this.
PICKLE_DEPTH = 100
MISSING = object()


def attempt(call: Callable[..., Any], *args: Any, default: Any = None) -> Any:
    """``call(*args)``, or ``default`` when it raises: user code (a ``__getstate__``, a
    ``__reduce_ex__``, a tokenizer's getter) may fail in any way, and a diagnosis goes on."""
    try:
        return call(*args)
    except Exception:
        return default


class WalkLimit(UsageError):
    """The state holds more objects than one walk visits."""


class NullWriter(io.RawIOBase):
    """A file that discards what is written: lets pickle run without keeping bytes."""

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return memoryview(data).nbytes


def pickles(value: Any, pickler: type[pickle.Pickler] = pickle.Pickler) -> Exception | None:
    """What ``pickler`` (the serializer's) raises on ``value``, None when it pickles."""
    try:
        pickler(NullWriter(), protocol=pickle.DEFAULT_PROTOCOL).dump(value)
    except Exception as exc:  # pickle raises PicklingError, TypeError, AttributeError ...
        return exc
    return None


def is_tensor(value: Any) -> bool:
    return isinstance(value, getattr(sys.modules.get("torch"), "Tensor", ()))


def is_module(value: Any) -> bool:
    return isinstance(value, getattr(getattr(sys.modules.get("torch"), "nn", None), "Module", ()))


def defines(klass: type, name: str) -> type | None:
    """The class in ``klass``'s MRO that defines ``name`` (None: only ``object`` does)."""
    return next((base for base in klass.__mro__[:-1] if name in vars(base)), None)


def slot_names(klass: type) -> list[str]:
    """Every slot ``klass`` and its bases declare (one string, an iterable, a dict's keys),
    private names mangled (``__w`` in class ``C`` is ``_C__w``)."""
    names: list[str] = []
    for base in klass.__mro__[:-1]:
        slots = vars(base).get("__slots__", ())
        try:
            declared = [slots] if isinstance(slots, str) else list(slots)
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


def slot_value(value: Any, key: str) -> Any:
    return attempt(object.__getattribute__, value, key, default=MISSING)


def instance_state(value: Any) -> dict[str, Any]:
    """An object's own state as default pickling sees it: its ``__dict__`` and set slots."""
    state: dict[str, Any] = dict(getattr(value, "__dict__", None) or {})
    for slot in slot_names(type(value)):
        found = slot_value(value, slot)
        if found is not MISSING:
            state.setdefault(slot, found)
    return state


def qualified_name(obj_or_type: Any) -> str:
    klass = obj_or_type if isinstance(obj_or_type, type) else type(obj_or_type)
    return f"{getattr(klass, '__module__', '?')}.{klass.__qualname__}"


# -- the state view ------------------------------------------------------------------------------


class Slot:
    """Holds a slot like a dict item: ``Slot(obj)[name] = value`` sets the attribute."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __setitem__(self, name: str, value: Any) -> None:
        setattr(self.obj, name, value)


#: Where a node is: its path, or (where its holder is, the step from there), built into a string
#: only when read: a 40,000-deep list's paths would otherwise cost 40,000 × 120 KB of text.
Where = str | tuple[Any, str]


def path_of(where: Where) -> str:
    """The attribute path a :data:`Where` stands for."""
    steps: list[str] = []
    while not isinstance(where, str):
        where, step = where
        steps.append(step)
    return where + "".join(reversed(steps))


def short_path(path: str, limit: int = 200) -> str:
    """``path``, its middle left out past ``limit`` characters (a message names a deep place)."""
    if len(path) <= limit:
        return path
    return f"{path[: limit // 2]}…{path[-limit // 2 :]} ({len(path)} characters)"


@dataclasses.dataclass(frozen=True, slots=True)
class Node:
    """One reachable object: where it is (``path``, and ``holder[key]`` when it can be swapped
    there), its structure-tree ``line`` and whether the tree shows it (``shown``). ``leaf``
    nodes are not walked into (tensors, scalars, opaque objects, repeats); ``in_module`` says a
    torch module holds it (moving that module moves it)."""

    where: Where
    value: Any
    line: str
    leaf: bool
    shown: bool = True
    repeat: bool = False
    holder: Any = None
    key: Any = None
    in_module: bool = False

    @property
    def path(self) -> str:
        return path_of(self.where)


_FUNCTION_TYPES = frozenset(
    {types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.MethodWrapperType}
    | {types.WrapperDescriptorType, types.MethodDescriptorType, types.ClassMethodDescriptorType}
)


#: A nested tensor's line names this many of its components' shapes.
NESTED_SHOWN = 8


def _dims(shape: Any) -> str:
    return ", ".join(str(s) for s in shape)


def _tensor_line(value: Any, torch: Any) -> str:
    """A tensor's line: kind, dtype, shape. A nested tensor has no one shape (a ragged dimension
    is a symbol, ``j1``, renamed on every load): it is described by its components' shapes. A
    lazy module's uninitialized parameter has no shape yet; a tensor that cannot say its shape
    is named as such, never a traceback."""
    name = type(value).__name__
    kind = "Parameter" if name == "Parameter" else "Tensor"
    uninitialized = getattr(getattr(torch.nn, "parameter", None), "UninitializedTensorMixin", ())
    if isinstance(value, uninitialized):
        kind = "Parameter" if isinstance(value, torch.nn.Parameter) else "Buffer"
        return f"{kind} (uninitialized)"
    dtype = str(attempt(getattr, value, "dtype", default="?")).replace("torch.", "")
    if attempt(getattr, value, "is_nested", default=False):
        layout = str(attempt(getattr, value, "layout", default="?")).replace("torch.", "")
        parts = attempt(lambda: [_dims(t.shape) for t in value.unbind()])
        if parts is None:
            return f"{kind} {dtype} nested ({layout})"
        shown = ", ".join(f"[{p}]" for p in parts[:NESTED_SHOWN])
        more = f", … ({len(parts)} components)" if len(parts) > NESTED_SHOWN else ""
        return f"{kind} {dtype} nested ({layout}) [{shown}{more}]"
    shape = attempt(lambda: _dims(value.shape))
    if shape is None:
        return f"{kind} {dtype} (shape unavailable: {qualified_name(value)})"
    return f"{kind} {dtype}[{shape}]"


def _leaf_line(value: Any, torch: Any) -> str | None:
    """The line of a value the tree does not walk into (None: it has parts)."""
    if value is None or isinstance(value, (bool, int, float)):
        return f"{type(value).__name__} = {value!r}"
    if isinstance(value, str):
        return f"str = {value!r}" if len(value) <= MAX_STR else f"str (len {len(value)})"
    if isinstance(value, (bytes, bytearray)):
        return f"{type(value).__name__} ({len(value)} bytes)"
    if torch is not None and isinstance(value, torch.Tensor):
        return _tensor_line(value, torch)
    if torch is not None and isinstance(value, (torch.dtype, torch.device, torch.Size)):
        return f"{qualified_name(value)} = {value}"
    name = qualified_name(value)
    if name == "_io.BytesIO":
        return f"_io.BytesIO ({len(value.getbuffer())} bytes)"
    if name.startswith("sentencepiece.") and hasattr(value, "get_piece_size"):
        size = attempt(value.get_piece_size)  # None: an uninitialised processor
        return f"{name} (not loaded)" if size is None else f"{name} (vocab {size})"
    if type(value).__module__ == "numpy" and hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"numpy.ndarray {value.dtype}[{', '.join(str(s) for s in value.shape)}]"
    if type(value) in _FUNCTION_TYPES:
        # A real function (pickled by reference), never any callable carrying a __qualname__: an
        # object's own attributes could name a function it is not, and hide what it holds.
        return f"function {getattr(value, '__module__', '?')}.{value.__qualname__}"
    if isinstance(value, type):
        return f"class {qualified_name(value)}"
    return None


def module_dicts(module: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A module's own ``_modules``, ``_parameters``, ``_buffers``, read from its instance dict
    (``{}`` for one it lacks): a module whose ``__setstate__`` skips nn.Module's (torch's
    quantized convolutions) has none after a plain pickle round-trip, and asking it raises."""
    own = vars(module)
    found = [own.get(name) for name in ("_modules", "_parameters", "_buffers")]
    held = [d if isinstance(d, dict) else {} for d in found]
    return held[0], held[1], held[2]


def submodules(root: Any) -> list[Any]:
    """``root`` and every module below it, once each, depth first (``Module.modules()``, without
    asking a module for state it lacks: see :func:`module_dicts`)."""
    found: dict[int, Any] = {}
    stack = [root]
    while stack:
        module = stack.pop()
        if id(module) in found:
            continue
        found[id(module)] = module
        stack.extend(m for m in reversed(module_dicts(module)[0].values()) if m is not None)
    return list(found.values())


def _module_parts(module: Any) -> list[tuple[str, Any, Any, Any]]:
    """Submodules, parameters, buffers (swappable in their dicts), then small public values."""
    held = module_dicts(module)
    parts = [(f".{k}", v, dicts, k) for dicts in held for k, v in dicts.items()]
    if type(module).__name__ == "OptimizedModule" and "_orig_mod" in held[0]:
        # torch.compile's wrapper: its dynamo context is rebuilt on load by torch's own
        # __reduce__, so the state that counts is the original module's.
        return parts
    own = vars(module)
    parts += [
        (f".{k}", v, own, k) for k, v in own.items() if not k.startswith("_") and k != "training"
    ]
    return parts


def _object_parts(value: Any) -> list[tuple[str, Any, Any, Any]]:
    own = getattr(value, "__dict__", None)
    own = own if isinstance(own, dict) else {}
    parts: list[tuple[str, Any, Any, Any]] = [
        (f".{k}", v, own, k) for k, v in own.items() if not k.startswith("__")
    ]
    slots = [s for s in slot_names(type(value)) if s not in own and not s.startswith("__")]
    for slot in slots:
        found = slot_value(value, slot)
        if found is not MISSING:
            parts.append((f".{slot}", found, Slot(value), slot))
    return parts


def nodes(obj: Any, root: str = "model") -> Iterator[Node]:
    """Walk ``obj``'s state depth first; yield each reachable object once (see :class:`Node`).

    Shown nodes are the structure tree; the walk also goes below the tree's depth and into long
    containers and sets, unshown, so that placement reaches every module and tensor.
    """
    torch = sys.modules.get("torch")
    seen: dict[int, str] = {}  # shown objects: where the tree showed them
    unshown: set[int] = set()
    count = 0
    stack: list[Iterator[tuple[Where, Any, Any, Any, int, bool, bool]]] = [
        iter([(root, obj, None, None, 0, True, False)])
    ]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        where, value, holder, key, depth, shown, in_module = item
        atom = isinstance(value, (int, float, str, bool, type(None)))
        if atom and not shown:
            continue
        if not atom and id(value) in seen:
            if shown:
                yield Node(where, value, f"same object as {seen[id(value)]}", True, repeat=True)
            continue
        # Unshown parts have a memo of their own: an object first met below the tree's depth or
        # in a long list is still shown in full where the tree meets it.
        if not shown:
            if id(value) in unshown:
                continue
            unshown.add(id(value))
        count += 1
        if count > MAX_NODES:
            raise WalkLimit(
                f"the object holds more than {MAX_NODES} objects; walking stopped at "
                f"{short_path(path_of(where))}",
                fix="keep large data out of the model object (load it where it is used), or "
                "give the class a __getstate__ that leaves it out",
            )
        node_args = {"holder": holder, "key": key, "in_module": in_module, "shown": shown}
        line = _leaf_line(value, torch)
        if line is not None:
            if shown and not isinstance(value, (str, bytes, bytearray)) and not atom:
                seen[id(value)] = path_of(where)  # text is shown again where it repeats
            yield Node(where, value, line, True, **node_args)
            continue
        if shown:
            seen[id(value)] = path_of(where)
        name = qualified_name(value)
        parts: list[tuple[str, Any, Any, Any]]
        module = torch is not None and isinstance(value, torch.nn.Module)
        if isinstance(value, (dict, list, tuple, set, frozenset)):
            if isinstance(value, dict):
                parts = [(f"[{k!r}]", v, value, k) for k, v in value.items()]
            else:
                held = value if isinstance(value, list) else None
                parts = [(f"[{i}]", v, held, i) for i, v in enumerate(value)]
            line = f"{name} ({len(value)} items)"
            walked = len(value) <= TREE_ITEMS and not isinstance(value, (set, frozenset))
            leaf = not walked
        elif module:
            parts, line, walked, leaf = _module_parts(value), f"{name} (nn.Module)", True, False
        else:
            parts = _object_parts(value)
            line, walked, leaf = name, True, not parts
        if shown and depth >= TREE_DEPTH:
            line, walked, leaf = f"{name} (not walked: deeper than {TREE_DEPTH})", False, True
        yield Node(where, value, line, leaf, **node_args)
        sub, inside = shown and walked, in_module or module
        # A shown part's path is short (the tree is TREE_DEPTH deep): a string now. An unshown
        # part's is a link to its holder's, made a string only if something reports it.
        base = path_of(where) if sub else where
        steps = [(f"{base}{s}" if sub else (base, s), v, h, k) for s, v, h, k in parts]
        stack.append(iter([(*step, depth + 1, sub, inside) for step in steps]))


def structure_tree(obj: Any, root: str = "model") -> dict[str, str]:
    """``{attribute path: description}`` in walk order."""
    return tree_of(nodes(obj, root))


def tree_of(walked: Any) -> dict[str, str]:
    return {node.path: node.line for node in walked if node.shown}


def diff_trees(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """``-``/``~``/``+`` lines for the paths removed, changed or added between two trees."""
    lines = []
    for path, line in before.items():
        if path not in after:
            lines.append(f"- {path}: {line}  (missing)")
        elif after[path] != line:
            lines.append(f"~ {path}: {line}  ->  {after[path]}")
    lines += [f"+ {path}: {line}  (new)" for path, line in after.items() if path not in before]
    return lines


# -- the pickle view -----------------------------------------------------------------------------


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
            yield from ((f"{path}.{k}", v) for k, v in item.items() if v is not None)
        elif not custom or own.get(key, MISSING) is item or slot_value(value, key) is item:
            yield f"{path}.{key}", item
        else:  # a __getstate__ that renames or recomputes: say where the value really lives
            yield f"{path}.__getstate__()[{key!r}]", item


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
    elif isinstance(value, (list, tuple, set, frozenset)):
        sets = isinstance(value, (set, frozenset))
        for index, item in enumerate(value):
            yield (f"{path}.<item {index}>" if sets else f"{path}[{index}]"), item
        if type(value) in (list, tuple, set, frozenset):
            return
    if isinstance(value, functools.partial):
        yield f"{path}.func", value.func
        yield from ((f"{path}.args[{i}]", item) for i, item in enumerate(value.args))
        yield from ((f"{path}.keywords[{k!r}]", v) for k, v in (value.keywords or {}).items())
        return
    if isinstance(value, types.MethodType):
        yield f"{path}.__self__", value.__self__
        return
    klass = type(value)
    custom_reduce = (
        getattr(klass, "__reduce_ex__", None) is not object.__reduce_ex__
        or getattr(klass, "__reduce__", None) is not object.__reduce__
    )
    if custom_reduce and not isinstance(value, (dict, list, tuple, set, frozenset)):
        reduced = attempt(value.__reduce_ex__, pickle.DEFAULT_PROTOCOL)
        if not isinstance(reduced, tuple):
            return  # None: the object itself refuses, it is the smallest part
        func, args, state = (list(reduced) + [None] * 5)[:3]
        if func is not None and not isinstance(func, type):
            yield f"{path}.__reduce__()[0]", func
        for index, item in enumerate(args or ()):
            if not (index == 0 and item is klass):
                yield f"{path}.__reduce__()[1][{index}]", item
        if state is not None:
            yield from state_children(value, state, path, custom=True)
        return
    state, custom = state_of(value)
    yield from state_children(value, state, path, custom)


def pickled_nodes(
    obj: Any, root: str = "model", descend: Callable[[Any], bool] | None = None
) -> Iterator[tuple[str, Any, int]]:
    """``(path, value, depth)`` of each object pickle saves for ``obj``, once each, depth first;
    ``descend(value)`` False keeps the walk out of an object's parts."""
    seen: set[int] = set()
    keep: list[Any] = []  # __getstate__ results are temporaries: keep them alive, ids unique
    stack: list[tuple[str, Any, int]] = [(root, obj, 0)]
    while stack:
        path, value, depth = stack.pop()
        if id(value) in seen:
            continue
        if len(seen) >= MAX_NODES:
            raise WalkLimit(f"the object holds more than {MAX_NODES} objects (at {path})")
        seen.add(id(value))
        keep.append(value)
        yield path, value, depth
        if depth < PICKLE_DEPTH and (descend is None or descend(value)):
            found = attempt(list, children(value, path)) or []
            stack.extend((p, v, depth + 1) for p, v in reversed(found))
