"""Unit tests for the diagnoses (diagnose/): attribute paths of unpicklable parts, and the explanations around them."""

from __future__ import annotations

import ast
import functools
import io
import pickle
import re
import sys
import textwrap
import threading
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_modelpack import diagnose as audit
from pytest_modelpack.diagnose import (
    Finding,
    describe_object,
    explain_lossy,
    explain_missing,
    find_unpicklable,
    locate_globals,
    lost_private_state,
    nondeterminism_hints,
    not_importable_reason,
    rename_hints,
    setstate_pitfall,
    user_frame,
)
from pytest_modelpack.golden.manifest import CreatedBy, FileEntry, GlobalEntry, Manifest
from pytest_modelpack.walk import diff_trees, structure_tree


def resolve_path(obj: Any, path: str) -> Any:
    """(Test helper: a finding's path is a Python expression.) The object at ``path`` (``model.layer.rnn``, ``model.decoder.d[0]``) below ``obj``.

    Raises ``LookupError`` when the path does not resolve.
    """
    match = re.match(r"[^.\[]+", path)
    if match is None:
        raise LookupError(path)
    i, current = match.end(), obj
    while i < len(path):
        if path[i] == ".":
            j = i + 1
            while j < len(path) and path[j] not in ".[":
                j += 1
            try:
                current = getattr(current, path[i + 1 : j])
            except Exception as exc:
                raise LookupError(path) from exc
            i = j
        elif path[i] == "[":
            for j in (k for k in range(i + 1, len(path)) if path[k] == "]"):
                try:
                    key = ast.literal_eval(path[i + 1 : j])
                except (ValueError, SyntaxError):
                    continue
                try:
                    current = current[key]
                except Exception as exc:
                    raise LookupError(path) from exc
                i = j + 1
                break
            else:
                raise LookupError(path)
        else:
            raise LookupError(path)
    return current


class Box:
    """A plain attribute holder, like the seed's MyCompoundClass."""

    def __init__(self, **attrs):
        self.__dict__.update(attrs)


class Slotted:
    __slots__ = ("name", "guard")

    def __init__(self, name, guard):
        self.name = name
        self.guard = guard


class RenamingState:
    """A __getstate__ that renames what it saves (like the seed's {'t': ..., 'l': ...})."""

    def __init__(self, fn):
        self.fn = fn

    def __getstate__(self):
        return {"renamed": self.fn, "size": 3}

    def __setstate__(self, state):
        self.fn = state["renamed"]


class DroppingState:
    """A __getstate__ that leaves an attribute out."""

    def __init__(self, keep, drop):
        self.keep = keep
        self.drop = drop

    def __getstate__(self):
        state = self.__dict__.copy()
        del state["drop"]
        return state


class SkippingGRU(torch.nn.GRU):
    def __setstate__(self, state):
        self.__dict__.update(state)


class Holder(torch.nn.Module):
    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn


def paths(findings: list[Finding]) -> list[str]:
    return [f.path for f in findings]


def module_level(x):
    return x


# -- find_unpicklable --------------------------------------------------------------------------


def test_a_picklable_object_has_no_findings() -> None:
    model = Box(a=[1, 2, {"b": (3, 4)}], f=module_level, p=functools.partial(module_level, 1))
    assert find_unpicklable(model) == []


def test_lambda_attribute_path_kind_location_and_source() -> None:
    model = Box(tokenizer="t", function=lambda x: x)
    (finding,) = find_unpicklable(model)
    assert finding.path == "model.function"
    assert finding.what.startswith("a lambda defined at ")
    assert finding.what.endswith(f"test_diagnose.py:{sys._getframe().f_lineno - 4}")
    assert finding.source == 'model = Box(tokenizer="t", function=lambda x: x)'
    assert "has no name it can be imported by" in finding.why
    assert "define it at module level" in finding.fix
    assert "leave 'function' out in __getstate__" in finding.fix


def test_local_function_is_described_by_qualname() -> None:
    def scale(x):
        return 2 * x

    (finding,) = find_unpicklable(Box(scale=scale))
    assert finding.path == "model.scale"
    assert finding.what.startswith(
        "a local function test_local_function_is_described_by_qualname.<locals>.scale defined at"
    )
    assert "def scale(...)" in finding.fix


def test_nested_containers_give_index_and_key_paths() -> None:
    model = Box(config={"steps": [1, ("a", {"f": lambda: 0})], 7: [threading.Lock()]})
    assert paths(find_unpicklable(model)) == [
        "model.config['steps'][1][1]['f']",
        "model.config[7][0]",
    ]


def test_every_path_resolves_back_to_the_part() -> None:
    model = Box(config={"steps": [1, ("a", {"f]'x": lambda: 0})]})
    (finding,) = find_unpicklable(model)
    assert finding.path == "model.config['steps'][1][1][\"f]'x\"]"
    assert resolve_path(model, finding.path) is model.config["steps"][1][1]["f]'x"]


def test_nn_module_submodules_and_hooks() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
    net[1].fn = lambda x: x
    handle = net[0].register_forward_hook(lambda module, args, out: None)
    findings = find_unpicklable(Box(net=net))
    assert paths(findings) == [f"model.net.0._forward_hooks[{handle.id}]", "model.net.1.fn"]
    assert "register a module-level function as the hook" in findings[0].fix


def test_slots_are_walked() -> None:
    (finding,) = find_unpicklable(Box(item=Slotted("x", threading.Lock())))
    assert finding.path == "model.item.guard"
    assert finding.what == "a lock (_thread.lock)"
    assert "create a new lock in __setstate__" in finding.fix


def test_getstate_result_is_what_is_walked() -> None:
    # The renamed key is shown as what __getstate__ returns, not as an attribute that exists.
    (finding,) = find_unpicklable(Box(inner=RenamingState(lambda: 1)))
    assert finding.path == "model.inner.__getstate__()['renamed']"
    # A part __getstate__ leaves out is not a finding; the ones it keeps keep their own paths.
    assert find_unpicklable(DroppingState(keep=1, drop=lambda: 0)) == []
    (kept,) = find_unpicklable(DroppingState(keep=lambda: 0, drop=1))
    assert kept.path == "model.keep"


def test_partial_bound_method_and_local_class_instance() -> None:
    class Local:
        pass

    owner = Box(lock=threading.Lock())
    model = Box(p=functools.partial(module_level, lambda: 0), cb=owner.__dict__.get, obj=Local())
    found = {f.path: f for f in find_unpicklable(model)}
    assert "model.p.args[0]" in found
    assert found["model.obj"].what.startswith(
        "an instance of the local class "
        "test_partial_bound_method_and_local_class_instance.<locals>.Local"
    )
    assert "define the class Local at module level" in found["model.obj"].fix
    method_model = Box(cb=Box(lock=threading.Lock()).__init__)
    assert paths(find_unpicklable(method_model)) == ["model.cb.__self__.lock"]


def test_process_state_is_described() -> None:
    with open(__file__, encoding="utf-8") as handle:
        model = Box(log=handle, gen=(i for i in range(3)), mod=io)
        found = {f.path: f for f in find_unpicklable(model)}
    assert found["model.log"].what == f"an open file {__file__!r} (TextIOWrapper)"
    assert "operating-system state" in found["model.log"].why
    assert found["model.gen"].what.startswith("a generator")
    assert found["model.mod"].what == "the module io"
    assert "import the module where it is used" in found["model.mod"].fix


def test_cycles_terminate_and_limit_caps_findings() -> None:
    model = Box(fns=[lambda i=i: i for i in range(20)])
    model.me = model
    findings = find_unpicklable(model, limit=5)
    assert len(findings) == 5
    assert findings[0].path == "model.fns[0]"


@settings(max_examples=25, deadline=None)
@given(
    st.recursive(
        st.one_of(st.integers(), st.text(max_size=3)),
        lambda children: st.one_of(
            st.lists(children, max_size=3),
            st.dictionaries(st.one_of(st.text(max_size=4), st.integers()), children, max_size=3),
        ),
        max_leaves=8,
    ),
    st.data(),
)
def test_property_the_one_planted_lambda_is_found_at_a_path_that_resolves(tree, data) -> None:
    """Plant a lambda anywhere in a random nested structure: exactly it is found, by its path."""
    planted = lambda: None  # noqa: E731 - the unpicklable part
    containers = [tree] if isinstance(tree, (list, dict)) else []
    stack = list(containers)
    while stack:
        node = stack.pop()
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, (list, dict)):
                containers.append(child)
                stack.append(child)
    if containers:
        target = data.draw(st.sampled_from(containers))
        if isinstance(target, dict):
            target["planted"] = planted
        else:
            target.append(planted)
        model = Box(tree=tree)
    else:
        model = Box(tree=tree, planted=planted)
    (finding,) = find_unpicklable(model)
    assert resolve_path(model, finding.path) is planted


# -- descriptions, importability, locations ----------------------------------------------------


def test_describe_object_names_classes_and_functions() -> None:
    assert describe_object(module_level) == f"the function {__name__}.module_level"
    assert describe_object(Box) == f"the class {__name__}.Box"
    assert describe_object(threading.RLock()).startswith("a lock (")
    assert describe_object(Box()) == f"an object of type {__name__}.Box"


@pytest.mark.parametrize(
    ("module", "qualname", "expected"),
    [
        ("__main__", "MyCompoundClass", "it is defined in __main__"),
        ("package", "build.<locals>.Model", "it is defined inside a function"),
        ("test_models", "Reader", "it is defined in the test module 'test_models'"),
        ("tests.conftest", "Reader", "it is defined in the test module 'tests.conftest'"),
        ("models.reader_test", "Reader", "it is defined in the test module"),
        ("pytest_modelpack.diagnose", "NoSuchThing", "cannot be found by that name"),
    ],
)
def test_not_importable_reasons(module: str, qualname: str, expected: str) -> None:
    reason = not_importable_reason(module, qualname)
    assert reason is not None and expected in reason, reason


def test_importable_names_have_no_reason() -> None:
    assert not_importable_reason("pytest_modelpack.diagnose.unpicklable", "Finding") is None
    assert not_importable_reason("collections", "OrderedDict") is None
    assert not_importable_reason("not_imported_anywhere_xyz", "Thing") is None


def test_locate_globals_finds_instances_and_stored_functions() -> None:
    model = Box(decoder=Box(inner=Slotted("a", 1)), hook=module_level)
    found = locate_globals(model, [f"{__name__}.Slotted", f"{__name__}.module_level", "x.Missing"])
    assert found == {
        f"{__name__}.Slotted": ["model.decoder.inner"],
        f"{__name__}.module_level": ["model.hook"],
    }


class RaisingSetstate:
    def __init__(self):
        self.old = 1

    def __setstate__(self, state):
        raise KeyError("threshold")


def test_user_frame_skips_pickle_and_torch_frames() -> None:
    data = pickle.dumps(RaisingSetstate())
    with pytest.raises(KeyError) as info:
        pickle.loads(data)
    frame = user_frame(info.value, relative_to=__file__.rsplit("/", 2)[0])
    assert frame is not None
    assert frame.file == "tests/test_diagnose.py"
    assert frame.function == "RaisingSetstate.__setstate__"
    assert frame.text == 'raise KeyError("threshold")'
    assert frame.owner == f"{__name__}.RaisingSetstate"
    assert str(frame).startswith("tests/test_diagnose.py:")


class SeedWrapper(torch.nn.Module):
    """The seed's nn.Module wrapper with its exact __getstate__/__setstate__."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer
        self.function = lambda x: x

    def __getstate__(self):
        return {"l": self.layer}

    def __setstate__(self, state):
        self.layer = state["l"]


def test_setstate_pitfall_explains_the_seeds_error_and_shows_the_users_line() -> None:
    data = pickle.dumps(SeedWrapper(torch.nn.Linear(2, 2)))
    with pytest.raises(AttributeError) as info:
        pickle.loads(data)
    explanation, fix = setstate_pitfall(info.value) or ("", "")
    assert "pickle does not call __init__" in explanation
    assert "torch.nn.Module.__init__(self)" in fix and "plain class" in fix
    frame = user_frame(info.value)
    assert frame is not None and frame.text == 'self.layer = state["l"]'  # not torch's __setattr__
    assert setstate_pitfall(ValueError("other")) is None


# -- lossy round-trips -------------------------------------------------------------------------


def test_explain_lossy_collapses_a_missing_subtree_and_names_the_getstate() -> None:
    live = DroppingState(keep=1, drop=Box(a=1, b=[1, 2]))
    reloaded = pickle.loads(pickle.dumps(live))
    lost, detail = explain_lossy(live, diff_trees(structure_tree(live), structure_tree(reloaded)))
    assert lost == ["model.drop"]
    assert detail[0] == (
        f"model.drop is missing after reload (was {__name__}.Box, and 4 attributes below it)"
    )
    assert detail[1].startswith(f"  left out by {__name__}.DroppingState.__getstate__ (")
    assert detail[1].endswith("which saves only 'keep'")


def test_explain_lossy_ignores_a_lambda_rebuilt_by_setstate() -> None:
    before = {"model": "x", "model.f": "function m.A.__init__.<locals>.<lambda>"}
    after = {"model": "x", "model.f": "function m.A.__setstate__.<locals>.<lambda>"}
    assert explain_lossy(object(), diff_trees(before, after)) == ([], [])


def test_lost_private_state_of_an_rnn_subclass_skipping_super_setstate() -> None:
    live = Holder(SkippingGRU(3, 4, batch_first=True))
    reloaded = pickle.loads(pickle.dumps(live))
    lost, detail, layer_fix = lost_private_state(live, reloaded)
    assert lost == ["model.rnn._flat_weight_refs"] and layer_fix is None  # the user's own
    assert detail[1].startswith(f"  {__name__}.SkippingGRU.__setstate__ (")
    assert "does not call super().__setstate__(...)" in detail[1]
    assert "'SkippingGRU' object has no attribute '_flat_weight_refs'" in detail[1]
    # A subclass that does call super() loses nothing.
    fine = Holder(torch.nn.GRU(3, 4))
    assert lost_private_state(fine, pickle.loads(pickle.dumps(fine))) == ([], [], None)


# -- nondeterminism ----------------------------------------------------------------------------


class NoisyWrapper:
    def __init__(self):
        self.layer = torch.nn.Linear(2, 2)
        self.drop = torch.nn.Dropout(0.5)

    def eval(self):
        self.layer.eval()  # does not reach self.drop

    def forward(self, x):
        return self.drop(self.layer(x)) + torch.rand(1)


def test_nondeterminism_hints_name_the_module_in_train_mode_and_the_random_call() -> None:
    model = NoisyWrapper()
    hints = nondeterminism_hints(model)
    assert hints[0].startswith("still in train mode after model.eval(): model.drop ")
    assert any(
        "in NoisyWrapper.forward: return self.drop(self.layer(x)) + torch.rand(1)" in h
        for h in hints
    )
    assert model.drop.training and model.layer.training  # modes restored


# -- renamed and moved code --------------------------------------------------------------------


READER = '''\
class {name}:
    """Decode a score vector."""

    def __init__(self, d):
        self.d = d

    def __call__(self, x):
        return self.d[int(x)]
'''


def _manifest(globals_: list[GlobalEntry]) -> Manifest:
    entry = FileEntry("bundle.pkl", 1, "0" * 64)
    return Manifest("x", entry, entry, CreatedBy(None, None), {}, globals_, {}, {})


def test_rename_hints_find_a_renamed_class_and_a_moved_module(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pkg_renamed.py").write_text(READER.format(name="Decoder"))
    (tmp_path / "pkg_moved2.py").write_text(READER.format(name="Reader"))
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("pkg_renamed", "pkg_moved2"):
        monkeypatch.delitem(sys.modules, name, raising=False)
        __import__(name)
    old = READER.format(name="Reader")
    assert rename_hints("pkg_renamed", "Reader", old, tmp_path) == [
        # The same name elsewhere in the project (a moved class), and the same code renamed.
        "pkg_renamed.Reader -> pkg_moved2.Reader (class moved?)",
        "pkg_renamed.Reader -> pkg_renamed.Decoder (same code: class renamed?)",
    ]
    assert rename_hints("pkg_moved", "Reader", old, tmp_path) == [
        "pkg_moved.Reader -> pkg_moved2.Reader (module renamed or moved?)"
    ]
    summary, detail, fix = explain_missing(
        [("pkg_moved", "Reader")],
        _manifest([GlobalEntry("pkg_moved", "Reader", "project")]),
        tmp_path,
        "pytest --modelpack-regen t.py::test_x",
    )
    assert summary == (
        "the golden references the module 'pkg_moved', which no longer exists (renamed or moved?)"
    )
    assert "  pkg_moved.Reader -> pkg_moved2.Reader (module renamed or moved?)" in detail
    assert fix.splitlines() == [
        "restore the old name: rename pkg_moved2.py back to pkg_moved.py",
        'or keep an alias: a pkg_moved.py containing "from pkg_moved2 import *", and list '
        "pkg_moved.Reader in modelpack_safe_globals (an alias is not defined under the old name)",
        "or accept the change and regenerate the golden: pytest --modelpack-regen t.py::test_x",
        "(pickle stores classes and functions by reference, under their names; cloudpickle pins "
        "by value the functions of the modules in modelpack_by_value, which then survive a "
        "rename; classes stay by reference)",
    ]


def test_recorded_source_joins_method_units() -> None:
    code = {
        "m.A": {"source": 'class A:\n    """Doc."""\n', "line": 1},
        "m.A.f": {"source": "def f(self):\n    return 1\n", "line": 4},
        "m.A.__init__": {"source": "def __init__(self):\n    pass\n", "line": 2},
        "m.AB": {"source": "class AB:\n    pass\n", "line": 9},
    }
    assert audit.recorded_source(code, "m.A") == textwrap.dedent(
        '''\
        class A:
            """Doc."""

        def __init__(self):
            pass

        def f(self):
            return 1
        '''
    )
    assert audit.recorded_source(code, "m.Missing") is None


def test_the_fix_drops_the_attribute_on_the_object_that_holds_it():
    """A lambda two levels down: drop ``norm`` on the tokenizer, not the whole tokenizer."""
    model = Box(tok=Box(vocab={"a": 1}, norm=lambda s: s.lower()))
    (finding,) = find_unpicklable(model)
    assert finding.path == "model.tok.norm"
    assert "leave 'norm' out in __getstate__" in finding.fix
    assert "'tok'" not in finding.fix
