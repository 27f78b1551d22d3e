"""Trust derived from the live model: what its own pickle does is trusted for its golden.

Every check pickles the trusted live model first (``engine.roundtrip.dump_live``); the
interpreter scans those bytes (builds nothing) and every (global, role) use it finds, with the
shape of each call, becomes a :class:`~pytest_modelpack.safety.policy.Trust`. A persistent id in
those bytes (storages kept out of band for the in-memory round-trip) is an opaque storage: the
golden on disk is always a plain ``pickle.dump``, where a persistent id is refused.
"""

from __future__ import annotations

import io

from pytest_modelpack.safety.interpreter import Persid, Session, interpret
from pytest_modelpack.safety.policy import Trust
from pytest_modelpack.safety.refs import GlobalRef, Role, ScanError
from pytest_modelpack.safety.sources import Window
from pytest_modelpack.safety.streams import Reader


def scan_live(data: bytes) -> list[GlobalRef]:
    """Every global use of the live model's pickle ``data``, as the interpreter reads it."""
    session = Session(size=len(data))
    session.nested = Reader(session)
    try:
        interpret(session, Window(io.BytesIO(data), 0, len(data)), "live model", 0, Persid.OPAQUE)
    except ScanError:
        pass  # the round-trip reports a broken live pickle; trust what was read
    return session.refs


def trust_from_refs(refs: list[GlobalRef]) -> Trust:
    """The (global, role) uses and call shapes of the live model's pickle.

    Uses that carry a problem (a call whose arguments the built-in table rejects) are not
    trusted: the live model's author gets told at regen instead.
    """
    uses = {(r.module, r.qualname, r.role) for r in refs if r.problem is None}
    shapes = {
        (r.module, r.qualname, r.shape or "")
        for r in refs
        if r.problem is None
        and (r.role is Role.REDUCE or (r.role in (Role.BUILD, Role.NEWOBJ) and r.shape is not None))
    }
    return Trust(frozenset(uses), frozenset(shapes))


def trust_from_pickle(data: bytes) -> Trust:
    """:func:`trust_from_refs` of the live model's pickle ``data``."""
    return trust_from_refs(scan_live(data))
