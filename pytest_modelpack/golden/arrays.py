"""examples.json's ``$tensor`` and ``$ndarray`` bodies, for :mod:`.examples`: which dtypes are
recorded, as little-endian bytes, and how an untrusted body is read back (never a name imported)."""

from __future__ import annotations

import base64
import binascii
import math
import sys
from typing import Any

# Tensor dtypes whose elements are whole bytes and that support ``view(torch.uint8)`` on CPU.
# Sub-byte (int4, float4, bits*) and quantized dtypes have no byte view to record. Looked up by
# name so that a torch without the float8 family still works, and so that decoding never calls
# ``getattr(torch, <untrusted name>)`` on anything outside this list.
_TENSOR_DTYPE_NAMES = (
    *("bool", "uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64"),
    *("float16", "bfloat16", "float32", "float64", "complex32", "complex64", "complex128"),
    *("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu"),
)

# numpy dtype kinds with a fixed-size, pointer-free memory layout: bool, ints, floats, complex,
# timedelta, datetime, fixed-width str and bytes. Object ("O") arrays hold pointers and structured
# ("V") arrays can nest objects, so neither can be recorded as bytes.
_NDARRAY_KINDS = frozenset("biufcmMUS")

_LITTLE_ENDIAN = sys.byteorder == "little"

#: No dimension of a recorded tensor is larger: torch refuses sizes past int64 anyway.
MAX_DIM = 2**62


class Refused(Exception):
    """A tensor or array examples.json cannot record: ``(why, fix)``, either may be None."""


class Malformed(Exception):
    """A malformed body: why, without the path (the decoder adds it)."""


def encode_tensor(torch: Any, t: Any) -> Any:
    if t.layout != torch.strided:
        why = f"it is a {t.layout} tensor; only dense (strided) tensors are recorded"
        raise Refused(why, "convert it with .to_dense()")
    if t.is_quantized:
        raise Refused(f"it is a quantized tensor ({t.dtype})", "convert it with .dequantize()")
    if getattr(t, "is_nested", False):
        raise Refused("it is a nested tensor", "convert it with .to_padded_tensor(0)")
    if t.device.type == "meta":
        raise Refused("it is a meta tensor, which holds no data", None)
    name = str(t.dtype).removeprefix("torch.")
    if name not in _TENSOR_DTYPE_NAMES or getattr(torch, name, None) is None:
        raise Refused(
            f"its dtype {t.dtype} has no byte layout examples.json can record",
            "convert it to a standard dtype with .to(torch.float32) or similar",
        )
    # resolve_conj/neg: a lazily conjugated view's bytes are the unconjugated values.
    t = t.detach().resolve_conj().resolve_neg().cpu().contiguous()
    data = base64.b64encode(_tensor_bytes(t)).decode("ascii")
    return {"$tensor": {"dtype": name, "shape": list(t.shape), "data": data}}


def encode_ndarray(np: Any, v: Any) -> Any:
    scalar = isinstance(v, np.generic)
    # Exact ndarray (and memmap, which is just a file-backed ndarray) only: MaskedArray and
    # matrix carry meaning beyond their data that would be silently dropped.
    if not scalar and not (type(v) is np.ndarray or isinstance(v, np.memmap)):
        raise Refused(None, "convert it with numpy.asarray(...)")
    arr = np.asarray(v)
    if arr.dtype.kind not in _NDARRAY_KINDS:
        raise Refused(
            f"its dtype {arr.dtype} holds Python objects or nested records, not plain data",
            "convert it to a numeric or string dtype, or to a list",
        )
    # Always record little-endian so the same values give the same bytes on every machine.
    dtype = arr.dtype.newbyteorder("<")
    # order="C" rather than np.ascontiguousarray, which turns a 0-d array into shape (1,).
    arr = arr.astype(dtype, order="C", copy=False)
    enc: dict[str, Any] = {
        "dtype": dtype.str,
        "shape": list(arr.shape),
        "data": base64.b64encode(arr.tobytes()).decode("ascii"),
    }
    if scalar:
        enc["scalar"] = True
    return {"$ndarray": enc}


def _tensor_bytes(t: Any) -> bytes:
    """Raw little-endian bytes of a contiguous CPU tensor."""
    import torch

    u8 = t.reshape(-1).view(torch.uint8)
    if not _LITTLE_ENDIAN:
        u8 = _swap_bytes(t, u8)
    # bytes(u8.numpy()) would need numpy, which torch does not require; the tensor is contiguous
    # on the CPU, so its numel() bytes start at data_ptr().
    import ctypes

    return ctypes.string_at(u8.data_ptr(), u8.numel()) if u8.numel() else b""


def _swap_bytes(t: Any, u8: Any) -> Any:
    """Reverse the byte order of each element (each component, for complex dtypes).

    Only big-endian hosts need this: the file always holds little-endian bytes.
    """
    size = t.dtype.itemsize // (2 if t.dtype.is_complex else 1)
    if size == 1 or u8.numel() == 0:
        return u8
    return u8.reshape(-1, size).flip(-1).reshape(-1).contiguous()


def decode_tensor(body: dict[str, Any]) -> Any:
    import torch

    if set(body) != {"dtype", "shape", "data"}:
        raise Malformed("a $tensor needs exactly 'dtype', 'shape' and 'data'")
    name = body["dtype"]
    dtype = getattr(torch, name, None) if name in _TENSOR_DTYPE_NAMES else None
    if not isinstance(dtype, torch.dtype):
        raise Malformed(f"unsupported tensor dtype {name!r}")
    shape = _shape(body["shape"])
    raw = b64(expect(body["data"], str, "$tensor data"))
    numel = math.prod(shape)
    if len(raw) != numel * dtype.itemsize:
        per = f"elements of {dtype.itemsize} bytes"
        raise Malformed(f"{len(raw)} data bytes for {numel} {name} {per}")
    if dtype == torch.bool and raw.strip(b"\x00\x01"):
        # Bytes other than 0 and 1 are not valid bools and give undefined results in torch.
        raise Malformed("bool tensor data holds bytes other than 0 and 1")
    if numel == 0:
        # torch.frombuffer refuses an empty buffer.
        return torch.empty(shape, dtype=dtype)
    # clone(): frombuffer shares the bytearray's memory, which need not be aligned for dtype.
    u8 = torch.frombuffer(bytearray(raw), dtype=torch.uint8).clone()
    if not _LITTLE_ENDIAN:
        u8 = _swap_bytes(torch.empty(0, dtype=dtype), u8)
    return u8.view(dtype).reshape(shape)


def decode_ndarray(body: dict[str, Any]) -> Any:
    import numpy as np

    keys = set(body)
    if not {"dtype", "shape", "data"} <= keys <= {"dtype", "shape", "data", "scalar"}:
        raise Malformed("a $ndarray needs 'dtype', 'shape', 'data' and optionally 'scalar'")
    expect(body["dtype"], str, "$ndarray dtype")
    try:
        dtype = np.dtype(body["dtype"])
    except (TypeError, ValueError):
        raise Malformed(f"bad numpy dtype {body['dtype']!r}") from None
    if dtype.kind not in _NDARRAY_KINDS or dtype.fields is not None:
        raise Malformed(f"unsupported numpy dtype {body['dtype']!r}")
    shape = _shape(body["shape"])
    raw = b64(expect(body["data"], str, "$ndarray data"))
    if len(raw) != math.prod(shape) * dtype.itemsize:
        raise Malformed(f"{len(raw)} data bytes do not fit shape {shape} of {dtype}")
    # Back to native byte order so the array behaves like the one that was recorded; copy() because
    # frombuffer arrays are read-only views of the bytes.
    arr = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="), copy=True).reshape(shape)
    scalar = body.get("scalar", False)
    if scalar is not False:
        if scalar is not True or shape:
            raise Malformed("'scalar' must be true and only on a shape-[] $ndarray")
        return arr[()]
    return arr


def _shape(shape: Any) -> list[int]:
    if type(shape) is not list or not all(type(n) is int and 0 <= n < MAX_DIM for n in shape):
        raise Malformed(f"bad shape {str(shape)[:80]}")
    return shape


def b64(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise Malformed("bad base64 data") from None


def expect(body: Any, kind: type, what: str) -> Any:
    """``body``, if it is a JSON ``kind`` (list, dict, str)."""
    if type(body) is not kind:
        raise Malformed(f"{what} is not a JSON {_JSON_KIND[kind]}")
    return body


_JSON_KIND: dict[type, str] = {list: "array", dict: "object", str: "string"}
