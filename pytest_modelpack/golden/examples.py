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
import io
import json
import math
import os
import re
import secrets
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple

from .. import fixes
from ..errors import CorruptGolden, Unrecordable
from ..walk import short_path
from .arrays import (
    Malformed,
    Refused,
    b64,
    decode_ndarray,
    decode_tensor,
    encode_ndarray,
    encode_tensor,
    expect,
)
from .fileio import write_atomic

#: Version of the ``examples.json`` layout. An unknown version is reported, never guessed at.
FORMAT_VERSION = 1

_SUPPORTED_SUMMARY = (
    "examples.json records None, bool, int, float, str, bytes, list, tuple, dict, "
    "torch tensors, numpy arrays and numpy scalars, and raised exceptions"
)

_TAGS = frozenset({"$float", "$tuple", "$dict", "$bytes", "$tensor", "$ndarray", "$raises", "$ref"})
#: Containers nested deeper than this are refused by name (UNRECORDABLE, CORRUPT GOLDEN), before
#: Python's recursion limit would fail without naming anything.
MAX_DEPTH = 200
#: At most this many values (each container once, each item; a tensor or an array is one) in one
#: recorded input or output, and in one comparison: a 3-million-int list recorded element by
#: element makes examples.json hundreds of MB and every check minutes long.
MAX_VALUES = 100_000
#: The fix for an output examples.json cannot record (and the comparison cannot compare).
PLAIN_DATA_FIX = (
    "make the model return plain data (numbers, strings, lists, dicts, tensors, numpy arrays), "
    "or pass apply= to modelpack.check() to convert its output"
)


def too_many_values(path: str, refused: str, where: str | None = None) -> Unrecordable:
    """UNRECORDABLE VALUE for an input or output past :data:`MAX_VALUES` at ``path``;
    ``refused``: who refuses it ("examples.json cannot record")."""
    root = "input" if path.startswith("input") else "output"
    detail = [
        f"the limit was reached at {short_path(path, 80)}",
        f"at most {MAX_VALUES:,} values are recorded or compared per {root} (each distinct list, "
        "tuple, dict and object once, and each item; a tensor or numpy array is one value): "
        "more makes every check slow and examples.json huge",
        *([where] if where else []),
    ]
    fix = (
        "draw smaller inputs, or inputs holding tensors or numpy arrays instead of long lists"
        if root == "input"
        else "return the values as a tensor or numpy array (torch.tensor(values)) instead of a "
        "Python list or dict, or return less; or pass apply= to modelpack.check() to convert it"
    )
    return Unrecordable(
        f"{root} holds more than {MAX_VALUES:,} values, which {refused}", detail=detail, fix=fix
    )


def too_deep(path: str, refused: str) -> Unrecordable:
    """UNRECORDABLE VALUE for containers nested past :data:`MAX_DEPTH` at ``path``."""
    return Unrecordable(
        f"{short_path(path, 80)} is nested more than {MAX_DEPTH} containers deep, which {refused}",
        detail=[
            f"comparisons and examples.json follow at most {MAX_DEPTH} levels of nested lists, "
            "tuples, dicts, objects and object arrays"
        ],
        fix="return a flatter structure (stack nested lists into a tensor, return the parts as "
        "one tuple or dict), or pass apply= to modelpack.check() to convert the output",
    )


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
    def __init__(
        self, where: str | None, spliced: list[str] | None = None, token: str = ""
    ) -> None:
        # Extra detail line ("in recorded example 3") so a failure can be found among many records.
        self.where = where
        #: Where big tensor and array data goes instead of the document (examples_bytes), each
        #: replaced by ``token`` and its number.
        self.spliced = spliced
        self.token = token
        # ids of the containers on the current path: a list that contains itself would otherwise
        # recurse until RecursionError, which names nothing.
        self.active: set[int] = set()
        #: id -> (object, number) of each container written so far: written again as a $ref.
        self.written: dict[int, tuple[Any, int]] = {}
        #: Values written so far in this value (bounded by MAX_VALUES).
        self.count = 0

    def value(self, v: Any, path: str) -> Any:
        """One value (an input or an output): containers are numbered from 0 within it."""
        self.written = {}
        self.count = 0
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
                fix = PLAIN_DATA_FIX
        raise Unrecordable(
            f"{short_path(path, 80)} is {_type_name(type(value))}, which examples.json cannot "
            "record",
            detail=detail,
            fix=fix,
        )

    def encode(self, v: Any, path: str) -> Any:
        self.count += 1
        if self.count > MAX_VALUES:
            raise too_many_values(path, "examples.json cannot record", self.where)
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
            return self.number(v) or self.encode_array(encode_ndarray, np, v, path)
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(v, torch.Tensor):
            return self.number(v) or self.encode_array(encode_tensor, torch, v, path)

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

    def encode_array(self, encode: Any, library: Any, v: Any, path: str) -> Any:
        try:
            encoded = encode(library, v)
        except Refused as refused:
            self.fail(v, path, *refused.args)
        body = next(iter(encoded.values()))
        if self.spliced is not None and len(body["data"]) > _SPLICE:
            self.spliced.append(body["data"])
            body["data"] = f"{self.token}{len(self.spliced) - 1}"
        return encoded


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
    try:  # what is malformed at this level, here or in a tag's body, is named with ``path``
        if t is float:
            if not math.isfinite(j):
                raise Malformed(f"non-finite float {j!r} outside a $float tag")
            return j
        if t is not list and t is not dict:
            raise Malformed(f"unexpected {t.__name__}")
        tags = [k for k in j if k.startswith("$")] if t is dict else []
        if tags and (len(j) != 1 or tags[0] not in _TAGS):
            raise Malformed(f"unknown tag object with keys {sorted(j)}")
        tag = tags[0] if tags else None
        body = j[tag] if tag else j
        if tag == "$float":
            if body not in ("nan", "inf", "-inf"):
                raise Malformed(f"bad $float {body!r}")
            return float(body)
        if tag == "$bytes":
            return b64(expect(body, str, tag))
        if tag == "$raises":
            expect(body, dict, tag)
            if set(body) != {"type", "message"} or not all(type(x) is str for x in body.values()):
                raise Malformed("a $raises needs exactly str 'type' and 'message'")
            return RaisedError(type=body["type"], message=body["message"])
        if tag == "$ref":
            if type(body) is not int or not 0 <= body < len(made) or made[body] is _PENDING:
                raise Malformed(f"$ref {str(body)[:20]} names no container written before it")
            return made[body]
        if depth >= MAX_DEPTH:
            raise Malformed(f"nested more than {MAX_DEPTH} containers deep")
        number = len(made)
        made.append(_PENDING)
        made[number] = value = _decode_container(tag, body, path, made, depth + 1)
        return value
    except Malformed as exc:
        raise _corrupt(path, str(exc)) from None


def _decode_container(tag: str | None, body: Any, path: str, made: list[Any], depth: int) -> Any:
    if tag is None and type(body) is list:
        return [_decode(x, f"{path}[{i}]", made, depth) for i, x in enumerate(body)]
    if tag is None:
        return {k: _decode(x, f"{path}[{k!r}]", made, depth) for k, x in body.items()}
    if tag == "$tuple":
        items = expect(body, list, tag)
        return tuple(_decode(x, f"{path}[{i}]", made, depth) for i, x in enumerate(items))
    if tag == "$dict":
        out: dict[Any, Any] = {}
        for item in expect(body, list, tag):
            if type(item) is not list or len(item) != 2:
                raise Malformed("a $dict item is not a [key, value] pair")
            key = _decode(item[0], f"{path} (key)", made, depth)
            value = _decode(item[1], f"{path}[{key!r}]", made, depth)
            try:
                out[key] = value
            except TypeError:
                raise Malformed(f"unhashable $dict key {key!r}") from None
        return out
    expect(body, dict, tag)
    return decode_tensor(body) if tag == "$tensor" else decode_ndarray(body)


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
    # Big base64 data (a 50M-element tensor's is 270 MB) is written around json.dumps, not
    # through it: json would scan and copy every character several times (seconds, GBs). Each is
    # a placeholder in the document, then spliced back in: the bytes are the same either way.
    token = f"$data-{secrets.token_hex(8)}-"
    spliced: list[str] = []
    examples = []
    for i, (inp, out) in enumerate(records):
        enc = _Encoder(f"in recorded example {i} of {len(records)}", spliced, token)
        examples.append({"input": enc.value(inp, "input"), "output": enc.value(out, "output")})
    doc = {"format_version": FORMAT_VERSION, "examples": examples}
    text = json.dumps(doc, indent=1, sort_keys=False, ensure_ascii=False, allow_nan=False)
    parts = text.split(f'"{token}')
    if len(parts) != len(spliced) + 1:  # the token in the values themselves: never, but exact
        for body in _array_bodies(examples):
            if body["data"].startswith(token):
                body["data"] = spliced[int(body["data"][len(token) :])]
        text = json.dumps(doc, indent=1, sort_keys=False, ensure_ascii=False, allow_nan=False)
        parts = [text]
    out = [_utf8(parts[0])]
    for part in parts[1:]:
        number, rest = part.split('"', 1)
        out += [b'"', spliced[int(number)].encode("ascii"), b'"', _utf8(rest)]
    out.append(b"\n")
    return b"".join(out)


def _utf8(text: str) -> bytes:
    # ensure_ascii=False keeps non-ASCII text readable in review, but a lone surrogate (valid in a
    # Python str, e.g. from Hypothesis) cannot be written as UTF-8. Surrogates can only occur
    # inside JSON strings, where the \\uXXXX escape reads back as the same code point.
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode("utf-8")


def _array_bodies(value: Any) -> Iterator[dict[str, Any]]:
    """The ``$tensor``/``$ndarray`` bodies in an encoded document (each object once)."""
    stack, seen = [value], set()
    while stack:
        v = stack.pop()
        if id(v) in seen or not isinstance(v, (list, dict)):
            continue
        seen.add(id(v))
        if isinstance(v, dict):
            if len(v) == 1 and ("$tensor" in v or "$ndarray" in v):
                yield next(iter(v.values()))
            else:
                stack.extend(v.values())
        else:
            stack.extend(v)


_SURROGATE = re.compile("[\ud800-\udfff]")
#: Tensor and array data longer than this (characters of base64) is spliced (examples_bytes).
_SPLICE = 1 << 16


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
