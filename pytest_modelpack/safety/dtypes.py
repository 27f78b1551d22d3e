"""numpy dtypes restored by BUILD: only the state numpy itself writes for the dtype it describes.

A dtype's state sets its flags (does it hold object pointers?), item size and fields; numpy
takes any of them from a pickle, and a forged one makes arrays read attacker bytes as pointers or
past their elements. A plain dtype's state is checked by its shape; a structured, subarray,
datetime or byte-swapped one is rebuilt by numpy from its parts and must come out the same.
"""

from __future__ import annotations

from typing import Any

from pytest_modelpack.safety.values import Sym

_USED_DTYPE = "sets the state of a numpy dtype already in use (fetched from the memo)"
_FORGED_DTYPE = "sets a numpy dtype's state (flags, item size, fields) to other than its own"


def dtype_problem(inst: Any, made: tuple[str, str], state: Any, used: bool = False) -> str | None:
    """Why a BUILD of ``state`` onto ``inst`` (made by ``made``) is refused as a forged numpy
    dtype, or None (not a dtype, or numpy's own state for the dtype it describes, set on a dtype
    nothing else holds yet). ``used``: the dtype was fetched from the memo or duplicated, so an
    array or another dtype may hold it: numpy changes a dtype in place, under whatever uses it
    (an array of raw bytes would read them as object pointers). pickle.dump builds each dtype
    right after making it, never one it fetched."""
    if made != ("numpy", "dtype"):
        return None
    if used:
        return _USED_DTYPE
    # Never a dtype's flags, item size or fields from a golden: only the state numpy itself
    # gives the dtype that state describes (a structured one rebuilt by numpy from its fields).
    if isinstance(inst, Sym):
        code = inst.args[0] if inst.args else None
        if not _plain_dtype_state(code, state):
            try:
                if not _numpy_state(code, _concrete(state)):
                    return _FORGED_DTYPE
            except (ImportError, TypeError, ValueError):
                return _FORGED_DTYPE
        inst.args = (*inst.args[:3], state)  # judged: what a structured dtype's field may be
        return None
    own = inst.__reduce__()
    if len(own) >= 3 and own[2] == state:
        return None if _plain_dtype_state(own[1][0], state) else _FORGED_DTYPE
    return None if _numpy_state(own[1][0], state) else _FORGED_DTYPE


def _numpy_state(code: object, state: Any) -> bool:
    """``state`` is what numpy writes for a structured, subarray, datetime or byte-swapped dtype
    of type string ``code``: numpy, building that dtype from its parts (fields and item size,
    base and shape, unit, byte order), gives exactly this state. The fields' dtypes are real
    ones, each judged at its own BUILD; anything numpy would not make (an item size that ends
    inside a field, object flags on plain fields, metadata) differs from the rebuilt state."""
    import numpy as np

    if not (isinstance(state, tuple) and len(state) in (8, 9) and type(state[7]) is int):
        return False
    subarray, names, fields, elsize = state[2], state[3], state[4], state[5]
    try:
        if code in ("M8", "m8") and len(state) == 9 and state[2:5] == (None, None, None):
            meta = state[8]
            unit, count = meta[1][0].decode("ascii"), meta[1][1]
            rebuilt = np.dtype(str(code) if unit == "generic" else f"{code}[{count}{unit}]")
            rebuilt = rebuilt.newbyteorder(state[1])
        elif state[2:5] == (None, None, None):  # a plain dtype in another byte order
            rebuilt = np.dtype(str(code)).newbyteorder(state[1])
        elif subarray is not None and names is None:
            base, shape = subarray
            if not isinstance(base, np.dtype):
                return False
            rebuilt = np.dtype((base, shape))
        elif subarray is None and isinstance(names, tuple) and isinstance(fields, dict):
            spec: dict[str, list[Any]] = {"names": [], "formats": [], "offsets": [], "titles": []}
            for name in names:
                field = fields[name]
                if not (isinstance(field, tuple) and isinstance(field[0], np.dtype)):
                    return False
                spec["names"].append(name)
                spec["formats"].append(field[0])
                spec["offsets"].append(field[1])
                spec["titles"].append(field[2] if len(field) == 3 else None)
            if type(elsize) is not int:
                return False
            layout: Any = {**spec, "itemsize": elsize}
            rebuilt = np.dtype(layout, align=bool(state[7] & 0x80))
        else:
            return False
        own = rebuilt.__reduce__()
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError):
        return False
    return bool(own[1][0] == code and own[2] == state)


def _concrete(value: Any) -> Any:
    """Scan mode: a dtype's state with each field's dtype (a :class:`Sym` whose own BUILD was
    judged) made real, so that numpy can rebuild it as :func:`_numpy_state` does at load."""
    import numpy as np

    if isinstance(value, Sym):
        if value.producer == ("numpy", "dtype") and len(value.args) == 4:
            made: Any = np.dtype(str(value.args[0]), False, True)  # a copy, never numpy's own
            made.__setstate__(_concrete(value.args[3]))
            return made
        if value.kind == "dict" and value.items is not None:
            return {_concrete(k): _concrete(v) for k, v in value.items}
        raise ValueError("not a judged dtype")
    if isinstance(value, tuple):
        return tuple(_concrete(v) for v in value)
    if value is None or type(value) in (int, str, bytes, bool):
        return value
    raise TypeError(f"{type(value).__name__} in a dtype's state")


def _plain_dtype_state(code: object, state: object) -> bool:
    """The state numpy writes for a plain (non-structured) dtype of type string ``code``."""
    if not (isinstance(code, str) and code and isinstance(state, tuple) and len(state) in (8, 9)):
        return False
    if state[2:5] != (None, None, None) or not all(type(v) is int for v in state[5:8]):
        return False
    kind = code.lstrip("<>|=")[:1]
    flags = {"O": 63, "U": 8}.get(kind, 0)
    flexible = kind in ("V", "S", "U")
    return state[7] == flags and (flexible or state[5:7] == (-1, -1))
