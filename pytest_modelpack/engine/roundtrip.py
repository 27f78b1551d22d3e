"""The round-trip: dump the live model, load it back in memory, and compare the two.

1. the live model pickled in memory (:attr:`LiveFacts.dump`: UNPICKLABLE names the parts that
   fail, and classes that pickle here but load nowhere else);
2. :func:`reload` — unpickled again (LOAD ERROR: the ``__setstate__`` pitfall);
3. :func:`check_state_kept` — the reloaded object's structure against the live one's (LOSSY);
4. :func:`compare_reloaded` — live vs reloaded on Hypothesis inputs (LOSSY, shrunk); the first
   inputs also run the live model twice (NONDETERMINISTIC, never shrunk).

Tensor storages stay out of band (:mod:`.storages`): the round-trip pickles and unpickles
everything but the weights, which the reloaded model shares with the live one, so a 1 GiB model
costs no extra copy of its weights here. The golden itself is written by plain ``pickle.dump``.
"""

from __future__ import annotations

import io
from typing import Any

from .. import errors
from ..apply import placed
from ..compare import compared, describe_differences
from ..diagnose.frames import user_frame
from ..diagnose.loading import load_error
from ..diagnose.lossy import explain_lossy, lost_private_state, setstate_pitfall
from ..diagnose.nondeterminism import nondeterminism_hints
from ..diagnose.unpicklable import leaf_name
from ..golden.examples import RaisedError
from ..states import Mode
from ..walk import diff_trees, nodes, tree_of
from .facts import LiveFacts
from .request import NONDETERMINISM_PROBES, CheckResult, short_repr
from .runs import Pair, Runner, Side, explore
from .storages import changed_storages, storage_unpickler, tensors_at

SETSTATE_FIX = (
    "check __getstate__/__setstate__ (and __reduce__) of the model's classes: state they leave "
    "out is rebuilt differently after loading"
)


def reload(facts: LiveFacts) -> Any:
    """Unpickle our own dump from this process (trusted); LOAD ERROR on failure, LOSSY when
    loading wrote into the (shared) tensor data."""
    request, dump = facts.request, facts.dump
    if facts.serializer.name != "torch":
        refuse_untyped(facts)
    try:
        unpickler = storage_unpickler(facts.serializer.unpickler_class())
        reloaded = unpickler(io.BytesIO(dump.data), dump.storages).load()
    except Exception as exc:
        raise load_error(
            exc,
            "pickle.loads of the freshly dumped model",
            nodeid=request.nodeid,
            project_root=request.project_root,
        ) from None
    changed = changed_storages(dump.fingerprints, dump.storages) if dump.fingerprints else []
    if changed:
        paths = tensors_at(request.model, changed) or [f"{len(changed)} tensor storage(s)"]
        shown = ", ".join(paths[:3]) + (" ..." if len(paths) > 3 else "")
        raise errors.LossyRoundTrip(
            f"loading the model writes into its tensors: {shown}",
            detail=[
                "code that runs while unpickling (__setstate__, a __reduce__ function) changed "
                "tensor data in place, so a loaded model never has the weights it was saved with",
                *[f"changed: {path}" for path in paths[:10]],
                "the round-trip shares tensor memory between the live and the reloaded model, "
                "so the live model's tensors were changed too: rebuild it before relying on it",
            ],
            fix="do not modify tensors in __setstate__ (or a __reduce__ function): save the "
            "processed weights instead, or process a copy (tensor.clone()) after loading",
        )
    return reloaded


def refuse_untyped(facts: LiveFacts) -> None:
    """LOAD ERROR for a storage pickled untyped (a uint16, uint32 or float8 tensor's, or a bare
    ``UntypedStorage``): pickle.dump writes it, but torch's own loader behind pickle.load fails
    on it (AttributeError: UntypedStorage has no attribute 'dtype'); torch.save reads it back."""
    import torch

    untyped = [s for s in facts.dump.storages if type(s) is torch.UntypedStorage]
    if not untyped:
        return
    keys = {(str(s.device), s.data_ptr()) for s in untyped}
    paths = tensors_at(facts.request.model, keys) or [f"{len(untyped)} untyped storage(s)"]
    raise errors.LoadError(
        f"{facts.serializer.name} writes {', '.join(paths[:3])}"
        + (" ..." if len(paths) > 3 else "")
        + " but its load cannot read it back",
        detail=[
            "torch pickles the storage of a tensor whose dtype has no storage class (uint16, "
            "uint32, uint64, float8 ...) untyped, and torch's loader behind pickle.load fails "
            "on it: AttributeError: type object 'torch.storage.UntypedStorage' has no "
            "attribute 'dtype'",
        ],
        fix="ship it with serializer='torch' (torch.save and torch.load read these dtypes), or "
        "keep such tensors in a dtype pickle reads back (tensor.to(torch.int32), .float())",
    )


def check_state_kept(facts: LiveFacts, reloaded: Any, walked: list[Any]) -> None:
    """LOSSY ROUND-TRIP when the reloaded object (walked: ``walked``) lost attributes or
    nn.Module private state."""
    model, root = facts.request.model, facts.request.project_root
    diff = diff_trees(facts.tree, tree_of(walked))
    lost, detail = explain_lossy(model, diff, relative_to=root, walked=facts.nodes)
    private, private_detail, layer_fix = lost_private_state(
        model, reloaded, root, facts.nodes, walked
    )
    if not (lost or private):
        return
    shown = lost + private
    what = ", ".join(shown[:3]) + (" ..." if len(shown) > 3 else "")
    attrs = ", ".join(dict.fromkeys(repr(leaf_name(p)) for p in lost[:4]))
    fix = (
        f"make __getstate__ save {attrs} and __setstate__ restore it (a value pickle cannot "
        "save, like a lambda, must be rebuilt in __setstate__), or drop the custom "
        "__getstate__/__setstate__"
        if lost
        else layer_fix
        or "call super().__setstate__(state) first in the subclass's __setstate__ (or do "
        "not override it), or make the wrapper a plain class that holds the torch module"
    )
    raise errors.LossyRoundTrip(
        f"{what} {'is' if len(shown) == 1 else 'are'} lost by pickle.dumps -> pickle.loads",
        detail=[*detail, *private_detail],
        fix=fix,
    )


def _where_reloaded_fails(runner: Runner, reloaded: Any, x: Any) -> tuple[list[str], str]:
    """Run the reloaded model again, uncaught, for the traceback: where in the user's code it
    failed, and the fix when it is the ``__setstate__`` pitfall."""
    request = runner.request
    try:
        runner.apply(reloaded, x, request.device)
    except Exception as exc:
        frame = user_frame(exc, request.project_root)
        extra = [f"where: {frame}"] if frame else []
        pitfall = setstate_pitfall(exc)
        if pitfall is not None:
            return [*extra, pitfall[0]], pitfall[1]
        return extra, SETSTATE_FIX
    return [], SETSTATE_FIX


def refuse_nondeterminism(facts: LiveFacts, runner: Runner, x: Any, first: Any) -> None:
    """NONDETERMINISTIC when the live model, run on ``x`` again, disagrees with ``first``."""
    request = facts.request
    diffs = compared(first, runner(request.model, x, request.device), exact=True).diffs
    if not diffs:
        return
    raise errors.Nondeterministic(
        "the live model gives different outputs for the same input",
        detail=[
            f"input: {short_repr(x)}",
            "expected = first call, got = second call on the same live model",
            *describe_differences(diffs),
            *(
                nondeterminism_hints(request.model, request.project_root, facts.nodes)
                or [
                    "usual causes: a module left in train mode that eval() does not reach, "
                    "dropout via torch.nn.functional with training=True, torch.rand* or random.* "
                    "in forward/postprocess"
                ]
            ),
            "checked before any comparison with the reloaded model or a golden",
        ],
        fix="make the model deterministic in eval mode (nn.Dropout instead of functional "
        "dropout, no sampling or noise in forward), or seed the randomness inside apply=",
    )


def compare_reloaded(
    facts: LiveFacts, runner: Runner, reloaded: Any, result: CheckResult | None = None
) -> int:
    """Live vs reloaded on Hypothesis inputs; returns how many inputs ran."""
    request = facts.request
    pair = Pair(
        "reloaded vs live",
        Side(request.model, request.device),
        Side(reloaded, request.device),
        request.rtol,
        request.atol,
        exact=True,
    )

    def probe(x: Any, n: int) -> None:
        if n < NONDETERMINISM_PROBES:
            refuse_nondeterminism(facts, runner, x, runner(request.model, x, request.device))

    derandomize = request.settings.mode is Mode.GOLDEN
    count, found = explore(runner, result, pair, derandomize, before=probe)
    if found is None:
        return count
    refuse_nondeterminism(facts, runner, found.input, found.expected)
    extra: list[str] = []
    fix = SETSTATE_FIX
    if isinstance(found.got, RaisedError) and not isinstance(found.expected, RaisedError):
        extra, fix = _where_reloaded_fails(runner, reloaded, found.input)
    raise errors.LossyRoundTrip(
        "the reloaded model disagrees with the live model",
        detail=[
            f"input (minimal, found by Hypothesis): {short_repr(found.input)}",
            "expected = live model, got = reloaded model",
            *found.lines(),
            found.pair.tolerance_line(),
            *extra,
        ],
        fix=fix,
    )


def round_trip(facts: LiveFacts, runner: Runner, result: CheckResult | None = None) -> int:
    """Dump the live model, load it back in memory, compare both on Hypothesis inputs."""
    request = facts.request
    reloaded = reload(facts)
    walked = list(nodes(reloaded))
    # Before anything is applied: placing a model on a device rebuilds some of torch's caches.
    check_state_kept(facts, reloaded, walked)
    with placed(request.model, request.device, facts.nodes):
        with placed(reloaded, request.device, walked):
            return compare_reloaded(facts, runner, reloaded, result)
