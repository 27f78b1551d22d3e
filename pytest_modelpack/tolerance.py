"""Tolerances: torch.testing.assert_close's defaults per dtype, shared by comparison and metrics.

An element matches when ``|actual - expected| <= atol + rtol * |expected|``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Tolerance:
    """Relative and absolute tolerance; ``None`` means "the default for the dtype"."""

    rtol: float | None = None
    atol: float | None = None

    def __str__(self) -> str:
        return f"rtol={_num(self.rtol)}, atol={_num(self.atol)}"


def _num(x: float | None) -> str:
    return "default" if x is None else f"{x:g}"


# The defaults documented for torch.testing.assert_close, by dtype name. Copied rather than read
# from torch.testing._comparison because that module is private, and so that this table needs no
# torch import; tests/test_compare.py checks it still agrees with torch's.
_DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "float16": (1e-3, 1e-5),
    "bfloat16": (1.6e-2, 1e-5),
    "float32": (1.3e-6, 1e-5),
    "float64": (1e-7, 1e-7),
    "complex32": (1e-3, 1e-5),
    "complex64": (1.3e-6, 1e-5),
    "complex128": (1e-7, 1e-7),
    # torch compares quantized tensors dequantized, with float32's tolerance.
    **dict.fromkeys(("quint8", "quint2x4", "quint4x2", "qint8", "qint32"), (1.3e-6, 1e-5)),
}


def default_tolerance(dtype: Any) -> Tolerance:
    """Return torch.testing.assert_close's default tolerance for ``dtype``.

    ``dtype`` may be a ``torch.dtype``, a numpy dtype or scalar type, a name (``"float32"``), or the
    Python types ``float`` and ``complex``. Python floats get float32's tolerance (and complex
    numbers complex64's): a model output that is a Python float is nearly always a float32 tensor
    turned into a number by ``.item()`` or ``.tolist()``, so it carries float32's error, not
    float64's. Integer, bool and all other dtypes get ``rtol=0, atol=0``.
    """
    if dtype is float:
        name = "float32"
    elif dtype is complex:
        name = "complex64"
    elif isinstance(dtype, str):
        name = dtype.removeprefix("torch.")
    elif hasattr(dtype, "name") and not isinstance(dtype, type):
        name = dtype.name  # numpy dtype; .name ignores byte order (">f4" is "float32")
    elif isinstance(dtype, type) and dtype.__module__ == "numpy":
        import numpy as np

        name = np.dtype(dtype).name
    else:
        name = str(dtype).removeprefix("torch.")  # torch.dtype prints as "torch.float32"
    rtol, atol = _DEFAULT_TOLERANCES.get(name, (0.0, 0.0))
    return Tolerance(rtol=rtol, atol=atol)
