"""Bypass classes a red-team review of by-value trust found, kept refused (each file reuses only
shapes the benign live model's own pickle makes): a by-value function's state pointing its
``__dict__`` at a real module dict (or torch's hook registries) and then writing into it; a
trusted ``functools.partial`` restored around another callable; and a benign dill golden holding
a partial loads (``_load_type('PartialType')`` is dill's own table)."""

from __future__ import annotations

import pickle
import pickletools
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_modelpack.errors import ModelpackError
from pytest_modelpack.safety import Allowlist, scan_file
from pytest_modelpack.safety.load import load_bundle
from pytest_modelpack.safety.trust import scan_live, trust_from_refs

dill = pytest.importorskip("dill")
cloudpickle = pytest.importorskip("cloudpickle")

MODULE = """\
import functools
import torch


def make_scaler(k, bias=0.5):
    def scale(t, extra=1.0):
        return t * k * extra + bias
    return scale


def _mul(a, b=2.0):
    return a * b


class Net(torch.nn.Module):
    def __init__(self, partial=True):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)
        self.act = lambda t: torch.relu(t) * 2
        self.scaler = make_scaler(3.0)
        if partial:
            self.part = functools.partial(_mul, b=3.0)

    def forward(self, x):
        return self.scaler(self.act(self.lin(x)))
"""


@pytest.fixture(scope="module")
def rtmodel(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("proj")
    (root / "rtmodel_bv.py").write_text(MODULE)
    sys.path.insert(0, str(root))
    try:
        import rtmodel_bv

        yield rtmodel_bv
    finally:
        sys.path.remove(str(root))
        sys.modules.pop("rtmodel_bv", None)


def _global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _text(value: str) -> bytes:
    data = value.encode()
    return pickle.SHORT_BINUNICODE + bytes([len(data)]) + data


def _unframe(data: bytes) -> bytes:
    return data[:2] + data[11:] if data[2] == 0x95 else data


def _splice_after_build(data: bytes, marker: bytes, extra: bytes) -> bytes:
    """``extra`` right after the first BUILD that follows ``marker``."""
    at = data.index(marker)
    build = next(p for op, _, p in pickletools.genops(data) if op.name == "BUILD" and p > at)
    return _unframe(data[: build + 1] + extra + data[build + 1 :])


def _refused(tmp_path: Path, live: bytes, hostile: bytes) -> None:
    allowlist = Allowlist(None, trust=trust_from_refs(scan_live(live)))
    path = tmp_path / "bundle.pkl"
    path.write_bytes(hostile)
    assert not scan_file(path, allowlist).safe
    with pytest.raises(ModelpackError, match="UNSAFE GOLDEN"):
        load_bundle(path, allowlist)


@pytest.mark.parametrize(
    "registry",
    [("rtmodel_bv", "__dict__"), ("torch.nn.modules.module", "_global_forward_pre_hooks")],
)
def test_function_state_never_reaches_a_real_dict(
    rtmodel: Any, registry: tuple[str, str], tmp_path: Path
) -> None:
    import torch

    torch.manual_seed(0)
    live = dill.dumps(rtmodel.Net(partial=False), protocol=4)
    extra = (
        pickle.EMPTY_DICT
        + pickle.EMPTY_DICT
        + _text("__dict__")
        + _global(*registry)
        + pickle.SETITEM
        + pickle.TUPLE2
        + pickle.BUILD
        + pickle.MARK
        + _text("make_scaler")
        + _global("torch.nn.functional", "relu")
        + pickle.DICT
        + pickle.NONE
        + pickle.TUPLE2
        + pickle.BUILD
    )
    hostile = _splice_after_build(live, b"Net.__init__.<locals>.<lambda>", extra)
    before = rtmodel.make_scaler
    _refused(tmp_path, live, hostile)
    assert rtmodel.make_scaler is before
    import torch.nn.modules.module as tm

    assert not tm._global_forward_pre_hooks


def test_a_trusted_partial_is_restored_only_with_state_of_its_own_shape(
    rtmodel: Any, tmp_path: Path
) -> None:
    import torch

    torch.manual_seed(0)
    live = cloudpickle.dumps(rtmodel.Net(), protocol=4)
    extra = (
        pickle.MARK
        + _global("cloudpickle.cloudpickle", "subimport")
        + _text("json")
        + pickle.TUPLE1
        + pickle.EMPTY_DICT
        + pickle.NONE
        + pickle.TUPLE
        + pickle.BUILD
    )
    _refused(tmp_path, live, _splice_after_build(live, b"_mul", extra))


@pytest.mark.parametrize("serializer", ["dill", "cloudpickle"])
def test_a_benign_golden_with_a_partial_loads(
    rtmodel: Any, serializer: str, tmp_path: Path
) -> None:
    import torch

    torch.manual_seed(0)
    model = rtmodel.Net()
    data = (dill if serializer == "dill" else cloudpickle).dumps(model, protocol=4)
    allowlist = Allowlist(None, trust=trust_from_refs(scan_live(data)))
    path = tmp_path / "bundle.pkl"
    path.write_bytes(data)
    assert scan_file(path, allowlist).safe
    loaded = load_bundle(path, allowlist)
    x = torch.ones(2, 4)
    assert torch.equal(loaded(x), model(x)) and loaded.part(2.0) == model.part(2.0)
