"""Loading: the interpreter builds the golden, judging every use before it happens.

The same opcode walk as the scan (:mod:`.interpreter`), in load mode: a refused use stops the load
before anything of it runs, storages are built from the bytes present (with ``map_location``, so
a golden pickled on CUDA loads on a CPU-only machine), and nothing is handed to ``pickle`` or
``torch.load``.
"""

from __future__ import annotations

import io
import os
from typing import IO, TYPE_CHECKING, Any

from pytest_modelpack.safety.interpreter import Refused, Session
from pytest_modelpack.safety.refs import ScanError
from pytest_modelpack.safety.sources import Window
from pytest_modelpack.safety.streams import interpret_file
from pytest_modelpack.safety.verdict import corrupt_error, refusal_error, refusal_lines

if TYPE_CHECKING:
    from pytest_modelpack.safety.policy import Allowlist

__all__ = ["load_bundle", "loads_bundle"]


def load_bundle(
    path: str | os.PathLike[str], allowlist: Allowlist, map_location: Any = "cpu"
) -> Any:
    """Load the bundle at ``path``, allowing only the uses ``allowlist`` allows.

    Raises UNSAFE GOLDEN for a refused use, CORRUPT GOLDEN for a truncated or malformed pickle,
    and ``ModuleNotFoundError``/``AttributeError`` (as ``pickle.load`` would) for a project class
    that no longer exists.
    """
    with open(path, "rb", buffering=256 * 1024) as f:
        return _load(f, allowlist, map_location, os.fspath(path), whole_file=True)


def loads_bundle(data: bytes, allowlist: Allowlist, map_location: Any = "cpu") -> Any:
    """Like :func:`load_bundle`, for a bundle already in memory."""
    return _load(io.BytesIO(data), allowlist, map_location, "<bytes>")


def _judge(allowlist: Allowlist) -> Any:
    def judge(ref: Any) -> Any:
        decision = allowlist.judge(ref)
        if not decision.allowed and decision.missing:
            # A renamed or moved class: fail as pickle.load would, for a LOAD ERROR report.
            if "has no attribute" in decision.reason:
                raise AttributeError(
                    f"Can't get attribute {ref.qualname!r} on module {ref.module!r}"
                )
            raise ModuleNotFoundError(f"No module named {ref.module!r}", name=ref.module)
        return decision

    return judge


def _load(
    f: IO[bytes], allowlist: Allowlist, map_location: Any, label: str, whole_file: bool = False
) -> Any:
    import warnings

    start = f.tell()
    end = f.seek(0, os.SEEK_END)
    f.seek(start)
    session = Session(size=end - start, judge=_judge(allowlist), map_location=map_location)
    try:
        with warnings.catch_warnings():
            # torch rebuilds legacy typed storages and warns; the user cannot act on that.
            warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
            return interpret_file(session, Window(f, start, end), "top level", whole_file)
    except Refused as exc:
        raise refusal_error(refusal_lines([(exc.ref, exc.reason)]), [exc.ref], label) from None
    except ScanError as exc:
        raise corrupt_error(label, str(exc)) from None
    except (EOFError, MemoryError, RecursionError) as exc:
        raise corrupt_error(label, f"{type(exc).__name__}: {exc}") from None
