"""Unit and property tests for pytest_modelpack.golden.examples (the examples.json encoding)."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import struct
import subprocess
import sys
import warnings
from collections import OrderedDict, namedtuple
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pytest_modelpack.compare import compare
from pytest_modelpack.errors import CorruptGolden, Unrecordable
from pytest_modelpack.golden.examples import (
    FORMAT_VERSION,
    MAX_DEPTH,
    Example,
    RaisedError,
    decode_value,
    dump_examples,
    encode_value,
    examples_bytes,
    load_examples,
    parse_examples,
    raised_from,
)

REPO = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------- strategies

TENSOR_DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.complex64,
    torch.complex128,
    torch.int64,
    torch.int32,
    torch.int8,
    torch.uint8,
    torch.bool,
]


@st.composite
def tensors(draw: Any) -> torch.Tensor:
    """Small tensors from raw bytes: every bit pattern, so NaN payloads and -0.0 included."""
    dtype = draw(st.sampled_from(TENSOR_DTYPES))
    shape = draw(st.lists(st.integers(0, 3), max_size=3))  # [] is 0-d; a 0 side is empty
    n = math.prod(shape)
    if dtype == torch.bool:
        raw = bytes(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    else:
        raw = draw(st.binary(min_size=n * dtype.itemsize, max_size=n * dtype.itemsize))
    if n == 0:
        return torch.empty(shape, dtype=dtype)
    t = torch.frombuffer(bytearray(raw), dtype=torch.uint8).clone().view(dtype).reshape(shape)
    if t.dim() >= 2 and draw(st.booleans()):
        t = t.transpose(
            -1, -2
        )  # not contiguous: the encoder must copy, not read the storage in order
    return t


NUMPY_DTYPES = [
    "<f4",
    "<f8",
    ">f8",
    "<f2",
    "<i8",
    "<i2",
    "|u1",
    "|b1",
    "<c16",
    "<U3",
    "|S2",
    "<M8[s]",
]

numpy_arrays = hnp.arrays(
    dtype=st.sampled_from(NUMPY_DTYPES),
    shape=hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=3),
)
numpy_scalars = hnp.arrays(dtype=st.sampled_from(NUMPY_DTYPES), shape=()).map(lambda a: a[()])

leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # nan and +-inf included
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | tensors()
    | numpy_arrays
    | numpy_scalars
    | st.builds(RaisedError, type=st.just("builtins.ValueError"), message=st.text(max_size=8))
)

# Keys that must not become plain JSON objects: "$"-prefixed strings and non-str keys. (No float
# keys: a NaN key is not equal to itself, so no comparison can find it again.)
dict_keys = (
    st.text(max_size=4)
    | st.sampled_from(["$tensor", "$float", "$", "$$x"])
    | st.integers()
    | st.tuples(st.integers(), st.text(max_size=2))
)

values = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=3)
        | st.lists(children, max_size=3).map(tuple)
        | st.dictionaries(st.text(max_size=4), children, max_size=3)
        | st.dictionaries(dict_keys, children, max_size=3)
    ),
    max_leaves=8,
)

PROPERTY = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_same_types(original: Any, decoded: Any, path: str = "value") -> None:
    """Types, dtypes and shapes survive the round trip (compare() checks the values)."""
    if isinstance(original, torch.Tensor):
        assert type(decoded) is torch.Tensor, path
        assert decoded.dtype == original.dtype, path
        assert decoded.shape == original.shape, path
        # Bit-exact: NaN payloads and the sign of zero are data too.
        assert torch.equal(
            decoded.reshape(-1).view(torch.uint8),
            original.contiguous().reshape(-1).view(torch.uint8),
        ), path
    elif isinstance(original, np.ndarray):
        assert type(decoded) is np.ndarray, path
        assert decoded.dtype == original.dtype.newbyteorder("="), path
        assert decoded.shape == original.shape, path
    elif isinstance(original, dict):
        assert type(decoded) is dict, path
        assert list(decoded) == list(original), path  # order is kept
        for k in original:
            assert_same_types(original[k], decoded[k], f"{path}[{k!r}]")
    elif isinstance(original, (list, tuple)):
        assert type(decoded) is type(original), path
        assert len(decoded) == len(original), path
        for i, (o, d) in enumerate(zip(original, decoded, strict=True)):
            assert_same_types(o, d, f"{path}[{i}]")
    else:
        assert type(decoded) is type(original), path


def through_json(value: Any) -> Any:
    text = json.dumps(encode_value(value), allow_nan=False)
    return decode_value(json.loads(text))


# ------------------------------------------------------------------------------ round trip


@PROPERTY
@given(values)
def test_round_trip_property(value: Any) -> None:
    decoded = through_json(value)
    assert compare(value, decoded, exact=True) == []
    assert_same_types(value, decoded)


@PROPERTY
@given(st.lists(st.tuples(values, values), max_size=3))
def test_examples_file_round_trip_is_byte_stable(records: list[tuple[Any, Any]]) -> None:
    data = examples_bytes(records)
    assert examples_bytes(records) == data  # same records, same bytes
    loaded = parse_examples(data)
    assert len(loaded) == len(records)
    for (inp, out), example in zip(records, loaded, strict=True):
        assert compare(inp, example.input, exact=True, path="input") == []
        assert compare(out, example.output, exact=True) == []
    # Re-recording what was read back writes the very same file: regen of an unchanged model
    # leaves the golden unchanged.
    assert examples_bytes(loaded) == data


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -(2**80),
        1.5,
        -0.0,
        "",
        "très bien",
        [],
        {},
        (),
        (1,),
        [1, (2, [3, {"a": b"\x00\xff"}])],
        {"a": {"b": [1.0, float("nan")]}},
    ],
)
def test_round_trip_plain_values(value: Any) -> None:
    decoded = through_json(value)
    assert compare(value, decoded, exact=True) == []
    assert_same_types(value, decoded)


def test_json_native_values_encode_as_themselves() -> None:
    value = {"decision": "good", "prediction": [0.25, -1.0, 3], "ok": True, "none": None}
    assert encode_value(value) == value


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (float("nan"), {"$float": "nan"}),
        (float("inf"), {"$float": "inf"}),
        (float("-inf"), {"$float": "-inf"}),
        ((1, "a"), {"$tuple": [1, "a"]}),
        (b"hi", {"$bytes": "aGk="}),
        ({1: "a"}, {"$dict": [[1, "a"]]}),
        ({"$tensor": 1}, {"$dict": [["$tensor", 1]]}),
        ({"a": 1, 2: "b"}, {"$dict": [["a", 1], [2, "b"]]}),
        (
            RaisedError("builtins.KeyError", "'x'"),
            {"$raises": {"type": "builtins.KeyError", "message": "'x'"}},
        ),
    ],
)
def test_tagged_encodings(value: Any, encoded: Any) -> None:
    assert encode_value(value) == encoded
    assert compare(value, decode_value(encoded), exact=True) == []


def test_tensor_encoding_is_dtype_shape_and_little_endian_bytes() -> None:
    t = torch.tensor([[1.0, -2.5]], dtype=torch.float32)
    assert encode_value(t) == {
        "$tensor": {
            "dtype": "float32",
            "shape": [1, 2],
            "data": base64.b64encode(struct.pack("<2f", 1.0, -2.5)).decode(),
        }
    }


@pytest.mark.parametrize(
    "tensor",
    [
        torch.tensor(3.5),  # 0-d
        torch.tensor(7, dtype=torch.int64),
        torch.zeros(0),
        torch.zeros(2, 0, 3, dtype=torch.bfloat16),
        torch.tensor([1.5, float("nan"), -0.0], dtype=torch.bfloat16),
        torch.tensor([1.5, 65504.0, float("-inf")], dtype=torch.float16),
        torch.tensor([1 + 2j, float("nan")], dtype=torch.complex64),
        torch.tensor([True, False, True]),
        torch.tensor([2**63 - 1, -(2**63)], dtype=torch.int64),
        torch.tensor([0, 2**16 - 1], dtype=torch.uint16),
        torch.tensor([1.0, 448.0]).to(torch.float8_e4m3fn),
        torch.tensor([1.0, 57344.0]).to(torch.float8_e5m2),
        torch.arange(6.0).reshape(2, 3).t(),  # not contiguous
        torch.arange(10.0)[2:8:2],  # storage offset and stride
    ],
    ids=lambda t: f"{t.dtype}-{list(t.shape)}",
)
def test_tensor_round_trip(tensor: torch.Tensor) -> None:
    decoded = through_json(tensor)
    assert_same_types(tensor, decoded)
    assert compare(tensor, decoded, exact=True) == []


def test_complex32_round_trip() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "ComplexHalf support is experimental"
        t = torch.tensor([1 + 2j, -0.5j], dtype=torch.complex32)
        decoded = through_json(t)
    assert decoded.dtype == torch.complex32
    assert torch.equal(decoded.view(torch.uint8), t.view(torch.uint8))


def test_tensor_is_detached_and_plain() -> None:
    p = torch.nn.Parameter(torch.ones(2))
    decoded = through_json(p * 2)  # requires grad
    assert type(decoded) is torch.Tensor
    assert not decoded.requires_grad
    assert through_json(p).tolist() == [1.0, 1.0]
    assert type(through_json(p)) is torch.Tensor


def test_lazy_conjugate_is_recorded_as_its_values() -> None:
    t = torch.tensor([1 + 2j, 3 - 4j]).conj()  # a view with the conj bit set
    assert through_json(t).tolist() == [1 - 2j, 3 + 4j]


def test_decoded_tensor_owns_its_memory() -> None:
    decoded = decode_value(encode_value(torch.arange(4)))
    decoded += 1  # writable, not a view of a read-only buffer
    assert decoded.tolist() == [1, 2, 3, 4]


def test_numpy_scalars_decode_to_numpy_scalars() -> None:
    for scalar in (np.float32(1.5), np.int64(-3), np.bool_(True), np.float64(0.1), np.str_("ab")):
        decoded = through_json(scalar)
        assert type(decoded) is type(scalar)
        assert decoded == scalar
    zero_d = np.array(2.5, dtype=np.float32)
    decoded = through_json(zero_d)
    assert type(decoded) is np.ndarray and decoded.shape == () and decoded.dtype == np.float32


def test_numpy_big_endian_is_recorded_little_endian() -> None:
    arr = np.arange(3, dtype=">i4")
    enc = encode_value(arr)
    assert enc["$ndarray"]["dtype"] == "<i4"
    assert enc == encode_value(arr.astype("<i4"))  # same values, same bytes
    assert through_json(arr).tolist() == [0, 1, 2]


def test_builtin_subclasses_are_recorded_as_their_base_type() -> None:
    class Color(IntEnum):
        RED = 1

    Pair = namedtuple("Pair", "a b")
    value = {
        "enum": Color.RED,
        "pair": Pair(1, 2),
        "ordered": OrderedDict(x=1),
        "size": torch.Size([2, 3]),
    }
    decoded = through_json(value)
    assert decoded == {"enum": 1, "pair": (1, 2), "ordered": {"x": 1}, "size": (2, 3)}
    assert type(decoded["enum"]) is int and type(decoded["pair"]) is tuple
    # ...and compare() treats them by kind, so a live namedtuple equals its recording.
    assert compare(decoded, value, exact=True) == []


# ------------------------------------------------------------------------------ exceptions


class CustomError(Exception):
    pass


def test_raised_from_records_qualified_type_and_message() -> None:
    assert raised_from(ValueError("bad input")) == RaisedError("builtins.ValueError", "bad input")
    assert raised_from(CustomError("x")) == RaisedError(f"{__name__}.CustomError", "x")
    assert str(RaisedError("builtins.ValueError", "bad input")) == "ValueError: bad input"
    with pytest.raises(AttributeError):
        RaisedError("a", "b").type = "c"  # type: ignore[misc]  # frozen


def test_raised_error_round_trips() -> None:
    record = raised_from(KeyError("missing"))
    assert through_json(record) == record
    assert through_json({"out": record}) == {"out": record}


# ----------------------------------------------------------------------------- unrecordable


class Reader:
    pass


def test_unrecordable_names_the_path_and_type() -> None:
    value = {"decision": "good", "prediction": [0.1, 0.2, 0.3, Reader()]}
    with pytest.raises(Unrecordable) as info:
        encode_value(value, path="output")
    err = info.value
    assert err.summary.startswith(f"output['prediction'][3] is a {__name__}.Reader")
    assert "UNRECORDABLE VALUE" in str(err)
    assert err.fix and "apply=" in err.fix


def test_unrecordable_input_suggests_changing_the_strategy() -> None:
    with pytest.raises(Unrecordable) as info:
        examples_bytes([({"text": {1, 2}}, "ok")])
    err = info.value
    assert err.summary.startswith("input['text'] is a set")
    assert "in recorded example 0 of 1" in err.detail
    assert err.fix and "strategy" in err.fix


def test_unrecordable_in_a_later_example_names_the_example() -> None:
    with pytest.raises(Unrecordable) as info:
        examples_bytes([("a", 1), ("b", 2), ("c", (1, object()))])
    assert info.value.summary.startswith("output[1] is an object")
    assert "in recorded example 2 of 3" in info.value.detail


def test_unrecordable_dict_key_is_named() -> None:
    with pytest.raises(Unrecordable) as info:
        encode_value({frozenset({1}): 1}, path="output")
    assert info.value.summary.startswith("output (key frozenset({1})) is a frozenset")


@pytest.mark.parametrize(
    ("value", "fix"),
    [
        (np.array([object()], dtype=object), "numeric or string dtype"),
        (np.ma.masked_array([1, 2], mask=[0, 1]), "numpy.asarray"),
        (torch.tensor([[0, 1.0]]).to_sparse(), "to_dense"),
        (torch.empty(2, device="meta"), None),
        (bytearray(b"x"), "bytes("),
        (1 + 2j, None),
        (torch.float32, None),
    ],
    ids=["object-array", "masked", "sparse", "meta", "bytearray", "complex", "dtype"],
)
def test_unrecordable_values(value: Any, fix: str | None) -> None:
    with pytest.raises(Unrecordable) as info:
        encode_value({"x": value}, path="output")
    assert info.value.summary.startswith("output['x'] is ")
    if fix:
        assert info.value.fix and fix in info.value.fix


def test_quantized_tensor_is_unrecordable() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized tensor creation is deprecated
        q = torch.quantize_per_tensor(torch.tensor([1.0]), 0.1, 0, torch.qint8)
    with pytest.raises(Unrecordable) as info:
        encode_value(q, path="output")
    assert info.value.fix and "dequantize" in info.value.fix


def test_self_containing_list_is_unrecordable_not_a_recursion_error() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(Unrecordable) as info:
        encode_value(loop, path="output")
    assert info.value.summary.startswith("output[1] is a list")
    assert "contains itself" in str(info.value)


def test_shared_subvalue_is_not_mistaken_for_a_cycle() -> None:
    shared = [1, 2]
    assert encode_value([shared, shared]) == [[1, 2], {"$ref": 1}]
    decoded = decode_value(encode_value([shared, shared]))
    assert decoded == [[1, 2], [1, 2]] and decoded[0] is decoded[1]


def test_a_dag_is_written_once_per_distinct_object() -> None:
    """Issue 22: 40 levels of [a, a] are 2**40 paths in a few hundred bytes; written per path,
    recording never ends. Written per object (a $ref for each repeat), it is 41 lists."""
    import torch

    leaf = torch.arange(3.0)
    dag: Any = [leaf]
    for _ in range(40):
        dag = [dag, dag]
    text = json.dumps(encode_value({"a": dag, "t": leaf}))
    assert len(text) < 2000
    back = decode_value(json.loads(text))
    node = back["a"]
    for _ in range(40):
        assert node[0] is node[1]
        node = node[0]
    assert node[0] is back["t"] and torch.equal(back["t"], leaf)


def test_a_ref_to_nothing_written_before_is_corrupt() -> None:
    for bad in ([{"$ref": 0}], [{"$ref": 5}], [1, {"$ref": -1}], [{"$ref": "0"}]):
        with pytest.raises(CorruptGolden, match=r"\$ref .* names no container written before it"):
            decode_value(bad)


def test_nesting_past_the_bound_is_named_not_a_recursion_error() -> None:
    deep: Any = []
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(Unrecordable, match=f"nested more than {MAX_DEPTH} containers deep"):
        encode_value(deep)
    data: Any = []
    for _ in range(MAX_DEPTH + 5):
        data = [data]
    with pytest.raises(CorruptGolden, match=f"nested more than {MAX_DEPTH} containers deep"):
        decode_value(data)


# ----------------------------------------------------------------------------- the file


def test_examples_bytes_layout() -> None:
    data = examples_bytes([("hello", {"decision": "good"})])
    assert data == (
        b'{\n "format_version": 1,\n "examples": [\n  {\n   "input": "hello",\n'
        b'   "output": {\n    "decision": "good"\n   }\n  }\n ]\n}\n'
    )
    assert json.loads(data)["format_version"] == FORMAT_VERSION


def test_examples_bytes_is_deterministic() -> None:
    def records() -> list[tuple[Any, Any]]:
        torch.manual_seed(0)
        return [
            ("great film", {"logits": torch.randn(3), "label": ("good", 0.5)}),
            ({2: b"\x00", "$k": float("nan")}, raised_from(ValueError("empty"))),
        ]

    assert examples_bytes(records()) == examples_bytes(records())


def test_non_ascii_stays_readable_and_lone_surrogates_round_trip() -> None:
    data = examples_bytes([("très bien \ud800", "ok")])
    assert "très bien".encode() in data  # readable in a pull request
    assert b"\\ud800" in data  # escaped: a lone surrogate cannot be UTF-8
    data.decode("utf-8")  # strictly valid UTF-8
    assert parse_examples(data)[0].input == "très bien \ud800"


def test_dump_and_load_a_path(tmp_path: Path) -> None:
    target = tmp_path / "examples.json"
    records = [(torch.tensor([1, 2]), {"p": 0.5}), ("x", raised_from(ValueError("v")))]
    dump_examples(records, target)
    assert target.read_bytes() == examples_bytes(records)
    assert os.listdir(tmp_path) == ["examples.json"]  # no temporary file left behind
    loaded = load_examples(target)
    assert all(isinstance(e, Example) for e in loaded)
    assert compare(records[0][0], loaded[0].input, exact=True) == []
    assert loaded[1].output == RaisedError("builtins.ValueError", "v")
    assert load_examples(str(target))[0].output == {"p": 0.5}


def test_unrecordable_value_leaves_an_existing_file_alone(tmp_path: Path) -> None:
    target = tmp_path / "examples.json"
    dump_examples([(1, 2)], target)
    before = target.read_bytes()
    with pytest.raises(Unrecordable):
        dump_examples([(1, object())], target)
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["examples.json"]


def test_dump_and_load_open_files() -> None:
    records = [("é", [1.0, float("inf")])]
    binary = io.BytesIO()
    dump_examples(records, binary)
    assert binary.getvalue() == examples_bytes(records)
    text = io.StringIO()
    dump_examples(records, text)
    assert text.getvalue() == examples_bytes(records).decode()
    binary.seek(0)
    text.seek(0)
    for f in (binary, text):
        ((inp, out),) = load_examples(f)
        assert inp == "é" and out == [1.0, float("inf")]


# --------------------------------------------------------------------- corrupt or hostile file


def _doc(examples: Any, version: Any = 1) -> bytes:
    return json.dumps({"format_version": version, "examples": examples}).encode()


def _tensor_doc(**tensor: Any) -> bytes:
    body = {"dtype": "float32", "shape": [1], "data": base64.b64encode(b"\0" * 4).decode()}
    body.update(tensor)
    return _doc([{"input": 1, "output": {"$tensor": body}}])


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "not valid JSON"),
        (examples_bytes([(1, 2)])[:-10], "not valid JSON"),  # truncated
        (b"\xff\xfe", "not UTF-8"),
        (b"[]", "no format_version"),
        (b'{"format_version": 1, "format_version": 1, "examples": []}', "duplicate"),
        (b'{"format_version": 1, "examples": [{"input": NaN, "output": 1}]}', "NaN"),
        (_doc([{"input": 1}]), "'input' and 'output'"),
        (_doc([{"input": {"$nope": 1}, "output": 1}]), "unknown tag"),
        (_doc([{"input": {"$float": "nan", "x": 1}, "output": 1}]), "unknown tag"),
        (_doc([{"input": {"$float": "1e9"}, "output": 1}]), "bad $float"),
        (_doc([{"input": {"$bytes": "!!"}, "output": 1}]), "bad base64"),
        (_doc([{"input": {"$dict": [[[1], 2]]}, "output": 1}]), "unhashable"),
        (_doc([{"input": {"$raises": {"type": 1, "message": ""}}, "output": 1}]), "$raises"),
        (_tensor_doc(dtype="Tensor"), "unsupported tensor dtype 'Tensor'"),
        (_tensor_doc(dtype="__class__"), "unsupported tensor dtype"),
        (_tensor_doc(dtype="qint8"), "unsupported tensor dtype"),
        (_tensor_doc(shape=[2]), "data bytes"),
        (_tensor_doc(shape=[-1]), "bad shape"),
        (_tensor_doc(shape=[True]), "bad shape"),
        (_tensor_doc(requires_grad=True), "exactly"),
        (
            _tensor_doc(dtype="bool", data=base64.b64encode(b"\x02").decode()),
            "other than 0 and 1",
        ),
        (
            _doc([{"input": {"$ndarray": {"dtype": "|O", "shape": [0], "data": ""}}, "output": 1}]),
            "unsupported numpy dtype",
        ),
        (
            _doc(
                [
                    {
                        "input": {
                            "$ndarray": {
                                "dtype": "<f4",
                                "shape": [1],
                                "data": "AAAAAA==",
                                "scalar": True,
                            }
                        },
                        "output": 1,
                    }
                ]
            ),
            "scalar",
        ),
    ],
)
def test_corrupt_examples_are_reported(data: bytes, why: str) -> None:
    with pytest.raises(CorruptGolden) as info:
        parse_examples(data)
    assert why in info.value.summary
    assert info.value.fix and "--modelpack-regen" in info.value.fix


def test_unknown_format_version_is_reported_not_guessed() -> None:
    with pytest.raises(CorruptGolden) as info:
        parse_examples(_doc([], version=2))
    assert "format_version 2" in info.value.summary
    assert "reads format_version 1" in info.value.summary


def test_malformed_path_is_named() -> None:
    with pytest.raises(CorruptGolden) as info:
        parse_examples(_doc([{"input": 1, "output": {"a": [1, {"$bytes": 3}]}}]))
    assert "examples[0].output['a'][1]" in info.value.summary


def test_deeply_nested_file_is_corrupt_not_a_crash() -> None:
    with pytest.raises(CorruptGolden):
        parse_examples(
            b'{"format_version": 1, "examples": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        )


# --------------------------------------------------------------------------- import cost


def test_importing_and_encoding_plain_values_loads_no_heavy_library() -> None:
    code = (
        "import sys\n"
        "import pytest_modelpack.golden.examples as c, pytest_modelpack.compare as m\n"
        "data = c.examples_bytes([('x', {'p': [0.5, float('nan')], 1: (b'',)})])\n"
        "ex = c.parse_examples(data)\n"
        "assert m.compare(ex[0].output, {'p': [0.5, float('nan')], 1: (b'',)}, exact=True) == []\n"
        "print(sorted(n for n in ('torch', 'numpy', 'hypothesis', 'pytest') if n in sys.modules))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "hostile",
    [
        '{"format_version": 1, "examples": [{"input": ' + "1" * 5000 + ', "output": 1}]}',
        '{"format_version": 1, "examples": [{"input": {"$tensor": {"dtype": "float32", '
        f'"shape": [0, {2**70}], "data": ""}}}}, "output": 1}}]}}',
    ],
    ids=["integer past the digit limit", "dimension past int64"],
)
def test_hostile_examples_json_is_corrupt_not_a_traceback(hostile: str) -> None:
    """examples.json is attacker-controlled too: what Python or torch would raise on is CORRUPT."""
    with pytest.raises(CorruptGolden):
        parse_examples(hostile.encode())
