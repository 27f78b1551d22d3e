"""The gate (``--modelpack-golden``): verify, scan, load and compare a committed golden.

Writes nothing. The stages, on one :class:`Gate` context: :func:`open_golden` (the golden exists,
its manifest is valid, its files match their sha256, the bundle passes the safety scan);
:func:`judge_drift` (code and environment against what the golden recorded; a code change is
judged by its behaviour); :func:`load_golden` (the restricted loader); :func:`compare_golden`
(the recorded examples replayed on the golden, golden vs live on derandomized Hypothesis inputs,
the live model on the recorded inputs).
"""

from __future__ import annotations

import dataclasses
import os
import platform
from pathlib import Path
from typing import Any

from .. import errors
from ..apply import placed
from ..diagnose.loading import load_error
from ..diagnose.reproducibility import explain_state_difference
from ..drift import Drift, assess_drift, report_drift
from ..fixes import accept, regen_command, restore_or_regen, revert_or_accept
from ..golden import GoldenStore, Manifest
from ..golden.examples import Example
from ..golden.integrity import deferred_spans
from ..safety import Allowlist, load_bundle, scan_file, verdict_error
from ..safety.byvalue import CELL_MAKERS, is_pinned
from ..safety.scan import scan_stream
from ..statediff import state_diff
from ..walk import Node, nodes, tree_of
from .facts import LiveFacts
from .request import CheckRequest, CheckResult, display_path, short_repr
from .runs import Found, Pair, Runner, Side, explore, replay

PRESERVING = "the change looks behaviour-preserving"


def scan_or_refuse(
    request: CheckRequest,
    path: Path,
    allowlist: Allowlist,
    making: bool,
    manifest: Manifest | None = None,
    mapped: Any = None,
    pinned: list[Any] | None = None,
) -> Any:
    """Scan ``path`` (read from ``mapped``, its verified mapping, when given: the file is not
    opened again); CORRUPT, LOAD ERROR (renamed code) or UNSAFE GOLDEN when it must not load.

    ``pinned``: when every refusal is by-value code that differs from today's (see
    :func:`pinned_code_changes`), the UNSAFE GOLDEN is appended there instead of raised: the
    drift verdict decides whether it is the code drift the manifest shows."""
    if mapped is not None:
        mapped.seek(0)
        verdict = scan_stream(mapped, allowlist, os.fspath(path), whole_file=True)
        mapped.seek(0)
    else:
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
        if pinned is not None and pinned_code_changes(verdict):
            pinned.append(error)
            return verdict
        raise error
    return verdict


def pinned_code_changes(verdict: Any) -> list[str]:
    """The qualnames of the by-value code objects (``class <name>`` of the classes) the scan
    refused only because today's code differs (none when anything else was refused)."""
    if verdict.error is not None or not verdict.refused:
        return []
    names = []
    for ref, _ in verdict.refused:
        if ref.problem is not None or not (
            is_pinned(ref) or (ref.module, ref.qualname) in CELL_MAKERS  # (a cell of such code)
        ):
            return []
        if not (ref.shape or "").startswith(("code:", "class:")):
            continue  # an instance of a refused class
        kind, name = (ref.shape or "").split(":")[:2]
        names.append(f"class {name}" if kind == "class" else name)
    return names


def recorded_tolerance(request: CheckRequest, recorded_device: str | None) -> tuple[Any, Any]:
    if request.rtol is not None or request.atol is not None:
        return request.rtol, request.atol
    if recorded_device is not None and recorded_device != request.device:
        return request.settings.device_rtol, request.settings.device_atol
    return request.settings.rtol, request.settings.atol


def store_for(request: CheckRequest) -> GoldenStore:
    store = GoldenStore(
        request.golden_folder,
        request.name,
        nodeid=request.nodeid,
        project_root=request.project_root,
        serializer=request.settings.serializer,
    )
    store.manifest_seen = request.manifest_seen
    return store


@dataclasses.dataclass
class Gate:
    """One gate check: the live model's facts, the committed golden as it was read, and what
    the stages found so far."""

    facts: LiveFacts
    runner: Runner
    result: CheckResult
    store: GoldenStore
    manifest: Manifest
    records: list[Example]
    #: The project (module, qualname) pairs the scanned bundle references: drift's roots.
    roots: list[tuple[str, str]]
    #: The policy the golden is judged by: the live model's trust at the golden's protocol.
    allowlist: Allowlist
    golden: Any = None
    golden_nodes: list[Node] | None = None
    drift: Drift | None = None
    #: Lines that explain a later mismatch (code or environment drift).
    notes: list[str] = dataclasses.field(default_factory=list)
    #: The golden's own comparisons, when the drift verdict already ran them.
    replayed: Found | None | bool = False
    explored: tuple[int, Found | None] | None = None
    #: By-value code of the golden that differs from today's: (its UNSAFE GOLDEN, qualnames).
    pinned: tuple[errors.ModelpackError, list[str]] | None = None
    #: ``--modelpack-trust-golden-code``: the golden's own by-value code that differs from
    #: today's and was built (its qualnames): the golden runs its old code.
    golden_code: list[str] = dataclasses.field(default_factory=list)

    @property
    def request(self) -> CheckRequest:
        return self.facts.request

    #: Where the live model runs: the CPU, the reference every other device is compared with.
    reference = "cpu"

    def pairs(self) -> tuple[Pair, Pair, Pair]:
        """Golden vs its recorded examples; golden vs live; live vs the recorded examples."""
        request = self.request
        recorded = recorded_tolerance(request, self.manifest.created_by.device)
        live_tol = recorded_tolerance(request, self.reference)
        golden = Side(self.golden, request.device)
        live = Side(request.model, self.reference)
        return (
            Pair("golden vs recorded examples", None, golden, *recorded),
            Pair("golden vs live", golden, live, *live_tol),
            Pair("live vs recorded examples", None, live, *recorded),
        )


def open_golden(
    facts: LiveFacts, runner: Runner, result: CheckResult, store: GoldenStore | None = None
) -> Gate:
    """The golden exists inside the project, its manifest is valid, its files match their
    sha256 and the bundle passes the safety scan. Nothing is loaded or imported yet.

    A big bundle's tensor data is hashed in the background (``store.verify(defer=True)``);
    every other byte is verified here, so the scan reads verified bytes whenever the storages lie
    where the manifest says (else the whole file is verified before anything loads). Run the
    check inside ``store.settled()``, as :func:`gate` does; :func:`load_golden` waits for the
    hash before the golden runs."""
    request = facts.request
    store = store or store_for(request)
    store.check_paths()
    if not store.exists():
        raise store.missing_error(display_path(request.golden_folder, request.project_root))
    with store.reading():  # one golden's files, even beside a concurrent regen
        manifest = store.read_manifest()
        refuse_other_serializer(request, store, manifest)
        store.verify(manifest, defer=True)
        leftover = store.leftover_warning()
        if leftover:
            result.warnings.append(leftover)
        result.bundle_size = manifest.bundle.size
        mapping = store.open_verified_bundle().mapping
        allowlist = facts.allowlist_for(golden_protocol(manifest, mapping[:2]))
        pinned: list[Any] = []
        verdict = scan_or_refuse(
            request,
            store.bundle_path,
            allowlist,
            making=False,
            manifest=manifest,
            mapped=mapping,
            pinned=pinned,
        )
        spans = manifest.bundle.storages
        if spans is not None and deferred_spans(verdict.storages) != spans:
            # The manifest's spans are not where the scan found the storages: the bytes read as
            # the pickle may not all have been verified yet. Nothing loads before they are.
            store.settle()
        records = store.read_examples()
    roots = project_roots(verdict, allowlist)
    roots += [root for root in facts.pinned_roots if root not in roots]
    context = Gate(facts, runner, result, store, manifest, records, roots, allowlist)
    if pinned:
        context.pinned = (pinned[0], pinned_code_changes(verdict))
    context.golden_code = sorted(
        {
            (ref.shape or "code:?:").split(":")[1]
            for ref in verdict.uses
            if is_pinned(ref)
            and not allowlist.trust.allows(ref.module, ref.qualname, ref.role, ref.shape)
        }
    )
    if context.golden_code and not pinned:  # (a refused class: nothing of the golden is built)
        result.warnings.append(
            "--modelpack-trust-golden-code: the golden's own pinned code was built and runs "
            "where it differs from today's (trust this golden's branch)"
        )
    return context


def refuse_other_serializer(request: CheckRequest, store: GoldenStore, manifest: Manifest) -> None:
    """USAGE ERROR when the golden was written by another serializer than the check asks for:
    a golden is judged, loaded and compared as what it is, never guessed at."""
    wrote, asked = manifest.serializer_name, request.settings.serializer
    if wrote == asked:
        return
    shown = display_path(store.folder, request.project_root)
    raise errors.UsageError(
        f"the golden {shown} was written with {wrote}, this check asks for {asked}",
        name=request.name,
        detail=[
            f"manifest.json: serializer {wrote} ({manifest.bundle.file}); "
            f"the check: serializer={asked!r} (modelpack_serializer or the marker)",
        ],
        fix=f"to switch to {asked}, regenerate it: {regen_command(request.nodeid)}; to keep "
        f"the golden, ask for serializer={wrote!r}",
    )


def golden_protocol(manifest: Manifest, head: bytes) -> int | None:
    """The pickle protocol the golden's pickle was written at: inside a torch.save zip, the one
    torch writes (the manifest's; only the live trust's variant depends on it), else the
    bundle's own first bytes."""
    if manifest.serializer_name == "torch":
        return manifest.bundle.protocol
    # The PROTO opcode of the first two bytes (none: protocol 0 or 1, read as 1); None for what
    # is no pickle (the scan then says what it is).
    if len(head) == 2 and head[0] == 0x80:
        return head[1] if head[1] <= 5 else None
    return 1 if head else None


def project_roots(verdict: Any, allowlist: Allowlist) -> list[tuple[str, str]]:
    """Fingerprint roots: the project globals of the scanned (and allowed) bundle.

    They come from the bundle, not from the manifest, which no hash covers: nothing the manifest
    says makes the gate import a module. Names allowed through ``modelpack_safe_globals`` count
    too when they live in a project module (an alias module kept after a move): their code is
    still the project's.
    """
    roots = []
    for ref in verdict.globals:
        kind = allowlist.check(ref.module, ref.qualname).kind
        if kind == "project" or (kind == "extra" and allowlist.classify(ref.module) == "project"):
            roots.append((ref.module, ref.qualname))
    return roots


def judge_drift(gate: Gate) -> None:
    """Code and environment drift: CODE DRIFT (with the behaviour verdict) unless
    ``modelpack_drift = warn``; the notes that explain a later mismatch."""
    request = gate.request
    gate.drift = drift = assess_drift(
        gate.manifest,
        gate.roots,
        name=request.name,
        nodeid=request.nodeid,
        project_root=request.project_root,
    )
    behaviour: list[str] | None = None
    policy = request.settings.drift
    if gate.pinned is not None:
        refused, names = gate.pinned
        shown = ", ".join(sorted(set(names))[:3])
        if drift.code is None:
            made = (gate.manifest.environment or {}).get("python")
            today = platform.python_version()
            if made and made.split(".")[:2] != today.split(".")[:2]:
                raise errors.EnvDrift(
                    f"the golden pins code by value compiled by Python {made}; this is Python "
                    f"{today}",
                    name=request.name,
                    detail=[
                        "dill and cloudpickle store a function's bytecode, which differs between "
                        "Python versions: the gate builds only code identical to today's",
                        f"pinned code: {shown}",
                    ],
                    fix=f"run the gate on Python {'.'.join(made.split('.')[:2])}, or regenerate "
                    f"the golden on this Python: {regen_command(request.nodeid)}",
                )
            if drift.moved:  # the module renamed, the source kept: the bytes name the old one
                raise errors.CodeDrift(
                    f"{len(drift.moved)} unit(s) of pinned code moved since the golden was made",
                    name=request.name,
                    detail=[
                        *drift.moved,
                        "same source, another module: the golden pins this code by value "
                        "together with its old module name, so its bytes are no longer what "
                        "today's code pickles to; nothing of the golden was built",
                    ],
                    fix=revert_or_accept(request.nodeid),
                )
            raise refused  # code no source change explains: never built, never run
        behaviour = [
            f"behaviour: not compared: the golden pins its own code by value ({shown}), which "
            "differs from today's, and the gate never runs a golden's own code unless asked",
            "  to compare the golden's code with today's on the same inputs (for a golden from "
            "a trusted branch): rerun with --modelpack-trust-golden-code",
        ]
        if any(name.startswith("class ") for name in names):
            behaviour[1] = (
                "  a class is never built from a golden, even with --modelpack-trust-golden-code "
                "(its metaclass, and its instances' own methods, would run while it loads)"
            )
        policy = "fail"  # the golden's own code is never run: CODE DRIFT, whatever the ini says
    elif drift.code is not None:
        # Whether the change altered behaviour is what a reviewer decides on: load the golden
        # anyway (today's code) and compare, before CODE DRIFT is raised or warned.
        try:
            load_golden(gate)
        except errors.ModelpackError as exc:
            behaviour = [f"behaviour: not compared, the golden does not load: {exc.headline}"]
        else:
            behaviour = code_change_behaviour(gate)
    gate.notes = report_drift(
        drift, name=request.name, nodeid=request.nodeid, policy=policy, behaviour=behaviour
    )
    gate.result.warnings.extend(gate.notes)


def code_change_behaviour(gate: Gate) -> list[str]:
    """Lines for the CODE DRIFT detail; the first is the verdict.

    Only the recorded examples can show what the code change did: their outputs were made by the
    golden's code, and the golden run today runs today's code on the same state. Golden vs live on
    Hypothesis inputs then shows the live model still builds that state, so the verdict carries
    over to the inputs the live model sees. The gate reuses both comparisons.
    """
    request, records = gate.request, gate.records
    recorded, live, _ = gate.pairs()
    with placed(gate.golden, request.device, gate.golden_nodes):
        gate.replayed = found = replay(gate.runner, gate.result, recorded, records)
        if found is not None:
            return [
                f"behaviour: outputs changed on recorded example #{found.index} — the change "
                "alters behaviour",
                f"  input: {short_repr(found.input)}",
                "  expected = recorded with the golden's code, got = today's code on the "
                "golden's state",
                *found.lines("  "),
            ]
        with placed(request.model, gate.reference, gate.facts.nodes):
            try:
                gate.explored = explore(gate.runner, gate.result, live, True)
            except errors.ModelpackError as exc:
                return [f"behaviour: not compared on Hypothesis inputs: {exc.headline}"]
    checked, found = gate.explored
    if found is not None and gate.golden_code:
        return [
            "behaviour: the golden's own pinned code and today's code disagree on a "
            "Hypothesis input — the change alters behaviour",
            f"  input (found by Hypothesis): {short_repr(found.input)}",
            f"  expected = golden (its pinned code: {', '.join(gate.golden_code[:3])}), got = "
            "live model (today's code)",
            *found.lines("  "),
        ]
    if found is not None:
        return [
            f"behaviour: outputs unchanged on {len(records)} recorded input(s), but the live "
            "model disagrees with the golden on a Hypothesis input — the state the fixture "
            "builds changed too",
            f"  input (found by Hypothesis): {short_repr(found.input)}",
            "  expected = golden, got = live model (both run today's code)",
            *found.lines("  "),
        ]
    return [
        f"behaviour: outputs unchanged on {len(records) + checked} inputs ({len(records)} "
        f"recorded, {checked} from Hypothesis) — {PRESERVING}"
    ]


def load_golden(gate: Gate) -> Any:
    """The scanned bundle, loaded with the restricted loader (once); LOAD ERROR when it does not
    load (renamed or moved code, a ``__setstate__`` that no longer accepts the old state)."""
    if gate.golden is not None:
        return gate.golden
    request, timed = gate.request, gate.result.timed
    # Loading runs code on the golden's tensor data (a trusted __setstate__, a project class's
    # REDUCE) and the golden runs it from then on: a damaged number could make it loop, allocate
    # or (on CUDA) assert without end. Their hash, started at the test's setup, must match
    # first; the build itself takes about 0.01 s at any size.
    with timed("sha256_wait"):
        gate.store.settle()
    with timed("load"):
        try:
            # The bundle verified in open_golden, mapped once: its storages are views of it.
            golden = load_bundle(
                gate.store.open_verified_bundle(), gate.allowlist, map_location=request.device
            )
        except errors.ModelpackError:
            raise
        except Exception as exc:
            raise load_error(
                exc,
                "bundle.pkl (golden)",
                nodeid=request.nodeid,
                project_root=request.project_root,
                manifest=gate.manifest,
            ) from None
        gate.golden_nodes = list(nodes(golden))
        refuse_planted_callables(gate)
    gate.golden = golden
    return golden


def refuse_planted_callables(gate: Gate) -> None:
    """UNSAFE GOLDEN when the loaded golden holds a function or class where the live model does
    not: the model's own code would call it (``self.tokenizer(x)`` with ``x`` from examples.json,
    which the attacker writes too). Checked before the golden runs at all."""
    live = gate.facts.tree
    assert gate.golden_nodes is not None
    planted = [
        (path, line, live.get(path))
        for path, line in tree_of(gate.golden_nodes).items()
        if line.startswith(("function ", "class ")) and live.get(path) != line
    ]
    if not planted:
        return
    request = gate.request
    shown = display_path(gate.store.folder, request.project_root)
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


def _mismatch(
    gate: Gate, found: Found, summary: str, expected: str, why: str | None = None, fix: str = ""
) -> Any:
    where = (
        f"input: {short_repr(found.input)}"
        if found.index is not None
        else f"input (minimal, found by Hypothesis): {short_repr(found.input)}"
    )
    return errors.OutputMismatch(
        summary,
        detail=[
            where,
            expected,
            *found.lines(),
            found.pair.tolerance_line(),
            *gate.notes,
            *([why] if why else []),
        ],
        fix=fix or accept(gate.request.nodeid),
    )


def compare_golden(gate: Gate) -> int:
    """The golden loaded today must reproduce its recorded outputs; then golden vs live on
    Hypothesis inputs, and the live model on the recorded inputs. Returns the inputs checked."""
    request, runner, result, records = gate.request, gate.runner, gate.result, gate.records
    recorded, live, live_recorded = gate.pairs()
    with placed(gate.golden, request.device, gate.golden_nodes):
        found = (
            replay(runner, result, recorded, records) if gate.replayed is False else gate.replayed
        )
        if found is not None:
            assert isinstance(found, Found)
            if gate.notes:  # code or environment changed: that is what the golden's outputs show
                why = (
                    "the golden's data is unchanged, so the code it runs (or the environment) "
                    "changed"
                )
                fix = revert_or_accept(request.nodeid)
            else:  # neither changed: the golden's own files disagree with each other
                why = (
                    "neither the code nor the environment changed since the golden was made, so "
                    "its files disagree: bundle.pkl or examples.json was edited or mixed up after "
                    "regen"
                )
                shown = display_path(gate.store.folder, request.project_root)
                fix = restore_or_regen(request.nodeid, shown)
            raise _mismatch(
                gate,
                found,
                f"the golden no longer reproduces recorded example #{found.index}",
                "expected = recorded in examples.json, got = golden loaded today",
                why,
                fix,
            )
        with placed(request.model, gate.reference, gate.facts.nodes):
            checked, found = gate.explored or explore(runner, result, live, True)
            if found is None:
                found = replay(runner, result, live_recorded, records)
            if found is not None:
                if found.index is None:
                    summary = "the live model disagrees with the golden"
                    expected = "expected = golden, got = live model"
                else:
                    summary = f"the live model disagrees with recorded example #{found.index}"
                    expected = "expected = recorded in examples.json, got = live model"
                raise explain_mismatch(gate, _mismatch(gate, found, summary, expected))
    return 2 * len(records) + checked


def explain_mismatch(gate: Gate, exc: errors.ModelpackError) -> errors.ModelpackError:
    """Add the state diff (and the reproducibility diagnosis) to a golden-vs-live mismatch:
    where their state differs, and whether the fixture itself is what changed."""
    request = gate.request
    try:
        diff = state_diff(gate.golden, request.model, walked=gate.facts.nodes)
    except Exception as failure:  # a state diff must never hide the mismatch it explains
        exc.detail.append(f"state diff: not available ({type(failure).__name__}: {failure})")
        exc.args = (exc.render(),)
        return exc
    gate.result.state_diff = list(diff.differing)
    exc.detail.extend(diff.lines())
    assert gate.drift is not None
    explained = explain_state_difference(diff, gate.drift.clean, request.nodeid)
    if explained is not None:
        exc.detail.extend(explained[0])
        exc.fix = explained[1]
    exc.args = (exc.render(),)
    return exc


def gate(
    facts: LiveFacts, runner: Runner, result: CheckResult, store: GoldenStore | None = None
) -> int:
    """Verify, scan, load and compare the committed golden. Writes nothing.

    ``store``: the golden's store, if :func:`run_check` made it (and prefetched the bundle's
    hash). Returns how many inputs were checked (recorded replays and Hypothesis inputs).
    """
    store = store or store_for(facts.request)
    # A big bundle's tensor data is hashed while the check runs: no verdict before it matches.
    with store.settled():
        with result.timed("verify_scan"):
            context = open_golden(facts, runner, result, store)
        with result.timed("drift"):
            judge_drift(context)
        load_golden(context)
        with result.timed("compare"):
            return compare_golden(context)
