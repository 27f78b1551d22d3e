"""Compare two model outputs, nested, and say where and how they differ.

:func:`compare` walks dicts, lists, tuples, scalars, torch tensors, numpy arrays and recorded
exceptions (:class:`~pytest_modelpack.golden.examples.RaisedError`) side by side and returns one
:class:`Difference` per place they disagree, each naming its path inside the output
(``output['prediction'][0]``). An empty list means "the same behaviour".

Tensor tolerances follow :func:`torch.testing.assert_close`: an element matches when
``|actual - expected| <= atol + rtol * |expected|``, NaN equals NaN, dtypes and shapes must agree
and devices are ignored.

A walk compares each distinct pair of containers once (a cycle, a DAG of shared lists), at most
:data:`MAX_NESTING` deep and :data:`MAX_VALUES` values in all; an output past a limit, or one that
compares only by identity (a generator), is UNRECORDABLE by name, never a difference or a hang.

torch and numpy are imported only when a value needs them: a value can only be a tensor or an array
if its library is already imported, so the comparator looks in :data:`sys.modules`.
"""

from __future__ import annotations

import cmath
import dataclasses
import math
import sys
import types
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pytest_modelpack.elementwise import (
    Mismatch,
    array_mismatch,
    element_repr,
    plain_cpu,
    scalar_metrics,
    tensor_mismatch,
)
from pytest_modelpack.errors import Unrecordable
from pytest_modelpack.golden.examples import (
    MAX_DEPTH,
    MAX_VALUES,
    PLAIN_DATA_FIX,
    RaisedError,
    _type_name,
    raised_from,
    too_deep,
    too_many_values,
)
from pytest_modelpack.tolerance import Tolerance, default_tolerance
from pytest_modelpack.walk import is_tensor, short_path, slot_names

#: Roughly how long a value's repr may be in a message before it is cut.
REPR_LIMIT = 80


@dataclass(frozen=True)
class Difference:
    """One place where the outputs differ. ``expected``/``actual``: one-line reprs (for tensors
    and arrays, of the first mismatching element); the errors are maxima over the mismatching
    elements; ``tolerance``: None where none applies (a missing key, a type change)."""

    path: str
    expected: str
    actual: str
    message: str
    abs_err: float | None = None
    rel_err: float | None = None
    tolerance: Tolerance | None = None
    #: For tensors and arrays: how many elements differ, of how many, and the first one's index.
    mismatched: int | None = None
    total: int | None = None
    index: tuple[int, ...] | None = None

    def describe(self) -> str:
        """``output['prediction'][0]: expected 0.0123, got 0.0456 (abs err 3.3e-02, rel err
        2.7e+00; tolerance rtol=1.3e-06, atol=1e-05)``; for tensors the errors are maxima."""
        most = "max " if self.mismatched is not None else ""
        errs = [(n, v) for n, v in (("abs", self.abs_err), ("rel", self.rel_err)) if v is not None]
        stats = [", ".join(f"{most}{n} err {v:.1e}" for n, v in errs)] if errs else []
        if self.tolerance is not None:
            stats.append(f"tolerance {self.tolerance}")
        line = f"{self.path}: {self.message}"
        return f"{line} ({'; '.join(stats)})" if stats else line


def describe_differences(diffs: Iterable[Difference], limit: int = 10) -> list[str]:
    diffs = list(diffs)
    lines = [d.describe() for d in diffs[:limit]]
    if len(diffs) > limit:
        more = len(diffs) - limit
        lines.append(f"... and {more} more difference{'s' if more != 1 else ''}")
    return lines


def compare(expected: Any, actual: Any, **options: Any) -> list[Difference]:
    """The differences of :func:`compared`; ``[]`` when the outputs agree. ``strict`` is False
    unless given: what two recorded files differ by is listed, a limit reached included."""
    options.setdefault("strict", False)
    return compared(expected, actual, **options).diffs


@dataclass(frozen=True)
class ErrorMetrics:
    """How close two outputs came, also when they pass (the HTML report's plots): the greatest
    absolute and relative error over every numeric leaf whose structure agrees, and the share of
    the tolerance the worst element used (``|a - e| / (atol + rtol * |e|)``; at most 1 passes).
    ``rtol``/``atol``: the tolerance of the leaf that used the most of it (None: no leaf)."""

    max_abs: float = 0.0
    max_rel: float = 0.0
    used: float = 0.0
    rtol: float | None = None
    atol: float | None = None


@dataclass(frozen=True)
class Comparison:
    """What one walk over an output pair found: where they differ, and how close they came."""

    diffs: list[Difference]
    metrics: ErrorMetrics


def compared(
    expected: Any,
    actual: Any,
    *,
    exact: bool,
    rtol: float | None = None,
    atol: float | None = None,
    path: str = "output",
    strict: bool = True,
) -> Comparison:
    """Where ``expected`` and ``actual`` differ, and their :class:`ErrorMetrics`, in one walk.

    ``exact=True`` compares numbers with ``rtol=atol=0`` (use it where both sides ran the same code
    on the same machine, e.g. live vs. reloaded); ``exact=False`` uses :func:`default_tolerance` of
    each value's dtype. ``rtol`` and ``atol`` override either, independently (an override applies to
    float and complex values and to tensors and arrays of any dtype, as in torch.testing; Python
    ints, bools, strings and None are always compared exactly).

    An exception instance on either side is treated as
    :func:`~pytest_modelpack.golden.examples.raised_from` of it; two raised errors
    agree when their type and message agree.

    ``strict``: an output past a limit, or one holding an object that compares only by identity,
    raises :class:`~pytest_modelpack.errors.Unrecordable`; else it is a :class:`Difference`.
    """
    m = _Comparer(exact=exact, rtol=rtol, atol=atol, strict=strict)
    # Up to 5 frames a level (an object's attribute, an object array's element): more than
    # Python's default limit leaves below a test's frames.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + MAX_NESTING * _FRAMES_PER_LEVEL)
    try:
        m.compare(expected, actual, path)
    except RecursionError:  # within the bound, but under a deep stack already
        m.stopped = False
        m.too_deep(path)
    finally:
        sys.setrecursionlimit(limit)
    tol = m.worst_tol or Tolerance()  # no leaf: rtol, atol None
    return Comparison(m.diffs, ErrorMetrics(m.max_abs, m.max_rel, m.used, tol.rtol, tol.atol))


# ----------------------------------------------------------------------------------- internals


def safe_repr(v: Any) -> str:
    try:
        return repr(v)
    except Exception as exc:  # a broken __repr__ must not hide the failure it is part of
        return f"<{type(v).__qualname__}: repr failed with {type(exc).__name__}>"


def _short(v: Any) -> str:
    """A one-line repr of at most about REPR_LIMIT characters."""
    np = sys.modules.get("numpy")
    if is_tensor(v):
        dtype = str(v.dtype).removeprefix("torch.")
        text = f"tensor(shape={list(v.shape)}, dtype={dtype})"
    elif np is not None and isinstance(v, np.ndarray):
        text = f"array(shape={list(v.shape)}, dtype={v.dtype})"
    elif isinstance(v, RaisedError):
        text = f"raised {v}"
    else:
        text = safe_repr(v)
    return _cut(text)


def _cut(text: str) -> str:
    text = " ".join(text.split()) if "\n" in text else text
    return text if len(text) <= REPR_LIMIT else text[: REPR_LIMIT - 3] + "..."


def _kind(v: Any) -> str:
    """What a value is, for type-mismatch messages ("a list", "a torch tensor")."""
    np = sys.modules.get("numpy")
    if is_tensor(v):
        return "a torch tensor"
    if np is not None and isinstance(v, np.ndarray):
        return "a numpy array"
    return _type_name(type(v))


def _got(e: Any, a: Any) -> str:
    return f"expected {_short(e)}, got {_short(a)}"


#: Limits of one comparison, and of ``apply.to_device`` (an output built from a crafted golden
#: can be any graph: past them it is left as it is). The same as examples.json's: what cannot be
#: compared cannot be recorded either.
MAX_NESTING = MAX_DEPTH

_FRAMES_PER_LEVEL = 6
_REFUSED = "pytest-modelpack cannot compare"


class _Comparer:
    def __init__(
        self, *, exact: bool, rtol: float | None, atol: float | None, strict: bool
    ) -> None:
        self.exact = exact
        self.rtol = rtol
        self.atol = atol
        self.strict = strict
        #: A limit was reached (strict=False): nothing more is compared.
        self.stopped = False
        self.diffs: list[Difference] = []
        # (id(expected), id(actual)) of the containers on the current path, so that a structure
        # containing itself is compared once instead of recursing forever...
        self.active: set[tuple[int, int]] = set()
        # ...and of every pair already compared: a DAG of shared lists (2**40 paths from a few
        # hundred bytes of pickle) is walked once per distinct pair, by identity.
        self.done: set[tuple[int, int]] = set()
        # The pairs behind those ids, kept alive: a temporary (np.asarray of a numpy scalar) freed
        # during the walk would hand its id to a new object that then reads as compared.
        self.kept: list[tuple[Any, Any]] = []
        self.depth = 0
        self.steps = 0
        self.max_abs = self.max_rel = self.used = 0.0
        self.worst_tol: Tolerance | None = None
        self.tols: dict[type, Tolerance] = {}

    def note(self, abs_err: float, rel_err: float, used: float, tol: Tolerance) -> None:
        """One leaf's errors, for the metrics (whether or not it is within tolerance)."""
        self.max_abs = max(self.max_abs, abs_err)
        self.max_rel = max(self.max_rel, rel_err)
        if self.worst_tol is None or used > self.used:
            self.worst_tol = tol
        self.used = max(self.used, used)

    def tolerance(self, dtype: Any) -> Tolerance:
        base = Tolerance(0.0, 0.0) if self.exact else default_tolerance(dtype)
        return Tolerance(
            rtol=base.rtol if self.rtol is None else self.rtol,
            atol=base.atol if self.atol is None else self.atol,
        )

    def add(self, path: str, expected: Any, actual: Any, message: str, **kw: Any) -> None:
        self.diffs.append(Difference(path, _short(expected), _short(actual), message, **kw))

    def type_mismatch(self, path: str, e: Any, a: Any) -> None:
        self.add(path, e, a, f"expected {_kind(e)} {_short(e)}, got {_kind(a)} {_short(a)}")

    def elements(self, path: str, ev: str, av: str, m: Mismatch, tol: Tolerance | None) -> None:
        """The differing elements of a tensor or array pair, ``ev``/``av`` the first ones."""
        values = f"expected {ev}, got {av}"
        if m.index:  # a 0-d tensor or a numpy scalar has one element and no index to give
            where = ", ".join(map(str, m.index))
            values = f"{m.count} of {m.total} elements differ; first at [{where}]: {values}"
        self.diffs.append(
            Difference(path, ev, av, values, m.abs_err, m.rel_err, tol, m.count, m.total, m.index)
        )

    def refuse(self, path: str, error: Unrecordable, lenient: str) -> None:
        """A place that cannot be compared: ``error`` (strict), else the ``lenient``
        difference, once, and the walk stops."""
        if self.strict:
            raise error
        if not self.stopped:
            self.diffs.append(Difference(path, "...", "...", lenient))
        self.stopped = True

    def too_deep(self, path: str) -> None:
        lenient = f"not compared further: the output is nested deeper than {MAX_NESTING} levels"
        self.refuse(path, too_deep(path, _REFUSED), lenient)

    def compare(self, e: Any, a: Any, path: str) -> None:
        if self.stopped:
            return
        self.steps += 1
        if self.steps > MAX_VALUES:
            lenient = f"not compared further: the output holds more than {MAX_VALUES} values"
            self.refuse(path, too_many_values(path, _REFUSED), lenient)
            return
        # Equal leaves of one exact type, the bulk of any big output: no dispatch below.
        t = type(e)
        if t is type(a) and (t is int or t is float or t is str) and e == a:
            if t is not str:
                tol = self.tols.get(t) or self.tols.setdefault(t, self.tolerance(t))
                self.note(0.0, 0.0, 0.0, tol)
            return
        # Exceptions first: "it raised" outranks any other difference.
        if isinstance(e, BaseException):
            e = raised_from(e)
        if isinstance(a, BaseException):
            a = raised_from(a)
        e_raised, a_raised = isinstance(e, RaisedError), isinstance(a, RaisedError)
        if e_raised or a_raised:
            if not a_raised:
                msg = f"expected it to raise {_cut(str(e))}, but it returned {_short(a)}"
            elif not e_raised:
                msg = f"expected {_short(e)}, but it raised {_cut(str(a))}"
            elif (e.type, e.message) != (a.type, a.message):
                msg = f"expected it to raise {_cut(str(e))}, but it raised {_cut(str(a))}"
            else:
                return
            self.add(path, e, a, msg)
            return

        torch = sys.modules.get("torch")
        if torch is not None and (isinstance(e, torch.Tensor) or isinstance(a, torch.Tensor)):
            if isinstance(e, torch.Tensor) and isinstance(a, torch.Tensor):
                self.compare_tensors(torch, e, a, path)
            else:
                self.type_mismatch(path, e, a)
            return
        # numpy before the built-in scalars: np.float64 subclasses float, np.str_ subclasses str.
        np = sys.modules.get("numpy")
        if np is not None and (_is_numpy(np, e) or _is_numpy(np, a)):
            self.compare_numpy(np, e, a, path)
            return

        if e is None or a is None:
            if e is not a:
                self.add(path, e, a, _got(e, a))
            return
        # bool before int: bool subclasses int, but True vs 1 is a type change worth naming.
        if isinstance(e, bool) or isinstance(a, bool):
            if not (isinstance(e, bool) and isinstance(a, bool)):
                self.type_mismatch(path, e, a)
            elif e != a:
                self.add(path, e, a, f"expected {e}, got {a}")
            return
        if isinstance(e, (int, float, complex)) and isinstance(a, (int, float, complex)):
            self.compare_numbers(e, a, path)
            return
        if isinstance(e, (str, bytes)) and isinstance(a, (str, bytes)):
            self.compare_text(e, a, path)
            return

        if isinstance(e, Mapping) and isinstance(a, Mapping):
            self.nested(e, a, path, self.compare_mappings)
            return
        if isinstance(e, (list, tuple)) and isinstance(a, (list, tuple)):
            self.nested(e, a, path, self.compare_sequences)
            return
        self.compare_objects(e, a, path)

    def nested(self, e: Any, a: Any, path: str, how: Any) -> None:
        key = (id(e), id(a))
        if key in self.active or key in self.done:
            return
        if self.depth >= MAX_NESTING:
            self.too_deep(path)
            return
        self.kept.append((e, a))
        self.active.add(key)
        self.depth += 1
        try:
            how(e, a, path)
        finally:
            self.depth -= 1
            self.active.discard(key)
            self.done.add(key)

    # -------------------------------------------------------------------------- containers

    def compare_mappings(self, e: Mapping[Any, Any], a: Mapping[Any, Any], path: str) -> None:
        for k, ev in e.items():
            if self.stopped:
                return
            sub = f"{path}[{k!r}]"
            if k not in a:
                self.add(sub, ev, "<missing>", f"missing key (expected {_short(ev)})")
            else:
                self.compare(ev, a[k], sub)
        for k, av in a.items():
            if k not in e:
                self.add(f"{path}[{k!r}]", "<missing>", av, f"unexpected key (got {_short(av)})")

    def compare_sequences(self, e: Any, a: Any, path: str) -> None:
        # list vs tuple is a change in the output's type, even with equal items.
        e_kind, a_kind = ("list" if isinstance(v, list) else "tuple" for v in (e, a))
        if e_kind != a_kind:
            self.add(path, e, a, f"expected a {e_kind}, got a {a_kind}: {_got(e, a)}")
            return
        if len(e) != len(a):
            got = f"got length {len(a)}: {_got(e, a)}"
            self.add(path, e, a, f"expected a {e_kind} of length {len(e)}, {got}")
        # Compare the common prefix too: it shows whether items changed or were only added.
        for i, (ev, av) in enumerate(zip(e, a, strict=False)):
            if self.stopped:
                return
            self.compare(ev, av, f"{path}[{i}]")

    def compare_objects(self, e: Any, a: Any, path: str) -> None:
        if type(e) is not type(a):
            self.type_mismatch(path, e, a)
            return
        # Dataclasses and plain objects are walked field by field: their generated or default
        # __eq__ would compare tensors with ==, or compare by identity, which never holds between
        # a live object and one built by a reloaded model.
        if dataclasses.is_dataclass(e) and not isinstance(e, type):
            fields = [f.name for f in dataclasses.fields(e)]
            self.nested(e, a, path, lambda e, a, p: self.compare_attrs(e, a, p, fields))
            return
        # Only the project's own classes: a function or module also has the default __eq__ and a
        # __dict__, but two different functions with empty __dict__s are not the same.
        identity = type(e).__eq__ is object.__eq__
        slots = slot_names(type(e)) if identity else []
        if identity and type(e).__module__ != "builtins" and (hasattr(e, "__dict__") or slots):
            own = [n for v in (e, a) if hasattr(v, "__dict__") for n in vars(v)]
            names = list(dict.fromkeys([*own, *slots]))
            self.nested(e, a, path, lambda e, a, p: self.compare_attrs(e, a, p, names))
            return
        if identity and e is not a and not isinstance(e, (type, types.ModuleType)):
            self.identity_only(e, a, path)
            return
        try:
            same = bool(e == a)
        except Exception as exc:  # an __eq__ that raises or returns something without truth
            self.add(path, e, a, f"cannot compare: == raised {type(exc).__name__}: {exc}")
            return
        if not same:
            self.add(path, e, a, _got(e, a))

    def identity_only(self, e: Any, a: Any, path: str) -> None:
        """Two objects equal only to themselves, with no state the comparison can see: no two
        calls ever give equal ones, whatever the model does."""
        kind = _type_name(type(e))
        if isinstance(e, Iterator):
            why = f"{kind} yields its items once and compares only by identity"
            fix = "return its items as a list or tuple (list(...)), or as a tensor"
        else:
            why = f"{kind} compares only by identity (no __eq__) and shows no state to compare"
            fix = PLAIN_DATA_FIX + ", or give the class an __eq__"
        error = Unrecordable(
            f"{short_path(path, 80)} is {kind}, which {_REFUSED}",
            detail=[why, "two calls never give equal ones, so every check of it would fail"],
            fix=fix,
        )
        self.refuse(path, error, _got(e, a))

    def compare_attrs(self, e: Any, a: Any, path: str, names: list[str]) -> None:
        missing = object()
        for name in names:
            if self.stopped:
                return
            ev, av = getattr(e, name, missing), getattr(a, name, missing)
            sub = f"{path}.{name}"
            if ev is missing:
                self.add(sub, "<missing>", av, f"unexpected attribute (got {_short(av)})")
            elif av is missing:
                self.add(sub, ev, "<missing>", f"missing attribute (expected {_short(ev)})")
            else:
                self.compare(ev, av, sub)

    # ----------------------------------------------------------------------------- scalars

    def compare_numbers(self, e: Any, a: Any, path: str) -> None:
        # int vs float (or complex) is a type change even when the values are equal: 1 and 1.0
        # serialize, index and format differently downstream.
        e_type, a_type = (
            complex if isinstance(v, complex) else float if isinstance(v, float) else int
            for v in (e, a)
        )
        if e_type is not a_type:
            self.type_mismatch(path, e, a)
            return
        tol = self.tolerance(e_type)
        self.note(*scalar_metrics(e, a, tol), tol)
        if e_type is int:
            if e != a:  # no abs_err: float() of a huge int overflows, and ints are exact anyway
                self.add(path, e, a, _got(e, a))
            return
        if e == a or (cmath.isnan(e) and cmath.isnan(a)):
            return
        assert tol.rtol is not None and tol.atol is not None
        abs_err = abs(a - e)
        # Same test as torch.isclose: |a - e| <= atol + rtol * |e|, where non-finite values only
        # match themselves (handled by == above): with e = inf, rtol * |e| is inf and would
        # otherwise let anything match.
        if cmath.isfinite(e) and cmath.isfinite(a) and abs_err <= tol.atol + tol.rtol * abs(e):
            return
        rel_err = abs_err / abs(e) if e else math.inf  # abs_err > 0: e != a
        self.add(path, e, a, _got(e, a), abs_err=abs_err, rel_err=rel_err, tolerance=tol)

    def compare_text(self, e: Any, a: Any, path: str) -> None:
        if isinstance(e, str) != isinstance(a, str):  # str vs bytes
            self.type_mismatch(path, e, a)
            return
        if e == a:
            return
        # Long strings are cut in the message, so point at where they start to differ.
        at = next(
            (i for i, (x, y) in enumerate(zip(e, a, strict=False)) if x != y), min(len(e), len(a))
        )
        message = _got(e, a)
        if _short(e) != repr(e) or _short(a) != repr(a):  # only cut strings need the pointer
            message += f" (first difference at index {at})"
        self.add(path, e, a, message)

    # ---------------------------------------------------------------------- tensors, arrays

    def layout_differs(self, path: str, e: Any, a: Any, dtypes: Any, shapes: Any) -> bool:
        """Add the dtype change (``dtypes``: the two shown; None when they agree) or the shape
        change of a tensor or array pair; True when there was one."""
        if dtypes is not None:
            self.add(path, e, a, "expected dtype {}, got dtype {}".format(*dtypes))
        elif shapes[0] != shapes[1]:
            self.add(path, e, a, f"expected shape {list(shapes[0])}, got shape {list(shapes[1])}")
        return dtypes is not None or shapes[0] != shapes[1]

    def compare_tensors(self, torch: Any, e: Any, a: Any, path: str) -> None:
        dtypes = [str(t.dtype).removeprefix("torch.") for t in (e, a)]
        if not self.layout_differs(
            path, e, a, dtypes if e.dtype != a.dtype else None, (e.shape, a.shape)
        ):
            tol = self.tolerance(e.dtype)
            self.compare_elements(torch, plain_cpu(torch, e), plain_cpu(torch, a), path, tol)

    def compare_elements(self, torch: Any, e: Any, a: Any, path: str, tol: Tolerance) -> None:
        """Elementwise comparison of two same-dtype, same-shape dense CPU tensors."""
        m = tensor_mismatch(torch, e, a, tol, self.note)
        if m is not None:
            ev, av = (element_repr(torch, t.reshape(-1)[m.first], _short) for t in (e, a))
            self.elements(path, ev, av, m, tol)

    def compare_numpy(self, np: Any, e: Any, a: Any, path: str) -> None:
        e_scalar, a_scalar = isinstance(e, np.generic), isinstance(a, np.generic)
        if not (_is_numpy(np, e) and _is_numpy(np, a)) or e_scalar != a_scalar:
            self.type_mismatch(path, e, a)
            return
        e_arr, a_arr = np.asarray(e), np.asarray(a)
        # Byte order is storage, not value: "<f4" and ">f4" are the same dtype here.
        e_dtype, a_dtype = e_arr.dtype.newbyteorder("="), a_arr.dtype.newbyteorder("=")
        # Fixed-width strings of different widths ("<U4" vs "<U7") differ in their values, not in
        # their type: compare the values and report which one changed.
        same_text = e_dtype.kind == a_dtype.kind and e_dtype.kind in "US"
        dtypes = (e_arr.dtype, a_arr.dtype) if e_dtype != a_dtype and not same_text else None
        if self.layout_differs(path, e, a, dtypes, (e_arr.shape, a_arr.shape)):
            return
        if e_dtype.hasobject:
            # Python objects inside: == would compare them (and an array holding itself) by
            # recursion without limit; walk them as containers, each pair once.
            self.nested(e, a, path, lambda e, a, p: self.compare_object_arrays(np, e, a, p))
            return
        tol = self.tolerance(e_dtype)
        if e_dtype.kind in "biufc":
            import torch

            try:
                # A native-order, writable copy: from_numpy refuses other byte orders and warns
                # on read-only arrays.
                e_t = torch.from_numpy(np.array(e_arr, dtype=e_dtype, copy=True))
                a_t = torch.from_numpy(np.array(a_arr, dtype=e_dtype, copy=True))
            except TypeError:
                pass  # a dtype torch lacks (longdouble, clongdouble): plain numpy equality below
            else:
                self.compare_elements(torch, e_t, a_t, path, tol)
                return
        m = array_mismatch(np, e_arr, a_arr)
        if m is None:
            return
        ev, av = e_arr.reshape(-1)[m.first], a_arr.reshape(-1)[m.first]
        if e_dtype.kind in "US":  # 'good', not np.str_('good')
            ev, av = ev.item(), av.item()
        self.elements(path, _short(ev), _short(av), m, None)

    def compare_object_arrays(self, np: Any, e: Any, a: Any, path: str) -> None:
        """Same-shape arrays (or numpy scalars) holding Python objects: element by element, a
        structured one field by field."""
        e_arr, a_arr = np.asarray(e), np.asarray(a)
        if e_arr.dtype.names:
            for name in e_arr.dtype.names:
                self.compare(e_arr[name], a_arr[name], f"{path}[{name!r}]")
            return
        for index in np.ndindex(e_arr.shape):
            if self.stopped:
                return
            at = f"{path}[{', '.join(map(str, index))}]" if index else path
            self.compare(e_arr[index], a_arr[index], at)


def _is_numpy(np: Any, v: Any) -> bool:
    return isinstance(v, (np.ndarray, np.generic))
