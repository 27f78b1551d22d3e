"""The gate (``--modelpack-golden``): verify, scan, load and compare a committed golden.

Writes nothing. The stages: the golden must exist; its manifest is validated and its files'
sizes and sha256 verified; the bundle is scanned (UNSAFE / CORRUPT / renamed code); code and
environment drift are checked against what the golden recorded; the bundle is loaded with the
restricted loader; the recorded examples are replayed on the golden; and golden vs live are
compared on derandomized Hypothesis inputs and on the recorded inputs.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .. import errors
from ..apply import placed
from ..compare import compare, describe_differences
from ..diagnose.loading import load_error
from ..drift import Drift, assess_drift, report_drift
from ..fixes import accept, regen_command, restore_or_regen, revert_or_accept
from ..golden import GoldenStore, Manifest
from ..golden.examples import Example
from ..golden.integrity import deferred_spans
from ..safety import Allowlist, load_bundle, scan_file, verdict_error
from ..walk import structure_tree
from .behaviour import code_change_behaviour, explain_mismatch
from .explore import run_property
from .request import CheckRequest, CheckResult, display_path, short_repr
from .runner import Runner, tolerance_line

__all__ = [
    "OpenedGolden",
    "Tolerances",
    "allowlist_for",
    "compare_with_live",
    "gate",
    "judge_drift",
    "load_golden",
    "open_golden",
    "project_roots",
    "recorded_tolerance",
    "refuse_planted_callables",
    "replay",
    "replay_on_golden",
    "scan_or_refuse",
    "store_for",
]


def allowlist_for(request: CheckRequest) -> Allowlist:
    """The policy for this check's golden: built-in ∪ the live model's own pickle ∪ the ini."""
    return Allowlist(request.project_root, request.settings.safe_globals, trust=request.trust)


def scan_or_refuse(
    request: CheckRequest,
    path: Path,
    allowlist: Allowlist,
    making: bool,
    manifest: Manifest | None = None,
) -> Any:
    """Scan ``path``; CORRUPT, LOAD ERROR (renamed code) or UNSAFE GOLDEN when it must not load."""
    verdict = scan_file(path, allowlist)
    error = verdict_error(
        verdict,
        nodeid=request.nodeid,
        making=making,
        shown=display_path(path.parent, request.project_root),
        missing_error=lambda missing: load_error(
            None,
            "bundle.pkl (golden), read by the safety scan",
            nodeid=request.nodeid,
            project_root=request.project_root,
            manifest=manifest,
            missing=[(ref.module, ref.qualname) for ref in missing],
        ),
    )
    if error is not None:
        raise error
    return verdict


def recorded_tolerance(request: CheckRequest, recorded_device: str | None) -> tuple[Any, Any]:
    if request.rtol is not None or request.atol is not None:
        return request.rtol, request.atol
    if recorded_device is not None and recorded_device != request.device:
        return request.settings.device_rtol, request.settings.device_atol
    return request.settings.rtol, request.settings.atol


def replay(
    runner: Runner,
    model: Any,
    device: str,
    records: list[Any],
    tolerance: tuple[float | None, float | None],
    summary: str,
    context: list[str],
    fix: str,
    on_compare: Callable[[Any, Any], None] | None = None,
) -> int:
    """Run ``model`` on each recorded input; the first output that differs is OUTPUT MISMATCH.

    ``on_compare(expected, got)`` sees every pair compared (the report's error metrics)."""
    rtol, atol = tolerance
    for index, record in enumerate(records):
        got = runner(model, record.input, device)
        if on_compare is not None:
            on_compare(record.output, got)
        diffs = compare(record.output, got, exact=False, rtol=rtol, atol=atol)
        if diffs:
            raise errors.OutputMismatch(
                summary.format(index=index),
                detail=[
                    f"input: {short_repr(record.input)}",
                    *context[:1],
                    *describe_differences(diffs),
                    tolerance_line(rtol, atol, exact=False),
                    *context[1:],
                ],
                fix=fix,
            )
    return len(records)


@dataclasses.dataclass
class OpenedGolden:
    """A committed golden whose manifest, files and pickle passed every check before loading."""

    store: GoldenStore
    manifest: Manifest
    records: list[Example]
    allowlist: Allowlist
    #: The project (module, qualname) pairs the scanned bundle references: drift's roots.
    roots: list[tuple[str, str]]


@dataclasses.dataclass(frozen=True)
class Tolerances:
    """``(rtol, atol)`` against the recorded examples, and against the live model."""

    recorded: tuple[float | None, float | None]
    live: tuple[float | None, float | None]
    #: Where the live model runs: the CPU, the reference every other device is compared with.
    reference: str


def store_for(request: CheckRequest) -> GoldenStore:
    return GoldenStore(
        request.golden_folder,
        request.name,
        nodeid=request.nodeid,
        project_root=request.project_root,
    )


def open_golden(
    request: CheckRequest, result: CheckResult, store: GoldenStore | None = None
) -> OpenedGolden:
    """Stages 1–2: the golden exists inside the project, its manifest is valid, its files match
    their sha256 and the bundle passes the safety scan. Nothing is loaded or imported yet.

    A big bundle's tensor data is hashed in the background (``store.verify(defer=True)``);
    every other byte is verified here, so the scan reads verified bytes whenever the storages lie
    where the manifest says (else the whole file is verified before anything loads). Run the
    check inside ``store.settled()``, as :func:`gate` does; :func:`load_golden` waits for the
    hash before the golden runs."""
    store = store or store_for(request)
    store.check_paths()
    if not store.exists():
        raise store.missing_error(display_path(request.golden_folder, request.project_root))
    with store.reading():  # one golden's files, even beside a concurrent regen
        manifest = store.read_manifest()
        store.verify(manifest, defer=True)
        leftover = store.leftover_warning()
        if leftover:
            result.warnings.append(leftover)
        result.bundle_size = manifest.bundle.size
        allowlist = allowlist_for(request)
        verdict = scan_or_refuse(
            request, store.bundle_path, allowlist, making=False, manifest=manifest
        )
        spans = manifest.bundle.storages
        if spans is not None and deferred_spans(verdict.storages) != spans:
            # The manifest's spans are not where the scan found the storages: the bytes read as
            # the pickle may not all have been verified yet. Nothing loads before they are.
            store.settle()
        records = store.read_examples()
    return OpenedGolden(
        store=store,
        manifest=manifest,
        records=records,
        allowlist=allowlist,
        roots=project_roots(verdict.globals, allowlist),
    )


def project_roots(refs: Any, allowlist: Allowlist) -> list[tuple[str, str]]:
    """Fingerprint roots: the project globals of the scanned (and allowed) bundle.

    They come from the bundle, not from the manifest, which no hash covers: nothing the manifest
    says makes the gate import a module. Names allowed through ``modelpack_safe_globals`` count
    too when they live in a project module (an alias module kept after a move): their code is
    still the project's.
    """
    roots = []
    for ref in refs:
        kind = allowlist.check(ref.module, ref.qualname).kind
        if kind == "project" or (kind == "extra" and allowlist.classify(ref.module) == "project"):
            roots.append((ref.module, ref.qualname))
    return roots


def tolerances_for(request: CheckRequest, manifest: Manifest) -> Tolerances:
    reference = "cpu" if request.device != "cpu" else request.device
    return Tolerances(
        recorded=recorded_tolerance(request, manifest.created_by.device),
        live=recorded_tolerance(request, reference),
        reference=reference,
    )


def judge_drift(
    request: CheckRequest,
    runner: Runner,
    opened: OpenedGolden,
    tolerances: Tolerances,
    result: CheckResult,
) -> tuple[Any, Drift, list[str]]:
    """Stage 3: code and environment drift. Returns the golden when it was loaded to judge a code
    change (else None), the drift, and the notes that explain a later mismatch.

    Raises CODE DRIFT (with the behaviour verdict) unless ``modelpack_drift = warn``.
    """
    drift = assess_drift(
        opened.manifest,
        opened.roots,
        name=request.name,
        nodeid=request.nodeid,
        project_root=request.project_root,
    )
    golden: Any = None
    behaviour: list[str] | None = None
    if drift.code is not None:
        # Whether the change altered behaviour is what a reviewer decides on: load the golden
        # anyway (today's code) and compare, before CODE DRIFT is raised or warned.
        try:
            golden = load_golden(request, opened)  # timed as part of "drift"
        except errors.ModelpackError as exc:
            behaviour = [f"behaviour: not compared, the golden does not load: {exc.headline}"]
        else:
            behaviour = code_change_behaviour(
                request, runner, golden, opened.records, tolerances.recorded, tolerances.live
            )
    notes = report_drift(
        drift,
        name=request.name,
        nodeid=request.nodeid,
        policy=request.settings.drift,
        behaviour=behaviour,
    )
    result.warnings.extend(notes)
    return golden, drift, notes


def replay_on_golden(
    request: CheckRequest,
    runner: Runner,
    golden: Any,
    opened: OpenedGolden,
    tolerances: Tolerances,
    notes: list[str],
    result: CheckResult,
) -> int:
    """Stage 5: the golden loaded today must reproduce the outputs recorded in examples.json."""
    rtol, atol = tolerances.recorded
    if notes:  # code or environment changed: that is what the golden's outputs show
        why = "the golden's data is unchanged, so the code it runs (or the environment) changed"
        fix = revert_or_accept(request.nodeid)
    else:  # neither changed: the golden's own files disagree with each other
        why = (
            "neither the code nor the environment changed since the golden was made, so its "
            "files disagree: bundle.pkl or examples.json was edited or mixed up after regen"
        )
        fix = restore_or_regen(
            request.nodeid, display_path(opened.store.folder, request.project_root)
        )
    return replay(
        runner,
        golden,
        request.device,
        opened.records,
        tolerances.recorded,
        "the golden no longer reproduces recorded example #{index}",
        ["expected = recorded in examples.json, got = golden loaded today", *notes, why],
        fix,
        lambda e, g: result.record_comparison(
            "golden vs recorded examples", e, g, exact=False, rtol=rtol, atol=atol
        ),
    )


def compare_with_live(
    request: CheckRequest,
    runner: Runner,
    golden: Any,
    opened: OpenedGolden,
    tolerances: Tolerances,
    notes: list[str],
    result: CheckResult,
) -> int:
    """Stage 6: golden vs live on derandomized Hypothesis inputs, then the live model on the
    recorded inputs. The caller has placed the golden on the test's device."""
    live_rtol, live_atol = tolerances.live
    rtol, atol = tolerances.recorded
    reference = tolerances.reference

    def prop(x: Any) -> None:
        expected = runner(golden, x, request.device)
        got = runner(request.model, x, reference)
        result.record_comparison(
            "golden vs live", expected, got, exact=False, rtol=live_rtol, atol=live_atol
        )
        diffs = compare(expected, got, exact=False, rtol=live_rtol, atol=live_atol)
        if diffs:
            raise errors.OutputMismatch(
                "the live model disagrees with the golden",
                detail=[
                    f"input (minimal, found by Hypothesis): {short_repr(x)}",
                    "expected = golden, got = live model",
                    *describe_differences(diffs),
                    tolerance_line(live_rtol, live_atol, exact=False),
                    *notes,
                ],
                fix=accept(request.nodeid),
            )

    checked = 0
    with placed(request.model, reference):
        checked += run_property(request, prop, derandomize=True)
        checked += replay(
            runner,
            request.model,
            reference,
            opened.records,
            tolerances.recorded,
            "the live model disagrees with recorded example #{index}",
            ["expected = recorded in examples.json, got = live model", *notes],
            accept(request.nodeid),
            lambda e, g: result.record_comparison(
                "live vs recorded examples", e, g, exact=False, rtol=rtol, atol=atol
            ),
        )
    return checked


def gate(
    request: CheckRequest, runner: Runner, result: CheckResult, store: GoldenStore | None = None
) -> int:
    """Verify, scan, load and compare the committed golden. Writes nothing.

    ``store``: the golden's store, if :func:`run_check` made it (and prefetched the bundle's
    hash). Returns how many inputs were checked (recorded replays and Hypothesis inputs).
    """
    store = store or store_for(request)
    # A big bundle's tensor data is hashed while the check runs: no verdict before it matches.
    with store.settled():
        with result.timed("verify_scan"):
            opened = open_golden(request, result, store)
        tolerances = tolerances_for(request, opened.manifest)
        with result.timed("drift"):
            golden, drift, notes = judge_drift(request, runner, opened, tolerances, result)
        if golden is None:
            golden = load_golden(request, opened, result)  # stage 4
        with placed(golden, request.device), result.timed("compare"):
            checked = replay_on_golden(request, runner, golden, opened, tolerances, notes, result)
            try:
                checked += compare_with_live(
                    request, runner, golden, opened, tolerances, notes, result
                )
            except errors.OutputMismatch as exc:
                # Golden and live differ: say where their state differs, and whether the fixture
                # itself is what changed.
                raise explain_mismatch(exc, request, golden, drift.clean, result) from None
    return checked


def load_golden(
    request: CheckRequest, opened: OpenedGolden, result: CheckResult | None = None
) -> Any:
    """Stage 4: load the scanned bundle with the restricted loader; LOAD ERROR when it does not
    load (renamed or moved code, a ``__setstate__`` that no longer accepts the old state).
    ``result`` notes the seconds spent (``sha256_wait``, ``load``)."""
    timed = result.timed if result is not None else _untimed
    # Loading runs code on the golden's tensor data (a trusted __setstate__, a project class's
    # REDUCE) and the golden runs it from then on: a damaged number could make it loop, allocate
    # or (on CUDA) assert without end. Their hash, started at the test's setup, must match
    # first; the build itself takes about 0.01 s at any size.
    with timed("sha256_wait"):
        opened.store.settle()
    with timed("load"):
        return _load(request, opened)


@contextlib.contextmanager
def _untimed(stage: str) -> Iterator[None]:
    yield


def _load(request: CheckRequest, opened: OpenedGolden) -> Any:
    try:
        # The bundle verified in open_golden, mapped once: its storages are views of the file.
        golden = load_bundle(
            opened.store.open_verified_bundle(), opened.allowlist, map_location=request.device
        )
    except errors.ModelpackError:
        raise
    except Exception as exc:
        raise load_error(
            exc,
            "bundle.pkl (golden)",
            nodeid=request.nodeid,
            project_root=request.project_root,
            manifest=opened.manifest,
        ) from None
    refuse_planted_callables(request, opened, golden)
    return golden


def refuse_planted_callables(request: CheckRequest, opened: OpenedGolden, golden: Any) -> None:
    """UNSAFE GOLDEN when the loaded golden holds a function or class where the live model does
    not: the model's own code would call it (``self.tokenizer(x)`` with ``x`` from examples.json,
    which the attacker writes too). Checked before the golden runs at all."""
    live = structure_tree(request.model)
    planted = [
        (path, line, live.get(path))
        for path, line in structure_tree(golden).items()
        if line.startswith(("function ", "class ")) and live.get(path) != line
    ]
    if not planted:
        return
    shown = display_path(opened.store.folder, request.project_root)
    raise errors.UnsafeGolden(
        f"the golden holds {len(planted)} function(s) or class(es) the live model does not "
        "hold there; nothing from the golden was run",
        detail=[
            f"{path}: {line} (the live model has {was or 'nothing'} there)"
            for path, line, was in planted[:10]
        ],
        fix=f"if you changed these attributes on purpose, regenerate the golden: "
        f"{regen_command(request.nodeid)}; otherwise do not trust this file: restore it from "
        f"version control (git checkout -- {shown})",
    )
