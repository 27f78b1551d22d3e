"""The golden lifecycle: the one function that owns round-trip, gate and regenerate.

:func:`run_check` is what ``modelpack.check(...)`` calls. It decides, from the mode, which parts
run — audit, dump, reload, compare on Hypothesis inputs; then for the gate: verify, scan, load,
replay, compare golden vs live; for regen: record examples and write the golden atomically — and
turns every problem into a :class:`~pytest_modelpack.errors.ModelpackError` with headline, detail
and fix. Nothing here imports pytest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import pickle
import shlex
import tempfile
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import errors
from .apply import apply_model, placed, to_device
from .options import MODE_GOLDEN, MODE_REGEN, MODE_ROUNDTRIP, Settings

__all__ = ["CheckRequest", "CheckResult", "run_check", "regen_command"]

#: How many of the first Hypothesis inputs are also run twice on the live model, to tell a
#: nondeterministic model apart from a lossy round-trip or a real regression.
NONDETERMINISM_PROBES = 3
REPR_LIMIT = 200


@dataclasses.dataclass
class CheckRequest:
    model: Any
    name: str
    inputs: Any
    settings: Settings
    device: str
    golden_folder: Path
    project_root: Path
    nodeid: str
    apply: Callable[[Any, Any], Any] | None = None
    rtol: float | None = None
    atol: float | None = None
    examples: int | None = None
    #: True for the one device run that writes the golden at regen (the first configured device).
    writes_golden: bool = True


@dataclasses.dataclass
class CheckResult:
    name: str
    device: str
    mode: str
    nodeid: str
    golden: str
    verdict: str = "passed"
    examples: int = 0
    bundle_size: int | None = None
    seconds: float = 0.0
    detail: str = ""
    warnings: list[str] = dataclasses.field(default_factory=list)
    error: errors.ModelpackError | None = dataclasses.field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("error")
        if self.error is not None:
            data["headline"] = f"{self.error.kind} — {self.error.summary}"
            data["kind"] = self.error.kind
        return data


def regen_command(nodeid: str) -> str:
    return f"pytest --modelpack-regen {shlex.quote(nodeid)}"


def _display(path: Path, root: Path) -> str:
    """``path`` relative to the project root when it is inside it (what a user types)."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= REPR_LIMIT else text[: REPR_LIMIT - 3] + "..."


# -- running the model -------------------------------------------------------------------------


class Runner:
    """Applies a model to one input and returns a CPU value, or the exception it raised."""

    def __init__(self, request: CheckRequest) -> None:
        self.request = request

    def __call__(self, model: Any, x: Any, device: str) -> Any:
        from .codec import raised_from

        try:
            if self.request.apply is not None:
                output = self.request.apply(model, x)
            else:
                output = apply_model(model, x, device=device)
        except Exception as exc:  # raising is behaviour too: compared by type and message
            return raised_from(exc)
        return to_device(output, "cpu")


def _hypothesis_settings(max_examples: int, derandomize: bool, **extra: Any) -> Any:
    from hypothesis import HealthCheck, Verbosity, settings

    return settings(
        max_examples=max_examples,
        derandomize=derandomize,
        database=None,  # round-trip and gate write nothing, not even .hypothesis/
        deadline=None,  # model calls are slow and vary; timing is not what we test
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
        report_multiple_bugs=False,
        print_blob=False,
        **extra,
    )


class _Abort:
    """Carries an error that must not be shrunk (nondeterminism) out of a Hypothesis run."""

    error: errors.ModelpackError | None = None


def run_property(request: CheckRequest, prop: Callable[[Any], None], derandomize: bool) -> int:
    """Run ``prop`` on Hypothesis inputs; return how many inputs ran. Errors come out shrunk."""
    from hypothesis import errors as hyp_errors
    from hypothesis import given

    count = [0]
    abort = _Abort()

    def counted(x: Any) -> None:
        if abort.error is not None:
            # Without the old traceback: re-raising one exception object grows its traceback
            # on every call, and Hypothesis formats it each time (quadratic while shrinking).
            raise abort.error.with_traceback(None)
        count[0] += 1
        try:
            prop(x)
        except errors.Nondeterministic as exc:
            abort.error = exc
            raise

    examples = request.examples or request.settings.examples
    test = _hypothesis_settings(examples, derandomize)(given(request.inputs)(counted))
    try:
        test()
    except errors.ModelpackError:
        if abort.error is not None:
            raise abort.error from None
        raise
    except hyp_errors.Unsatisfiable as exc:
        raise errors.UsageError(
            "the inputs strategy produced no usable example",
            detail=[str(exc)],
            fix="loosen filters/assume() in the strategy passed as inputs=",
        ) from None
    except hyp_errors.HypothesisException as exc:
        if abort.error is not None:
            raise abort.error from None
        flaky = getattr(hyp_errors, "FlakyFailure", None) or getattr(hyp_errors, "Flaky", None)
        if flaky is not None and isinstance(exc, flaky):
            raise errors.Nondeterministic(
                "a failure did not reproduce when Hypothesis re-ran the same input",
                detail=[str(exc).splitlines()[0] if str(exc) else type(exc).__name__],
                fix="make the model deterministic in eval mode (no dropout/randomness in "
                "forward), or seed randomness inside apply=",
            ) from None
        raise errors.UsageError(
            "Hypothesis could not run the check", detail=[f"{type(exc).__name__}: {exc}"]
        ) from None
    return count[0]


def draw_inputs(request: CheckRequest, n: int) -> list[Any]:
    """``n`` distinct inputs from the strategy, the same ones every time (derandomized)."""
    from hypothesis import Phase, given, seed

    from .codec import encode_value

    collected: list[Any] = []
    keys: set[str] = set()

    def collect(x: Any) -> None:
        if len(collected) >= n:
            return
        key = json.dumps(encode_value(x, path="input"), sort_keys=True)
        if key not in keys:
            keys.add(key)
            collected.append(x)

    # A seed of the golden's name, not derandomize: derandomize seeds from this function's own
    # source, so any edit to pytest-modelpack would re-draw every golden's recorded inputs.
    settings = _hypothesis_settings(n * 4, False, phases=[Phase.generate])
    try:
        seed(zlib.crc32(request.name.encode()))(settings(given(request.inputs)(collect)))()
    except errors.ModelpackError:
        raise
    except Exception as exc:
        raise errors.UsageError(
            "could not draw inputs to record", detail=[f"{type(exc).__name__}: {exc}"]
        ) from None
    return collected


@contextlib.contextmanager
def _scratch_hypothesis_home() -> Iterator[None]:
    """Point Hypothesis's storage (its unicode cache for text strategies) at a temporary folder.

    Round-trip and gate promise to write nothing to the project; Hypothesis would otherwise create
    ``.hypothesis/unicode_data`` in the working directory the first time a text strategy runs.
    """
    from hypothesis import configuration

    previous = getattr(configuration, "__hypothesis_home_directory", None)
    with tempfile.TemporaryDirectory(prefix="modelpack-hypothesis-") as scratch:
        configuration.set_hypothesis_home_dir(scratch)
        try:
            yield
        finally:
            configuration.set_hypothesis_home_dir(previous)


def _tolerance_line(rtol: float | None, atol: float | None, exact: bool) -> str:
    if rtol is None and atol is None:
        return "tolerance: exact" if exact else "tolerance: torch.testing defaults per dtype"
    return f"tolerance: rtol={rtol}, atol={atol}"


# -- the round-trip ----------------------------------------------------------------------------


def _unpicklable(request: CheckRequest, exc: Exception) -> errors.ModelpackError:
    from .audit import find_unpicklable, user_frame

    findings = find_unpicklable(request.model, relative_to=request.project_root)
    if not findings:  # every part pickles on its own: say what pickle said, and where
        frame = user_frame(exc, request.project_root)
        return errors.Unpicklable(
            f"the model cannot be pickled: {type(exc).__name__}: {exc}",
            detail=[f"where: {frame}"] if frame else [],
            fix="give the class that fails a __getstate__ or __reduce__ that returns only "
            "picklable state",
        )
    if len(findings) == 1:
        (finding,) = findings
        return errors.Unpicklable(
            f"{finding.path} cannot be pickled",
            detail=finding.lines(nested=False),
            fix=finding.fix,
        )
    detail: list[str] = []
    for finding in findings:
        detail.extend(finding.lines())
    return errors.Unpicklable(
        f"{len(findings)} parts of the model cannot be pickled: "
        + ", ".join(f.path for f in findings),
        detail=detail,
        fix="fix each part as shown above: a module-level function instead of a lambda or local "
        "function, and process state (files, locks, generators) left out in __getstate__",
    )


def _not_importable(request: CheckRequest, data: bytes) -> None:
    """Refuse references to classes/functions another process could not import."""
    from .audit import locate_globals, not_importable_reason
    from .scan import iter_globals

    reasons: dict[str, str] = {}
    for ref in iter_globals(io.BytesIO(data)):
        name = f"{ref.module}.{ref.qualname}"
        if name not in reasons:
            reason = not_importable_reason(ref.module, ref.qualname)
            if reason:
                reasons[name] = reason
    if not reasons:
        return
    used_at = locate_globals(request.model, reasons)
    detail: list[str] = []
    for name, reason in reasons.items():
        paths = used_at.get(name)
        detail.append(f"{name}: used at {', '.join(paths)}" if paths else name)
        detail.append(f"  why: {reason}")
    one = len(reasons) == 1
    raise errors.Unpicklable(
        f"{', '.join(reasons)} pickle{'s' if one else ''} here but will not load in another "
        "process",
        detail=detail,
        fix=f"define {'it' if one else 'them'} at module level in a module of your project that "
        "production imports too (like package.py), not in __main__, a test module or conftest.py",
    )


def _load_error(
    request: CheckRequest,
    exc: BaseException | None,
    what: str,
    missing: list[tuple[str, str]] | None = None,
) -> errors.ModelpackError:
    """LOAD ERROR for ``what`` (the golden, or the freshly dumped model).

    Either ``missing`` (``(module, qualname)`` pairs the golden references that no longer resolve;
    qualname ``"*"`` for a module that is gone), or the exception ``exc`` raised while unpickling:
    a missing name, or the user's own ``__setstate__`` failing.
    """
    import re

    from .audit import explain_missing, setstate_pitfall, user_frame

    regen = regen_command(request.nodeid)
    golden = "golden" in what
    if missing is None and exc is not None and golden:
        got = re.match(r"Can't get attribute '([^']+)' on (?:module '|<module ')([^']+)'", str(exc))
        if isinstance(exc, ModuleNotFoundError) and exc.name:
            missing = [(exc.name, "*")]
        elif isinstance(exc, AttributeError) and got:
            missing = [(got.group(2), got.group(1))]
    if missing:
        try:
            manifest = json.loads((request.golden_folder / "manifest.json").read_text("utf-8"))
        except (OSError, ValueError):
            manifest = {}
        summary, detail, fix = explain_missing(
            missing, manifest, request.project_root, regen, scanned="scan" in what
        )
        return errors.LoadError(summary, detail=detail, fix=fix)
    assert exc is not None
    message = f"{type(exc).__name__}: {exc}"
    frame = user_frame(exc, request.project_root)
    detail = [f"{what} raised {message}"]
    if frame is not None:
        detail.append(f"where: {frame}")
    pitfall = setstate_pitfall(exc)
    method = frame.function.rsplit(".", 1)[-1] if frame is not None else "__setstate__"
    owner = frame.owner if frame is not None and frame.owner else None
    if pitfall is not None:
        detail.append(pitfall[0])
        fix = pitfall[1] + (f"; then regenerate the golden: {regen}" if golden else "")
    elif isinstance(exc, ImportError):
        detail.append(f"importing {exc.name or 'a module'} failed while unpickling")
        fix = f"make the module importable again, or accept the change with: {regen}"
    elif golden:
        detail.append(
            "the golden was pickled by older code, and today's code cannot rebuild the object "
            "from the state it saved"
        )
        fix = (
            f"make {owner or 'the class'}.{method} accept the old state (e.g. "
            f"state.get(key, default)), or accept the change with: {regen}"
        )
    else:
        fix = f"make {owner or 'the class'}.__setstate__ restore exactly what __getstate__ saves"
    summary = (
        f"bundle.pkl cannot be loaded: {message}"
        if golden
        else f"the model cannot be loaded back from its own pickle: {message}"
    )
    return errors.LoadError(summary, detail=detail, fix=fix)


def round_trip(request: CheckRequest, runner: Runner) -> int:
    """Dump the live model, load it back in memory, compare both on Hypothesis inputs."""
    from .audit import (
        explain_lossy,
        leaf_name,
        lost_private_state,
        nondeterminism_hints,
        setstate_pitfall,
        user_frame,
    )
    from .codec import RaisedError
    from .compare import compare, describe_differences
    from .structure import diff_trees, structure_tree

    model, device, root = request.model, request.device, request.project_root
    try:
        data = pickle.dumps(model, protocol=pickle.DEFAULT_PROTOCOL)
    except Exception as exc:
        raise _unpicklable(request, exc) from None
    _not_importable(request, data)
    try:
        reloaded = pickle.loads(data)  # our own bytes from this process: trusted
    except Exception as exc:
        raise _load_error(request, exc, "pickle.loads of the freshly dumped model") from None
    del data

    # Before anything runs (placing a model on a device rebuilds some of torch's caches).
    live_tree = structure_tree(model)
    diff = diff_trees(live_tree, structure_tree(reloaded))
    lost, detail = explain_lossy(model, diff, relative_to=root)
    modules = [path for path, line in live_tree.items() if line.endswith("(nn.Module)")]
    private, private_detail = lost_private_state(model, reloaded, modules, relative_to=root)
    if lost or private:
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

    def nondeterministic(x: Any, live: Any) -> errors.ModelpackError | None:
        """NONDETERMINISTIC when the live model, run on ``x`` again, disagrees with ``live``."""
        diffs = compare(live, runner(model, x, device), exact=True)
        if not diffs:
            return None
        hints = nondeterminism_hints(model, relative_to=root) or [
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

    def probe(x: Any) -> None:
        # Outside the property: a failure here is reported as is, never shrunk by Hypothesis.
        if not found:
            error = nondeterministic(x, runner(model, x, device))
            if error is not None:
                found.append(error)

    def prop(x: Any) -> None:
        live = runner(model, x, device)
        got = runner(reloaded, x, device)
        diffs = compare(live, got, exact=True, rtol=request.rtol, atol=request.atol)
        if diffs:
            extra: list[str] = []
            fix = (
                "check __getstate__/__setstate__ (and __reduce__) of the model's classes: "
                "state they leave out is rebuilt differently after loading"
            )
            if isinstance(got, RaisedError) and not isinstance(live, RaisedError):
                try:  # again, uncaught, for the traceback: where in the user's code it failed
                    if request.apply is not None:
                        request.apply(reloaded, x)
                    else:
                        apply_model(reloaded, x, device=device)
                except Exception as exc:
                    frame = user_frame(exc, root)
                    extra = [f"where: {frame}"] if frame else []
                    pitfall = setstate_pitfall(exc)
                    if pitfall is not None:
                        extra.append(pitfall[0])
                        fix = pitfall[1]
            error = nondeterministic(x, live)
            if error is not None:
                raise error
            raise errors.LossyRoundTrip(
                "the reloaded model disagrees with the live model",
                detail=[
                    f"input (minimal, found by Hypothesis): {short_repr(x)}",
                    "expected = live model, got = reloaded model",
                    *describe_differences(diffs),
                    _tolerance_line(request.rtol, request.atol, exact=True),
                    *extra,
                ],
                fix=fix,
            )

    from hypothesis import Phase, given

    found: list[errors.ModelpackError] = []
    with placed(model, device), placed(reloaded, device):
        probes = _hypothesis_settings(NONDETERMINISM_PROBES, True, phases=[Phase.generate])
        try:
            probes(given(request.inputs)(probe))()
        except Exception:  # a broken strategy: the property run below reports it properly
            pass
        if found:
            raise found[0]
        return run_property(request, prop, derandomize=request.settings.mode == MODE_GOLDEN)


# -- the gate ----------------------------------------------------------------------------------


def _allowlist(request: CheckRequest) -> Any:
    from .allowlist import Allowlist

    return Allowlist(request.project_root, request.settings.safe_globals)


def _scan_or_refuse(request: CheckRequest, path: Path, allowlist: Any, making: bool) -> Any:
    from .scan import scan_file

    verdict = scan_file(path, allowlist)
    if verdict.error and not verdict.refused:
        raise errors.CorruptGolden(
            "bundle.pkl is not a readable pickle",
            detail=[f"file: {path}", verdict.error],
            fix="restore the golden from version control, or regenerate it with "
            f"{regen_command(request.nodeid)}",
        )
    missing = getattr(verdict, "missing", [])
    if verdict.refused and not making and len(missing) == len(verdict.refused):
        # Every refused name simply no longer resolves: renamed or moved code, not an attack.
        raise _load_error(
            request,
            None,
            "bundle.pkl (golden), read by the safety scan",
            missing=[(ref.module, ref.qualname) for ref in missing],
        )
    if verdict.refused:
        lines = [
            f"{ref.module}.{ref.qualname} ({ref.where}): {reason}"
            for ref, reason in verdict.refused
        ]
        summary = (
            "the model references globals the gate would refuse to load"
            if making
            else f"{len(verdict.refused)} global(s) in the golden are not on the allowlist; "
            "nothing was loaded"
        )
        if verdict.error:  # a payload followed by garbage: pickle.load would run the payload first
            lines.append(f"(the scan then stopped: {verdict.error})")
        raise errors.UnsafeGolden(
            summary,
            detail=[f"file: {path}", *lines],
            fix="if you trust these names, add them to modelpack_safe_globals in your pytest "
            "ini options (one module.qualname per line); otherwise the golden was tampered "
            "with: restore it from version control",
        )
    return verdict


def _recorded_tolerance(request: CheckRequest, recorded_device: str | None) -> tuple[Any, Any]:
    if request.rtol is not None or request.atol is not None:
        return request.rtol, request.atol
    if recorded_device is not None and recorded_device != request.device:
        return request.settings.device_rtol, request.settings.device_atol
    return request.settings.rtol, request.settings.atol


def _replay(
    runner: Runner,
    model: Any,
    device: str,
    records: list[Any],
    tolerance: tuple[float | None, float | None],
    summary: str,
    context: list[str],
    fix: str,
) -> int:
    """Run ``model`` on each recorded input; the first output that differs is OUTPUT MISMATCH."""
    from .compare import compare, describe_differences

    rtol, atol = tolerance
    for index, record in enumerate(records):
        got = runner(model, record.input, device)
        diffs = compare(record.output, got, exact=False, rtol=rtol, atol=atol)
        if diffs:
            raise errors.OutputMismatch(
                summary.format(index=index),
                detail=[
                    f"input: {short_repr(record.input)}",
                    *context[:1],
                    *describe_differences(diffs),
                    _tolerance_line(rtol, atol, exact=False),
                    *context[1:],
                ],
                fix=fix,
            )
    return len(records)


def gate(request: CheckRequest, runner: Runner, result: CheckResult) -> int:
    """Verify, scan, load and compare the committed golden. Writes nothing."""
    from .compare import compare, describe_differences
    from .golden import GoldenStore
    from .load import load_bundle

    store = GoldenStore(request.golden_folder, request.name)
    if not store.exists():
        raise errors.MissingGolden(
            f"no golden at {_display(request.golden_folder, request.project_root)}",
            detail=["the gate compares the live model with a committed golden, and there is none"],
            fix=f"create it with: {regen_command(request.nodeid)}  (then commit the folder)",
        )
    manifest = store.read_manifest()
    store.verify(manifest)
    result.bundle_size = manifest["bundle"]["size"]
    allowlist = _allowlist(request)
    verdict = _scan_or_refuse(request, store.bundle_path, allowlist, making=False)
    from .drift import check_drift

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
    drift_warnings = check_drift(request, manifest, roots)
    result.warnings.extend(drift_warnings)
    records = store.read_examples()
    try:
        golden = load_bundle(store.bundle_path, allowlist, map_location=request.device)
    except errors.ModelpackError:
        raise
    except Exception as exc:
        raise _load_error(request, exc, "bundle.pkl (golden)") from None

    recorded_device = (manifest.get("created_by") or {}).get("device")
    rtol, atol = _recorded_tolerance(request, recorded_device)
    env_note = list(drift_warnings)  # changed versions or tolerated code drift explain a mismatch
    reference = "cpu" if request.device != "cpu" else request.device
    fix = regen_command(request.nodeid)
    checked = 0
    with placed(golden, request.device):
        checked += _replay(
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
            "revert the change, or accept it with: " + fix,
        )
        live_tol = _recorded_tolerance(request, reference)

        def prop(x: Any) -> None:
            expected = runner(golden, x, request.device)
            got = runner(request.model, x, reference)
            diffs = compare(expected, got, exact=False, rtol=live_tol[0], atol=live_tol[1])
            if diffs:
                raise errors.OutputMismatch(
                    "the live model disagrees with the golden",
                    detail=[
                        f"input (minimal, found by Hypothesis): {short_repr(x)}",
                        "expected = golden, got = live model",
                        *describe_differences(diffs),
                        _tolerance_line(live_tol[0], live_tol[1], exact=False),
                        *env_note,
                    ],
                    fix="if the change is intended, accept it with: " + fix,
                )

        with placed(request.model, reference):
            checked += run_property(request, prop, derandomize=True)
            checked += _replay(
                runner,
                request.model,
                reference,
                records,
                (rtol, atol),
                "the live model disagrees with recorded example #{index}",
                ["expected = recorded in examples.json, got = live model", *env_note],
                "if the change is intended, accept it with: " + fix,
            )
    return checked


# -- regenerate --------------------------------------------------------------------------------


def _describe_change(store: Any, manifest: dict[str, Any], records: list[Any]) -> list[str]:
    """What differs between the golden on disk and the one about to be written ([] = nothing)."""
    from .codec import encode_value
    from .compare import compare
    from .structure import diff_trees

    try:
        old = store.read_manifest()
        old_records = store.read_examples()
    except errors.ModelpackError as exc:
        return [f"replaces an unreadable golden ({exc.kind})"]
    changes: list[str] = []
    from .drift import describe_code_change

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
    from .codec import Example, examples_bytes
    from .drift import fingerprint_model
    from .golden import GoldenStore, environment
    from .structure import structure_tree

    if not request.writes_golden:
        result.verdict = "checked"
        result.detail = f"golden written by the [{request.settings.devices[0]}] run"
        return
    model = request.model
    inputs = draw_inputs(request, request.settings.recorded)
    with placed(model, request.device):
        records = [Example(x, runner(model, x, request.device)) for x in inputs]
    data = examples_bytes(records)
    store = GoldenStore(request.golden_folder, request.name)
    existed = store.exists()
    allowlist = _allowlist(request)
    pending = store.prepare(model, data)
    try:
        assert pending.bundle_tmp is not None
        verdict = _scan_or_refuse(request, pending.bundle_tmp, allowlist, making=True)
        globals_ = []
        for ref in verdict.globals:
            decision = allowlist.check(ref.module, ref.qualname)
            globals_.append(
                {
                    "global": f"{ref.module}.{ref.qualname}",
                    "module": ref.module,
                    "qualname": ref.qualname,
                    "kind": decision.kind,
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
        changes = _describe_change(store, manifest, records) if existed else ["created"]
        result.bundle_size = manifest["bundle"]["size"]
        result.examples = len(records)
        if not changes:
            pending.discard()
            result.verdict = "unchanged"
            return
        pending.commit()
    except BaseException:
        pending.discard()
        raise
    result.verdict = "created" if not existed else "changed"
    result.detail = "" if not existed else "; ".join(changes)


# -- the entry point ---------------------------------------------------------------------------


def run_check(request: CheckRequest) -> CheckResult:
    """Run one ``modelpack.check`` in the session's mode; the result carries any error."""
    mode = request.settings.mode
    result = CheckResult(
        name=request.name,
        device=request.device,
        mode=mode,
        nodeid=request.nodeid,
        golden=str(request.golden_folder),
    )
    runner = Runner(request)
    start = time.perf_counter()
    try:
        with warnings.catch_warnings(), _scratch_hypothesis_home():
            # torch warns about TypedStorage when pickling tensors; that is pickle's business.
            warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
            result.examples = round_trip(request, runner)
            if mode == MODE_GOLDEN:
                result.examples += gate(request, runner, result)
            elif mode == MODE_REGEN:
                regenerate(request, runner, result)
            elif mode != MODE_ROUNDTRIP:  # pragma: no cover - options validate the mode
                raise errors.UsageError(f"unknown mode {mode!r}")
    except errors.ModelpackError as exc:
        result.error = exc.with_name(request.name)
        result.verdict = "failed"
        result.detail = exc.kind
    finally:
        result.seconds = time.perf_counter() - start
    return result
