"""Torch storages kept out of band for the in-memory round-trip, the way ``torch.save`` does it.

Plain ``pickle.dumps`` of a model copies every tensor storage twice (``torch.save`` into a
``BytesIO``, then into the pickle), and ``pickle.loads`` copies it twice more: a 1 GiB model
briefly costs four. The round-trip only needs to know that the model's *non-tensor* state survives
pickling, so :class:`StoragePickler` writes each storage as a persistent id (a PERSID reference to
an index) and :class:`StorageUnpickler` hands the very same storage back. Every other object is
pickled exactly as ``pickle.dump`` would pickle it: same globals, in the same roles, so a scan of
these bytes judges what a golden of the model would reference (a storage is an opaque PERSID).

The reloaded model therefore shares tensor memory with the live one. Code that runs while loading
(``__setstate__``, reduce functions) and writes into a tensor in place would change the live model
too and hide the change from the comparison: :func:`storage_fingerprints` before and after loading
catches that, and :func:`tensors_at` names the tensors for the LOSSY report. Writes during forward
need no such guard: the live model then disagrees with itself on the same input, which the
nondeterminism probe reports whether or not memory is shared.
"""

from __future__ import annotations

import functools
import io
import pickle
from collections.abc import Iterable
from typing import Any

from .. import walk

#: Chunks per storage in a fingerprint: a sum per chunk, so swapping blocks shows too.
_CHUNKS = 64


@functools.cache
def storage_pickler(base: type[pickle.Pickler] = pickle.Pickler) -> Any:
    """``base`` (the serializer's pickler) writing torch storages as persistent ids into
    ``storages``: ``storage_pickler(base)(file, storages, protocol=...)``."""

    class StoragePickler(base):  # type: ignore[valid-type,misc]
        def __init__(
            self, file: io.BytesIO, storages: list[Any], protocol: int = pickle.DEFAULT_PROTOCOL
        ) -> None:
            import torch

            super().__init__(file, protocol=protocol)
            self.storages = storages
            self._types = (torch.UntypedStorage, torch.storage.TypedStorage)

        def persistent_id(self, obj: Any) -> int | None:
            if isinstance(obj, self._types):
                self.storages.append(obj)
                return len(self.storages) - 1
            return None

    return StoragePickler


@functools.cache
def storage_unpickler(base: type[pickle.Unpickler] = pickle.Unpickler) -> Any:
    """``base`` resolving :func:`storage_pickler`'s persistent ids."""

    class StorageUnpickler(base):  # type: ignore[valid-type,misc]
        def __init__(self, file: io.BytesIO, storages: list[Any]) -> None:
            super().__init__(file)
            self.storages = storages

        def persistent_load(self, pid: Any) -> Any:
            if type(pid) is not int or not 0 <= pid < len(self.storages):
                raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
            storage = self.storages[pid]
            import torch

            if type(storage) is torch.UntypedStorage:
                # as torch.load hands it back: a uint16 or float8 tensor pickles its storage
                # untyped, and _rebuild_tensor_v3 reads its bytes as bytes
                return torch.storage.TypedStorage(
                    wrap_storage=storage, dtype=torch.uint8, _internal=True
                )
            return storage

    return StorageUnpickler


StoragePickler = storage_pickler()
StorageUnpickler = storage_unpickler()


def _key(untyped: Any) -> tuple[str, int]:
    return str(untyped.device), untyped.data_ptr()


def storage_fingerprints(storages: Iterable[Any]) -> dict[tuple[str, int], Any]:
    """A cheap checksum of each distinct storage's bytes: int64 sums of 64 chunks and the tail.

    Sums run at memory speed (several GB/s, no copy); any in-place write that changes values
    changes a sum except for contrived ones that cancel within one chunk.
    """
    import torch

    found: dict[tuple[str, int], Any] = {}
    for storage in storages:
        typed = isinstance(storage, torch.storage.TypedStorage)
        untyped = storage._untyped_storage if typed else storage
        key = _key(untyped)
        if key in found or untyped.device.type == "meta" or untyped.nbytes() == 0:
            continue
        raw = torch.empty(0, dtype=torch.uint8, device=untyped.device).set_(untyped)
        whole = raw.numel() // 8 * 8
        words = raw[:whole].view(torch.int64)
        rows = _CHUNKS if words.numel() >= _CHUNKS else 1
        body = words.numel() // rows * rows
        sums = words[:body].view(rows, -1).sum(1)
        tail = words[body:].sum() + raw[whole:].to(torch.int64).sum()
        found[key] = torch.cat([sums, tail.view(1)])
    return found


def changed_storages(
    before: dict[tuple[str, int], Any], storages: Iterable[Any]
) -> list[tuple[str, int]]:
    """Keys of the storages in ``before`` whose bytes are no longer what they were."""
    import torch

    after = storage_fingerprints(storages)
    return [key for key, sums in before.items() if not torch.equal(sums, after.get(key, sums))]


def tensors_at(obj: Any, keys: Iterable[tuple[str, int]], root: str = "model") -> list[str]:
    """Attribute paths of the tensors in ``obj`` whose storage is one of ``keys``."""
    wanted = set(keys)
    paths: list[str] = []
    for path, value, _depth in walk.pickled_nodes(obj, root):
        if walk.is_tensor(value):
            try:
                if _key(value.untyped_storage()) in wanted:
                    paths.append(path)
            except Exception:  # a tensor without storage (sparse, meta, subclasses)
                pass
    return paths
