"""Goldens loaded over a copy-on-write mapping of the file: storages are views of the file, the
tensors stay writable, the file never changes, and every size check still refuses a bad file."""

from __future__ import annotations

import ctypes
import hashlib
import os
import pickle
import struct
import tempfile
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
    in torch's kernels, so such a storage is copied (one copy) instead of mapped; an aligned one
    stays a view of the file."""
    weights = torch.randn(1000, dtype=torch.float32)
    doubles = torch.randn(7, dtype=torch.float64)
    path = _write(tmp_path, [b"x" * pad, weights, doubles])
    with open(path, "rb") as f:
        view = fileio.map_copy(f, path)
    loaded = load_bundle(view, Allowlist(None))
    assert torch.equal(loaded[1], weights) and torch.equal(loaded[2], doubles)
    data = path.read_bytes()
    for t, live in zip(loaded[1:], (weights, doubles), strict=True):
        assert t.data_ptr() % t.element_size() == 0
        assert float((t @ t).item()) == pytest.approx(float((t.clone() @ t.clone()).item()))
        at = data.find(live.numpy().tobytes())
        mapped = t.data_ptr() in _span(view)
        if at % t.element_size():
            assert not mapped, f"{t.dtype} at byte {at}: a misaligned storage is a copy"
        else:
            assert mapped and t.data_ptr() == _span(view).start + at, f"{t.dtype} at byte {at}"


def _misaligned(tmp_path: Path, nbytes: int = 4 << 20) -> tuple[Path, torch.Tensor, int]:
    """A bundle whose float32 storage's bytes lie at an odd offset of the file."""
    weights = torch.randn(nbytes // 4, dtype=torch.float32)
    for pad in range(4):
        path = _write(tmp_path, [b"x" * pad, weights])
        at = path.read_bytes().find(weights.numpy().tobytes())
        if at % 2:
            return path, weights, at
    raise AssertionError("no padding put the storage at an odd offset")


def _resident(view: fileio.MappedFile) -> int:
    """Bytes of the mapping resident in this process (its /proc/self/smaps entry's Rss)."""
    start = f"{_span(view).start:x}-"
    lines = Path("/proc/self/smaps").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith(start):
            for entry in lines[i + 1 :]:
                if entry.startswith("Rss:"):
                    return int(entry.split()[1]) * 1024
    raise AssertionError("the mapping is not in /proc/self/smaps")


def _mapping_of(address: int) -> str:
    """The /proc/self/maps line of the mapping that holds ``address``."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        start, end = (int(x, 16) for x in line.split()[0].split("-"))
        if start <= address < end:
            return line
    raise AssertionError(f"{address:#x} is in no mapping")


def _smaps_rss(address: int) -> int:
    """Resident bytes of the mapping that holds ``address``."""
    lines = Path("/proc/self/smaps").read_text().splitlines()
    for i, line in enumerate(lines):
        if line[:1] in "0123456789abcdef" and "-" in line.split()[0]:
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            if start <= address < end:
                for entry in lines[i + 1 :]:
                    if entry.startswith("Rss:"):
                        return int(entry.split()[1]) * 1024
    raise AssertionError(f"{address:#x} is in no mapping")


@pytest.mark.skipif(
    not (Path("/proc/self/smaps").exists() and hasattr(os, "copy_file_range")),
    reason="needs Linux: /proc/self/smaps and os.copy_file_range",
)
def test_a_large_misaligned_storage_is_copied_into_a_mapped_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A misaligned storage of 16 MiB or more: the kernel copies its bytes into an unlinked
    temporary file, mapped at a page boundary. Neither the golden's pages under it nor the copy's
    are resident until the tensor is used (a plain read would make all of it resident at once),
    and no file is left behind."""
    from pytest_modelpack.safety import streams

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", None)
    path, weights, _at = _misaligned(tmp_path, streams.MAP_COPY_BYTES)
    monkeypatch.setattr(os, "preadv", lambda *a: pytest.fail("read instead of mapped"))
    with open(path, "rb") as f:
        view = fileio.map_copy(f, path)
    loaded = load_bundle(view, Allowlist(None))
    copy = loaded[1]
    assert copy.data_ptr() % 64 == 0 and copy.data_ptr() not in _span(view)
    mapping = _mapping_of(copy.data_ptr())
    assert mapping.endswith("(deleted)") and str(scratch) in mapping, mapping
    assert _smaps_rss(copy.data_ptr()) < weights.nbytes // 2, "the copy is resident"
    assert _resident(view) < weights.nbytes // 2, "the copy read the golden's mapping"
    assert list(scratch.iterdir()) == []
    assert torch.equal(copy, weights)
    copy.add_(1)  # writable, copy-on-write: the golden never changes
    assert torch.equal(load_bundle(path, Allowlist(None))[1], weights)


@pytest.mark.parametrize("errno_name", ["ENOSPC", "EXDEV", "ENOSYS"])
def test_a_large_misaligned_storage_is_read_when_it_cannot_be_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, errno_name: str
) -> None:
    """A full temporary disk, another file system, no such call: the storage is read instead."""
    import errno

    from pytest_modelpack.safety import streams

    path, weights, at = _misaligned(tmp_path, streams.MAP_COPY_BYTES)

    def fails(*args: Any) -> int:
        code = getattr(errno, errno_name)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "copy_file_range", fails, raising=False)
    reads: list[int] = []
    real = os.preadv
    monkeypatch.setattr(os, "preadv", lambda fd, b, o: reads.append(o) or real(fd, b, o))
    loaded = load_bundle(path, Allowlist(None))
    assert torch.equal(loaded[1], weights)
    assert reads and reads[0] == at


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs /proc/self/smaps")
def test_a_misaligned_storage_is_read_from_the_file_not_through_the_mapping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Below 16 MiB the copy is read with os.preadv into an aligned buffer: the mapping's pages
    under it are never faulted in, so they do not count in the process' resident memory beside
    the copy. (Reading the pickle around it maps a few pages, up to a large folio of the page
    cache each: 2 MiB.)"""
    from pytest_modelpack.safety import streams

    monkeypatch.setattr(streams, "MAP_COPY_BYTES", 32 << 20)
    path, weights, at = _misaligned(tmp_path, 16 << 20)
    reads: list[int] = []
    real = os.preadv

    def preadv(fd: int, buffers: Any, offset: int) -> int:
        reads.append(offset)
        return real(fd, buffers, offset)

    monkeypatch.setattr(os, "preadv", preadv)
    with open(path, "rb") as f:
        view = fileio.map_copy(f, path)
    before = _open_fds(path)
    loaded = load_bundle(view, Allowlist(None))
    assert torch.equal(loaded[1], weights)
    assert loaded[1].data_ptr() not in _span(view)
    assert reads and reads[0] == at
    assert _resident(view) < weights.nbytes // 2, "the copy read the mapping"
    assert _open_fds(path) == before, "the load opened the file again"


def _open_fds(path: Path) -> int:
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        return 0
    count = 0
    for fd in fds.iterdir():
        try:
            count += os.readlink(fd) == str(path)
        except OSError:
            pass
    return count


def test_short_reads_of_a_misaligned_storage_are_read_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, weights, _at = _misaligned(tmp_path, 1 << 20)
    real = os.preadv
    calls = []

    def short(fd: int, buffers: Any, offset: int) -> int:
        calls.append(offset)
        return real(fd, [buffers[0][:4099]], offset)

    monkeypatch.setattr(os, "preadv", short)
    loaded = load_bundle(path, Allowlist(None))
    assert torch.equal(loaded[1], weights)
    assert len(calls) == -(-weights.nbytes // 4099)


def test_a_file_ending_before_a_misaligned_storage_is_corrupt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file truncated under the load reads short (EOF): a clear CORRUPT GOLDEN, no fault."""
    path, _weights, at = _misaligned(tmp_path, 1 << 20)
    real = os.preadv
    # the first read gets 1000 bytes, the next one EOF: the file "ends" at + 1000
    monkeypatch.setattr(
        os,
        "preadv",
        lambda fd, b, offset: real(fd, [b[0][:1000]], offset) if offset == at else 0,
    )
    with pytest.raises(CorruptGolden) as info:
        load_bundle(path, Allowlist(None))
    assert "truncated storage data" in str(info.value)
    assert f"ends at byte {at + 1000}" in str(info.value)


def test_a_golden_replaced_after_it_was_mapped_copies_from_the_file_mapped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file at the path is another one now: the storage is copied from the file mapped (the
    file verified, through the descriptor the mapping keeps), never from the one in its place."""
    path, weights, at = _misaligned(tmp_path, 1 << 20)
    with open(path, "rb") as f:
        view = fileio.map_copy(f, path)
    other = tmp_path / "other.pkl"
    other.write_bytes(pickle.dumps([b"", torch.zeros_like(weights)]))
    os.replace(other, path)
    reads: list[int] = []
    real = os.preadv
    monkeypatch.setattr(os, "preadv", lambda fd, b, o: reads.append(o) or real(fd, b, o))
    loaded = load_bundle(view, Allowlist(None))
    assert torch.equal(loaded[1], weights)
    assert loaded[1].data_ptr() not in _span(view)
    assert reads and reads[0] == at


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


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs /proc/self/smaps")
def test_the_scan_of_a_mapping_skips_its_storages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gate scans the verified mapping: it is read in place (an mmap has no seekable() before
    Python 3.13, and was spooled whole: every page of the file resident, the file written out
    again), its storages skipped, their spans found as the scan of the file finds them."""
    from pytest_modelpack.safety import scan_file, scan_stream

    path, weights, at = _misaligned(tmp_path, 16 << 20)

    def no_spool(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the mapping was spooled")

    with open(path, "rb") as f:
        view = fileio.map_copy(f, path)
    monkeypatch.setattr(tempfile, "SpooledTemporaryFile", no_spool)
    verdict = scan_stream(view.mapping, Allowlist(None), str(path), whole_file=True)
    assert verdict.error is None and not verdict.refused
    assert verdict.storages == scan_file(path, Allowlist(None)).storages == [(at, weights.nbytes)]
    assert _resident(view) < weights.nbytes // 2, "the scan read the storage's pages"
