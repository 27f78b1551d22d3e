"""Issue 22, the invariant behind "no false refusal": for any object graph made of the kinds a
model holds (standard-library values, numpy, torch tensors of every layout, project classes with
slots, enums, dataclasses, NamedTuples, tensor subclasses; shared and cyclic references), pickled
at any protocol 0-5 as an older golden may be, the engine's own steps agree:

* regen's checks (the scan under the live model's trust, then the gate's loader on the exact
  bytes regen would write) pass — a graph made only of allowed kinds is never refused;
* the gate, judging a golden of the same object at protocol p under the live model's trust at p,
  scans and loads it, and the loaded value equals the live one.

Never "regen wrote it, the gate refused it". The live side goes through the real LiveFacts of a
real CheckRequest; the bytes are plain ``pickle.dumps``, as users' goldens are.
"""

from __future__ import annotations

import array
import collections
import datetime
import decimal
import fractions
import io
import math
import pathlib
import pickle
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_modelpack.engine.facts import LiveFacts
from pytest_modelpack.engine.request import CheckRequest
from pytest_modelpack.options import Settings
from pytest_modelpack.safety import load_bundle, scan_file
from tests import palette_classes as pc

REPO = Path(__file__).resolve().parent.parent

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=5),
    st.binary(max_size=5),
    st.complex_numbers(allow_nan=False),
)


def _stdlib(draw: Any) -> Any:
    kind = draw(st.integers(0, 11))
    n = draw(st.integers(0, 3))
    return [
        lambda: datetime.date(2020, 1, 1 + n),
        lambda: datetime.datetime(2020, 1, 1, n, tzinfo=datetime.timezone.utc),
        lambda: datetime.timedelta(seconds=n),
        lambda: decimal.Decimal(f"{n}.5"),
        lambda: fractions.Fraction(n, 3),
        lambda: uuid.UUID(int=n),
        lambda: pathlib.PurePosixPath(f"/a/{n}"),
        lambda: array.array("f", [float(n)] * n),
        lambda: range(n),
        lambda: slice(0, n),
        lambda: bytearray(b"x" * n),
        lambda: collections.Counter("ab" * n),
    ][kind]()


def _tensor(draw: Any) -> Any:
    kind = draw(st.integers(0, 7))
    base = torch.arange(6.0).reshape(2, 3)
    return [
        lambda: base.clone(),
        lambda: base[:, 1],  # a view: shares the storage of a bigger tensor
        lambda: torch.nn.Parameter(base.clone()),
        lambda: torch.quantize_per_tensor(base.clone(), 0.5, 0, torch.qint8),
        lambda: base.to_sparse(),
        lambda: base.clone().as_subclass(pc.Tagged),
        lambda: torch.tensor([1, 2], dtype=torch.int64),
        lambda: torch.zeros(0),
    ][kind]()


def _project(draw: Any, inner: Any) -> Any:
    kind = draw(st.integers(0, 7))
    return [
        lambda: pc.Color.RED,
        lambda: pc.Level.HIGH,
        lambda: pc.Config("c", inner),
        lambda: pc.Frozen(inner, 1),
        lambda: pc.Point(inner, 2),
        lambda: pc.Slotted(inner, 3),
        lambda: pc.Plain(inner),
        lambda: pc.Holder(inner),
    ][kind]()


@st.composite
def graphs(draw: Any) -> Any:
    """A graph of palette values; some containers shared, one maybe cyclic."""
    leaves = st.one_of(
        _scalars,
        st.composite(lambda d: _stdlib(d))(),
        st.composite(lambda d: _tensor(d))(),
        st.integers(0, 3).map(lambda n: np.arange(n, dtype=np.float32)),
        st.just(np.float64(1.5)),
        st.sampled_from(range(len(_numpy_values()))).map(lambda i: _numpy_values()[i]),
    )

    def extend(children: Any) -> Any:
        return st.one_of(
            st.lists(children, max_size=3),
            st.tuples(children, children),
            st.dictionaries(st.text(max_size=3), children, max_size=3),
            st.frozensets(st.integers(0, 5), max_size=3),
            children.map(lambda c: collections.OrderedDict(a=c)),
            children.map(lambda c: collections.deque([c])),
            st.composite(lambda d: _project(d, d(children)))(),
        )

    value = draw(st.recursive(leaves, extend, max_leaves=6))
    shared = [value]
    graph: Any = {"x": value, "again": shared, "too": shared}
    if draw(st.booleans()):
        cycle: list[Any] = [value]
        cycle.append(cycle)
        graph["cycle"] = cycle
    return pc.Holder(graph)


def _facts(model: Any) -> LiveFacts:
    request = CheckRequest(
        model=model,
        name="palette",
        inputs=None,
        settings=Settings(),
        device="cpu",
        golden_folder=REPO / "goldens" / "palette",
        project_root=REPO,
        nodeid="tests/test_palette.py::test_palette",
    )
    return LiveFacts(request)


def _same(a: Any, b: Any, seen: set[tuple[int, int]]) -> bool:
    if (id(a), id(b)) in seen:
        return True
    seen.add((id(a), id(b)))
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        if a.is_quantized:
            return torch.equal(a.dequantize(), b.dequantize())
        if a.layout != torch.strided:
            return torch.equal(a.to_dense(), b.to_dense())
        return torch.equal(torch.as_tensor(a), torch.as_tensor(b))
    if isinstance(a, np.ndarray):
        if a.dtype.names:  # structured: the same fields, the same values
            same = a.tolist() == b.tolist() if a.dtype.hasobject else a.tobytes() == b.tobytes()
            return a.dtype == b.dtype and same
        return np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
    if isinstance(a, np.random.RandomState):
        return _same(a.get_state(legacy=False), b.get_state(legacy=False), seen)
    if isinstance(a, np.random.Generator):
        return _same(a.bit_generator.state, b.bit_generator.state, seen)
    if isinstance(a, torch.distributions.Distribution):
        return _same(vars(a), vars(b), seen)
    if isinstance(a, io.BytesIO):
        return a.getvalue() == b.getvalue() and a.tell() == b.tell()
    if isinstance(a, torch.nn.Module):
        return _same(a.__dict__, b.__dict__, seen)
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, complex | np.floating) and a != a:
        return b != b
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k], seen) for k in a)
    if isinstance(a, list | tuple | collections.deque):
        return len(a) == len(b) and all(_same(x, y, seen) for x, y in zip(a, b, strict=True))
    if isinstance(a, pc.Config | pc.Frozen | pc.Plain | pc.Slotted):
        return all(
            _same(getattr(a, k), getattr(b, k), seen)
            for k in (a.__slots__ if isinstance(a, pc.Slotted) else vars(a))
        )
    return bool(a == b)


def _numpy_values() -> list[Any]:
    """numpy values beyond plain arrays: structured (packed, aligned, titled, nested, with an
    object field), subarray dtypes, the legacy and the new random generators."""
    nested = np.dtype([(("Title", "t"), ">i4"), ("n", [("q", "U3"), ("o", "O")])])
    return [
        np.array([(1, 2.0), (3, 4.0)], dtype=[("id", "i4"), ("w", "f8")]),
        np.zeros(2, dtype=np.dtype([("a", "i1"), ("b", "f8")], align=True)),
        np.array([(5, ("ab", None))], dtype=nested),
        np.dtype({"names": ["a"], "formats": ["i2"], "offsets": [2], "itemsize": 8}),
        np.dtype(("i4", (2, 3))),
        np.zeros(2, dtype="i4,(2,3)f8"),
        np.random.RandomState(3),
        np.random.default_rng(4),
    ]


def _check(graph: Any, tmp: Path) -> None:
    facts = _facts(graph)
    # Regen: the bytes it writes (plain pickle.dump at the default protocol), the scan under the
    # live trust, then the gate's own loader on those exact bytes.
    written = tmp / "bundle.pkl"
    written.write_bytes(pickle.dumps(graph))
    verdict = scan_file(written, facts.allowlist)
    assert verdict.error is None and not verdict.refused, (verdict.error, verdict.refused)
    load_bundle(written, facts.allowlist, making=True)
    # The gate, on a golden of the same object at every protocol.
    for protocol in range(6):
        try:
            data = pickle.dumps(graph, protocol=protocol)
        except Exception:  # not picklable at that protocol: no such golden can exist
            continue
        old = tmp / f"bundle{protocol}.pkl"
        old.write_bytes(data)
        allowlist = facts.allowlist_for(protocol)
        verdict = scan_file(old, allowlist)
        assert verdict.error is None and not verdict.refused, (protocol, verdict.refused)
        loaded = load_bundle(old, allowlist)
        assert _same(pickle.loads(data), loaded, set()), protocol


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
    derandomize=True,
)
@given(graphs())
def test_regen_and_gate_agree_on_every_palette_graph(tmp_path_factory: Any, graph: Any) -> None:
    _check(graph, tmp_path_factory.mktemp("palette"))


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(lambda: uuid.UUID(int=7), id="uuid"),
        pytest.param(lambda: array.array("d", [1.0, 2.0]), id="array"),
        pytest.param(lambda: collections.deque([1, [2]], maxlen=4), id="deque"),
        pytest.param(lambda: torch.arange(4.0).as_subclass(pc.Tagged), id="tensor-subclass"),
        pytest.param(
            lambda: torch.quantize_per_tensor(torch.arange(4.0), 0.5, 0, torch.qint8),
            id="quantized",
        ),
        pytest.param(lambda: pc.Slotted(pc.Color.BLUE, pc.Point(1, 2)), id="slots-enum-namedtuple"),
        pytest.param(lambda: io.BytesIO(b"abc"), id="bytesio"),
        *(
            pytest.param(lambda i=i: _numpy_values()[i], id=f"numpy-{i}")
            for i in range(len(_numpy_values()))
        ),
        pytest.param(
            lambda: torch.distributions.Categorical(probs=torch.tensor([0.25, 0.75])),
            id="distribution-lazy-probs",
        ),
        pytest.param(lambda: pc.Lazy(1.0), id="cached-property"),
    ],
)
def test_each_kind_that_plain_pickle_round_trips(value: Any, tmp_path: Path) -> None:
    """The kinds that were refused before (one example each, proven by plain pickle first)."""
    obj = value()
    if isinstance(obj, pc.Lazy | torch.distributions.Categorical):
        obj.scale if isinstance(obj, pc.Lazy) else obj.logits  # the cache filled
    again = pickle.loads(pickle.dumps(obj))
    assert type(again) is type(obj)
    _check(pc.Holder({"v": obj}), tmp_path)
