"""The gate (``--modelpack-golden``): verify, scan, load and compare a committed golden.

Writes nothing. The stages: the golden must exist; its manifest is validated and its files'
sizes and sha256 verified; the bundle is scanned (UNSAFE / CORRUPT / renamed code); code and
environment drift are checked against what the golden recorded; the bundle is loaded with the
restricted loader; the recorded examples are replayed on the golden; and golden vs live are
compared on derandomized Hypothesis inputs and on the recorded inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import errors
from ..apply import placed
from ..compare import compare, describe_differences
from ..diagnose.loading import load_error
from ..drift import assess_drift, report_drift
from ..fixes import accept, revert_or_accept
from ..golden import GoldenStore, Manifest
from ..safety import Allowlist, load_bundle, scan_file, verdict_error
from .behaviour import code_change_behaviour, explain_mismatch
from .explore import run_property
from .request import CheckRequest, CheckResult, display_path, short_repr
from .runner import Runner, tolerance_line

__all__ = ["gate", "scan_or_refuse", "replay", "recorded_tolerance", "allowlist_for"]


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


def gate(request: CheckRequest, runner: Runner, result: CheckResult) -> int:
    """Verify, scan, load and compare the committed golden. Writes nothing."""
    store = GoldenStore(
        request.golden_folder,
        request.name,
        nodeid=request.nodeid,
        project_root=request.project_root,
    )
    store.check_paths()
    if not store.exists():
        raise store.missing_error(display_path(request.golden_folder, request.project_root))
    manifest = store.read_manifest()
    store.verify(manifest)
    leftover = store.leftover_warning()
    if leftover:
        result.warnings.append(leftover)
    result.bundle_size = manifest.bundle.size
    allowlist = allowlist_for(request)
    verdict = scan_or_refuse(request, store.bundle_path, allowlist, making=False, manifest=manifest)

    # Fingerprint roots come from the scanned (and allowlisted) bundle, not from the manifest,
    # which no hash covers: nothing the manifest says makes the gate import a module.
    # Names allowed through modelpack_safe_globals count too when they live in a project module
    # (an alias module kept after a move): their code is still the project's.
    roots = [
        (ref.module, ref.qualname)
        for ref in verdict.globals
        if allowlist.check(ref.module, ref.qualname).kind == "project"
        or (
            allowlist.check(ref.module, ref.qualname).kind == "extra"
            and allowlist.classify(ref.module) == "project"
        )
    ]
    drift = assess_drift(
        manifest, roots, name=request.name, nodeid=request.nodeid, project_root=request.project_root
    )
    records = store.read_examples()
    recorded_device = manifest.created_by.device
    rtol, atol = recorded_tolerance(request, recorded_device)
    reference = "cpu" if request.device != "cpu" else request.device
    live_tol = recorded_tolerance(request, reference)
    golden: Any = None
    behaviour: list[str] | None = None
    if drift.code is not None:
        # Whether the change altered behaviour is what a reviewer decides on: load the golden
        # anyway (today's code) and compare, before CODE DRIFT is raised or warned.
        try:
            golden = load_golden(request, store, allowlist, manifest)
        except errors.ModelpackError as exc:
            behaviour = [f"behaviour: not compared, the golden does not load: {exc.headline}"]
        else:
            behaviour = code_change_behaviour(
                request, runner, golden, records, (rtol, atol), live_tol
            )
    drift_warnings = report_drift(
        drift,
        name=request.name,
        nodeid=request.nodeid,
        policy=request.settings.drift,
        behaviour=behaviour,
    )
    result.warnings.extend(drift_warnings)
    if golden is None:
        golden = load_golden(request, store, allowlist, manifest)

    env_note = list(drift_warnings)  # changed versions or tolerated code drift explain a mismatch
    checked = 0
    with placed(golden, request.device):
        checked += replay(
            runner,
            golden,
            request.device,
            records,
            (rtol, atol),
            "the golden no longer reproduces recorded example #{index}",
            [
                "expected = recorded in examples.json, got = golden loaded today",
                *env_note,
                "the golden's data is unchanged, so the code it runs (or the environment) changed",
            ],
            revert_or_accept(request.nodeid),
            lambda e, g: result.record_comparison(
                "golden vs recorded examples", e, g, exact=False, rtol=rtol, atol=atol
            ),
        )

        def prop(x: Any) -> None:
            expected = runner(golden, x, request.device)
            got = runner(request.model, x, reference)
            result.record_comparison(
                "golden vs live", expected, got, exact=False, rtol=live_tol[0], atol=live_tol[1]
            )
            diffs = compare(expected, got, exact=False, rtol=live_tol[0], atol=live_tol[1])
            if diffs:
                raise errors.OutputMismatch(
                    "the live model disagrees with the golden",
                    detail=[
                        f"input (minimal, found by Hypothesis): {short_repr(x)}",
                        "expected = golden, got = live model",
                        *describe_differences(diffs),
                        tolerance_line(live_tol[0], live_tol[1], exact=False),
                        *env_note,
                    ],
                    fix=accept(request.nodeid),
                )

        with placed(request.model, reference):
            try:
                checked += run_property(request, prop, derandomize=True)
                checked += replay(
                    runner,
                    request.model,
                    reference,
                    records,
                    (rtol, atol),
                    "the live model disagrees with recorded example #{index}",
                    ["expected = recorded in examples.json, got = live model", *env_note],
                    accept(request.nodeid),
                    lambda e, g: result.record_comparison(
                        "live vs recorded examples", e, g, exact=False, rtol=rtol, atol=atol
                    ),
                )
            except errors.OutputMismatch as exc:
                # Golden and live differ: say where their state differs, and whether the
                # fixture itself is what changed.
                raise explain_mismatch(exc, request, golden, drift.clean, result) from None
    return checked


def load_golden(
    request: CheckRequest, store: GoldenStore, allowlist: Allowlist, manifest: Manifest
) -> Any:
    """Load the scanned bundle with the restricted loader; LOAD ERROR when it does not load."""
    try:
        return load_bundle(store.open_verified_bundle(), allowlist, map_location=request.device)
    except errors.ModelpackError:
        raise
    except Exception as exc:
        raise load_error(
            exc,
            "bundle.pkl (golden)",
            nodeid=request.nodeid,
            project_root=request.project_root,
            manifest=manifest,
        ) from None
