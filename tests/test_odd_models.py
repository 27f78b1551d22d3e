"""Reliability round 3: live model attributes plain pickle saves and loads, end to end.

Each case is a small user project holding one odd attribute (a nested tensor, a never-called lazy
layer, a quantized convolution, a numpy masked array, an optimizer and its LR scheduler): plain
``pickle`` round-trips it, so ``pytest`` (the round-trip), ``pytest --modelpack-regen`` and
``pytest --modelpack-golden`` must pass on it, or refuse it by name; never a traceback, never a
false LOSSY verdict.
"""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Iterator
from typing import Any

# pytester's in-process runs restore sys.modules afterwards (see conftest): what the inner runs
# import first (numpy.ma for a masked array, torch._dynamo for a jagged nested tensor) is kept here.
import numpy.ma  # noqa: F401
import pytest
import torch
import torch._dynamo  # noqa: F401

from pytest_modelpack import errors
from pytest_modelpack.diagnose.lossy import explain_lossy, library_pickled
from pytest_modelpack.safety import Allowlist, loads_bundle, scan_stream, trust_from_pickle
from pytest_modelpack.statediff import state_diff
from pytest_modelpack.walk import WalkLimit, diff_trees, nodes, structure_tree

from .conftest import QUIET

pytestmark = [
    pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors:UserWarning"),
    pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning"),
]

MODELS = """\
import numpy as np
import torch


def _filled(layer, start):
    with torch.no_grad():
        for i, p in enumerate(layer.parameters()):
            p.copy_(torch.linspace(start + i, -start - i, p.numel()).reshape(p.shape))
    return layer


class Base(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = _filled(torch.nn.Linear(4, 2), 0.5)


class Strided(Base):
    def __init__(self):
        super().__init__()
        parts = [torch.arange(6.0).reshape(2, 3), torch.arange(12.0).reshape(4, 3)]
        self.nt = torch.nested.nested_tensor(parts)

    def forward(self, x):
        return self.lin(x) + sum(t.sum() for t in self.nt.unbind())


class Jagged(Base):
    def __init__(self):
        super().__init__()
        parts = [torch.arange(6.0).reshape(2, 3), torch.arange(12.0).reshape(4, 3)]
        self.nt = torch.nested.nested_tensor(parts, layout=torch.jagged)

    def forward(self, x):
        return self.lin(x) + sum(t.sum() for t in self.nt.unbind())


class Lazy(Base):
    def __init__(self):
        super().__init__()
        self.head = torch.nn.LazyLinear(3)  # never called: its weight is uninitialized

    def forward(self, x):
        return self.lin(x)


class QuantConv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.ao.nn.quantized.Conv1d(2, 2, 3)

    def forward(self, x):
        q = torch.quantize_per_tensor(x.reshape(1, 2, 4), 0.05, 64, torch.quint8)
        return self.conv(q).dequantize()


class Masked(Base):
    def __init__(self):
        super().__init__()
        self.scale = np.ma.masked_array([1.0, 2.0, 3.0], mask=[0, 1, 0])

    def forward(self, x):
        return self.lin(x) * float(self.scale.sum())


class Optimized(Base):
    def __init__(self):
        super().__init__()
        self.opt = torch.optim.SGD(self.lin.parameters(), lr=0.1, momentum=0.9)
        self.sched = torch.optim.lr_scheduler.StepLR(self.opt, step_size=2)

    def forward(self, x):
        return self.lin(x) * self.opt.param_groups[0]["lr"]


class Point:
    # Keyword-only __new__, pickled through __getnewargs_ex__: NEWOBJ_EX at protocol 4, a call
    # of functools.partial(Point.__new__, Point, x=..., y=...) at protocols 2-3.
    def __new__(cls, *, x, y=0.0):
        self = object.__new__(cls)
        self.x, self.y = x, y
        return self

    def __getnewargs_ex__(self):
        return (), {"x": self.x, "y": self.y}


class Kwnew(Base):
    def __init__(self):
        super().__init__()
        self.origin = Point(x=2.0, y=0.5)

    def forward(self, x):
        return self.lin(x) * self.origin.x + self.origin.y
"""

TESTS = """\
import torch
from hypothesis import strategies as st

import models

X = st.integers(0, 1000).map(
    lambda s: torch.randn(2, 4, generator=torch.Generator().manual_seed(s))
)


def test_strided(modelpack):
    modelpack.check(models.Strided(), inputs=X)


def test_jagged(modelpack):
    modelpack.check(models.Jagged(), inputs=X)


def test_lazy(modelpack):
    modelpack.check(models.Lazy(), inputs=X)


def test_quant_conv(modelpack):
    modelpack.check(models.QuantConv(), inputs=X)


def test_masked(modelpack):
    modelpack.check(models.Masked(), inputs=X)


def test_optimized(modelpack):
    modelpack.check(models.Optimized(), inputs=X)


def test_kwnew(modelpack):
    modelpack.check(models.Kwnew(), inputs=X, serializer="torch")
"""

INI = "[pytest]\nmodelpack_devices = cpu\nmodelpack_examples = 5\nmodelpack_recorded = 3\n"

#: What the jagged nested tensor's regen says (the reason names the rebuild it refuses).
NJT_REFUSED = (
    "  torch._tensor._rebuild_from_type_v2 (called): call refused: it calls "
    "torch.nested._internal.nested_tensor._rebuild_njt: a jagged nested tensor "
    "(layout=torch.jagged) is not rebuilt from a golden*"
)


@pytest.fixture
def project(pytester: pytest.Pytester) -> Iterator[pytest.Pytester]:
    """A user project holding MODELS and TESTS; Hypothesis' home in it."""
    from hypothesis import configuration

    pytester.makepyfile(models=MODELS, test_models=TESTS)
    pytester.makeini(INI)
    previous = configuration.storage_directory(intent_to_write=False).home_directory
    configuration.set_hypothesis_home_dir(pytester.path / ".hypothesis")
    try:
        yield pytester
    finally:
        configuration.set_hypothesis_home_dir(previous)


@pytest.fixture
def models(project: pytest.Pytester) -> Iterator[Any]:
    """The project's models module, imported here, then forgotten (the runs import their own)."""
    import importlib
    import sys

    sys.path.insert(0, str(project.path))
    try:
        yield importlib.import_module("models")
    finally:
        sys.path.remove(str(project.path))
        sys.modules.pop("models", None)


def _run(pytester: pytest.Pytester, name: str, *args: str) -> pytest.RunResult:
    quiet = ("-W", "ignore::DeprecationWarning", "-W", "ignore::UserWarning")
    return pytester.runpytest(*QUIET, *quiet, "-k", f"test_{name}", *args)


def _no_traceback(result: pytest.RunResult) -> None:
    out = result.stdout.str()
    assert "INTERNALERROR" not in out and "pytest_modelpack/" not in out, out


def _nothing_written(pytester: pytest.Pytester) -> None:
    goldens = pytester.path / "goldens"
    assert not goldens.exists() or [p.name for p in goldens.iterdir()] == []


# -- end to end: plain pickle round-trips these, so the plugin passes them ----------------------


@pytest.mark.parametrize("name", ["strided", "lazy", "masked", "optimized", "kwnew"])
def test_odd_attribute_round_trips_regenerates_and_passes_the_gate(
    project: pytest.Pytester, models: Any, name: str
) -> None:
    live = getattr(models, name.capitalize())()
    again = pickle.loads(pickle.dumps(live))  # plain pickle saves and loads it
    x = torch.ones(2, 4)
    assert torch.equal(again(x), live(x))

    plain = _run(project, name)
    assert plain.ret == 0, plain.stdout.str()
    regen = _run(project, name, "--modelpack-regen")
    assert regen.ret == 0, regen.stdout.str()
    regen.stdout.fnmatch_lines([f"test_{name} *cpu *regen *created*"])
    gate = _run(project, name, "--modelpack-golden", "--modelpack-report", "report.json")
    assert gate.ret == 0, gate.stdout.str()
    (row,) = json.loads((project.path / "report.json").read_text())["checks"]
    assert row["verdict"] == "passed", row
    stages = {c["stage"]: c for c in row["comparisons"]}
    for stage in ("golden vs recorded examples", "golden vs live"):
        assert stages[stage]["inputs"] > 0, row["comparisons"]


def test_a_jagged_nested_tensor_round_trips_and_regen_refuses_it_by_name(
    project: pytest.Pytester, models: Any
) -> None:
    """The round-trip passes (no false LOSSY: the ragged dimension's symbol, j1, is j2 after a
    load); the gate does not rebuild a jagged nested tensor, and regen says so by name."""
    live = models.Jagged()
    again = pickle.loads(pickle.dumps(live))
    assert str(again.nt.shape) != str(live.nt.shape)  # torch.Size([2, j1, 3]) -> [2, j2, 3]
    plain = _run(project, "jagged")
    assert plain.ret == 0, plain.stdout.str()
    regen = _run(project, "jagged", "--modelpack-regen")
    assert regen.ret == 1, regen.stdout.str()
    regen.stdout.fnmatch_lines(["modelpack: test_jagged: UNSAFE GOLDEN *", NJT_REFUSED])
    _no_traceback(regen)
    _nothing_written(project)


def test_a_quantized_conv_plain_pickle_breaks_is_lossy_by_name(
    project: pytest.Pytester, models: Any
) -> None:
    """torch's quantized Conv1d.__setstate__ never restores nn.Module's own state: the reloaded
    layer cannot even be called. The round-trip says so, naming the layer and torch's method
    (it was a traceback in the walk)."""
    live = models.QuantConv()
    again = pickle.loads(pickle.dumps(live))
    with pytest.raises(AttributeError, match="_backward_hooks"):
        again(torch.ones(2, 4))
    for args in ((), ("--modelpack-regen",)):
        result = _run(project, "quant_conv", *args)
        assert result.ret == 1, result.stdout.str()
        result.stdout.fnmatch_lines(
            [
                "modelpack: test_quant_conv: LOSSY ROUND-TRIP — model.conv._parameters, *",
                "  model.conv._parameters, * missing after reload (nn.Module's own state of "
                "Conv1d)",
                "    torch.ao.nn.quantized.modules.conv._ConvNd.__setstate__ (*) sets the layer's "
                "own fields but never nn.Module's: the reloaded Conv1d cannot be called "
                "(AttributeError: 'Conv1d' object has no attribute '_backward_hooks')*",
                "  fix: pickle the float model and quantize it after loading, or pickle the "
                "Conv1d's state_dict() and load_state_dict() it into a freshly built Conv1d",
            ]
        )
        assert "super().__setstate__" not in result.stdout.str()  # (not the user's pitfall)
        _no_traceback(result)
    _nothing_written(project)


# -- the walk, the state diff and the lossy diagnosis, unit by unit -------------------------------


def _nested(layout: Any = torch.strided) -> Any:
    parts = [torch.arange(6.0).reshape(2, 3), torch.arange(12.0).reshape(4, 3)]
    return torch.nested.nested_tensor(parts, layout=layout)


@pytest.mark.parametrize("layout", [torch.strided, torch.jagged])
def test_a_nested_tensor_is_described_and_compared_by_its_components(layout: Any) -> None:
    live = {"nt": _nested(layout)}
    again = pickle.loads(pickle.dumps(live))
    name = str(layout).replace("torch.", "")
    tree = structure_tree(live)
    assert tree["model['nt']"] == f"Tensor float32 nested ({name}) [[2, 3], [4, 3]]"
    assert structure_tree(again) == tree
    assert state_diff(again, live).differing == []
    other = {"nt": _nested(layout) * torch.tensor(2.0) if layout == torch.strided else None}
    if layout == torch.strided:
        assert state_diff(again, other).differing == [
            "model['nt']: nested component 0: max abs diff 5 (shape 2×3)"
        ]


def test_an_uninitialized_parameter_has_a_line_without_a_shape() -> None:
    live = torch.nn.LazyLinear(3)
    tree = structure_tree(live)
    assert tree["model.weight"] == "Parameter (uninitialized)"
    assert state_diff(pickle.loads(pickle.dumps(live)), live).differing == []


def test_a_module_without_nn_modules_own_state_is_walked() -> None:
    """A reloaded quantized Conv1d has no _modules, _parameters, _buffers: walked all the same."""
    live = torch.nn.Sequential(torch.ao.nn.quantized.Conv1d(2, 2, 3))
    again = pickle.loads(pickle.dumps(live))
    assert "_modules" not in vars(again[0])
    assert structure_tree(again) == structure_tree(live)


class Tracked(torch.optim.SGD):
    """A user's optimizer: its own attributes, which torch's Optimizer.__getstate__ drops."""


def _something_else() -> str:
    return "something else"


class Swapped:
    """The user's own callable whose own __reduce__ comes back as another object."""

    def __call__(self, x: Any) -> Any:
        return x

    def __reduce__(self) -> Any:
        return (_something_else, ())


def test_what_a_librarys_own_pickling_rebuilds_is_not_lost() -> None:
    """A masked array's fill value (None -> its default), an optimizer's patched step: numpy's
    and torch's own pickling restore them so, as plain pickle.load does. A user's subclass
    whose own attribute torch's Optimizer.__getstate__ leaves out is still lost."""
    import numpy as np

    layer = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 2)
    mine = Tracked(layer.parameters(), lr=0.1)
    mine.history = [1.0]
    noted = torch.optim.SGD(layer.parameters(), lr=0.1)
    noted.note = "warm restart at 10"  # the user's own value on a library object: pickle drops it
    live = {"ma": np.ma.masked_array([1.0, 2.0], mask=[0, 1]), "opt": opt, "sched": sched}
    live["mine"], live["noted"] = mine, noted
    layer.cache = Swapped()  # the user's object on a torch layer: its loss is the user's
    live["layer"] = layer
    assert library_pickled(live["ma"]) and library_pickled(opt)
    assert not library_pickled(mine) and not library_pickled(live)
    diff = diff_trees(structure_tree(live), structure_tree(pickle.loads(pickle.dumps(live))))
    assert any("['ma']._fill_value" in line for line in diff)  # the tree differs ...
    lost, _ = explain_lossy(live, diff)
    assert "model['mine'].history" in lost  # ... but only the user's state is lost
    assert "model['noted'].note" in lost
    assert "model['layer'].cache" in lost
    mine_only = ("model['mine'].", "model['noted'].", "model['layer'].cache")
    assert all(path.startswith(mine_only) for path in lost), lost


DEPTH = 40_000


def _deep(depth: int = DEPTH) -> list[Any]:
    value: list[Any] = [1.0]
    for _ in range(depth):
        value = [value]
    return value


def test_a_deep_nested_list_is_walked_in_little_memory() -> None:
    """Paths are links to their holder's, made strings only when read: walking a 40,000-deep
    list held 2.4 GB of path strings (each node's path 3 characters longer than its holder's)."""
    import tracemalloc

    value = _deep()
    tracemalloc.start()
    try:
        walked = list(nodes({"x": value}))
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(walked) == DEPTH + 2  # the dict and DEPTH + 1 lists (the float is not a node)
    assert held < 64 * 2**20, held
    deepest = walked[-1]
    assert not deepest.shown and deepest.path == "model['x']" + "[0]" * DEPTH
    assert state_diff({"x": _deep()}, {"x": value}, walked=walked).differing == []


def test_the_walk_limit_names_a_deep_place_shortly(monkeypatch: pytest.MonkeyPatch) -> None:
    import pytest_modelpack.walk as walk

    monkeypatch.setattr(walk, "MAX_NODES", 5_000)
    with pytest.raises(WalkLimit) as info:
        list(nodes(_deep(10_000)))
    text = str(info.value)
    assert "walking stopped at model[0][0]" in text and len(text) < 1_000, text
    assert "characters)" in text


# -- the gate's interpreter -------------------------------------------------------------------


def test_the_interpreter_refuses_a_jagged_nested_tensor_by_name(tmp_path: Any) -> None:
    """Even with the live model's own trust: the rebuild's offsets index its values unchecked."""
    data = pickle.dumps({"nt": _nested(torch.jagged)})
    allowlist = Allowlist(tmp_path, trust=trust_from_pickle(data))
    verdict = scan_stream(io.BytesIO(data), allowlist)
    reasons = [why for _, why in verdict.refused]
    assert any("nested_tensor._rebuild_njt: a jagged nested tensor" in r for r in reasons)
    with pytest.raises(errors.UnsafeGolden, match="_rebuild_njt"):
        loads_bundle(data, allowlist)
    strided = pickle.dumps({"nt": _nested()})
    loaded = loads_bundle(strided, Allowlist(tmp_path, trust=trust_from_pickle(strided)))
    assert [t.shape for t in loaded["nt"].unbind()] == [(2, 3), (4, 3)]


@pytest.mark.parametrize("protocol", range(6))
def test_a_keyword_only_new_loads_at_every_protocol_as_the_live_pickle_writes_it(
    project: pytest.Pytester, models: Any, protocol: int
) -> None:
    """``Point(x=..)`` pickles as NEWOBJ_EX (4-5), as a call of a functools.partial of
    ``Point.__new__`` (2-3: torch.save's protocol) or as copyreg's reconstructor (0-1): each loads
    with the trust of the live model's pickle at that protocol; other keyword arguments (a
    golden's ``x`` of another kind) are refused at every protocol that passes them."""
    live = models.Kwnew()
    data = pickle.dumps(live, protocol=protocol)
    allowlist = Allowlist(project.path, trust=trust_from_pickle(data))
    verdict = scan_stream(io.BytesIO(data), allowlist, "kwnew.pkl")
    assert not verdict.refused, verdict.refused
    loaded = loads_bundle(data, allowlist)
    assert (loaded.origin.x, loaded.origin.y) == (2.0, 0.5)
    if protocol < 2:
        return
    other = models.Kwnew()
    other.origin = models.Point(x="2.0", y=0.5)  # the same class, a keyword of another kind
    forged = pickle.dumps(other, protocol=protocol)
    verdict = scan_stream(io.BytesIO(forged), allowlist, "kwnew.pkl")
    assert any("keyword arguments (**x=str,y=float)" in why for _, why in verdict.refused), (
        verdict.refused
    )
    with pytest.raises(errors.UnsafeGolden, match=r"keyword arguments \(\*\*x=str,y=float\)"):
        loads_bundle(forged, allowlist)
