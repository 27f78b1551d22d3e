"""Regenerate (``--modelpack-regen``): record fresh examples and write the golden atomically.

The round-trip has passed before this runs. The summary says per golden: created, unchanged, or
changed (what).
"""

from __future__ import annotations

import json
from typing import Any

from .. import errors
from ..apply import placed
from ..compare import compare
from ..drift import code_units, describe_code_change
from ..golden import CreatedBy, GlobalEntry, GoldenStore, Manifest, trustfile
from ..golden.examples import Example, encode_value, examples_bytes
from ..safety import Allowlist, load_bundle
from ..states import Verdict
from ..walk import diff_trees
from .explore import draw_inputs
from .facts import LiveFacts
from .gate import golden_protocol, recorded_tolerance, scan_or_refuse, store_for
from .request import CheckResult
from .runs import Pair, Runner, Side, replay


def describe_change(
    old: Manifest, old_records: list[Any], manifest: Manifest, records: list[Any]
) -> list[str]:
    """What differs between the verified golden on disk and the one about to be written
    ([] = nothing)."""
    changes: list[str] = []
    if old.serializer_name != manifest.serializer_name:
        changes.append(f"serializer {old.serializer_name} -> {manifest.serializer_name}")
    code = describe_code_change(old.code, manifest.code)
    if code:
        changes.append("code changed: " + ", ".join(code))
    structure = diff_trees(old.structure, manifest.structure)
    if structure:
        changes.append(f"structure: {len(structure)} path(s)")
    old_inputs = [json.dumps(encode_value(r.input), sort_keys=True) for r in old_records]
    new_inputs = [json.dumps(encode_value(r.input), sort_keys=True) for r in records]
    if old_inputs != new_inputs:
        changes.append("recorded inputs re-drawn")
    else:
        differing = sum(
            1
            for a, b in zip(old_records, records, strict=True)
            if compare(a.output, b.output, exact=True)
        )
        if differing:
            changes.append(f"outputs of {differing}/{len(records)} examples")
    old_env, new_env = old.environment, manifest.environment
    env = [
        f"{k} {old_env.get(k)} -> {new_env.get(k)}"
        for k in new_env
        if old_env.get(k) != new_env.get(k)
    ]
    if env:
        changes.append("environment: " + ", ".join(env))
    if old.globals != manifest.globals and not structure:
        changes.append("referenced globals")
    return changes


def _on_disk(store: GoldenStore) -> tuple[Manifest, list[Any]] | str:
    """The golden on disk, verified (manifest, sizes, hashes, examples), or what is wrong with
    it: "unchanged" must mean the files on disk are intact, so regen repairs a damaged one.

    A path that leads outside the project (UNSAFE GOLDEN from the store's path check) is not
    repaired: regen never writes through it."""
    try:
        return store.read_verified()
    except errors.UnsafeGolden:
        raise
    except errors.ModelpackError as exc:
        return exc.summary


def _bundle_problem(
    facts: LiveFacts, runner: Runner, store: GoldenStore, old: Manifest, old_records: list[Any]
) -> str | None:
    """Why the bundle on disk is not one the gate would accept, or None.

    Its hashes match its manifest, but a manifest can be edited to match any bundle: before
    saying "unchanged", the bundle must scan safe under the live model's trust, load, and
    reproduce its own examples.json — the gate's stages, run on the golden about to be kept.
    """
    request = facts.request
    try:
        with open(store.bundle_path, "rb") as f:
            head = f.read(2)
    except OSError:
        head = b""
    allowlist = facts.allowlist_for(golden_protocol(old, head))
    try:
        scan_or_refuse(request, store.bundle_path, allowlist, making=False, manifest=old)
        golden = load_bundle(store.bundle_path, allowlist, map_location=request.device)
        tolerance = recorded_tolerance(request, old.created_by.device)
        pair = Pair("", None, Side(golden, request.device), *tolerance)
        with placed(golden, request.device):
            found = replay(runner, None, pair, old_records)
        if found is not None:
            return (
                f"{errors.OutputMismatch.kind}: bundle.pkl does not reproduce recorded example "
                f"#{found.index} of examples.json"
            )
    except errors.ModelpackError as exc:
        return f"{exc.kind}: {exc.summary}"
    except Exception as exc:  # a bundle that no longer loads: write a fresh one
        return f"bundle.pkl does not load: {type(exc).__name__}: {exc}"
    return None


def refuse_unloadable(facts: LiveFacts, path: Any) -> None:
    """Regen never writes a golden the gate would refuse: the exact bytes about to replace the
    old golden are loaded with the gate's own restricted loader first (the scan alone does not
    see what only a real load checks: BUILD state, call results). Storages are mapped, not read."""
    request = facts.request
    try:
        load_bundle(path, facts.allowlist, map_location="cpu", making=True)
    except errors.ModelpackError:
        raise
    except Exception as exc:
        raise errors.UnsafeGolden(
            "the live model's pickle does not load with the gate's loader",
            name=request.name,
            detail=[
                f"file: {path}",
                f"{type(exc).__name__}: {exc}",
                "this is your own model's pickle, not a tampered golden; nothing was written",
            ],
            fix="make the model load with plain pickle.load in a fresh process (its "
            "__setstate__/__reduce__), then regenerate",
        ) from None


def write_trust(facts: LiveFacts, store: GoldenStore) -> bool:
    """This golden's section of the trust file beside the golden folder: the live pickle's uses
    the built-in policy does not allow (what ``modelpack scan`` trusts for it, with no line
    written by hand). True when the file changed."""
    request = facts.request
    base = Allowlist(request.project_root)
    lines = trustfile.lines_for(facts.refs, base)
    with store.io("write", trustfile.trust_path(store.folder.parent)):
        return trustfile.update(store.folder.parent, request.name, lines)


def regenerate(facts: LiveFacts, runner: Runner, result: CheckResult) -> None:
    """Record fresh examples and write the golden all-or-nothing; say created/unchanged/changed
    (and what was repaired: a damaged golden, an interrupted regen's leftovers)."""
    request = facts.request
    if not request.writes_golden:
        result.verdict = Verdict.CHECKED
        result.detail = f"golden written by the [{request.settings.devices[0]}] run"
        return
    model = request.model
    inputs = draw_inputs(request, request.settings.recorded)
    with placed(model, request.device, facts.nodes):
        records = [Example(x, runner(model, x, request.device)) for x in inputs]
    data = examples_bytes(records)
    store = store_for(request)
    interrupted = store.interrupted()
    existed = store.exists() or interrupted is not None
    allowlist = facts.allowlist
    pending = store.prepare(model, request.settings.by_value)
    try:
        verdict = scan_or_refuse(request, pending.bundle_tmp, allowlist, making=True)
        refuse_unloadable(facts, pending.bundle_tmp)
        pending.add_storages(verdict.storages)
        pending.add_examples(data, len(records))
        globals_ = []
        for ref in verdict.globals:
            # What it is: project / third-party / builtin / extra; a name trusted only because
            # the live model's own pickle uses it is not "refused".
            decision = allowlist.check(ref.module, ref.qualname)
            kind = decision.kind if decision.allowed else allowlist.classify(ref.module)
            globals_.append(GlobalEntry(module=ref.module, qualname=ref.qualname, kind=str(kind)))
        manifest = pending.manifest(
            created_by=CreatedBy(test=request.nodeid, device=request.device),
            globals_=globals_,
            code=code_units(
                [(ref.module, ref.qualname) for ref in verdict.globals] + facts.pinned_roots,
                request.project_root,
            ),
            structure=facts.tree,
        )
        leftovers = store.leftovers()
        if interrupted is not None:
            changes = [f"repaired an interrupted regen ({store.shown(interrupted)})"]
        elif not existed:
            changes = ["created"]
        else:
            old = _on_disk(store)
            if isinstance(old, str):
                changes = [f"repaired: {old}"]
            else:
                changes = describe_change(*old, manifest, records)
                problem = None if changes else _bundle_problem(facts, runner, store, *old)
                if problem is not None:
                    changes = [f"repaired: {problem}"]
        result.bundle_size = manifest.bundle.size
        result.examples = len(records)
        if not changes and not leftovers:
            pending.discard()
            result.verdict = Verdict.UNCHANGED
            if write_trust(facts, store):
                result.detail = f"updated {store.shown(trustfile.trust_path(store.folder.parent))}"
            return
        removed = pending.commit(manifest)
    except BaseException:
        pending.discard()
        raise
    write_trust(facts, store)
    if removed:
        changes.append(f"removed {len(removed)} leftover(s) of an interrupted regen")
    result.verdict = Verdict.CREATED if not existed else Verdict.CHANGED
    result.detail = "" if not existed else "; ".join(changes)
