"""Regenerate (``--modelpack-regen``): record fresh examples and write the golden atomically.

The round-trip has passed before this runs. The summary says per golden: created, unchanged, or
changed (what).
"""

from __future__ import annotations

import json
from typing import Any

from .. import errors
from ..apply import placed
from ..codec import Example, encode_value, examples_bytes
from ..compare import compare
from ..drift import describe_code_change, fingerprint_model
from ..golden import GoldenStore, environment
from ..states import Verdict
from ..structure import diff_trees, structure_tree
from .explore import draw_inputs
from .gate import allowlist_for, scan_or_refuse
from .request import CheckRequest, CheckResult
from .runner import Runner

__all__ = ["regenerate", "describe_change"]


def describe_change(store: Any, manifest: dict[str, Any], records: list[Any]) -> list[str]:
    """What differs between the golden on disk and the one about to be written ([] = nothing)."""
    try:
        old = store.read_manifest()
        old_records = store.read_examples()
    except errors.ModelpackError as exc:
        return [f"replaces an unreadable golden ({exc.kind})"]
    changes: list[str] = []
    code = describe_code_change(old.get("code") or {}, manifest.get("code") or {})
    if code:
        changes.append("code changed: " + ", ".join(code))
    structure = diff_trees(old.get("structure") or {}, manifest.get("structure") or {})
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
    old_env, new_env = old.get("environment") or {}, manifest.get("environment") or {}
    env = [
        f"{k} {old_env.get(k)} -> {new_env.get(k)}"
        for k in new_env
        if old_env.get(k) != new_env.get(k)
    ]
    if env:
        changes.append("environment: " + ", ".join(env))
    if old.get("globals") != manifest.get("globals") and not structure:
        changes.append("referenced globals")
    return changes


def regenerate(request: CheckRequest, runner: Runner, result: CheckResult) -> None:
    """Record fresh examples and write the golden (atomically); say created/unchanged/changed."""
    if not request.writes_golden:
        result.verdict = Verdict.CHECKED
        result.detail = f"golden written by the [{request.settings.devices[0]}] run"
        return
    model = request.model
    inputs = draw_inputs(request, request.settings.recorded)
    with placed(model, request.device):
        records = [Example(x, runner(model, x, request.device)) for x in inputs]
    data = examples_bytes(records)
    store = GoldenStore(request.golden_folder, request.name)
    existed = store.exists()
    allowlist = allowlist_for(request)
    pending = store.prepare(model, data)
    try:
        assert pending.bundle_tmp is not None
        verdict = scan_or_refuse(request, pending.bundle_tmp, allowlist, making=True)
        globals_ = []
        for ref in verdict.globals:
            decision = allowlist.check(ref.module, ref.qualname)
            # A name trusted by the live model's own pickle: say what it is, not "refused".
            kind = decision.kind if decision.allowed else str(allowlist.classify(ref.module))
            globals_.append(
                {
                    "global": f"{ref.module}.{ref.qualname}",
                    "module": ref.module,
                    "qualname": ref.qualname,
                    "kind": kind,
                }
            )
        manifest = pending.manifest
        manifest["created_by"] = {"test": request.nodeid, "device": request.device}
        manifest["examples"]["count"] = len(records)
        manifest["environment"] = environment()
        manifest["globals"] = globals_
        manifest["code"] = fingerprint_model(
            [(ref.module, ref.qualname) for ref in verdict.globals], request.project_root
        )
        manifest["structure"] = structure_tree(model)
        changes = describe_change(store, manifest, records) if existed else ["created"]
        result.bundle_size = manifest["bundle"]["size"]
        result.examples = len(records)
        if not changes:
            pending.discard()
            result.verdict = Verdict.UNCHANGED
            return
        pending.commit()
    except BaseException:
        pending.discard()
        raise
    result.verdict = Verdict.CREATED if not existed else Verdict.CHANGED
    result.detail = "" if not existed else "; ".join(changes)
