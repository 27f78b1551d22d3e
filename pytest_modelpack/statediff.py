"""The state diff: which attribute paths of the golden object hold other state than the live model.

Both objects are walked path by path with the structure tree's walk
(:func:`~pytest_modelpack.walk.nodes`), so a path here is the path a reviewer reads
in the golden's manifest. Tensors are compared by shape, dtype and max abs difference; scalars by
equality; opaque objects (a tokenizer, a sentencepiece processor) by their vocabulary when they
have one, else by a digest of their pickled state. Pure: no pytest, and torch only when the
objects hold tensors.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
from typing import Any

from .walk import Node, attempt, is_tensor, nodes

#: How many differing paths the detail of a failure lists (the JSON report gets them all).
SHOWN = 8
#: How many differing vocabulary entries are named as examples.
VOCAB_EXAMPLES = 3


@dataclasses.dataclass
class StateDiff:
    """The paths whose state differs (one line each) and how many leaf paths are equal."""

    differing: list[str] = dataclasses.field(default_factory=list)
    equal: int = 0

    @property
    def paths(self) -> list[str]:
        return [line.split(": ", 1)[0] for line in self.differing]

    def summary(self) -> str:
        total = len(self.differing) + self.equal
        if not self.differing:
            return f"state diff: all {total} paths of the golden's state equal the live model's"
        return (
            f"state diff (golden vs live model): {len(self.differing)} of {total} paths differ, "
            f"{self.equal} equal"
        )

    def lines(self, shown: int = SHOWN) -> list[str]:
        """Detail lines for a failure: the summary, then the first ``shown`` differing paths."""
        out = [self.summary()]
        out.extend(f"  {line}" for line in self.differing[:shown])
        if len(self.differing) > shown:
            out.append(f"  ... and {len(self.differing) - shown} more (all in the JSON report)")
        return out


def _shape(value: Any) -> str:
    return "×".join(str(s) for s in value.shape) or "scalar"


def _nested_diff(golden: Any, live: Any) -> str | None:
    """Nested tensors, component by component: a ragged dimension is a symbol (``j1``) that a
    load renames, so their shapes never compare equal, and torch.equal does not take them."""
    if golden.is_nested != live.is_nested or golden.layout != live.layout:
        kinds = [f"{'nested ' if t.is_nested else ''}{t.layout}" for t in (golden, live)]
        return f"layout {kinds[0]} -> {kinds[1]}".replace("torch.", "")
    a, b = golden.unbind(), live.unbind()
    if len(a) != len(b):
        return f"{len(a)} -> {len(b)} nested components"
    for index, (x, y) in enumerate(zip(a, b, strict=True)):
        change = _tensor_diff(x, y)
        if change is not None:
            return f"nested component {index}: {change}"
    return None


def _tensor_diff(golden: Any, live: Any) -> str | None:
    import torch

    if getattr(golden, "is_nested", False) or getattr(live, "is_nested", False):
        return _nested_diff(golden, live)
    uninitialized = getattr(torch.nn.parameter, "UninitializedTensorMixin", ())
    if isinstance(golden, uninitialized) or isinstance(live, uninitialized):
        both = isinstance(golden, uninitialized) and isinstance(live, uninitialized)
        return None if both and golden.dtype == live.dtype else "initialized differently"
    if golden.dtype != live.dtype:
        return f"dtype {golden.dtype} -> {live.dtype}".replace("torch.", "")
    if golden.shape != live.shape:
        return f"shape {_shape(golden)} -> {_shape(live)}"
    a, b = golden.detach().cpu(), live.detach().cpu()
    if a.is_sparse or a.is_quantized:
        return None if torch.equal(a.to_dense(), b.to_dense()) else "values differ"
    if torch.equal(a, b):
        return None
    if a.is_floating_point() or a.is_complex():
        both_nan = torch.isnan(a) & torch.isnan(b)
        err = (a.double() - b.double()).abs().masked_fill(both_nan, 0.0)
        return f"max abs diff {float(err.max()):.3g} (shape {_shape(a)})" if err.any() else None
    return f"{int((a != b).sum())} of {a.numel()} elements differ (shape {_shape(a)})"


def _vocabulary(value: Any) -> dict[str, int] | None:
    """A tokenizer's vocabulary ({token: id}), for the objects that expose one."""
    get = getattr(value, "get_vocab", None)
    if callable(get):
        vocab = attempt(get)
        return vocab if isinstance(vocab, dict) else None
    size = getattr(value, "get_piece_size", None)
    if callable(size) and callable(getattr(value, "id_to_piece", None)):  # sentencepiece
        return attempt(lambda: {value.id_to_piece(i): i for i in range(size())})
    return None


def _vocab_diff(golden: dict[str, int], live: dict[str, int]) -> str | None:
    if golden == live:
        return None
    gone = sorted(set(golden) - set(live))
    new = sorted(set(live) - set(golden))
    moved = sorted(t for t in set(golden) & set(live) if golden[t] != live[t])
    parts = []
    if moved:
        shown = ", ".join(f"{t!r} {golden[t]} -> {live[t]}" for t in moved[:VOCAB_EXAMPLES])
        parts.append(f"{len(moved)} of {len(golden)} tokens have other ids (e.g. {shown})")
    if gone:
        parts.append(f"{len(gone)} tokens only in the golden (e.g. {gone[0]!r})")
    if new:
        parts.append(f"{len(new)} tokens only in the live model (e.g. {new[0]!r})")
    return "vocabulary differs: " + "; ".join(parts)


def _digest(value: Any) -> str | None:
    data = attempt(pickle.dumps, value, pickle.DEFAULT_PROTOCOL)
    return None if data is None else hashlib.sha256(data).hexdigest()[:12]


def _leaf_diff(golden: Node, live: Node) -> str | None:
    """How the state at one path differs (None: equal)."""
    a, b = golden.value, live.value
    if is_tensor(a) and is_tensor(b):
        return _tensor_diff(a, b)
    line_change = f"{golden.line} -> {live.line}"
    if type(a) is not type(b):
        return line_change
    if isinstance(a, (str, bytes, bytearray, int, float, complex, bool, type(None))):
        if a == b or (isinstance(a, float) and a != a and b != b):
            return None
        if golden.line == live.line:
            return f"{type(a).__name__} of the same length, other content"
        return line_change
    vocab_a, vocab_b = _vocabulary(a), _vocabulary(b)
    if vocab_a is not None and vocab_b is not None:
        changed = _vocab_diff(vocab_a, vocab_b)
        if changed is not None:
            return changed
    try:
        if _equal(a, b, set(), [_EQUAL_BUDGET]):
            return None
    except Exception:
        pass
    else:
        if isinstance(a, (dict, list, tuple, set, frozenset)):  # too long to walk item by item
            return line_change if golden.line != live.line else f"{golden.line}, contents differ"
    digest_a, digest_b = _digest(a), _digest(b)
    # None: neither comparable nor picklable, the round-trip reports that part
    if digest_a is None or digest_b is None or digest_a == digest_b:
        return None
    return f"pickled state differs (sha256 {digest_a}… -> {digest_b}…)"


_EQUAL_BUDGET = 100_000


def _equal(a: Any, b: Any, seen: set[tuple[int, int]], budget: list[int]) -> bool:
    """``a == b`` for state values, each (a, b) pair of containers compared once: Python's own
    list equality walks shared sub-lists once per path (2**40 times for a 40-level DAG).
    Past the budget the values count as different (the line then says "contents differ")."""
    if a is b:
        return True
    if type(a) is not type(b) or type(a) not in (list, tuple, dict):
        return bool(a == b)
    key = (id(a), id(b))
    if key in seen:
        return True  # compared (or being compared) on another path
    budget[0] -= 1
    if budget[0] < 0:
        return False
    seen.add(key)
    if len(a) != len(b):
        return False
    if type(a) is dict:
        return a.keys() == b.keys() and all(_equal(a[k], b[k], seen, budget) for k in a)
    return all(_equal(x, y, seen, budget) for x, y in zip(a, b, strict=True))


def by_path(walked: Any) -> dict[str, Node]:
    """Path -> node of a walk's structure tree, repeats left out."""
    return {n.path: n for n in walked if n.shown and not n.repeat}


def state_diff(golden: Any, live: Any, root: str = "model", walked: Any = None) -> StateDiff:
    """Compare ``golden``'s state with ``live``'s path by path; see :class:`StateDiff`.
    ``walked``: the live model's :func:`~pytest_modelpack.walk.nodes`, if known."""
    golden_nodes = by_path(nodes(golden, root))
    live_nodes = by_path(nodes(live, root) if walked is None else walked)
    result = StateDiff()
    for path, node in golden_nodes.items():
        other = live_nodes.get(path)
        if other is None:
            result.differing.append(f"{path}: only in the golden ({node.line})")
            continue
        if not node.leaf or not other.leaf:
            if node.leaf != other.leaf or node.line != other.line:
                result.differing.append(f"{path}: {node.line} -> {other.line}")
            continue
        change = _leaf_diff(node, other)
        if change is None:
            result.equal += 1
        else:
            result.differing.append(f"{path}: {change}")
    for path, node in live_nodes.items():
        if path not in golden_nodes:
            result.differing.append(f"{path}: only in the live model ({node.line})")
    return result
