"""The round-trip: dump the live model, load it back in memory, and compare the two.

Each stage is a function of its own, so it can be tested without pytest:

1. :func:`dump_live` — the live model pickled in memory (UNPICKLABLE names the parts that fail,
   and classes that pickle here but load nowhere else);
2. :func:`reload` — unpickled again (LOAD ERROR: the ``__setstate__`` pitfall);
3. :func:`check_state_kept` — the reloaded object's structure against the live one's (LOSSY);
4. :func:`probe_nondeterminism` — the live model run twice on a few inputs (NONDETERMINISTIC);
5. :func:`compare_reloaded` — live vs reloaded on Hypothesis inputs (LOSSY, shrunk).

Tensor storages stay out of band (:mod:`.storages`): the round-trip pickles and unpickles
everything but the weights, which the reloaded model shares with the live one, so a 1 GiB model
costs no extra copy of its weights here. The golden itself is written by plain ``pickle.dump``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from .. import errors
from ..apply import apply_model, placed
from ..compare import compare, describe_differences
from ..diagnose.frames import user_frame
from ..diagnose.loading import load_error
from ..diagnose.lossy import explain_lossy, lost_private_state, setstate_pitfall
from ..diagnose.missing import refuse_unimportable
from ..diagnose.nondeterminism import nondeterminism_hints
from ..diagnose.unpicklable import leaf_name, unpicklable_error
from ..golden.examples import RaisedError
from ..safety import trust_from_pickle
from ..states import Mode
from ..walk import diff_trees, structure_tree
from .explore import hypothesis_settings, run_property
from .request import NONDETERMINISM_PROBES, CheckRequest, CheckResult, short_repr
from .runner import Runner, tolerance_line
from .storages import (
    StoragePickler,
    StorageUnpickler,
    changed_storages,
    storage_fingerprints,
    tensors_at,
)

__all__ = [
    "round_trip",
    "LiveDump",
    "dump_live",
    "reload",
    "check_state_kept",
    "nondeterminism_error",
    "probe_nondeterminism",
    "compare_reloaded",
]


@dataclass
class LiveDump:
    """The live model pickled in memory: what ``pickle.dumps`` writes, except that each torch
    storage is a persistent id (PERSID) indexing :attr:`storages` instead of a nested copy."""

    data: bytes
    storages: list[Any] = field(default_factory=list)
    #: Checksums of the storages' bytes when dumped (see :func:`.storages.storage_fingerprints`).
    fingerprints: dict[Any, Any] = field(default_factory=dict)


def dump_live(request: CheckRequest) -> LiveDump:
    """The live model's pickle; UNPICKLABLE when pickle refuses it or another process could not
    load it."""
    storages: list[Any] = []
    buffer = io.BytesIO()
    try:
        StoragePickler(buffer, storages).dump(request.model)
    except Exception as exc:
        raise unpicklable_error(request.model, exc, request.project_root) from None
    data = buffer.getvalue()
    del buffer
    refuse_unimportable(request.model, data)
    return LiveDump(data, storages, storage_fingerprints(storages) if storages else {})


def reload(request: CheckRequest, dump: LiveDump) -> Any:
    """Unpickle our own dump from this process (trusted); LOAD ERROR on failure, LOSSY when
    loading wrote into the (shared) tensor data."""
    try:
        reloaded = StorageUnpickler(io.BytesIO(dump.data), dump.storages).load()
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


def check_state_kept(request: CheckRequest, reloaded: Any) -> None:
    """LOSSY ROUND-TRIP when the reloaded object lost attributes or nn.Module private state.

    Run before anything is applied: placing a model on a device rebuilds some of torch's caches.
    """
    model, root = request.model, request.project_root
    live_tree = structure_tree(model)
    diff = diff_trees(live_tree, structure_tree(reloaded))
    lost, detail = explain_lossy(model, diff, relative_to=root)
    private, private_detail = lost_private_state(model, reloaded, relative_to=root)
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
        else "call super().__setstate__(state) first in the subclass's __setstate__ (or do "
        "not override it), or make the wrapper a plain class that holds the torch module"
    )
    raise errors.LossyRoundTrip(
        f"{what} {'is' if len(shown) == 1 else 'are'} lost by pickle.dumps -> pickle.loads",
        detail=[*detail, *private_detail],
        fix=fix,
    )


def nondeterminism_error(
    request: CheckRequest, runner: Runner, x: Any, first: Any
) -> errors.ModelpackError | None:
    """NONDETERMINISTIC when the live model, run on ``x`` again, disagrees with ``first``."""
    diffs = compare(first, runner(request.model, x, request.device), exact=True)
    if not diffs:
        return None
    hints = nondeterminism_hints(request.model, relative_to=request.project_root) or [
        "usual causes: a module left in train mode that eval() does not reach, dropout via "
        "torch.nn.functional with training=True, torch.rand* or random.* in "
        "forward/postprocess"
    ]
    return errors.Nondeterministic(
        "the live model gives different outputs for the same input",
        detail=[
            f"input: {short_repr(x)}",
            "expected = first call, got = second call on the same live model",
            *describe_differences(diffs),
            *hints,
            "checked before any comparison with the reloaded model or a golden",
        ],
        fix="make the model deterministic in eval mode (nn.Dropout instead of functional "
        "dropout, no sampling or noise in forward), or seed the randomness inside apply=",
    )


def probe_nondeterminism(request: CheckRequest, runner: Runner) -> None:
    """Run the live model twice on the first few inputs, outside any property, so that a
    disagreement is reported as it is, never shrunk by Hypothesis."""
    from hypothesis import Phase, given

    found: list[errors.ModelpackError] = []

    def probe(x: Any) -> None:
        if not found:
            error = nondeterminism_error(
                request, runner, x, runner(request.model, x, request.device)
            )
            if error is not None:
                found.append(error)

    probes = hypothesis_settings(NONDETERMINISM_PROBES, True, phases=[Phase.generate])
    try:
        probes(given(request.inputs)(probe))()
    except Exception:  # a broken strategy: the property run after this reports it properly
        pass
    if found:
        raise found[0]


def _where_reloaded_fails(request: CheckRequest, reloaded: Any, x: Any) -> tuple[list[str], str]:
    """Run the reloaded model again, uncaught, for the traceback: where in the user's code it
    failed, and the fix when it is the ``__setstate__`` pitfall."""
    fix = (
        "check __getstate__/__setstate__ (and __reduce__) of the model's classes: "
        "state they leave out is rebuilt differently after loading"
    )
    extra: list[str] = []
    try:
        if request.apply is not None:
            request.apply(reloaded, x)
        else:
            apply_model(reloaded, x, device=request.device)
    except Exception as exc:
        frame = user_frame(exc, request.project_root)
        extra = [f"where: {frame}"] if frame else []
        pitfall = setstate_pitfall(exc)
        if pitfall is not None:
            extra.append(pitfall[0])
            fix = pitfall[1]
    return extra, fix


def compare_reloaded(
    request: CheckRequest, runner: Runner, reloaded: Any, result: CheckResult | None = None
) -> int:
    """Live vs reloaded on Hypothesis inputs; returns how many inputs ran.

    ``result``, when given, records each input's error metrics for the report."""
    model, device = request.model, request.device

    def prop(x: Any) -> None:
        live = runner(model, x, device)
        got = runner(reloaded, x, device)
        if result is not None:
            result.record_comparison(
                "reloaded vs live", live, got, exact=True, rtol=request.rtol, atol=request.atol
            )
        diffs = compare(live, got, exact=True, rtol=request.rtol, atol=request.atol)
        if not diffs:
            return
        extra: list[str] = []
        fix = (
            "check __getstate__/__setstate__ (and __reduce__) of the model's classes: "
            "state they leave out is rebuilt differently after loading"
        )
        if isinstance(got, RaisedError) and not isinstance(live, RaisedError):
            extra, fix = _where_reloaded_fails(request, reloaded, x)
        error = nondeterminism_error(request, runner, x, live)
        if error is not None:
            raise error
        raise errors.LossyRoundTrip(
            "the reloaded model disagrees with the live model",
            detail=[
                f"input (minimal, found by Hypothesis): {short_repr(x)}",
                "expected = live model, got = reloaded model",
                *describe_differences(diffs),
                tolerance_line(request.rtol, request.atol, exact=True),
                *extra,
            ],
            fix=fix,
        )

    return run_property(request, prop, derandomize=request.settings.mode == Mode.GOLDEN)


def round_trip(request: CheckRequest, runner: Runner, result: CheckResult | None = None) -> int:
    """Dump the live model, load it back in memory, compare both on Hypothesis inputs."""
    dump = dump_live(request)
    if request.settings.mode is not Mode.ROUNDTRIP:
        # The gate and regen judge the golden by what the live model's own pickle does.
        request.trust = trust_from_pickle(dump.data)
    reloaded = reload(request, dump)
    del dump
    check_state_kept(request, reloaded)
    with placed(request.model, request.device), placed(reloaded, request.device):
        probe_nondeterminism(request, runner)
        return compare_reloaded(request, runner, reloaded, result)
