"""Tensors and numpy arrays of one dtype and shape compared element by element, for
:mod:`pytest_modelpack.compare`: which elements differ, by how much, and how close the rest came."""

from __future__ import annotations

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
    e_wide, a_wide = e_wide.reshape(-1), a_wide.reshape(-1)
    if dtype != torch.bool:
        note(*_metrics(torch, e_wide, a_wide, tol), tol)
    if bool(matches.all()):
        return None

    mismatch = ~matches.reshape(-1)
    first = int(mismatch.nonzero()[0, 0])
    abs_err = rel_err = None
    if dtype != torch.bool:  # an "error" between True and False means nothing
        if floating:
            # float64 (complex128's abs() is float64 too): exact widening, no overflow.
            abs_diff = (a_wide - e_wide).abs()
        else:
            # Integers subtract in int64, as torch.testing does: float64 would round a
            # difference of 1 between two values beyond 2**53 to 0.
            diff = a.reshape(-1).to(torch.int64) - e.reshape(-1).to(torch.int64)
            abs_diff = diff.abs().to(torch.float64)
        rel_diff = abs_diff / e_wide.abs()
        # Only mismatching elements count (as in torch.testing), and NaN (NaN vs number) is
        # left out of the maxima so that one NaN does not hide the size of the other errors.
        abs_err = _nanmax(abs_diff[mismatch])
        rel_err = _nanmax(rel_diff[mismatch])
    count, total = int(mismatch.sum()), mismatch.numel()
    return Mismatch(count, total, first, _unravel(first, tuple(e.shape)), abs_err, rel_err)


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
