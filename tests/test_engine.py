"""The engine's stages, tested directly (no pytester): round-trip, gate and regenerate.

The end-to-end tests (test_lifecycle.py, test_failures.py) show the same behaviour as a user sees
it; these pin each stage's contract on its own, fast.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import strategies as st

from pytest_modelpack import errors
from pytest_modelpack.engine import CheckRequest, run_check
from pytest_modelpack.engine.facts import LiveFacts
from pytest_modelpack.engine.gate import compare_golden, gate, judge_drift, load_golden, open_golden
from pytest_modelpack.engine.request import CheckResult
from pytest_modelpack.engine.roundtrip import check_state_kept, compare_reloaded, reload, round_trip
from pytest_modelpack.engine.runs import Runner
from pytest_modelpack.options import Settings
from pytest_modelpack.states import Mode, Verdict
from pytest_modelpack.walk import nodes

from . import engine_models as models

ROOT = Path(__file__).resolve().parent.parent
FLOATS = st.floats(min_value=-10, max_value=10, allow_nan=False)


def make_request(model, tmp_path, *, mode=Mode.ROUNDTRIP, apply=models.scale, name="g", **kw):
    return CheckRequest(
        model=model,
        name=name,
        inputs=kw.pop("inputs", FLOATS),
        settings=Settings(mode=mode, examples=5, recorded=3, devices=("cpu",)),
        device="cpu",
        golden_folder=tmp_path / "goldens" / name,
        project_root=ROOT,
        nodeid="tests/test_engine.py::test_x",
        apply=apply,
        **kw,
    )


# -- round-trip stages -------------------------------------------------------------------------


def test_dump_live_names_the_unpicklable_attribute(tmp_path):
    request = make_request(models.Holder(hook=lambda x: x), tmp_path, apply=None)
    with pytest.raises(errors.Unpicklable) as info:
        assert LiveFacts(request).dump is None  # raises first
    assert info.value.summary == "model.hook cannot be pickled"
    assert "module level" in info.value.fix


def test_reload_reports_a_setstate_that_cannot_rebuild(tmp_path):
    request = make_request(models.BadSetstate(), tmp_path, apply=None)
    with pytest.raises(errors.LoadError) as info:
        reload(LiveFacts(request))
    assert "cannot rebuild from this state" in info.value.summary
    assert "__setstate__" in info.value.fix


def test_check_state_kept_names_what_getstate_lost(tmp_path):
    facts = LiveFacts(make_request(models.ForgetsOffset(), tmp_path, apply=None))
    reloaded = reload(facts)
    with pytest.raises(errors.LossyRoundTrip) as info:
        check_state_kept(facts, reloaded, list(nodes(reloaded)))
    assert "model.offset" in info.value.summary
    assert "'offset'" in info.value.fix


def test_the_first_inputs_catch_a_model_that_disagrees_with_itself(tmp_path):
    facts = LiveFacts(make_request(models.Noisy(), tmp_path, apply=None))
    with pytest.raises(errors.Nondeterministic) as info:
        compare_reloaded(facts, Runner(facts.request), reload(facts))
    assert info.value.summary == "the live model gives different outputs for the same input"


def test_compare_reloaded_counts_the_inputs_it_ran(tmp_path):
    facts = LiveFacts(make_request(models.Scaler(), tmp_path))
    reloaded = reload(facts)
    check_state_kept(facts, reloaded, list(nodes(reloaded)))
    assert compare_reloaded(facts, Runner(facts.request), reloaded) == 5
    assert round_trip(facts, Runner(facts.request)) == 5


# -- gate and regen ----------------------------------------------------------------------------


def test_gate_without_a_golden_names_the_regen_command(tmp_path):
    request = make_request(models.Scaler(), tmp_path, mode=Mode.GOLDEN)
    result = CheckResult.of(request)
    with pytest.raises(errors.MissingGolden) as info:
        gate(LiveFacts(request), Runner(request), result)
    assert "pytest --modelpack-regen tests/test_engine.py::test_x" in info.value.fix


def test_regen_creates_then_finds_unchanged_then_gate_passes(tmp_path):
    model = models.Scaler()
    created = run_check(make_request(model, tmp_path, mode=Mode.REGEN))
    assert created.error is None and created.verdict is Verdict.CREATED
    folder = tmp_path / "goldens" / "g"
    assert sorted(p.name for p in folder.iterdir()) == [
        "bundle.pkl",
        "examples.json",
        "manifest.json",
    ]
    again = run_check(make_request(model, tmp_path, mode=Mode.REGEN))
    assert again.error is None and again.verdict is Verdict.UNCHANGED
    checked = run_check(make_request(model, tmp_path, mode=Mode.GOLDEN))
    assert checked.error is None and checked.verdict is Verdict.PASSED
    # round-trip (5) + recorded replays on the golden (3) + Hypothesis (5) + live replays (3)
    assert checked.examples == 16


def test_gate_reports_changed_weights_as_output_mismatch(tmp_path):
    run_check(make_request(models.Scaler(2.0), tmp_path, mode=Mode.REGEN))
    result = run_check(make_request(models.Scaler(2.5), tmp_path, mode=Mode.GOLDEN))
    assert result.verdict is Verdict.FAILED
    assert isinstance(result.error, errors.OutputMismatch)
    assert result.error.fix.endswith("pytest --modelpack-regen tests/test_engine.py::test_x")
    row = result.to_dict()
    assert row["verdict"] == "failed" and row["kind"] == "OUTPUT MISMATCH"
    assert type(row["verdict"]) is str and type(row["mode"]) is str  # plain JSON for xdist


def test_regen_on_a_second_device_only_checks(tmp_path):
    request = make_request(models.Scaler(), tmp_path, mode=Mode.REGEN, writes_golden=False)
    result = run_check(request)
    assert result.verdict is Verdict.CHECKED
    assert not (tmp_path / "goldens").exists()


# -- the gate's stages -------------------------------------------------------------------------


def _tamper(folder: Path, payload: bytes) -> None:
    """Replace bundle.pkl as an attacker would: manifest size and sha256 updated to match."""
    import hashlib
    import json

    (folder / "bundle.pkl").write_bytes(payload)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["bundle"]["size"] = len(payload)
    manifest["bundle"]["sha256"] = hashlib.sha256(payload).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_open_golden_refuses_a_tampered_bundle_before_anything_loads(tmp_path):
    import pickle

    run_check(make_request(models.Scaler(), tmp_path, mode=Mode.REGEN))
    payload = pickle.dumps(models.Holder(call=print))  # a builtin the live pickle never uses
    _tamper(tmp_path / "goldens" / "g", payload)
    facts = LiveFacts(make_request(models.Scaler(), tmp_path, mode=Mode.GOLDEN))
    result = CheckResult.of(facts.request)
    with pytest.raises(errors.UnsafeGolden) as info:  # trusted: what the live pickle does
        open_golden(facts, Runner(facts.request), result)
    assert "builtins.print" in str(info.value)
    assert result.bundle_size == len(payload)


def test_open_golden_yields_records_and_project_roots(tmp_path):
    run_check(make_request(models.Scaler(), tmp_path, mode=Mode.REGEN))
    facts = LiveFacts(make_request(models.Scaler(), tmp_path, mode=Mode.GOLDEN))
    result = CheckResult.of(facts.request)
    opened = open_golden(facts, Runner(facts.request), result)
    assert len(opened.records) == 3
    assert opened.roots == [("tests.engine_models", "Scaler")]
    assert opened.reference == "cpu"
    judge_drift(opened)
    assert opened.golden is None and opened.drift.clean and opened.notes == []
    load_golden(opened)
    # recorded replays on the golden (3) + Hypothesis (5) + live replays (3)
    assert compare_golden(opened) == 11
    assert [c["stage"] for c in result.comparisons] == [
        "golden vs recorded examples",
        "golden vs live",
        "live vs recorded examples",
    ]


def test_a_golden_that_holds_a_function_the_live_model_does_not_is_refused_before_it_runs(
    tmp_path,
):
    import torch.nn.functional as F

    live = models.Holder(act=F.gelu)
    run_check(make_request(live, tmp_path, mode=Mode.REGEN, apply=None))
    import pickle

    _tamper(tmp_path / "goldens" / "g", pickle.dumps(models.Holder(act=F.relu)))
    result = run_check(make_request(live, tmp_path, mode=Mode.GOLDEN, apply=None))
    assert isinstance(result.error, errors.UnsafeGolden), result.error
    assert "model.act: function torch.nn.functional.relu" in str(result.error)
    assert "the live model has function torch._C._nn.gelu there" in str(result.error)


def test_a_container_named_like_the_live_function_cannot_hide_a_planted_one(tmp_path):
    """A golden puts an nn.Sequential holding relu where the live model holds torch.tanh, its
    state naming it like torch.tanh (``__module__``/``__qualname__``, which restored state may set
    on a wrapper). Plain pickle runs the planted function; the gate refuses before it runs."""
    import pickle

    import torch

    live = models.Activated(torch.tanh)
    run_check(make_request(live, tmp_path, mode=Mode.REGEN, apply=None))
    disguised = torch.nn.Sequential()
    disguised._modules["0"] = torch.nn.functional.relu
    disguised.__dict__.update(
        {"__module__": torch.tanh.__module__, "__qualname__": torch.tanh.__qualname__}
    )
    payload = pickle.dumps(models.Activated(disguised))
    assert pickle.loads(payload)(-1.0) == 0.0 != live(-1.0)  # proven live: relu ran, not tanh
    _tamper(tmp_path / "goldens" / "g", payload)
    result = run_check(make_request(live, tmp_path, mode=Mode.GOLDEN, apply=None))
    assert isinstance(result.error, errors.UnsafeGolden), result.error
    # Refused by the interpreter, before anything is built: a callable in a module's private
    # dict that the live model's own pickle does not put there.
    assert "_modules[]=G:torch.nn.functional.relu" in str(result.error)
    assert "nothing from the golden was run" in result.error.headline
