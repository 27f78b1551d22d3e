"""What a check knows about the live model, computed once and read by every stage.

Like Hypothesis' ``Spans``, which derives its views from one trail, :class:`LiveFacts` derives
everything from the live model lazily and at most once: its in-memory pickle (tensor storages out
of band), the global uses the interpreter saw in it, the trust they give its golden, the walk of
its state (structure tree, placement, diagnoses). A check that fails early computes only what it
used.
"""

from __future__ import annotations

import functools
import io
import types
from dataclasses import dataclass, field
from typing import Any

from .. import errors
from ..diagnose.missing import refuse_unimportable
from ..diagnose.unpicklable import unpicklable_error
from ..safety import Allowlist, GlobalRef, Trust
from ..safety.trust import scan_live, trust_from_refs
from ..serializers import SERIALIZERS, Serializer
from ..walk import Node, nodes, tree_of
from .request import CheckRequest
from .storages import storage_fingerprints, storage_pickler


@dataclass
class LiveDump:
    """The live model pickled in memory: what ``pickle.dumps`` writes, except that each torch
    storage is a persistent id (PERSID) indexing :attr:`storages` instead of a nested copy."""

    data: bytes
    storages: list[Any] = field(default_factory=list)
    #: Checksums of the storages' bytes when dumped (see :func:`.storages.storage_fingerprints`).
    fingerprints: dict[Any, Any] = field(default_factory=dict)


class LiveFacts:
    """The facts of one check's live model (``request.model``), each derived once, on demand."""

    def __init__(self, request: CheckRequest) -> None:
        self.request = request
        self._by_protocol: dict[int, Allowlist] = {}
        #: What the golden is written with: the live model is pickled as it pickles.
        self.serializer: Serializer = SERIALIZERS[request.settings.serializer]

    def _dump(self, protocol: int) -> LiveDump:
        """The live model pickled at ``protocol``, its storages out of band (not fingerprinted)."""
        storages: list[Any] = []
        buffer = io.BytesIO()
        with self.serializer.pinning(self.request.settings.by_value):
            pickler = storage_pickler(self.serializer.pickler_class())
            pickler(buffer, storages, protocol=protocol).dump(self.request.model)
        return LiveDump(buffer.getvalue(), storages)

    def _allowlist(self, trust: Trust) -> Allowlist:
        settings = self.request.settings
        return Allowlist(
            self.request.project_root,
            settings.safe_globals,
            trust=trust,
            trust_golden_code=settings.trust_golden_code,
        )

    @functools.cached_property
    def pickled(self) -> LiveDump:
        """The live model's pickle; UNPICKLABLE names the parts pickle refuses."""
        request = self.request
        try:
            dump = self._dump(self.serializer.protocol)
        except errors.UsageError:
            raise
        except Exception as exc:
            raise unpicklable_error(
                request.model, exc, request.project_root, self.serializer
            ) from None
        dump.fingerprints = storage_fingerprints(dump.storages)
        return dump

    @functools.cached_property
    def refs(self) -> list[GlobalRef]:
        """Every global use of the live pickle, as the interpreter read it (one pass)."""
        return scan_live(self.pickled.data)

    @functools.cached_property
    def dump(self) -> LiveDump:
        """:attr:`pickled`, once it is known to load elsewhere: UNPICKLABLE when it references
        code another process could not import (``__main__``, a test module, conftest.py)."""
        refuse_unimportable(self.request.model, self.refs)
        return self.pickled

    @functools.cached_property
    def trust(self) -> Trust:
        """What the live model's own pickle does: trusted for its golden."""
        return trust_from_refs(self.refs)

    @functools.cached_property
    def allowlist(self) -> Allowlist:
        """The policy for this check's golden: built-in ∪ the live model's own pickle ∪ ini."""
        return self._allowlist(self.trust)

    def allowlist_for(self, protocol: int | None) -> Allowlist:
        """The policy for a golden written at pickle ``protocol``: the live model's trust covers
        the forms its pickle takes at that protocol too (``array.array`` pickles through
        ``array.array`` at protocols 0-2 and ``array._array_reconstructor`` from 3, objects
        through ``copyreg._reconstructor`` at 0-1): an older golden of the same object passes."""
        if protocol is None or protocol == self.serializer.protocol:
            return self.allowlist
        cached = self._by_protocol.get(protocol)
        if cached is None:
            if protocol < 2 and self._holds_script_objects():
                # torch aborts the process (not an exception) pickling a ScriptObject (packed
                # quantized params) at protocols 0-1: no real golden is one; the live trust only.
                return self.allowlist
            try:  # storages out of band: only the model's other state is pickled again
                data = self._dump(protocol).data
            except Exception:
                return self.allowlist  # not picklable at that protocol: the live trust only
            trust = trust_from_refs(self.refs + scan_live(data))
            cached = self._by_protocol[protocol] = self._allowlist(trust)
        return cached

    def _holds_script_objects(self) -> bool:
        import torch

        script = getattr(torch, "ScriptObject", None) or torch._C.ScriptObject
        return any(isinstance(node.value, script) for node in self.nodes) or any(
            isinstance(getattr(m, "_packed_params", None), torch.nn.Module)
            for m in getattr(self.request.model, "modules", lambda: [])()
        )

    @functools.cached_property
    def nodes(self) -> list[Node]:
        """The walk of the live model's state (taken before anything runs it: placing a model
        on a device rebuilds some of torch's caches)."""
        return list(nodes(self.request.model))

    @functools.cached_property
    def pinned_roots(self) -> list[tuple[str, str]]:
        """Where the code this serializer pins by value is defined: (module, qualname) of the
        function or class enclosing each lambda, local function and local class of the live
        model (and each function and class of a ``modelpack_by_value`` module), fingerprinted
        like the globals the bundle names, so a change to pinned code is CODE DRIFT with its
        source diff."""
        if not self.serializer.by_value:
            return []
        by_value = tuple(self.request.settings.by_value)
        roots: list[tuple[str, str]] = []
        for node in self.nodes:
            func = node.value
            if not isinstance(func, types.FunctionType):
                func = type(func)  # its class: pinned too where it is local or by_value's
            module, qualname = func.__module__, func.__qualname__
            outer = qualname.split(".<locals>", 1)[0]
            pinned = outer != qualname or any(
                module == name or module.startswith(name + ".") for name in by_value
            )
            if pinned and "<" not in outer and (module, outer) not in roots:
                roots.append((module, outer))
        return roots

    @functools.cached_property
    def tree(self) -> dict[str, str]:
        return tree_of(self.nodes)
