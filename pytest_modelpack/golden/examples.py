"""Non-executable JSON encoding of model inputs and outputs (``examples.json``).

A golden records what the model did on a handful of inputs so that ``--modelpack-golden`` can replay
them. The record must be readable in a pull request and must never run code when loaded, so it is
JSON, never pickle. Plain JSON values stand for themselves; everything JSON cannot say exactly is a
one-key object whose key starts with ``$``:

- ``{"$float": "nan" | "inf" | "-inf"}``: a non-finite float;
- ``{"$tuple": [...]}``: a tuple (JSON arrays decode to lists);
- ``{"$dict": [[key, value], ...]}``: a dict with a non-str key or a str key starting with ``$``;
- ``{"$bytes": "<base64>"}``: bytes;
- ``{"$tensor": {"dtype", "shape", "data"}}``: a torch tensor, ``data`` the base64 of its raw
  little-endian bytes;
- ``{"$ndarray": {"dtype", "shape", "data"[, "scalar": true]}}``: a numpy array, or a numpy scalar;
- ``{"$raises": {"type": "module.QualName", "message": "..."}}``: the call raised
  (:class:`RaisedError`);
- ``{"$ref": n}``: the same object as the ``n``-th container of this value (lists, tuples, dicts,
  tensors and arrays are numbered in the order they are written, from 0): an output that holds one
  list in many places (a DAG of 2**40 paths in a few hundred bytes) is written once per distinct
  object, never once per path.

:func:`encode_value` and :func:`decode_value` are exact inverses for the supported types.
Subclasses of the built-in scalars and containers (``IntEnum``, ``namedtuple``, ``OrderedDict``,
``torch.Size``, ``nn.Parameter``) are recorded as their base type: the comparator compares by
kind, so a live ``namedtuple`` still equals the tuple it was recorded as. Anything else raises
:class:`~pytest_modelpack.errors.Unrecordable` naming the path inside the value.

torch and numpy are imported only when a value needs them: a value can only *be* a tensor or an
array if its library is already imported, so encoding looks in :data:`sys.modules` instead of
importing, and the plugin stays cheap to import.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple

from .. import fixes
from ..errors import CorruptGolden, Unrecordable
from .fileio import write_atomic

#: Version of the ``examples.json`` layout. An unknown version is reported, never guessed at.
FORMAT_VERSION = 1

_SUPPORTED_SUMMARY = (
    "examples.json records None, bool, int, float, str, bytes, list, tuple, dict, "
    "torch tensors, numpy arrays and numpy scalars, and raised exceptions"
)

# Tensor dtypes whose elements are whole bytes and that support ``view(torch.uint8)`` on CPU.
# Sub-byte (int4, float4, bits*) and quantized dtypes have no byte view to record. Looked up by
# name so that a torch without the float8 family still works, and so that decoding never calls
# ``getattr(torch, <untrusted name>)`` on anything outside this list.
_TENSOR_DTYPE_NAMES = (
    "bool",
    "uint8",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "bfloat16",
    "float32",
    "float64",
    "complex32",
    "complex64",
    "complex128",
    "float8_e4m3fn",
    "float8_e4m3fnuz",
    "float8_e5m2",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
)

# numpy dtype kinds with a fixed-size, pointer-free memory layout: bool, ints, floats, complex,
# timedelta, datetime, fixed-width str and bytes. Object ("O") arrays hold pointers and structured
# ("V") arrays can nest objects, so neither can be recorded as bytes.
_NDARRAY_KINDS = frozenset("biufcmMUS")

_TAGS = frozenset({"$float", "$tuple", "$dict", "$bytes", "$tensor", "$ndarray", "$raises", "$ref"})
#: Containers nested deeper than this are refused by name (UNRECORDABLE, CORRUPT GOLDEN), before
#: Python's recursion limit would fail without naming anything.
MAX_DEPTH = 200

_LITTLE_ENDIAN = sys.byteorder == "little"


@dataclass(frozen=True)
class RaisedError:
    """A recorded exception: the model raised instead of returning.

    Raising the same exception type and message on both sides counts as the same behaviour, so this
    is all that is recorded (no traceback, which would differ between machines and versions).
    """

    #: ``module.QualName`` of the exception class, e.g. ``builtins.ValueError``.
    type: str
    #: ``str(exc)``.
    message: str

    def __str__(self) -> str:
        short = self.type.removeprefix("builtins.")
        return f"{short}: {self.message}" if self.message else short


def raised_from(exc: BaseException) -> RaisedError:
    """Return the :class:`RaisedError` that records ``exc``."""
    cls = type(exc)
    return RaisedError(type=f"{cls.__module__}.{cls.__qualname__}", message=str(exc))


class Example(NamedTuple):
    """One recorded call: the input given to the model and its output (or :class:`RaisedError`)."""

    input: Any
    output: Any


# --------------------------------------------------------------------------------------- encoding


def encode_value(value: Any, *, path: str = "value") -> Any:
    """Return a JSON-able encoding of ``value``; :func:`decode_value` inverts it.

    ``path`` names ``value`` in error messages (``output`` gives ``output['prediction'][3]``).
    Raises :class:`~pytest_modelpack.errors.Unrecordable` for a value JSON cannot hold without
    pickle.
    """
    return _Encoder(where=None).value(value, path)


class _Encoder:
    def __init__(self, where: str | None) -> None:
        # Extra detail line ("in recorded example 3") so a failure can be found among many records.
        self.where = where
        # ids of the containers on the current path: a list that contains itself would otherwise
        # recurse until RecursionError, which names nothing.
        self.active: set[int] = set()
        #: id -> (object, number) of each container written so far: written again as a $ref.
        self.written: dict[int, tuple[Any, int]] = {}

    def value(self, v: Any, path: str) -> Any:
        """One value (an input or an output): containers are numbered from 0 within it."""
        self.written = {}
        return self.encode(v, path)

    def number(self, v: Any) -> Any:
        """The $ref of ``v`` if it was written before, else None (``v`` gets the next number)."""
        hit = self.written.get(id(v))
        if hit is not None and hit[0] is v:
            return {"$ref": hit[1]}
        self.written[id(v)] = (v, len(self.written))
        return None

    def fail(self, value: Any, path: str, why: str | None = None, fix: str | None = None) -> None:
        detail = [why] if why else []
        detail.append(_SUPPORTED_SUMMARY)
        if self.where:
            detail.append(self.where)
        if fix is None:
            if path.startswith("input"):
                fix = (
                    "draw inputs that are plain data (numbers, strings, lists, dicts, tensors, "
                    "numpy arrays), or convert them in the strategy with .map(...)"
                )
            else:
                fix = (
                    "make the model return plain data (numbers, strings, lists, dicts, tensors, "
                    "numpy arrays), or pass apply= to modelpack.check() to convert its output"
                )
        raise Unrecordable(
            f"{path} is {_type_name(type(value))}, which examples.json cannot record",
            detail=detail,
            fix=fix,
        )

    def encode(self, v: Any, path: str) -> Any:
        # Exact-type fast paths first: they are by far the most common values.
        t = type(v)
        if v is None or t is bool or t is int or t is str:
            return v
        if t is float:
            return _encode_float(v)

        # numpy before the built-in scalars: np.float64 subclasses float and np.str_ subclasses
        # str, and both must come back as numpy scalars.
        np = sys.modules.get("numpy")
        if np is not None and isinstance(v, (np.ndarray, np.generic)):
            return self.number(v) or self.encode_ndarray(np, v, path)
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(v, torch.Tensor):
            return self.number(v) or self.encode_tensor(torch, v, path)

        if isinstance(v, RaisedError):
            return {"$raises": {"type": v.type, "message": v.message}}
        if isinstance(v, int):  # bool cannot be subclassed, so this is not a bool
            return int(v)  # IntEnum and friends: recorded by value
        if isinstance(v, float):
            return _encode_float(float(v))
        if isinstance(v, str):
            return str(v)
        if isinstance(v, bytes):
            return {"$bytes": base64.b64encode(bytes(v)).decode("ascii")}
        if isinstance(v, (list, tuple, dict)):
            if id(v) in self.active:
                self.fail(v, path, why="it contains itself")
            if len(self.active) >= MAX_DEPTH:
                self.fail(v, path, why=f"it is nested more than {MAX_DEPTH} containers deep")
            ref = self.number(v)
            if ref is not None:
                return ref
            self.active.add(id(v))
            try:
                if isinstance(v, list):
                    return [self.encode(x, f"{path}[{i}]") for i, x in enumerate(v)]
                if isinstance(v, tuple):
                    return {"$tuple": [self.encode(x, f"{path}[{i}]") for i, x in enumerate(v)]}
                return self.encode_dict(v, path)
            finally:
                self.active.discard(id(v))
        if isinstance(v, (bytearray, memoryview)):
            self.fail(v, path, fix="convert it with bytes(...)")
        self.fail(v, path)

    def encode_dict(self, d: dict[Any, Any], path: str) -> Any:
        if all(type(k) is str and not k.startswith("$") for k in d):
            return {k: self.encode(x, f"{path}[{k!r}]") for k, x in d.items()}
        # A JSON object can only hold str keys, and a key starting with "$" would read as a tag.
        return {
            "$dict": [
                [self.encode(k, f"{path} (key {k!r})"), self.encode(x, f"{path}[{k!r}]")]
                for k, x in d.items()
            ]
        }

    def encode_tensor(self, torch: Any, t: Any, path: str) -> Any:
        if t.layout != torch.strided:
            self.fail(
                t,
                path,
                why=f"it is a {t.layout} tensor; only dense (strided) tensors are recorded",
                fix="convert it with .to_dense()",
            )
        if t.is_quantized:
            self.fail(
                t,
                path,
                why=f"it is a quantized tensor ({t.dtype})",
                fix="convert it with .dequantize()",
            )
        if getattr(t, "is_nested", False):
            self.fail(
                t, path, why="it is a nested tensor", fix="convert it with .to_padded_tensor(0)"
            )
        if t.device.type == "meta":
            self.fail(t, path, why="it is a meta tensor, which holds no data")
        name = str(t.dtype).removeprefix("torch.")
        if name not in _TENSOR_DTYPE_NAMES or getattr(torch, name, None) is None:
            self.fail(
                t,
                path,
                why=f"its dtype {t.dtype} has no byte layout examples.json can record",
                fix="convert it to a standard dtype with .to(torch.float32) or similar",
            )
        # resolve_conj/neg: a lazily conjugated view's bytes are the unconjugated values.
        t = t.detach().resolve_conj().resolve_neg().cpu().contiguous()
        return {
            "$tensor": {
                "dtype": name,
                "shape": list(t.shape),
                "data": base64.b64encode(_tensor_bytes(t)).decode("ascii"),
            }
        }

    def encode_ndarray(self, np: Any, v: Any, path: str) -> Any:
        scalar = isinstance(v, np.generic)
        # Exact ndarray (and memmap, which is just a file-backed ndarray) only: MaskedArray and
        # matrix carry meaning beyond their data that would be silently dropped.
        if not scalar and not (type(v) is np.ndarray or isinstance(v, np.memmap)):
            self.fail(v, path, fix="convert it with numpy.asarray(...)")
        arr = np.asarray(v)
        if arr.dtype.kind not in _NDARRAY_KINDS:
            self.fail(
                v,
                path,
                why=f"its dtype {arr.dtype} holds Python objects or nested records, not plain data",
                fix="convert it to a numeric or string dtype, or to a list",
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


def _type_name(cls: type) -> str:
    name = (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
    return f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name}"


def _encode_float(x: float) -> Any:
    if math.isfinite(x):
        return x  # json writes repr(x), which reads back as exactly x
    if math.isnan(x):
        return {"$float": "nan"}
    return {"$float": "inf" if x > 0 else "-inf"}


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


# --------------------------------------------------------------------------------------- decoding


def decode_value(data: Any) -> Any:
    """Return the value that :func:`encode_value` encoded as ``data``.

    ``data`` is untrusted (it comes from a committed file): anything malformed raises
    :class:`~pytest_modelpack.errors.CorruptGolden`, and no name in it is ever imported or called.
    """
    try:
        return _decode(data, "value", [])
    except RecursionError:
        raise _corrupt("value", "nested too deeply") from None


_PENDING = object()


def _decode(j: Any, path: str, made: list[Any], depth: int = 0) -> Any:
    """``made``: the containers decoded so far, by number (what ``$ref`` points at)."""
    t = type(j)
    if j is None or t is bool or t is int or t is str:
        return j
    if t is float:
        if not math.isfinite(j):
            raise _corrupt(path, f"non-finite float {j!r} outside a $float tag")
        return j
    if t is not list and t is not dict:
        raise _corrupt(path, f"unexpected {t.__name__}")
    tags = [k for k in j if k.startswith("$")] if t is dict else []
    if tags and (len(j) != 1 or tags[0] not in _TAGS):
        raise _corrupt(path, f"unknown tag object with keys {sorted(j)}")
    tag = tags[0] if tags else None
    body = j[tag] if tag else j
    if tag == "$float":
        if body not in ("nan", "inf", "-inf"):
            raise _corrupt(path, f"bad $float {body!r}")
        return float(body)
    if tag == "$bytes":
        _expect(body, str, path, tag)
        return _b64(body, path)
    if tag == "$raises":
        _expect(body, dict, path, tag)
        if set(body) != {"type", "message"} or not all(type(x) is str for x in body.values()):
            raise _corrupt(path, "a $raises needs exactly str 'type' and 'message'")
        return RaisedError(type=body["type"], message=body["message"])
    if tag == "$ref":
        if type(body) is not int or not 0 <= body < len(made) or made[body] is _PENDING:
            raise _corrupt(path, f"$ref {str(body)[:20]} names no container written before it")
        return made[body]
    if depth >= MAX_DEPTH:
        raise _corrupt(path, f"nested more than {MAX_DEPTH} containers deep")
    number = len(made)
    made.append(_PENDING)
    made[number] = value = _decode_container(tag, body, path, made, depth + 1)
    return value


def _decode_container(tag: str | None, body: Any, path: str, made: list[Any], depth: int) -> Any:
    if tag is None and type(body) is list:
        return [_decode(x, f"{path}[{i}]", made, depth) for i, x in enumerate(body)]
    if tag is None:
        return {k: _decode(x, f"{path}[{k!r}]", made, depth) for k, x in body.items()}
    if tag == "$tuple":
        _expect(body, list, path, tag)
        return tuple(_decode(x, f"{path}[{i}]", made, depth) for i, x in enumerate(body))
    if tag == "$dict":
        _expect(body, list, path, tag)
        out: dict[Any, Any] = {}
        for item in body:
            if type(item) is not list or len(item) != 2:
                raise _corrupt(path, "a $dict item is not a [key, value] pair")
            key = _decode(item[0], f"{path} (key)", made, depth)
            value = _decode(item[1], f"{path}[{key!r}]", made, depth)
            try:
                out[key] = value
            except TypeError:
                raise _corrupt(path, f"unhashable $dict key {key!r}") from None
        return out
    _expect(body, dict, path, tag)
    if tag == "$tensor":
        return _decode_tensor(body, path)
    return _decode_ndarray(body, path)


def _decode_tensor(body: dict[str, Any], path: str) -> Any:
    import torch

    if set(body) != {"dtype", "shape", "data"}:
        raise _corrupt(path, "a $tensor needs exactly 'dtype', 'shape' and 'data'")
    name = body["dtype"]
    dtype = getattr(torch, name, None) if name in _TENSOR_DTYPE_NAMES else None
    if not isinstance(dtype, torch.dtype):
        raise _corrupt(path, f"unsupported tensor dtype {name!r}")
    shape = _shape(body["shape"], path)
    _expect(body["data"], str, path, "$tensor data")
    raw = _b64(body["data"], path)
    numel = math.prod(shape)
    if len(raw) != numel * dtype.itemsize:
        raise _corrupt(
            path, f"{len(raw)} data bytes for {numel} {name} elements of {dtype.itemsize} bytes"
        )
    if dtype == torch.bool and raw.strip(b"\x00\x01"):
        # Bytes other than 0 and 1 are not valid bools and give undefined results in torch.
        raise _corrupt(path, "bool tensor data holds bytes other than 0 and 1")
    if numel == 0:
        # torch.frombuffer refuses an empty buffer.
        return torch.empty(shape, dtype=dtype)
    # clone(): frombuffer shares the bytearray's memory, which need not be aligned for dtype.
    u8 = torch.frombuffer(bytearray(raw), dtype=torch.uint8).clone()
    if not _LITTLE_ENDIAN:
        u8 = _swap_bytes(torch.empty(0, dtype=dtype), u8)
    return u8.view(dtype).reshape(shape)


def _decode_ndarray(body: dict[str, Any], path: str) -> Any:
    import numpy as np

    keys = set(body)
    if not {"dtype", "shape", "data"} <= keys <= {"dtype", "shape", "data", "scalar"}:
        raise _corrupt(path, "a $ndarray needs 'dtype', 'shape', 'data' and optionally 'scalar'")
    _expect(body["dtype"], str, path, "$ndarray dtype")
    try:
        dtype = np.dtype(body["dtype"])
    except (TypeError, ValueError):
        raise _corrupt(path, f"bad numpy dtype {body['dtype']!r}") from None
    if dtype.kind not in _NDARRAY_KINDS or dtype.fields is not None:
        raise _corrupt(path, f"unsupported numpy dtype {body['dtype']!r}")
    shape = _shape(body["shape"], path)
    _expect(body["data"], str, path, "$ndarray data")
    raw = _b64(body["data"], path)
    if len(raw) != math.prod(shape) * dtype.itemsize:
        raise _corrupt(path, f"{len(raw)} data bytes do not fit shape {shape} of {dtype}")
    # Back to native byte order so the array behaves like the one that was recorded; copy() because
    # frombuffer arrays are read-only views of the bytes.
    arr = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="), copy=True).reshape(shape)
    scalar = body.get("scalar", False)
    if scalar is not False:
        if scalar is not True or shape:
            raise _corrupt(path, "'scalar' must be true and only on a shape-[] $ndarray")
        return arr[()]
    return arr


#: No dimension of a recorded tensor is larger: torch refuses sizes past int64 anyway.
MAX_DIM = 2**62


def _shape(shape: Any, path: str) -> list[int]:
    if type(shape) is not list or not all(type(n) is int and 0 <= n < MAX_DIM for n in shape):
        raise _corrupt(path, f"bad shape {str(shape)[:80]}")
    return shape


def _b64(text: str, path: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise _corrupt(path, "bad base64 data") from None


def _expect(body: Any, kind: type, path: str, what: str) -> None:
    if type(body) is not kind:
        raise _corrupt(path, f"{what} is not a JSON {_JSON_KIND[kind]}")


_JSON_KIND: dict[type, str] = {list: "array", dict: "object", str: "string"}


def _corrupt(path: str, why: str) -> CorruptGolden:
    return CorruptGolden(
        f"examples.json is malformed at {path}: {why}",
        fix=(
            "restore examples.json from version control, or regenerate the golden with "
            f"{fixes.regen_command()}"
        ),
    )


# ------------------------------------------------------------------------------------ the file


def examples_bytes(records: Iterable[tuple[Any, Any]]) -> bytes:
    """Return the bytes of ``examples.json`` for ``(input, output)`` pairs.

    Deterministic: the same records (same values, same dict order) always give identical bytes, so
    an unchanged golden stays unchanged under ``--modelpack-regen`` and diffs show real changes.
    """
    records = list(records)
    examples = []
    for i, (inp, out) in enumerate(records):
        enc = _Encoder(where=f"in recorded example {i} of {len(records)}")
        examples.append({"input": enc.value(inp, "input"), "output": enc.value(out, "output")})
    doc = {"format_version": FORMAT_VERSION, "examples": examples}
    text = json.dumps(doc, indent=1, sort_keys=False, ensure_ascii=False, allow_nan=False)
    # ensure_ascii=False keeps non-ASCII text readable in review, but a lone surrogate (valid in a
    # Python str, e.g. from Hypothesis) cannot be written as UTF-8. Surrogates can only occur
    # inside JSON strings, where the \\uXXXX escape reads back as the same code point.
    text = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return (text + "\n").encode("utf-8")


_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_examples(data: bytes | str) -> list[Example]:
    """Return the records held by ``examples.json`` content (the inverse of :func:`examples_bytes`).

    Raises :class:`~pytest_modelpack.errors.CorruptGolden` for invalid JSON, an unknown format
    version, or a malformed record.
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _corrupt("the top level", f"not UTF-8 ({exc.reason})") from None
    try:
        doc = json.loads(data, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)
    except (json.JSONDecodeError, _BadJSON) as exc:
        raise _corrupt("the top level", f"not valid JSON ({exc})") from None
    except ValueError as exc:  # e.g. an integer beyond Python's digit limit
        raise _corrupt("the top level", f"not decodable ({exc})") from None
    except RecursionError:
        raise _corrupt("the top level", "nested too deeply") from None
    if type(doc) is not dict or "format_version" not in doc:
        raise _corrupt("the top level", "no format_version")
    version = doc["format_version"]
    if version != FORMAT_VERSION or type(version) is not int:
        raise CorruptGolden(
            f"examples.json has format_version {version!r}; this pytest-modelpack reads "
            f"format_version {FORMAT_VERSION}",
            fix=(
                "upgrade pytest-modelpack to the version that wrote the golden, or regenerate the "
                f"golden with {fixes.regen_command()}"
            ),
        )
    if set(doc) != {"format_version", "examples"} or type(doc["examples"]) is not list:
        raise _corrupt("the top level", "expected exactly 'format_version' and an 'examples' list")
    out = []
    for i, rec in enumerate(doc["examples"]):
        if type(rec) is not dict or set(rec) != {"input", "output"}:
            raise _corrupt(f"examples[{i}]", "expected an object with 'input' and 'output'")
        try:
            out.append(
                Example(
                    _decode(rec["input"], f"examples[{i}].input", []),
                    _decode(rec["output"], f"examples[{i}].output", []),
                )
            )
        except RecursionError:
            raise _corrupt(f"examples[{i}]", "nested too deeply") from None
    return out


class _BadJSON(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads silently keeps the last of duplicate keys; in an untrusted file that would hide
    # content from a reviewer reading the first one.
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _BadJSON("duplicate object key")
    return out


def _no_constant(name: str) -> Any:
    # We never write NaN/Infinity (allow_nan=False); non-finite floats are $float tags.
    raise _BadJSON(f"non-standard constant {name}")


def dump_examples(
    records: Iterable[tuple[Any, Any]], path_or_file: str | os.PathLike[str] | IO[Any]
) -> None:
    """Write ``examples.json`` for ``(input, output)`` pairs to a path or an open file.

    A path is written atomically (temporary file in the same folder, fsync, ``os.replace``), so a
    crash leaves the old file or the new one. A text file receives ``str``, a binary file bytes.
    """
    data = examples_bytes(records)  # encode first: an Unrecordable value must not truncate a file
    if isinstance(path_or_file, (str, os.PathLike)):
        write_atomic(Path(path_or_file), data)
    elif isinstance(path_or_file, io.TextIOBase):
        path_or_file.write(data.decode("utf-8"))
    else:
        path_or_file.write(data)


def load_examples(path_or_file: str | os.PathLike[str] | IO[Any]) -> list[Example]:
    """Read ``examples.json`` from a path or an open file; see :func:`parse_examples`."""
    if isinstance(path_or_file, (str, os.PathLike)):
        with open(path_or_file, "rb") as f:
            return parse_examples(f.read())
    return parse_examples(path_or_file.read())
