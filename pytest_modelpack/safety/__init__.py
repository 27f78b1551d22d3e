"""Golden safety: one pickle interpreter that scans and loads, judged by role and live trust.

* :mod:`.interpreter` — the pickle VM (scan mode builds nothing, load mode builds);
* :mod:`.calls` — the table of callables a golden may call, with argument checks;
* :mod:`.streams` — pickle, legacy torch stream, torch zip and tar, as torch reads them;
* :mod:`.torchzip` — a torch zip file's structure, read with torch's rules;
* :mod:`.policy` — which (global, role) uses are allowed: built-in, project, live trust, extras;
* :mod:`.trust` — trust derived from the live model's own pickle;
* :mod:`.scan` / :mod:`.load` — the public entry points; :mod:`.verdict` — the one verdict →
  error mapping.
"""

from __future__ import annotations

from pytest_modelpack.safety.load import load_bundle, loads_bundle
from pytest_modelpack.safety.policy import Allowlist, Decision, Trust, builtin_globals
from pytest_modelpack.safety.refs import BytesRef, GlobalRef, Role, ScanError
from pytest_modelpack.safety.scan import (
    iter_globals,
    pickle_protocol,
    scan_file,
    scan_refs,
    scan_stream,
)
from pytest_modelpack.safety.trust import trust_from_pickle
from pytest_modelpack.safety.verdict import Verdict, refusal_lines, verdict_error

__all__ = [
    "Allowlist",
    "BytesRef",
    "Decision",
    "GlobalRef",
    "Role",
    "ScanError",
    "Trust",
    "Verdict",
    "builtin_globals",
    "iter_globals",
    "load_bundle",
    "loads_bundle",
    "pickle_protocol",
    "refusal_lines",
    "scan_file",
    "scan_refs",
    "scan_stream",
    "trust_from_pickle",
    "verdict_error",
]
