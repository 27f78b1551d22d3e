"""Tensors and numpy arrays of one dtype and shape compared element by element, for
:mod:`pytest_modelpack.compare`: which elements differ, by how much, and how close the rest came."""

from __future__ import annotations

import cmath
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pytest_modelpack.tolerance import Tolerance


@dataclass(frozen=True)
class Mismatch:
    """The differing elements of a pair: how many of how many, the first one (flat and as an
    index), and the greatest errors over them (None for bools and plain numpy equality)."""

    count: int
    total: int
    first: int
    index: tuple[int, ...]
    abs_err: float | None = None
    rel_err: float | None = None


def tensor_mismatch(
    torch: Any, e: Any, a: Any, tol: Tolerance, note: Callable[..., None]
) -> Mismatch | None:
    """Two same-dtype, same-shape dense CPU tensors; ``note`` gets the metrics (not for bools)."""
    assert tol.rtol is not None and tol.atol is not None
    if e.numel() == 0:
        if e.dtype != torch.bool:
            note(0.0, 0.0, 0.0, tol)
        return None
    dtype = e.dtype
    shape, total = tuple(e.shape), e.numel()
    e, a = e.reshape(-1), a.reshape(-1)
    # Only elements that differ at all can mismatch or add to the errors: when they are few (one
    # changed element of 50M), widen and measure those alone (8 s -> 0.3 s at 50M float32).
    # The common case (live vs reloaded, live twice) is equal everywhere, all errors 0 (NaN never
    # passes torch.equal): one pass without the widened copies, ~1 s and 2 GB at 50M float32.
    picked = e.new_zeros(0, dtype=torch.int64) if _equal(torch, e, a) else _differing(e, a)
    if picked is not None and not picked.numel():
        if dtype != torch.bool:
            note(0.0, 0.0, 0.0, tol)
        return None
    if picked is not None and picked.numel() * 2 < total:
        e, a = e[picked], a[picked]
    else:
        picked = None
    floating = dtype.is_floating_point or dtype.is_complex
    # Widening is exact and keeps the tolerance arithmetic (atol + rtol*|e|) and the error
    # statistics from overflowing or rounding in half precision.
    wide = torch.complex128 if dtype.is_complex else torch.float64
    e_wide, a_wide = e.to(wide), a.to(wide)
    if floating:
        matches = torch.isclose(a_wide, e_wide, rtol=tol.rtol, atol=tol.atol, equal_nan=True)
    else:
        # Integers and bools: exact equality first, so int64 values beyond 2**53 are never
        # judged by their rounded float64 images; then an integer tolerance, if one was given.
        matches = e == a
        if dtype != torch.bool and (tol.rtol or tol.atol):
            matches |= torch.isclose(a_wide, e_wide, rtol=tol.rtol, atol=tol.atol)
    if dtype != torch.bool:
        note(*_metrics(torch, e_wide, a_wide, tol), tol)
    if bool(matches.all()):
        return None

    mismatch = ~matches
    first = int(mismatch.nonzero()[0, 0])
    first = first if picked is None else int(picked[first])
    abs_err = rel_err = None
    if dtype != torch.bool:  # an "error" between True and False means nothing
        if floating:
            # float64 (complex128's abs() is float64 too): exact widening, no overflow.
            abs_diff = (a_wide - e_wide).abs()
        else:
            # Integers subtract in int64, as torch.testing does: float64 would round a
            # difference of 1 between two values beyond 2**53 to 0.
            diff = a.to(torch.int64) - e.to(torch.int64)
            abs_diff = diff.abs().to(torch.float64)
        rel_diff = abs_diff / e_wide.abs()
        # Only mismatching elements count (as in torch.testing), and NaN (NaN vs number) is
        # left out of the maxima so that one NaN does not hide the size of the other errors.
        abs_err = _nanmax(abs_diff[mismatch])
        rel_err = _nanmax(rel_diff[mismatch])
    return Mismatch(int(mismatch.sum()), total, first, _unravel(first, shape), abs_err, rel_err)


def _differing(e: Any, a: Any) -> Any:
    """The flat indices where ``e != a`` (NaN included); None where ``!=`` is not implemented."""
    try:
        return (e != a).nonzero().reshape(-1)
    except (RuntimeError, NotImplementedError):
        return None


def _equal(torch: Any, e: Any, a: Any) -> bool:
    try:
        return bool(torch.equal(e, a))
    except (RuntimeError, NotImplementedError):  # a dtype without it (complex32): the long way
        return False


def _metrics(torch: Any, ew: Any, aw: Any, tol: Tolerance) -> tuple[float, float, float]:
    """The metrics of two same-shape widened tensors: NaN equals NaN, inf equals itself."""
    assert tol.rtol is not None and tol.atol is not None
    diff = (aw - ew).abs()
    zero = torch.zeros_like(diff)
    diff = torch.where((ew.isnan() & aw.isnan()) | ((ew == aw) & ew.isinf()), zero, diff)
    diff = torch.where(diff.isnan(), torch.full_like(diff, math.inf), diff)
    mag = ew.abs()
    rel = torch.where(diff == 0, zero, diff / mag)
    used = torch.where(diff == 0, zero, diff / (tol.atol + tol.rtol * mag))
    worst_rel, worst_used = float(rel.max()), float(used.max())
    return (
        float(diff.max()),
        math.inf if math.isnan(worst_rel) else worst_rel,
        math.inf if math.isnan(worst_used) else worst_used,
    )


def array_mismatch(np: Any, e: Any, a: Any) -> Mismatch | None:
    """Two same-shape numpy arrays by ``==`` (dtypes torch lacks, text, dates); NaN, NaT match."""
    if e.size == 0:
        return None
    same = np.asarray(e == a)
    if e.dtype.kind in "mM":
        same = same | (np.isnat(e) & np.isnat(a))  # NaT == NaT, as NaN == NaN
    elif e.dtype.kind in "fc":
        same = same | (np.isnan(e) & np.isnan(a))
    if same.all():
        return None
    mismatch = ~same.reshape(-1)
    first = int(np.flatnonzero(mismatch)[0])
    return Mismatch(int(mismatch.sum()), int(mismatch.size), first, _unravel(first, e.shape))


def scalar_metrics(e: Any, a: Any, tol: Tolerance) -> tuple[float, float, float]:
    """The metrics of two Python numbers: absolute and relative error, share of ``tol`` used."""
    assert tol.rtol is not None and tol.atol is not None
    if e == a or (e != e and a != a):
        return 0.0, 0.0, 0.0
    try:
        finite = cmath.isfinite(e) and cmath.isfinite(a)
        abs_err = float(abs(a - e)) if finite else math.inf
        magnitude = float(abs(e))
    except OverflowError:  # ints beyond float's range
        abs_err = magnitude = math.inf
    bound = tol.atol + tol.rtol * magnitude if abs_err != math.inf else 0.0
    rel = abs_err / magnitude if e and magnitude != math.inf else math.inf
    return abs_err, rel, abs_err / bound if bound > 0 else math.inf


def element_repr(torch: Any, element: Any, short: Callable[[Any], str]) -> str:
    """The shortest repr of a 0-d tensor's value that reads back as the same value in its dtype
    (``short`` of its ``.item()`` where that is not a float narrower than float64).

    ``.item()`` widens float32 to a Python float, whose repr shows float32 rounding noise
    (2.0999999046325684 for 2.1); the shortest digits that round-trip through the dtype are what
    the user wrote or would write.
    """
    value = element.item()
    dtype = element.dtype
    if not dtype.is_floating_point or dtype.itemsize >= 8 or not math.isfinite(value):
        return short(value)
    for digits in range(1, 18):
        text = f"{value:.{digits}g}"
        if torch.tensor(float(text), dtype=dtype).item() == value:
            # "2.0", not "2": a float element should not read as an int.
            return text if any(c in text for c in ".en") else text + ".0"
    return short(value)


def plain_cpu(torch: Any, t: Any) -> Any:
    """A dense, CPU, plain-valued copy of ``t`` (device, layout and lazy conj/neg bits ignored)."""
    t = t.detach()
    if t.is_quantized:
        t = t.dequantize()
    elif t.layout != torch.strided:
        t = t.to_dense()
    return t.resolve_conj().resolve_neg().cpu()


def _unravel(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    index = []
    for size in reversed(shape):
        flat, mod = divmod(flat, size)
        index.append(mod)
    return tuple(reversed(index))


def _nanmax(values: Any) -> float | None:
    values = values[~values.isnan()]
    return float(values.max()) if values.numel() else None
