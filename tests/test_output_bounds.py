"""Issue "reliability round 3", hangs: every walk over a model's outputs visits each distinct object
once, bounds its depth and size, and fails with one clear error naming the place — never a hang,
a traceback, or a verdict about the model (NONDETERMINISTIC, LOSSY) it does not deserve.

End to end: a user project whose models return a 5000-deep list, a generator, an object that
compares only by identity, a numpy object array holding itself, a 3-million-int list and a
1-million-key dict, run by pytest in a subprocess with a timeout. Then the comparator and the
examples.json writer directly.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch

from pytest_modelpack.compare import MAX_NESTING, compare, compared
from pytest_modelpack.errors import Unrecordable
from pytest_modelpack.golden.examples import (
    FORMAT_VERSION,
    MAX_VALUES,
    encode_value,
    examples_bytes,
    parse_examples,
)

from .conftest import QUIET

MODELS = """\
import numpy as np
import torch


class Deep(torch.nn.Module):
    def forward(self, x):
        out = [x]
        for _ in range(5000):
            out = [out]
        return out


class Generator(torch.nn.Module):
    def forward(self, x):
        return (row for row in x)


class Opaque:
    __slots__ = ("__weakref__",)


class OpaqueNet(torch.nn.Module):
    def forward(self, x):
        return Opaque()


class SelfArray(torch.nn.Module):
    def forward(self, x):
        a = np.empty(1, dtype=object)
        a[0] = a
        return a, x


class BigList(torch.nn.Module):
    def forward(self, x):
        return list(range(3_000_000))


class BigDict(torch.nn.Module):
    def forward(self, x):
        return {i: i for i in range(1_000_000)}
"""

TESTS = """\
import pytest
import torch
from hypothesis import strategies as st

import models

X = st.integers(0, 1000).map(
    lambda s: torch.randn(2, 4, generator=torch.Generator().manual_seed(s))
)


@pytest.mark.parametrize(
    "model", ["Deep", "Generator", "OpaqueNet", "SelfArray", "BigList", "BigDict"]
)
def test_bounds(modelpack, model):
    modelpack.check(getattr(models, model)(), name=model.lower(), inputs=X)
"""

INI = "[pytest]\nmodelpack_devices = cpu\nmodelpack_examples = 5\nmodelpack_recorded = 2\n"

#: The one line a user reads first, and the fix, per golden.
EXPECTED = {
    "deep": (
        "output[[]0[]][[]0[]]*[[]0[]] (* characters) is nested more than 200 containers deep, "
        "which pytest-modelpack cannot compare",
        "return a flatter structure (stack nested lists into a tensor*",
    ),
    "generator": (
        "output is a generator, which pytest-modelpack cannot compare",
        "return its items as a list or tuple (list(...)), or as a tensor*",
    ),
    "opaquenet": (
        "output is a models.Opaque, which pytest-modelpack cannot compare",
        "make the model return plain data*or give the class an __eq__",
    ),
    "biglist": (
        "output holds more than 100,000 values, which pytest-modelpack cannot compare",
        "return the values as a tensor or numpy array (torch.tensor(values))*",
    ),
    "bigdict": (
        "output holds more than 100,000 values, which pytest-modelpack cannot compare",
        "return the values as a tensor or numpy array (torch.tensor(values))*",
    ),
}


def test_outputs_past_the_bounds_fail_by_name_quickly(pytester: pytest.Pytester) -> None:
    """Each one is UNRECORDABLE VALUE with its place and fix (not NONDETERMINISTIC: the live
    model agrees with itself), in seconds; the self-holding object array passes the round-trip
    (each pair of arrays compared once) instead of a RecursionError traceback."""
    pytester.makepyfile(models=MODELS, test_models=TESTS)
    pytester.makeini(INI)
    result = pytester.runpytest_subprocess(*QUIET, timeout=120)
    out = result.stdout.str()
    assert result.ret == 1, out
    for name, (headline, fix) in EXPECTED.items():
        result.stdout.fnmatch_lines(
            [f"modelpack: {name}: UNRECORDABLE VALUE — {headline}", f"  fix: {fix}"],
            consecutive=False,
        )
    result.stdout.fnmatch_lines(["*selfarray *cpu *roundtrip *passed*"], consecutive=False)
    result.stdout.fnmatch_lines(["*5 failed, 1 passed*"])
    assert "NONDETERMINISTIC" not in out
    assert "RecursionError" not in out and "Traceback" not in out


# ------------------------------------------------------------------------- the comparator itself


def _deep(n: int) -> list[Any]:
    x: list[Any] = [1.0]
    for _ in range(n):
        x = [x]
    return x


def test_compared_refuses_what_it_cannot_compare_and_compare_lists_it() -> None:
    """The engine's walk (``compared``) raises; ``compare`` (reading two recorded files) gives
    one difference and stops."""
    big = list(range(MAX_VALUES + 10))
    for e, a, summary in [
        (_deep(MAX_NESTING + 5), _deep(MAX_NESTING + 5), "containers deep"),
        (big, list(big), f"more than {MAX_VALUES:,} values"),
        (iter([1]), iter([1]), "a list_iterator, which pytest-modelpack cannot compare"),
        (object(), object(), "an object, which pytest-modelpack cannot compare"),
    ]:
        with pytest.raises(Unrecordable, match=summary):
            compared(e, a, exact=True)
        assert len(compare(e, a, exact=True)) == 1
    # within the bounds nothing changes
    assert compare(_deep(MAX_NESTING - 1), _deep(MAX_NESTING - 1), exact=True) == []
    assert compare(big[: MAX_VALUES - 1], big[: MAX_VALUES - 1], exact=True) == []
    sentinel = object()
    assert compare([sentinel, int, np], [sentinel, int, np], exact=True) == []


def test_objects_compare_by_state_slots_included() -> None:
    class Slotted:
        __slots__ = ("x",)

        def __init__(self, x: Any) -> None:
            self.x = x

    assert compare(Slotted(1), Slotted(1), exact=True) == []
    (d,) = compare(Slotted(1), Slotted(2), exact=True)
    assert d.path == "output.x"


def test_object_arrays_are_walked_each_pair_once() -> None:
    a, b = np.empty(1, dtype=object), np.empty(1, dtype=object)
    a[0], b[0] = a, b
    assert compared(a, b, exact=True).diffs == []
    (d,) = compare(
        np.array([1, [2, 3]], dtype=object), np.array([1, [2, 4]], dtype=object), exact=True
    )
    assert d.path == "output[1][1]" and "expected 3, got 4" in d.message
    s = np.zeros(2, dtype=[("n", "i4"), ("o", "O")])
    t = s.copy()
    t["o"][1] = [5]
    (d,) = compare(s, t, exact=True)
    assert d.path == "output['o'][1]"
    chain = root = np.empty(1, dtype=object)
    for _ in range(MAX_NESTING + 5):
        chain[0] = np.empty(1, dtype=object)
        chain = chain[0]
    with pytest.raises(Unrecordable, match="containers deep"):
        compared(root, root.copy(), exact=True)


def test_equal_tensors_compare_in_one_pass_with_the_same_metrics() -> None:
    t = torch.linspace(-1, 1, 1000)
    fast = compared(t, t.clone(), exact=False).metrics
    assert (fast.max_abs, fast.max_rel, fast.used, fast.rtol) == (0.0, 0.0, 0.0, 1.3e-06)
    (d,) = compare(t, torch.where(t > 0.5, t + 1, t), exact=False)
    assert d.mismatched == 250
    nan = torch.tensor([float("nan"), 1.0])
    assert compare(nan, nan.clone(), exact=True) == []


def test_few_differing_elements_are_measured_alone_with_the_same_result() -> None:
    """Under half the elements differ: only those are widened and measured; the verdict, the
    first index and the errors are those of the whole tensor."""
    e = torch.linspace(1, 2, 1200).reshape(30, 40)
    a = e.clone()
    a[2, 5] += 0.5
    a[7, 1] = float("nan")
    a[9, 9] += 1e-7  # within tolerance: differs, does not mismatch
    c = compared(e, a, exact=False)
    (d,) = c.diffs
    assert (d.mismatched, d.total, d.index) == (2, 1200, (2, 5))
    assert d.abs_err == pytest.approx(0.5) and c.metrics.max_abs == float("inf")  # NaN vs number
    # Most elements moved within tolerance: the whole tensor is measured, to the same verdict.
    (whole,) = compared(e, torch.where(a == e, e * (1 + 1e-7), a), exact=False).diffs
    assert (whole.mismatched, whole.index, whole.abs_err) == (d.mismatched, d.index, d.abs_err)
    big = torch.tensor([1, 2**60, 3] * 10)
    other = big.clone()
    other[4] += 1  # float64 would round this difference away
    (d,) = compare(big, other, exact=True)
    assert (d.mismatched, d.index, d.abs_err) == (1, (4,), 1.0)


# -------------------------------------------------------------------------------- examples.json


def test_examples_refuse_more_values_than_the_bound_by_name() -> None:
    with pytest.raises(Unrecordable, match=f"output holds more than {MAX_VALUES:,} values") as info:
        encode_value(list(range(MAX_VALUES + 1)), path="output")
    assert "output[99999]" in str(info.value) and "torch.tensor(values)" in str(info.value)
    shared = [1.0] * 1000
    assert encode_value([shared] * 1000, path="output")[1] == {"$ref": 1}  # 2000 values, not 1M


def test_big_tensor_data_is_spliced_into_the_same_bytes() -> None:
    """examples.json's bytes are json.dumps of the encoded records, however the writer builds
    them (big base64 data is written around json.dumps, not through it)."""
    big = torch.arange(100_000, dtype=torch.float32)
    records = [
        ({"text": "caf\u00e9 \ud800"}, [big, big, {"$k": (np.arange(30_000), float("nan"))}]),
        ("$data-", big[:3]),
    ]
    doc = {
        "format_version": FORMAT_VERSION,
        "examples": [
            {"input": encode_value(x, path="input"), "output": encode_value(y, path="output")}
            for x, y in records
        ],
    }
    text = json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    expected = text.replace("\ud800", "\\ud800").encode("utf-8")
    data = examples_bytes(records)
    assert data == expected
    back = parse_examples(data)
    assert torch.equal(back[0].output[0], big) and back[0].output[1] is back[0].output[0]
