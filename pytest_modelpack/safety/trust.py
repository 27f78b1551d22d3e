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
from pytest_modelpack.safety.refs import Role, ScanError
from pytest_modelpack.safety.sources import Window
from pytest_modelpack.safety.streams import Reader

__all__ = ["trust_from_pickle"]


def trust_from_pickle(data: bytes) -> Trust:
    """The (global, role) uses and call shapes of the live model's pickle ``data``.

    Uses that carry a problem (a call whose arguments the built-in table rejects) are not
    trusted: the live model's author gets told at regen instead.
    """
    session = Session(size=len(data))
    session.nested = Reader(session)
    src = Window(io.BytesIO(data), 0, len(data))
    try:
        interpret(session, src, "live model", 0, Persid.OPAQUE)
    except ScanError:
        pass  # the round-trip reports a broken live pickle; trust what was read
    uses = set()
    shapes = set()
    for ref in session.refs:
        if ref.problem is not None:
            continue
        uses.add((ref.module, ref.qualname, ref.role))
        if ref.role is Role.REDUCE:
            shapes.add((ref.module, ref.qualname, ref.shape or ""))
    return Trust(frozenset(uses), frozenset(shapes))
