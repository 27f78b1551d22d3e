"""Unit tests for pytest_modelpack.compare (the nested output comparator)."""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict, namedtuple
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

from pytest_modelpack.compare import (
    Difference,
    Tolerance,
    compare,
    default_tolerance,
    describe_differences,
)
from pytest_modelpack.golden.examples import RaisedError, raised_from

F32 = Tolerance(rtol=1.3e-6, atol=1e-5)
EXACT = Tolerance(rtol=0.0, atol=0.0)


def one(diffs: list[Difference]) -> Difference:
    assert len(diffs) == 1, [d.describe() for d in diffs]
    return diffs[0]


# ---------------------------------------------------------------------------- tolerances


@pytest.mark.parametrize(
    ("dtype", "rtol", "atol"),
    [
        (torch.float16, 1e-3, 1e-5),
        (torch.bfloat16, 1.6e-2, 1e-5),
        (torch.float32, 1.3e-6, 1e-5),
        (torch.float64, 1e-7, 1e-7),
        (torch.complex32, 1e-3, 1e-5),
        (torch.complex64, 1.3e-6, 1e-5),
        (torch.complex128, 1e-7, 1e-7),
        (torch.int64, 0.0, 0.0),
        (torch.uint8, 0.0, 0.0),
        (torch.bool, 0.0, 0.0),
        (torch.float8_e4m3fn, 0.0, 0.0),
        ("float32", 1.3e-6, 1e-5),
        (np.dtype(">f8"), 1e-7, 1e-7),
        (np.float16, 1e-3, 1e-5),
        (np.dtype("<U3"), 0.0, 0.0),
        (float, 1.3e-6, 1e-5),  # Python floats: float32's, as they usually come from float32
        (complex, 1.3e-6, 1e-5),
    ],
)
def test_default_tolerance(dtype: Any, rtol: float, atol: float) -> None:
    assert default_tolerance(dtype) == Tolerance(rtol=rtol, atol=atol)


def test_default_tolerances_agree_with_torch_testing() -> None:
    comparison = pytest.importorskip("torch.testing._comparison")
    table = getattr(comparison, "_DTYPE_PRECISIONS", None)
    if table is None:
        pytest.skip("torch.testing no longer exposes _DTYPE_PRECISIONS")
    for dtype, (rtol, atol) in table.items():
        assert default_tolerance(dtype) == Tolerance(rtol=rtol, atol=atol), dtype


def test_tolerance_str() -> None:
    assert str(F32) == "rtol=1.3e-06, atol=1e-05"
    assert str(EXACT) == "rtol=0, atol=0"


# ----------------------------------------------------------------------------- equal values


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        3,
        2.5,
        float("nan"),
        float("inf"),
        "text",
        b"bytes",
        [1, (2.0, "x")],
        {"decision": "good", "prediction": [0.1, 0.9]},
        {1: "a", (2, 3): [None]},
        torch.tensor([[1.0, float("nan")], [float("inf"), -0.0]]),
        torch.tensor(3),
        torch.zeros(0, 3),
        np.array([1.0, np.nan]),
        np.float32(1.5),
        np.array(["a", "bc"]),
        np.array(["2020-01-01", "NaT"], dtype="M8[D]"),
        RaisedError("builtins.ValueError", "bad"),
    ],
)
def test_equal_values_have_no_differences(value: Any, exact: bool) -> None:
    assert compare(value, value, exact=exact) == []


def test_nan_equals_nan_in_every_form() -> None:
    nan = float("nan")
    assert compare(nan, float("nan"), exact=True) == []
    assert compare(torch.tensor([nan]), torch.tensor([nan]), exact=True) == []
    assert compare(np.array([nan]), np.array([nan]), exact=True) == []
    assert compare(complex(nan, 0), complex(nan, 0), exact=True) == []


def test_nan_vs_number_differs() -> None:
    d = one(compare(float("nan"), 1.0, exact=False))
    assert d.describe().startswith("output: expected nan, got 1.0")
    d = one(compare(torch.tensor([1.0, float("nan")]), torch.tensor([1.0, 2.0]), exact=False))
    assert d.mismatched == 1 and d.index == (1,)
    assert d.abs_err is None  # NaN vs number has no size; it does not pose as one


# ------------------------------------------------------------------------------ Python floats


def test_describe_format_for_a_float() -> None:
    d = one(compare({"prediction": [0.0123]}, {"prediction": [0.0456]}, exact=False))
    assert d.path == "output['prediction'][0]"
    assert d.expected == "0.0123" and d.actual == "0.0456"
    assert d.tolerance == F32
    assert math.isclose(d.abs_err or 0, 0.0333)
    assert math.isclose(d.rel_err or 0, 0.0333 / 0.0123)
    assert d.describe() == (
        "output['prediction'][0]: expected 0.0123, got 0.0456 "
        "(abs err 3.3e-02, rel err 2.7e+00; tolerance rtol=1.3e-06, atol=1e-05)"
    )


def test_floats_within_float32_default_tolerance_match() -> None:
    assert compare(1.0, 1.0 + 1e-6, exact=False) == []
    assert compare(0.0, 9e-6, exact=False) == []  # atol
    assert compare(1000.0, 1000.001, exact=False) == []  # rtol*|expected| = 1.3e-3
    assert compare(1000.0, 1000.002, exact=False) != []


def test_exact_means_zero_tolerance() -> None:
    d = one(compare(1.0, 1.0 + 1e-12, exact=True))
    assert d.tolerance == EXACT
    assert compare(-0.0, 0.0, exact=True) == []


def test_overrides_apply_in_both_modes_independently() -> None:
    assert compare(1.0, 1.1, exact=True, rtol=0.2) == []
    assert compare(1.0, 1.1, exact=False, atol=0.2) == []
    d = one(compare(1.0, 1.1, exact=False, rtol=0.01))
    assert d.tolerance == Tolerance(rtol=0.01, atol=1e-5)  # atol keeps its default
    d = one(compare(1.0, 1.1, exact=True, atol=0.01))
    assert d.tolerance == Tolerance(rtol=0.0, atol=0.01)


def test_infinities() -> None:
    inf = float("inf")
    assert compare(inf, inf, exact=False) == []
    assert compare(-inf, -inf, exact=True) == []
    d = one(compare(inf, -inf, exact=False, atol=1e300))
    assert d.abs_err == inf
    assert one(compare(1.0, inf, exact=False)).rel_err == inf
    assert one(compare(inf, 1e308, exact=False)).abs_err == inf  # rtol * |inf| must not match
    t = torch.tensor([inf, -inf, 1.0])
    assert compare(t, t.clone(), exact=False) == []
    assert one(compare(t, torch.tensor([1e38, -inf, 1.0]), exact=False)).index == (0,)


def test_rel_err_of_zero_expected_is_infinite() -> None:
    d = one(compare(0.0, 1.0, exact=False))
    assert d.abs_err == 1.0 and d.rel_err == math.inf


def test_complex_numbers() -> None:
    assert compare(1 + 1j, 1 + 1j + 1e-9, exact=False) == []
    assert one(compare(1 + 1j, 1 + 2j, exact=False)).abs_err == 1.0


# ----------------------------------------------------------------------------- exact kinds


@pytest.mark.parametrize(
    ("expected", "actual", "message"),
    [
        (1, 1.0, "expected an int 1, got a float 1.0"),
        (1.0, 1, "expected a float 1.0, got an int 1"),
        (True, 1, "expected a bool True, got an int 1"),
        (0, False, "expected an int 0, got a bool False"),
        (None, 0, "expected None, got 0"),
        (0, None, "expected 0, got None"),
        ("a", b"a", "expected a str 'a', got a bytes b'a'"),
        ("1", 1, "expected a str '1', got an int 1"),
        ({"a": 1}, [1], "expected a dict {'a': 1}, got a list [1]"),
        (1.0, np.float64(1.0), "expected a float 1.0, got a numpy.float64"),
        (np.float32(1.0), 1.0, "expected a numpy.float32"),
        (torch.tensor([1.0]), [1.0], "expected a torch tensor"),
        (np.array([1.0]), torch.tensor([1.0]), "expected a numpy array"),
    ],
)
def test_type_mismatches_are_named(expected: Any, actual: Any, message: str) -> None:
    d = one(compare(expected, actual, exact=False, rtol=1.0, atol=1.0))
    assert d.message.startswith(message), d.message
    assert d.path == "output"
    assert d.tolerance is None


def test_ints_are_exact_even_with_a_tolerance() -> None:
    d = one(compare(10, 11, exact=False, rtol=1.0, atol=5.0))
    assert d.describe() == "output: expected 10, got 11"
    huge = 10**400  # no float() overflow on the way to a message
    assert one(compare(huge, huge + 1, exact=True)).actual.startswith("1000")


def test_bools_and_none() -> None:
    assert one(compare(True, False, exact=False)).message == "expected True, got False"
    assert compare(None, None, exact=True) == []


def test_strings_point_at_the_first_difference() -> None:
    e = "x" * 100 + "a"
    a = "x" * 100 + "b"
    d = one(compare(e, a, exact=False))
    assert "first difference at index 100" in d.message
    assert len(d.expected) <= 80 and d.expected.endswith("...")
    # Short strings are shown whole: no pointer needed.
    assert one(compare("ab", "abc", exact=True)).message == "expected 'ab', got 'abc'"


def test_reprs_are_short_and_on_one_line() -> None:
    d = one(compare("line1\nline2", "other", exact=True))
    assert "\n" not in d.describe()


# ------------------------------------------------------------------------------- containers


def test_dict_missing_and_extra_keys_are_named() -> None:
    diffs = compare({"a": 1, "b": 2.0}, {"a": 1, "c": 3}, exact=False)
    assert [d.describe() for d in diffs] == [
        "output['b']: missing key (expected 2.0)",
        "output['c']: unexpected key (got 3)",
    ]


def test_nested_paths() -> None:
    expected = {"out": [{"scores": (0.5, 0.25)}]}
    actual = {"out": [{"scores": (0.5, 0.75)}]}
    d = one(compare(expected, actual, exact=False, path="result"))
    assert d.path == "result['out'][0]['scores'][1]"


def test_non_str_keys_in_paths() -> None:
    d = one(compare({1: "a", (2, "x"): "b"}, {1: "a", (2, "x"): "c"}, exact=True))
    assert d.path == "output[(2, 'x')]"


def test_list_vs_tuple_is_named() -> None:
    d = one(compare([1, 2], (1, 2), exact=False))
    assert d.message.startswith("expected a list, got a tuple")


def test_length_difference_and_common_prefix() -> None:
    diffs = compare([1, 2, 3], [1, 5], exact=True)
    assert diffs[0].path == "output"
    assert diffs[0].message.startswith("expected a list of length 3, got length 2")
    assert diffs[1].path == "output[1]" and diffs[1].message == "expected 2, got 5"
    assert len(diffs) == 2


def test_container_subclasses_compare_by_kind() -> None:
    Pair = namedtuple("Pair", "a b")
    assert compare((1, 2), Pair(1, 2), exact=True) == []
    assert compare({"x": 1}, OrderedDict(x=1), exact=True) == []
    assert compare((2, 3), torch.Size([2, 3]), exact=True) == []


def test_self_containing_structures_terminate() -> None:
    e: list[Any] = [1]
    e.append(e)
    a: list[Any] = [1]
    a.append(a)
    assert compare(e, a, exact=True) == []


# ----------------------------------------------------------------------------------- tensors


def test_tensor_mismatch_statistics() -> None:
    expected = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    actual = expected.clone()
    actual[0, 2] = 3.5
    actual[1, 1] = 4.0
    d = one(compare({"logits": expected}, {"logits": actual}, exact=False))
    assert d.path == "output['logits']"
    assert (d.mismatched, d.total, d.index) == (2, 6, (0, 2))
    assert d.expected == "3.0" and d.actual == "3.5"
    assert d.abs_err == 1.0
    assert d.rel_err == pytest.approx(0.2)
    assert d.tolerance == F32
    assert d.describe() == (
        "output['logits']: 2 of 6 elements differ; first at [0, 2]: expected 3.0, got 3.5 "
        "(max abs err 1.0e+00, max rel err 2.0e-01; tolerance rtol=1.3e-06, atol=1e-05)"
    )


def test_float32_elements_show_their_shortest_repr() -> None:
    d = one(compare(torch.tensor([2.0]), torch.tensor([2.1]), exact=False))
    assert (d.expected, d.actual) == ("2.0", "2.1")  # not 2.0999999046325684


def test_zero_dim_tensor_message_has_no_index() -> None:
    d = one(compare(torch.tensor(1.0), torch.tensor(2.0), exact=True))
    assert d.message == "expected 1.0, got 2.0"
    assert d.index == () and d.tolerance == EXACT


def test_tensor_tolerances_follow_the_dtype() -> None:
    e = torch.tensor([1.0, 2.0])
    assert compare(e, e + 1e-6, exact=False) == []
    assert compare(e, e + 1e-6, exact=True) != []
    half = e.to(torch.float16)
    assert compare(half, half * (1 + 5e-4), exact=False) == []  # within float16's rtol
    assert compare(e, e * (1 + 5e-4), exact=False) != []  # not within float32's
    bf = e.to(torch.bfloat16)
    assert compare(bf, (e * 1.01).to(torch.bfloat16), exact=False) == []
    d = one(compare(e.double(), e.double() + 1e-3, exact=False))
    assert d.tolerance == Tolerance(rtol=1e-7, atol=1e-7)


def test_tensor_overrides() -> None:
    e = torch.tensor([1.0, 2.0])
    assert compare(e, e + 0.05, exact=False, atol=0.1) == []
    assert compare(e, e * 1.05, exact=True, rtol=0.1) == []


def test_dtype_mismatch_is_named() -> None:
    d = one(compare(torch.zeros(2), torch.zeros(2, dtype=torch.float64), exact=False))
    assert d.message == "expected dtype float32, got dtype float64"
    assert d.path == "output"


def test_shape_mismatch_is_named() -> None:
    d = one(compare(torch.zeros(2, 3), torch.zeros(3, 2), exact=False))
    assert d.message == "expected shape [2, 3], got shape [3, 2]"


def test_device_layout_grad_and_views_are_ignored() -> None:
    e = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert compare(e, e.t().contiguous().t(), exact=True) == []
    assert compare(e, e.clone().requires_grad_(), exact=True) == []
    assert compare(e, e.to_sparse(), exact=True) == []
    c = torch.tensor([1 + 2j])
    assert compare(c.conj(), torch.tensor([1 - 2j]), exact=True) == []


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="cuda: torch.cuda.is_available() is False"
)
def test_device_is_ignored() -> None:
    e = torch.tensor([1.0, 2.0])
    assert compare(e, e.cuda(), exact=True) == []
    assert one(compare(e, e.cuda() + 1, exact=True)).mismatched == 2


def test_integer_tensors() -> None:
    e = torch.tensor([1, 2**60])
    d = one(compare(e, torch.tensor([1, 2**60 + 1]), exact=True))
    assert d.abs_err == 1.0  # computed in int64, not rounded away in float64
    assert compare(e, e + 1, exact=False) != []  # ints have no default tolerance
    assert compare(torch.tensor([10]), torch.tensor([11]), exact=False, atol=1.0) == []


def test_unsigned_and_bool_tensors() -> None:
    u = torch.tensor([0, 2**64 - 1], dtype=torch.uint64)
    assert compare(u, u.clone(), exact=True) == []
    d = one(compare(torch.tensor([True, False]), torch.tensor([True, True]), exact=False))
    assert d.index == (1,) and d.abs_err is None
    assert (d.expected, d.actual) == ("False", "True")


def test_complex_and_low_precision_tensors() -> None:
    c = torch.tensor([1 + 1j, 2 - 2j])
    assert compare(c, c + 1e-7, exact=False) == []
    assert one(compare(c, c + 1j, exact=False)).abs_err == pytest.approx(1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # ComplexHalf is experimental
        c32 = c.to(torch.complex32)
        assert compare(c32, c32.clone(), exact=True) == []
    f8 = torch.tensor([1.0, 2.0]).to(torch.float8_e4m3fn)
    assert compare(f8, f8.clone(), exact=True) == []
    assert one(compare(f8, (f8.float() * 2).to(torch.float8_e4m3fn), exact=True)).mismatched == 2


def test_empty_tensors_of_equal_shape_match() -> None:
    assert compare(torch.zeros(0, 2), torch.ones(0, 2), exact=True) == []


def test_quantized_tensors_compare_dequantized() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized tensor creation is deprecated
        q = torch.quantize_per_tensor(torch.tensor([1.0, 2.0]), 0.1, 0, torch.qint8)
        q2 = torch.quantize_per_tensor(torch.tensor([1.0, 2.5]), 0.1, 0, torch.qint8)
        assert compare(q, q, exact=True) == []
        assert one(compare(q, q2, exact=True)).index == (1,)


# ------------------------------------------------------------------------------------ numpy


def test_numpy_arrays_use_tensor_semantics() -> None:
    e = np.array([[1.0, 2.0]], dtype=np.float32)
    assert compare(e, e + 1e-6, exact=False) == []
    d = one(compare(e, e + np.array([[0.0, 1.0]], dtype=np.float32), exact=False, path="out"))
    assert (d.path, d.index, d.mismatched, d.total) == ("out", (0, 1), 1, 2)
    assert d.tolerance == F32


def test_numpy_dtype_and_shape_mismatch() -> None:
    d = one(compare(np.zeros(2, np.float32), np.zeros(2, np.float64), exact=False))
    assert d.message == "expected dtype float32, got dtype float64"
    d = one(compare(np.zeros((2, 1)), np.zeros(2), exact=False))
    assert d.message == "expected shape [2, 1], got shape [2]"


def test_numpy_byte_order_is_not_a_dtype_change() -> None:
    assert compare(np.arange(3, dtype="<i4"), np.arange(3, dtype=">i4"), exact=True) == []


def test_numpy_read_only_arrays_do_not_warn() -> None:
    a = np.arange(3.0)
    a.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compare(a, a.copy(), exact=True) == []


def test_numpy_string_arrays_compare_values_not_widths() -> None:
    d = one(compare(np.array(["good", "bad"]), np.array(["good", "neutral"]), exact=False))
    assert d.message == "1 of 2 elements differ; first at [1]: expected 'bad', got 'neutral'"


def test_numpy_datetimes_and_nat() -> None:
    e = np.array(["2020-01-01", "NaT"], dtype="M8[D]")
    a = np.array(["2020-01-02", "NaT"], dtype="M8[D]")
    assert one(compare(e, a, exact=True)).index == (0,)


def test_numpy_longdouble_falls_back_to_numpy_equality() -> None:
    e = np.array([1.0, np.nan], dtype=np.longdouble)
    assert compare(e, e.copy(), exact=True) == []
    assert one(compare(e, np.array([2.0, np.nan], dtype=np.longdouble), exact=True)).index == (0,)


def test_numpy_scalars() -> None:
    assert compare(np.float32(1.0), np.float32(1.0 + 1e-7), exact=False) == []
    d = one(compare(np.float32(1.0), np.float32(2.0), exact=False))
    assert d.message == "expected 1.0, got 2.0"
    d = one(compare(np.float32(1.0), np.array(1.0, dtype=np.float32), exact=False))
    assert d.message.startswith("expected a numpy.float32")


# ---------------------------------------------------------------------------------- raised


def test_raised_vs_raised_equal() -> None:
    e = RaisedError("builtins.ValueError", "empty input")
    assert compare(e, RaisedError("builtins.ValueError", "empty input"), exact=True) == []
    assert compare(e, ValueError("empty input"), exact=False) == []  # an exception instance


def test_raised_vs_raised_different() -> None:
    e = RaisedError("builtins.ValueError", "empty input")
    d = one(compare(e, raised_from(KeyError("x")), exact=True))
    assert d.message == "expected it to raise ValueError: empty input, but it raised KeyError: 'x'"
    d = one(compare(e, RaisedError("builtins.ValueError", "other"), exact=True))
    assert d.message.endswith("but it raised ValueError: other")


def test_raised_vs_value() -> None:
    e = RaisedError("builtins.ValueError", "empty input")
    d = one(compare({"out": e}, {"out": [0.5]}, exact=False))
    assert d.path == "output['out']"
    assert d.message == "expected it to raise ValueError: empty input, but it returned [0.5]"
    d = one(compare(0.5, e, exact=False))
    assert d.message == "expected 0.5, but it raised ValueError: empty input"
    assert d.tolerance is None


# ------------------------------------------------------------------------------- other objects


@dataclass
class Prediction:
    label: str
    scores: torch.Tensor


class Plain:
    def __init__(self, x: Any) -> None:
        self.x = x


def test_dataclasses_are_compared_field_by_field() -> None:
    e = Prediction("good", torch.tensor([0.1, 0.9]))
    assert compare(e, Prediction("good", torch.tensor([0.1, 0.9])), exact=True) == []
    d = one(compare(e, Prediction("good", torch.tensor([0.2, 0.9])), exact=True))
    assert d.path == "output.scores"


def test_plain_objects_are_compared_by_attributes() -> None:
    assert compare(Plain([1.0]), Plain([1.0]), exact=True) == []
    assert one(compare(Plain([1.0]), Plain([2.0]), exact=True)).path == "output.x[0]"


def test_other_objects_use_equality() -> None:
    assert compare({1, 2}, {2, 1}, exact=True) == []
    d = one(compare({1, 2}, {1, 3}, exact=True))
    assert d.message == "expected {1, 2}, got {1, 3}"
    d = one(compare({1}, frozenset({1}), exact=True))
    assert d.message.startswith("expected a set")


# ------------------------------------------------------------------------------- describe


def test_describe_differences_limits_the_lines() -> None:
    diffs = compare(list(range(15)), list(range(1, 16)), exact=True)
    lines = describe_differences(diffs, limit=10)
    assert len(lines) == 11
    assert lines[0] == "output[0]: expected 0, got 1"
    assert lines[-1] == "... and 5 more differences"
    assert describe_differences(diffs[:1]) == ["output[0]: expected 0, got 1"]
    assert describe_differences(diffs[:11], limit=10)[-1] == "... and 1 more difference"
    assert describe_differences([]) == []
