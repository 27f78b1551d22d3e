"""Project code and the state walker: one definition each, used by every part of the plugin."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch

from pytest_modelpack.apply import placed
from pytest_modelpack.drift import code_units, is_project_file
from pytest_modelpack.project import Location, ModuleKind, Project, is_library_module
from pytest_modelpack.safety import Allowlist
from pytest_modelpack.walk import instance_state, slot_names, structure_tree


@pytest.fixture
def eggs_project(tmp_path, monkeypatch):
    """A project whose root also holds setuptools' ``.eggs/`` folder with a module in it."""
    (tmp_path / "mine.py").write_text("class Mine:\n    def f(self):\n        return 1\n")
    eggs = tmp_path / ".eggs"
    eggs.mkdir()
    (eggs / "egged.py").write_text("class Egged:\n    def f(self):\n        return 2\n")
    monkeypatch.syspath_prepend(str(eggs))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("mine", "egged"):
        sys.modules.pop(name, None)


def test_a_module_under_dot_eggs_is_not_project_code_anywhere(eggs_project):
    project = Project(eggs_project)
    assert project.locate_module("mine")[0] is Location.PROJECT
    assert project.locate_module("egged")[0] is Location.OUTSIDE
    assert not is_project_file(eggs_project / ".eggs" / "egged.py", eggs_project)
    # The safety policy and the drift fingerprints agree: .eggs is installed code.
    allowlist = Allowlist(eggs_project)
    assert allowlist.check("mine", "Mine").allowed
    assert allowlist.classify("egged") == ModuleKind.THIRD_PARTY
    assert not allowlist.check("egged", "Egged").allowed
    code = code_units([("mine", "Mine"), ("egged", "Egged")], eggs_project)
    assert "mine.Mine" in code and not any(k.startswith("egged") for k in code)


def test_library_modules_are_never_the_users_code():
    assert is_library_module("json") and is_library_module("torch.nn")
    assert not is_library_module("pytest_modelpack_no_such_module_anywhere")


class OneSlot:
    __slots__ = "weights"  # a single slot named by a string

    def __init__(self):
        self.weights = torch.ones(3)


class PrivateSlots:
    __slots__ = ("__hidden", "layer")

    def __init__(self):
        self.__hidden = torch.zeros(2)
        self.layer = torch.nn.Linear(2, 2)


class DictSlots:
    __slots__ = {"scale": "a documented slot"}

    def __init__(self):
        self.scale = 0.5


def test_every_slots_form_is_walked():
    assert slot_names(OneSlot) == ["weights"]
    assert slot_names(PrivateSlots) == ["_PrivateSlots__hidden", "layer"]
    assert slot_names(DictSlots) == ["scale"]
    assert set(instance_state(PrivateSlots())) == {"_PrivateSlots__hidden", "layer"}


def test_a_single_string_slot_is_in_the_structure_tree_and_placed_on_the_device():
    model = OneSlot()
    tree = structure_tree(model)
    assert tree["model.weights"] == "Tensor float32[3]"
    original = model.weights
    with placed(model, "meta"):
        assert model.weights.device.type == "meta"
    assert model.weights is original


def test_private_slots_hold_modules_that_are_placed():
    model = PrivateSlots()
    assert "model._PrivateSlots__hidden" in structure_tree(model)
    with placed(model, "meta"):
        assert model.layer.weight.device.type == "meta"
        assert model._PrivateSlots__hidden.device.type == "meta"
    assert model.layer.weight.device.type == "cpu"


def test_dict_slots_values_are_in_the_tree():
    assert structure_tree(DictSlots())["model.scale"] == "float = 0.5"


def test_unimported_project_module_is_located_without_running_it(tmp_path, monkeypatch):
    (tmp_path / "boom.py").write_text(textwrap.dedent("raise SystemExit('must not run')\n"))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert Project(tmp_path).module_kind("boom") is ModuleKind.PROJECT
    assert "boom" not in sys.modules
