"""The in-memory round-trip keeps torch storages out of band (issue 12)."""

from __future__ import annotations

import io
import pickle

import torch

from pytest_modelpack.engine.storages import (
    StoragePickler,
    StorageUnpickler,
    changed_storages,
    storage_fingerprints,
    tensors_at,
)
from pytest_modelpack.safety import iter_globals


class Holder:
    def __init__(self) -> None:
        self.layer = torch.nn.Linear(4, 3)
        self.loose = torch.arange(10, dtype=torch.float64)
        self.view = self.loose[2:5]
        self.config = {"vocab": 7, "names": ["a", "b"]}


def dump(obj: object) -> tuple[bytes, list[object]]:
    storages: list[object] = []
    buffer = io.BytesIO()
    StoragePickler(buffer, storages).dump(obj)
    return buffer.getvalue(), storages


def test_round_trip_shares_storages_and_keeps_everything_else() -> None:
    live = Holder()
    data, storages = dump(live)
    assert storages, "every tensor's storage goes out of band"
    assert len(data) < 4096, "no tensor bytes in the pickle"
    back = StorageUnpickler(io.BytesIO(data), storages).load()
    assert back is not live and back.layer is not live.layer
    assert back.config == live.config
    assert torch.equal(back.layer.weight, live.layer.weight)
    assert isinstance(back.layer.weight, torch.nn.Parameter)
    assert back.layer.weight.data_ptr() == live.layer.weight.data_ptr()  # no copy
    assert torch.equal(back.view, live.view) and back.view.storage_offset() == 2


def test_non_storage_globals_are_those_of_plain_pickle() -> None:
    """What a scan of the dump judges is what a golden of the model references, minus the
    nested storage payloads (PERSID instead)."""
    live = Holder()
    data, _ = dump(live)
    refs = list(iter_globals(io.BytesIO(data)))
    assert ("<persistent id>", "PERSID") in {(g.module, g.qualname) for g in refs}
    ours = {(g.module, g.qualname) for g in refs if g.module != "<persistent id>"}
    plain = {(g.module, g.qualname) for g in iter_globals(io.BytesIO(pickle.dumps(live)))}
    storage_only = {("torch.storage", "_load_from_bytes"), ("torch", "FloatStorage")}
    storage_only |= {("torch", "DoubleStorage")}
    assert ours == plain - storage_only
    assert b"_load_from_bytes" not in data


def test_unknown_persistent_id_is_refused() -> None:
    data, storages = dump(Holder())
    try:
        StorageUnpickler(io.BytesIO(data), storages[:1]).load()
    except pickle.UnpicklingError as exc:
        assert "unknown persistent id" in str(exc)
    else:
        raise AssertionError("a missing storage must not load")


def test_fingerprints_see_in_place_writes_and_name_the_tensor() -> None:
    live = Holder()
    _, storages = dump(live)
    before = storage_fingerprints(storages)
    assert changed_storages(before, storages) == []
    live.layer.weight.data[1, 2] += 1.0
    changed = changed_storages(before, storages)
    assert len(changed) == 1
    assert tensors_at(live, changed) == ["model.layer.weight"]


def test_fingerprints_of_odd_sizes_and_empty_storages() -> None:
    odd = torch.zeros(13, dtype=torch.uint8)
    empty = torch.zeros(0)
    _, storages = dump([odd, empty])
    before = storage_fingerprints(storages)
    odd[12] = 1  # in the tail that does not fill an int64
    assert len(changed_storages(before, storages)) == 1
