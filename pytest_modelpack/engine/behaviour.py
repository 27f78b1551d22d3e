"""What the outputs say when the gate finds a change: the verdicts the gate adds to its failures.

* :func:`code_change_behaviour` — after CODE DRIFT, whether the change altered behaviour: the
  recorded examples (outputs of the golden's code) replayed on the golden with today's code, and
  golden vs live on Hypothesis inputs. A reviewer decides on this: a pure refactor or a real change.
* :func:`explain_mismatch` — when golden and live outputs differ: the state diff (which attribute
  paths hold other state) and, with no code or environment drift, the reproducibility diagnosis.
"""

from __future__ import annotations

from typing import Any

from .. import errors
from ..apply import placed
from ..compare import compare, describe_differences
from ..diagnose.reproducibility import explain_state_difference
from ..statediff import state_diff
from .explore import run_property
from .request import CheckRequest, CheckResult, short_repr
from .runner import Runner

__all__ = ["code_change_behaviour", "explain_mismatch"]

PRESERVING = "the change looks behaviour-preserving"


class _Differs(Exception):
    """Golden and live model disagree on one Hypothesis input (carried out of the property)."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(lines[0])
        self.lines = lines


def code_change_behaviour(
    request: CheckRequest,
    runner: Runner,
    golden: Any,
    records: list[Any],
    tolerance: tuple[Any, Any],
    live_tolerance: tuple[Any, Any],
) -> list[str]:
    """Lines for the CODE DRIFT detail: the first line is the verdict.

    Only the recorded examples can show what the code change did: their outputs were made by the
    golden's code, and the golden run today runs today's code on the same state. Golden vs live on
    Hypothesis inputs then shows the live model still builds that state, so the verdict carries
    over to the inputs the live model sees.
    """
    reference = "cpu" if request.device != "cpu" else request.device
    rtol, atol = tolerance
    with placed(golden, request.device):
        for index, record in enumerate(records):
            got = runner(golden, record.input, request.device)
            diffs = compare(record.output, got, exact=False, rtol=rtol, atol=atol)
            if diffs:
                return [
                    f"behaviour: outputs changed on recorded example #{index} — the change "
                    "alters behaviour",
                    f"  input: {short_repr(record.input)}",
                    "  expected = recorded with the golden's code, got = today's code on the "
                    "golden's state",
                    *(f"  {line}" for line in describe_differences(diffs)),
                ]

        def prop(x: Any) -> None:
            expected = runner(golden, x, request.device)
            got = runner(request.model, x, reference)
            diffs = compare(
                expected, got, exact=False, rtol=live_tolerance[0], atol=live_tolerance[1]
            )
            if diffs:
                raise _Differs(
                    [
                        f"  input (found by Hypothesis): {short_repr(x)}",
                        "  expected = golden, got = live model (both run today's code)",
                        *(f"  {line}" for line in describe_differences(diffs)),
                    ]
                )

        with placed(request.model, reference):
            try:
                checked = run_property(request, prop, derandomize=True)
            except _Differs as differs:
                return [
                    f"behaviour: outputs unchanged on {len(records)} recorded input(s), but the "
                    "live model disagrees with the golden on a Hypothesis input — the state the "
                    "fixture builds changed too",
                    *differs.lines,
                ]
            except errors.ModelpackError as exc:
                return [f"behaviour: not compared on Hypothesis inputs: {exc.headline}"]
    return [
        f"behaviour: outputs unchanged on {len(records) + checked} inputs ({len(records)} "
        f"recorded, {checked} from Hypothesis) — {PRESERVING}"
    ]


def explain_mismatch(
    exc: errors.ModelpackError,
    request: CheckRequest,
    golden: Any,
    drift_clean: bool,
    result: CheckResult,
) -> errors.ModelpackError:
    """Add the state diff (and the reproducibility diagnosis) to a golden-vs-live mismatch."""
    try:
        diff = state_diff(golden, request.model)
    except Exception as failure:  # a state diff must never hide the mismatch it explains
        exc.detail.append(f"state diff: not available ({type(failure).__name__}: {failure})")
        exc.args = (exc.render(),)
        return exc
    result.state_diff = list(diff.differing)
    exc.detail.extend(diff.lines())
    explained = explain_state_difference(diff, drift_clean, request.nodeid)
    if explained is not None:
        detail, fix = explained
        exc.detail.extend(detail)
        exc.fix = fix
    exc.args = (exc.render(),)
    return exc
