"""Goldens loaded over a copy-on-write mapping of the file: storages are views of the file, the
tensors stay writable, the file never changes, and every size check still refuses a bad file."""

from __future__ import annotations

import ctypes
import hashlib
import pickle
import struct
from pathlib import Path
from typing import Any

import pytest
import torch

from pytest_modelpack.errors import CorruptGolden, ModelpackError
from pytest_modelpack.golden import fileio
from pytest_modelpack.safety import Allowlist, load_bundle
from tests.adversarial_payloads import binbytes, legacy_stream, lfb


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Embedding(300, 16), torch.nn.Linear(16, 5))


def _write(tmp_path: Path, obj: Any) -> Path:
    path = tmp_path / "bundle.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=pickle.DEFAULT_PROTOCOL))
    return path


def _span(view: fileio.MappedFile) -> range:
    """The addresses of the mapping (ctypes takes a buffer export only for the moment it needs)."""
    start = ctypes.addressof(ctypes.c_char.from_buffer(view.mapping))
    return range(start, start + len(view.mapping))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_mapped_load_equals_the_live_model_and_serves_storages_from_the_file(
    tmp_path: Path,
) -> None:
    live = _model()
    live.ids = torch.arange(4096, dtype=torch.uint8)  # one byte per element: always aligned
    path = _write(tmp_path, live)
    with open(path, "rb") as f:
        view = fileio.map_copy(f, path)
    assert fileio.sha256_mapping(view.mapping) == _sha(path)
    loaded = load_bundle(view, Allowlist(None))
    for (name, a), (_, b) in zip(
        live.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
        assert b.data_ptr() % b.element_size() == 0, f"{name}: misaligned for its dtype"
    assert torch.equal(loaded.ids, live.ids)
    assert loaded.ids.data_ptr() in _span(view), "a uint8 storage should be a view of the file"
    x = torch.tensor([1, 2, 299])
    assert torch.equal(loaded(x), live(x))


def test_mapped_tensors_are_writable_and_the_file_never_changes(tmp_path: Path) -> None:
    live = _model()
    live.ids = torch.arange(4096, dtype=torch.uint8)
    path = _write(tmp_path, live)
    before = _sha(path)
    loaded = load_bundle(path, Allowlist(None))
    with torch.no_grad():
        loaded[0].weight.add_(1.0)
        loaded.ids.fill_(7)
    assert torch.equal(loaded[0].weight, live[0].weight + 1.0)
    assert int(loaded.ids.sum()) == 7 * 4096
    assert _sha(path) == before
    again = load_bundle(path, Allowlist(None))
    assert torch.equal(again[0].weight, live[0].weight)
    assert torch.equal(again.ids, live.ids)


@pytest.mark.parametrize("pad", range(4))
def test_storages_misaligned_in_the_file_are_copied_aligned(tmp_path: Path, pad: int) -> None:
    """pickle puts a storage's bytes at any offset; a float32 view at an odd address would fault
    in torch's kernels, so such a storage is copied (one copy) instead of mapped."""
    weights = torch.randn(1000, dtype=torch.float32)
    path = _write(tmp_path, [b"x" * pad, weights, torch.randn(7, dtype=torch.float64)])
    loaded = load_bundle(path, Allowlist(None))
    assert torch.equal(loaded[1], weights)
    for t in loaded[1:]:
        assert t.data_ptr() % t.element_size() == 0
        assert float((t @ t).item()) == pytest.approx(float((t.clone() @ t.clone()).item()))


class _Storage:
    """Reduces like a torch storage, with an argument tuple other objects may share."""

    def __init__(self, args: tuple[bytes]) -> None:
        self.args = args

    def __reduce__(self) -> Any:
        return (torch.storage._load_from_bytes, self.args)


def test_a_mapped_payload_used_elsewhere_is_plain_bytes(tmp_path: Path) -> None:
    """The payload and its argument tuple are memoized: fetched again from the memo they must be
    what pickle.load gives (bytes), not the loader's reference into the file."""
    payload = _storage_stream(4, struct.pack("<4f", 1.0, 2.0, 3.0, 4.0))
    args = (payload,)
    path = _write(tmp_path, [_Storage(args), payload, args])
    expected = pickle.loads(path.read_bytes())
    loaded = load_bundle(path, Allowlist(None))
    assert type(loaded[1]) is bytes and loaded[1] == payload
    assert type(loaded[2]) is tuple and loaded[2] == (payload,) and type(loaded[2][0]) is bytes
    assert list(loaded[0]) == list(expected[0]) == [1.0, 2.0, 3.0, 4.0]


def _storage_stream(numel: int, data: bytes) -> bytes:
    record = (
        b"\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000"
        b"X\x03\x00\x00\x00cpuJ" + struct.pack("<i", numel) + b"Ntq\x00Q."
    )
    stream = legacy_stream(record)[: -len(pickle.dumps([], 2))] + pickle.dumps(["0"], 2)
    return stream + struct.pack("<q", numel) + data


@pytest.mark.parametrize(
    ("numel", "data"),
    [(4, b"\x00" * 12), (4, b"\x00" * 4), (2**30, b"\x00" * 8)],
    ids=["short-by-one-float", "truncated", "oversized"],
)
def test_a_storage_larger_than_its_bytes_is_refused_when_mapped(
    tmp_path: Path, numel: int, data: bytes
) -> None:
    path = tmp_path / "bundle.pkl"
    path.write_bytes(lfb(binbytes(_storage_stream(numel, data))))
    with pytest.raises(ModelpackError) as info:
        load_bundle(path, Allowlist(None))
    assert "storage" in str(info.value).lower() or isinstance(info.value, CorruptGolden)


def test_a_sound_handwritten_storage_loads_when_mapped(tmp_path: Path) -> None:
    """The refusals above come from the sizes, not from the hand-written stream."""
    data = struct.pack("<4f", 1.0, 2.0, 3.0, 4.0)
    path = tmp_path / "bundle.pkl"
    path.write_bytes(lfb(binbytes(_storage_stream(4, data))))
    storage = load_bundle(path, Allowlist(None))
    assert list(storage) == [1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_the_hashing_writer_writes_and_hashes_every_piece_of_a_large_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: type
) -> None:
    """A large write goes down in pieces, hashed before each is written and flushed behind."""
    monkeypatch.setattr(fileio, "_WRITE_CHUNK", 1000)
    monkeypatch.setattr(fileio, "_SYNC_EVERY", 2500)
    synced: list[int] = []
    monkeypatch.setattr(fileio, "_datasync", synced.append)
    big = bytes(range(256)) * 40  # 10240 bytes: 11 pieces
    path = tmp_path / "out.bin"
    with open(path, "wb") as f:
        fd = f.fileno()
        writer = fileio.HashingWriter(f, fd)
        writer.write(b"head")
        writer.write(kind(big))
        writer.write(b"tail")
        digest = writer.sha256
    assert path.read_bytes() == b"head" + big + b"tail"
    assert digest == _sha(path)
    assert writer.size == len(big) + 8
    assert synced == [fd] * 3  # 10248 bytes in pieces of <= 1000: synced at 3004, 6004, 9004


def test_the_hashing_writer_never_blocks_when_its_thread_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any error of the background thread (not only an OSError of a sync) is raised by close();
    the thread keeps draining the queue, so writes never block on it."""

    def broken(fd: int) -> None:
        raise ValueError("not an OSError")

    monkeypatch.setattr(fileio, "_SYNC_EVERY", 0)
    monkeypatch.setattr(fileio, "_datasync", broken)
    with open(tmp_path / "out.bin", "wb") as f:
        writer = fileio.HashingWriter(f, f.fileno())
        for _ in range(200):  # more than the queue holds
            writer.write(b"x" * 100)
        with pytest.raises(ValueError, match="not an OSError"):
            writer.close()


class HalfPicklable:
    """Its blob is written (and flushed: the flush fails), then its lock fails to pickle."""

    def __init__(self) -> None:
        self.blob = b"x" * (256 << 10)  # past a pickle frame: written at once
        self.lock = __import__("threading").Lock()


def test_a_writer_error_is_not_hidden_by_a_background_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the dump itself fails, that error is the one raised: close(raise_error=False)."""
    from pytest_modelpack.golden import GoldenStore

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileio, "_SYNC_EVERY", 0)
    monkeypatch.setattr(fileio, "_datasync", full)
    store = GoldenStore(tmp_path / "goldens" / "g", "g", project_root=tmp_path)
    with pytest.raises(TypeError, match="cannot pickle"):
        store.prepare(HalfPicklable())
    assert not (tmp_path / "goldens" / "g").exists()
