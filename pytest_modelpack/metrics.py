"""How far apart two model outputs are, as numbers: the per-input error metrics the HTML report
plots against the tolerance.

:func:`compare` (in :mod:`pytest_modelpack.compare`) says *whether* and *where* two outputs differ;
:func:`error_metrics` says *how close to the line* they are, also when they pass: the greatest
absolute and relative error over every numeric leaf, and the share of the tolerance the worst
element used (``|a - e| / (atol + rtol * |e|)``; at most 1 passes, as in ``torch.isclose``).

Leaves whose structure differs (a missing key, a changed shape or dtype, a raised exception) are
left out: :func:`compare` reports those. Each pair of objects is visited once (by identity), so a
graph that contains itself is walked in bounded time.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Mapping
from typing import Any

from .golden.examples import RaisedError
from .tolerance import default_tolerance

__all__ = ["ErrorMetrics", "error_metrics"]

#: At most this many objects are visited per output pair: metrics are for a plot, not a verdict.
VISIT_LIMIT = 10_000


@dataclasses.dataclass(frozen=True)
class ErrorMetrics:
    """The greatest errors between two outputs (0.0 when every numeric leaf is equal)."""

    max_abs: float = 0.0
    max_rel: float = 0.0
    #: ``max |a - e| / (atol + rtol * |e|)`` over all elements: <= 1 is within tolerance.
    used: float = 0.0
    #: The tolerance applied to the leaf that used the most of it (None: no numeric leaf).
    rtol: float | None = None
    atol: float | None = None


def error_metrics(
    expected: Any,
    got: Any,
    *,
    exact: bool = False,
    rtol: float | None = None,
    atol: float | None = None,
) -> ErrorMetrics:
    """The greatest absolute and relative error between ``expected`` and ``got``.

    Tolerances follow :func:`~pytest_modelpack.compare.compare`: ``exact=True`` means 0, otherwise
    torch.testing's default for each leaf's dtype; ``rtol``/``atol`` override either.
    """
    walker = _Walker(exact, rtol, atol)
    walker.walk(expected, got)
    return walker.result()


class _Walker:
    def __init__(self, exact: bool, rtol: float | None, atol: float | None) -> None:
        self.exact, self.rtol, self.atol = exact, rtol, atol
        self.max_abs = self.max_rel = self.used = 0.0
        self.tol: tuple[float, float] | None = None
        self.seen: set[tuple[int, int]] = set()

    def result(self) -> ErrorMetrics:
        rtol, atol = self.tol if self.tol is not None else (None, None)
        return ErrorMetrics(self.max_abs, self.max_rel, self.used, rtol, atol)

    def tolerance(self, dtype: Any) -> tuple[float, float]:
        if self.exact:
            base = (0.0, 0.0)
        else:
            default = default_tolerance(dtype)
            base = (default.rtol or 0.0, default.atol or 0.0)
        return (
            base[0] if self.rtol is None else self.rtol,
            base[1] if self.atol is None else self.atol,
        )

    def note(self, abs_err: float, rel_err: float, used: float, tol: tuple[float, float]) -> None:
        self.max_abs = max(self.max_abs, abs_err)
        self.max_rel = max(self.max_rel, rel_err)
        if self.tol is None or used > self.used:
            self.tol = tol
        self.used = max(self.used, used)

    def walk(self, e: Any, a: Any) -> None:
        key = (id(e), id(a))
        if key in self.seen or len(self.seen) >= VISIT_LIMIT:
            return
        self.seen.add(key)
        if isinstance(e, (RaisedError, BaseException)) or isinstance(
            a, (RaisedError, BaseException)
        ):
            return
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(e, torch.Tensor) and isinstance(a, torch.Tensor):
            self.tensors(torch, e, a)
            return
        np = sys.modules.get("numpy")
        if np is not None and isinstance(e, np.ndarray) and isinstance(a, np.ndarray):
            if e.dtype == a.dtype and e.shape == a.shape and e.dtype.kind in "iufc":
                import torch as torch_

                self.tensors(torch_, torch_.from_numpy(e.copy()), torch_.from_numpy(a.copy()))
            return
        if isinstance(e, bool) or isinstance(a, bool):
            return
        if isinstance(e, (int, float, complex)) and isinstance(a, (int, float, complex)):
            if type(e) is type(a) or not (isinstance(e, int) or isinstance(a, int)):
                self.scalars(e, a)
            return
        if isinstance(e, (str, bytes)) or isinstance(a, (str, bytes)):
            return
        if isinstance(e, Mapping) and isinstance(a, Mapping):
            for k in e:
                if k in a:
                    self.walk(e[k], a[k])
            return
        if isinstance(e, (list, tuple)) and isinstance(a, (list, tuple)):
            for ev, av in zip(e, a, strict=False):
                self.walk(ev, av)
            return
        if type(e) is type(a) and type(e).__module__ != "builtins" and hasattr(e, "__dict__"):
            ad = vars(a)
            for k, ev in vars(e).items():
                if k in ad:
                    self.walk(ev, ad[k])

    def scalars(self, e: complex, a: complex) -> None:
        kind: type = (
            complex
            if isinstance(e, complex) or isinstance(a, complex)
            else float
            if isinstance(e, float) or isinstance(a, float)
            else int
        )
        tol = self.tolerance(kind)
        if e == a or (_isnan(e) and _isnan(a)):
            self.note(0.0, 0.0, 0.0, tol)
            return
        abs_err = abs(a - e) if _finite(e) and _finite(a) else math.inf
        rel_err = abs_err / abs(e) if abs(e) else math.inf
        self.note(abs_err, rel_err, _used(abs_err, tol[1] + tol[0] * abs(e)), tol)

    def tensors(self, torch: Any, e: Any, a: Any) -> None:
        if e.dtype != a.dtype or e.shape != a.shape or e.dtype == torch.bool:
            return
        if e.is_quantized:
            e, a = e.dequantize(), a.dequantize()
        tol = self.tolerance(e.dtype)
        if e.numel() == 0:
            self.note(0.0, 0.0, 0.0, tol)
            return
        wide = torch.complex128 if e.dtype.is_complex else torch.float64
        ew = e.detach().to("cpu").to_dense().resolve_conj().resolve_neg().to(wide).reshape(-1)
        aw = a.detach().to("cpu").to_dense().resolve_conj().resolve_neg().to(wide).reshape(-1)
        diff = (aw - ew).abs()
        both_nan = ew.isnan() & aw.isnan()
        same_inf = (ew == aw) & ew.isinf()
        diff = torch.where(both_nan | same_inf, torch.zeros_like(diff), diff)
        diff = torch.where(diff.isnan(), torch.full_like(diff, math.inf), diff)
        mag = ew.abs()
        rel = torch.where(diff == 0, torch.zeros_like(diff), diff / mag)
        bound = tol[1] + tol[0] * mag
        used = torch.where(diff == 0, torch.zeros_like(diff), diff / bound)
        self.note(
            float(diff.max()), _nan_to_inf(float(rel.max())), _nan_to_inf(float(used.max())), tol
        )


def _isnan(x: complex) -> bool:
    return x != x


def _finite(x: complex) -> bool:
    return math.isfinite(x.real) and math.isfinite(x.imag)


def _used(abs_err: float, bound: float) -> float:
    if abs_err == 0:
        return 0.0
    return abs_err / bound if bound > 0 else math.inf


def _nan_to_inf(x: float) -> float:
    return math.inf if math.isnan(x) else x
