"""The table of callables a golden's REDUCE may call, each with its argument check.

One check per callable, run by the interpreter in both modes (scan: on placeholder values, judging
what can be judged without building; load: on the real values, right before the call). A check
returns why the call is refused, or None. Sizes are checked against the bytes present: a tensor
may not address more of its storage than the storage holds, so nothing grows beyond the file.
Special callables (nested torch storages, protocol 0-2 bytes, copyreg constructors) are marked
and carried out by the interpreter itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from pytest_modelpack.safety.values import Sym, is_bytes, is_int, is_ints, is_text, kind_of

#: Protocols 0-2 have no bytes opcode: pickle writes bytes as _codecs.encode(text, 'latin1').
LATIN1_NAMES = frozenset({"latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1", "l1"})
#: A view may address at most this many elements beyond its storage's own (broadcast views).
_VIEW_SLACK = 1 << 24
_MAX_DIMS = 64


class Context(Protocol):
    """What a check may ask the interpreter."""

    loading: bool

    def global_name(self, value: object) -> tuple[str, str] | None:
        """The (module, qualname) ``value`` was pushed as by GLOBAL, else None."""
        ...

    def producer(self, value: object) -> tuple[str, str] | None:
        """The global whose call or instantiation built ``value``, else None."""
        ...


Check = Callable[[tuple[Any, ...], Context], "str | None"]


def _arity(args: tuple[Any, ...], low: int, high: int | None = None) -> str | None:
    high = low if high is None else high
    if not low <= len(args) <= high:
        want = str(low) if low == high else f"{low} to {high}"
        return f"takes {want} arguments, the golden passes {len(args)}"
    return None


def _kinds(args: tuple[Any, ...], *allowed: tuple[str, ...]) -> str | None:
    for i, (value, kinds) in enumerate(zip(args, allowed, strict=False)):
        kind = kind_of(value)
        if kind not in kinds and not (kind == "obj" and "obj" in kinds):
            return f"argument {i + 1} is a {kind}, expected {' or '.join(kinds)}"
    return None


def tensor_fits(
    storage: Any, offset: Any, size: Any, stride: Any, itemsize: int | None = None
) -> str | None:
    """Why a strided view of ``storage`` is refused (None: it fits the bytes present);
    ``itemsize``: its elements are the tensor's own dtype's, not the storage's."""
    if not (is_int(offset) and offset >= 0):
        return "storage offset is not a non-negative int"
    if not (is_ints(size, _MAX_DIMS) and is_ints(stride, _MAX_DIMS) and len(size) == len(stride)):
        return "size and stride are not tuples of non-negative ints of one length"
    numel = 1
    for n in size:
        numel *= n
    if numel == 0 or isinstance(storage, Sym):
        return None  # nothing addressed / scan mode: the loader checks the real storage
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    have = storage.size() if hasattr(storage, "size") else None
    if itemsize and isinstance(have, int):
        have = storage.nbytes() // itemsize
    if not isinstance(have, int):
        return "the storage is not a torch storage"
    if last >= have:
        return f"the tensor addresses element {last} of a storage of {have} elements"
    if numel > have + _VIEW_SLACK and numel > 64 * have:
        return f"the tensor has {numel} elements over a storage of {have}"
    return None


def _storage(value: Any, ctx: Context) -> str | None:
    if isinstance(value, Sym):
        return None if value.kind in ("storage", "obj") else f"a {value.kind}, not a storage"
    if not ctx.loading:
        return "not a storage"
    import torch

    if isinstance(value, torch.storage.TypedStorage | torch.UntypedStorage):
        return None
    return f"a {type(value).__name__}, not a torch storage"


def _tensor(value: Any, ctx: Context) -> str | None:
    if isinstance(value, Sym):
        return None if value.kind == "obj" else f"a {value.kind}, not a tensor"
    if not ctx.loading:
        return "not a tensor"
    import torch

    return None if isinstance(value, torch.Tensor) else f"a {type(value).__name__}, not a tensor"


def _hooks(value: Any) -> str | None:
    kind = kind_of(value)
    if kind in ("dict", "obj") and (isinstance(value, Sym) or not value):
        return None
    return "backward hooks must be an empty dict"


def _global_in(
    value: Any, ctx: Context, allowed: frozenset[tuple[str, str]], what: str
) -> str | None:
    name = ctx.global_name(value)
    if name is None or name not in allowed:
        return f"{what} must be one of the built-in names, not a {kind_of(value)}"
    return None


def _first(*problems: str | None) -> str | None:
    return next((p for p in problems if p is not None), None)


# --------------------------------------------------------------------------- torch


def _rebuild_tensor_v2(args: tuple[Any, ...], ctx: Context) -> str | None:
    if problem := _arity(args, 6, 7):
        return problem
    return _first(
        _storage(args[0], ctx),
        tensor_fits(args[0], *args[1:4]),
        _kinds(args[4:5], ("bool",)),
        _hooks(args[5]),
        _kinds(args[6:7], ("dict", "None")),
    )


def _rebuild_tensor_v3(args: tuple[Any, ...], ctx: Context) -> str | None:
    """torch's rebuild of a tensor whose dtype has no typed storage class (uint16, float8...):
    the storage holds bytes, the tensor's ``dtype`` (a torch dtype name) says how to read them."""
    if problem := _arity(args, 7, 8):
        return problem
    name = ctx.global_name(args[6])  # a torch name (the policy judges which)
    if name is None or name[0] != "torch":
        return f"the dtype must be a torch dtype, not a {kind_of(args[6])}"
    storage = args[0]
    if ctx.loading:
        import torch

        if not isinstance(args[6], torch.dtype):
            return f"the dtype must be a torch dtype, not a {type(args[6]).__name__}"
        if not isinstance(storage, torch.storage.TypedStorage):
            return f"a {type(storage).__name__}, not a torch storage"
    return _first(
        _storage(args[0], ctx),
        tensor_fits(storage, args[1], args[2], args[3], getattr(args[6], "itemsize", None)),
        _kinds(args[4:5], ("bool",)),
        _hooks(args[5]),
        _kinds(args[7:8], ("dict", "None")),
    )


def _rebuild_parameter(args: tuple[Any, ...], ctx: Context) -> str | None:
    if problem := _arity(args, 3):
        return problem
    return _first(_tensor(args[0], ctx), _kinds(args[1:2], ("bool",)), _hooks(args[2]))


def _obj_state(state: Any) -> str | None:
    """``_set_obj_state`` sets attributes: plain names only (no ``__class__``/``__dict__``)."""
    if state is None or isinstance(state, Sym):
        return None
    parts = state if isinstance(state, tuple) else (state,)
    for part in parts:
        if part is None or isinstance(part, Sym):
            continue
        if not isinstance(part, dict):
            return "state is not a dict"
        if any(not isinstance(k, str) or k.startswith("__") for k in part):
            return "state sets a dunder attribute"
    return None


def _rebuild_parameter_with_state(args: tuple[Any, ...], ctx: Context) -> str | None:
    return _first(
        _arity(args, 4), _rebuild_parameter(args[:3], ctx), _obj_state(args[3:4] and args[3])
    )


def _rebuild_qtensor(args: tuple[Any, ...], ctx: Context) -> str | None:
    if problem := _arity(args, 7):
        return problem
    qparams = args[4]
    if not (isinstance(qparams, tuple) and qparams):
        return "quantizer parameters are not a tuple"
    schemes = frozenset(
        ("torch", n)
        for n in ("per_tensor_affine", "per_channel_affine", "per_channel_affine_float_qparams")
    )
    return _first(
        _storage(args[0], ctx),
        tensor_fits(args[0], *args[1:4]),
        _global_in(qparams[0], ctx, schemes, "the qscheme"),
        _kinds(args[5:6], ("bool",)),
        _hooks(args[6]),
    )


_SPARSE = ("sparse_coo", "sparse_csr", "sparse_csc", "sparse_bsr", "sparse_bsc")


def _rebuild_sparse_tensor(args: tuple[Any, ...], ctx: Context) -> str | None:
    if problem := _arity(args, 2):
        return problem
    if not (isinstance(args[1], tuple) and 3 <= len(args[1]) <= 4):
        return "sparse data is not a tuple of 3 or 4 items"
    layout = args[0]
    if isinstance(layout, Sym):
        return None if layout.producer == ("torch.serialization", "_get_layout") else "bad layout"
    if ctx.loading:
        import torch

        return None if layout in [getattr(torch, n) for n in _SPARSE] else "not a sparse layout"
    return _global_in(layout, ctx, frozenset(("torch", n) for n in _SPARSE), "the layout")


def _meta_tensor(args: tuple[Any, ...], ctx: Context) -> str | None:
    if problem := _arity(args, 4):
        return problem
    return _first(
        _kinds(args[3:4], ("bool",)),
        None if is_ints(args[1]) and is_ints(args[2]) else "size/stride are not int tuples",
    )


def _from_numpy(args: tuple[Any, ...], ctx: Context) -> str | None:
    return _first(_arity(args, 4), _kinds(args[2:4], ("str", "obj"), ("bool",)))


def _from_type_v2(args: tuple[Any, ...], ctx: Context) -> str | None:
    """``_rebuild_from_type_v2(func, new_type, args, state)`` calls ``func(*args)``: func must be
    a table callable and its arguments pass its own check."""
    if problem := _arity(args, 4):
        return problem
    func, new_type, inner, state = args
    name = ctx.global_name(func)
    if name in NOT_REBUILT:
        return f"it calls {name[0]}.{name[1]}: {NOT_REBUILT[name]}"
    if (
        name is None
        or name not in REDUCE_TABLE
        or name in SPECIAL
        or name == ("torch._tensor", "_rebuild_from_type_v2")
    ):
        called = "" if name is None else f" ({name[0]}.{name[1]})"
        return f"the function it calls{called} is not on the built-in call table"
    if not isinstance(inner, tuple):
        return "its arguments are not a tuple"
    if problem := REDUCE_TABLE[name](inner, ctx):
        return f"{name[0]}.{name[1]}: {problem}"
    return _first(_tensor_type(new_type, ctx), _obj_state(state))


#: Tensor rebuilds torch writes that the gate refuses by name, and why (never called).
NOT_REBUILT: dict[tuple[str, str], str] = {
    ("torch.nested._internal.nested_tensor", "_rebuild_njt"): (
        "a jagged nested tensor (layout=torch.jagged) is not rebuilt from a golden, its "
        "offsets index its values unchecked; keep it strided (torch.nested.nested_tensor(..., "
        "layout=torch.strided)), or keep its values and offsets as two tensors and build it "
        "with torch.nested.nested_tensor_from_jagged where it is used"
    ),
}


def _tensor_type(new_type: Any, ctx: Context) -> str | None:
    """The type ``_rebuild_from_type_v2`` turns the tensor into: a global (judged as a reference
    on its own, like any other: torch's, or the project's own subclass), which loaded must be a
    ``torch.Tensor`` subclass whose state torch restores by setting attributes (no
    ``__setstate__`` of its own: that would run code the call table cannot check)."""
    if ctx.global_name(new_type) is None:
        return f"the tensor type must be a global, not a {kind_of(new_type)}"
    if not ctx.loading:
        return None
    import torch

    if not (isinstance(new_type, type) and issubclass(new_type, torch.Tensor)):
        return "the tensor type is not a torch.Tensor subclass"
    default = torch.Tensor.__setstate__
    if getattr(new_type, "__setstate__", default) is not default:
        return f"the tensor type {new_type.__qualname__} defines its own __setstate__"
    return None


def _size(args: tuple[Any, ...], ctx: Context) -> str | None:
    return _first(_arity(args, 1), None if args and is_ints(args[0]) else "not a tuple of ints")


# --------------------------------------------------------------------------- builtins, numpy


_FACTORIES = frozenset(
    [("builtins", n) for n in ("list", "dict", "set", "int", "float", "str", "tuple", "bool")]
    + [("collections", "OrderedDict"), ("collections", "Counter")]
)


def _defaultdict(args: tuple[Any, ...], ctx: Context) -> str | None:
    if problem := _arity(args, 0, 1):
        return problem
    if not args or args[0] is None:
        return None
    return _global_in(args[0], ctx, _FACTORIES, "the default factory")


def _takes(low: int, high: int, *kinds: tuple[str, ...]) -> Check:
    """``low`` to ``high`` arguments, the first ones of these kinds (in order)."""

    def check(args: tuple[Any, ...], ctx: Context) -> str | None:
        return _first(_arity(args, low, high), _kinds(args, *kinds))

    return check


def _numbers(low: int, high: int, *kinds: str) -> Check:
    """``low`` to ``high`` arguments, each of these kinds."""
    return _takes(low, high, *[kinds] * high)


def _np_reconstruct(args: tuple[Any, ...], ctx: Context) -> str | None:
    if problem := _arity(args, 3):
        return problem
    return _first(
        _global_in(
            args[0], ctx, frozenset({("numpy", "ndarray"), ("numpy", "matrix")}), "the array type"
        ),
        _kinds(args[1:3], ("tuple",), ("bytes",)),
    )


def _special(args: tuple[Any, ...], ctx: Context) -> str | None:
    return None  # carried out (and checked) by the interpreter itself


_NUMPY: dict[tuple[str, str], Check] = {}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _NUMPY[(_mod, "_reconstruct")] = _np_reconstruct
    _NUMPY[(_mod, "scalar")] = _takes(1, 2, ("obj",), ("bytes",))
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    # Protocol 5 arrays: numpy's own bytearray buffer, reshaped by numpy (which checks sizes).
    _NUMPY[(_mod, "_frombuffer")] = _takes(
        4, 4, ("bytes", "bytearray"), ("obj",), ("tuple",), ("str",)
    )

#: Carried out by the interpreter: a nested torch storage, protocol 0-2 bytes, copyreg objects.
SPECIAL = frozenset(
    {
        ("torch.storage", "_load_from_bytes"),
        ("_codecs", "encode"),
        ("copyreg", "_reconstructor"),
        ("copyreg", "__newobj__"),
    }
)

REDUCE_TABLE: dict[tuple[str, str], Check] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch._utils", "_rebuild_qtensor"): _rebuild_qtensor,
    ("torch._utils", "_rebuild_sparse_tensor"): _rebuild_sparse_tensor,
    ("torch._utils", "_rebuild_meta_tensor_no_storage"): _meta_tensor,
    ("torch._utils", "_rebuild_device_tensor_from_numpy"): _from_numpy,
    ("torch._tensor", "_rebuild_from_type_v2"): _from_type_v2,
    ("torch.serialization", "_get_layout"): _takes(1, 1, ("str",)),
    ("torch", "Size"): _size,
    ("torch", "device"): _takes(1, 2, ("str",), ("int",)),
    ("collections", "OrderedDict"): _takes(0, 1, ("list", "dict")),
    ("collections", "Counter"): _takes(0, 1, ("dict",)),
    ("collections", "defaultdict"): _defaultdict,
    ("collections", "deque"): _takes(0, 2, ("list", "tuple"), ("int", "None")),
    ("builtins", "set"): _takes(0, 1, ("list",)),
    ("builtins", "frozenset"): _takes(0, 1, ("list",)),
    # Never bytearray(n): n zero bytes from a few bytes of pickle.
    ("builtins", "bytearray"): _takes(0, 1, ("bytes", "list")),
    ("builtins", "complex"): _numbers(0, 2, "int", "float"),
    ("builtins", "slice"): _numbers(1, 3, "int", "None"),
    ("builtins", "range"): _numbers(1, 3, "int"),  # lazy: never materialised by a call
    # dtype('f8', False, True); its state is checked at BUILD (never flags from a golden).
    ("numpy", "dtype"): _takes(1, 3, ("str",), ("bool",), ("bool",)),
    **_NUMPY,
    **{name: _special for name in SPECIAL},
}

#: The builtin types whose plain instances NEWOBJ and ``copyreg._reconstructor`` may make.
PLAIN_TYPES = frozenset(
    ("builtins", n) for n in ("object", "dict", "list", "set", "tuple", "int", "float", "str")
)

#: Producers whose objects BUILD may restore (numpy checks its own state; dtype state must be
#: the dtype's own, see the interpreter), besides torch.nn modules and project classes.
BUILD_TYPES = frozenset(
    {
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        # A pickled SentencePieceProcessor references only this class (checked with a real one);
        # its __setstate__ reloads the serialized model proto.
        ("sentencepiece", "SentencePieceProcessor"),
        ("collections", "OrderedDict"),  # a state_dict's _metadata attribute
        # io.BytesIO(): __setstate__ takes (bytes, position, dict): a buffer of the bytes present
        ("_io", "BytesIO"),
    }
)


def is_latin1_call(args: tuple[Any, ...]) -> bool:
    return (
        len(args) == 2
        and is_text(args[0])
        and isinstance(args[1], str)
        and args[1].lower() in LATIN1_NAMES
    )


def load_from_bytes_arg(args: tuple[Any, ...]) -> Any:
    """The payload of ``_load_from_bytes(payload)`` when it is immutable bytes, else None."""
    return args[0] if len(args) == 1 and is_bytes(args[0]) else None


def sparse_problem() -> str | None:
    """Why the sparse tensor just rebuilt is invalid (an index out of range, compressed indices
    out of order...), or None. torch's ``_validate_loaded_sparse_tensors`` checks nothing unless
    invariant checks are on, so they are, for this check: an out-of-range index is an
    out-of-bounds write the first time anything densifies the tensor."""
    import torch

    try:
        with torch.sparse.check_sparse_tensor_invariants(True):
            torch._utils._validate_loaded_sparse_tensors()
    except Exception as exc:  # RuntimeError, ValueError, NotImplementedError (a layout)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"an invalid sparse tensor: {first[:200]}"
    return None


def kw_shape(m: Any, kwargs: Any) -> str:
    """The keyword arguments of a NEWOBJ_EX as a shape, the same in both modes
    (``**cdata=int``; "" for none): instantiating with keyword arguments is trusted only where the
    live model's own pickle instantiates that class with keyword arguments of that shape."""
    pairs = kwargs.items if isinstance(kwargs, Sym) else list(dict.items(kwargs))
    if pairs is None:  # (scan mode: more than a dict's kept items)
        return "**?"
    if not pairs:
        return ""
    parts = {f"{k}={m.call_shape((v,))}" if type(k) is str else "?" for k, v in pairs}
    return "**" + ",".join(sorted(parts))
