"""The one comparison loop: run two sides on the same inputs, compare, shrink, explain.

Every comparison of a check is a :class:`Pair` (an expected side and a side compared with it, a
tolerance, a report stage) run over inputs by :func:`explore` (Hypothesis inputs: the first
difference is shrunk to a minimal input) or :func:`replay` (the inputs recorded in
examples.json, against their recorded outputs or another model). Both walk each output pair once,
for the verdict and for the report's error metrics, and return the first difference as data
(:class:`Found`): the caller words it (LOSSY ROUND-TRIP, OUTPUT MISMATCH, a drift verdict).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ..apply import apply_model, to_device
from ..compare import Difference, compared, describe_differences
from ..golden.examples import raised_from
from .explore import run_property
from .request import CheckRequest, CheckResult


class Runner:
    """Applies a model to one input and returns a CPU value, or the exception it raised; counts
    the live model's calls (a check of exceptions or of None only proves nothing)."""

    def __init__(self, request: CheckRequest) -> None:
        self.request = request
        self.live_calls = 0
        self.live_raised: list[Any] = []
        self.live_none = 0

    def apply(self, model: Any, x: Any, device: str) -> Any:
        """``apply=`` or :func:`apply_model` on one input, uncaught and not counted."""
        if self.request.apply is not None:
            return self.request.apply(model, x)
        return apply_model(model, x, device=device)

    def __call__(self, model: Any, x: Any, device: str) -> Any:
        live = model is self.request.model
        self.live_calls += live
        try:
            output = self.apply(model, x, device)
        except Exception as exc:  # raising is behaviour too: compared by type and message
            raised = raised_from(exc)
            if live:
                self.live_raised.append(raised)
            return raised
        self.live_none += live and output is None
        return to_device(output, "cpu")

    def all_raised(self) -> bool:
        return self.live_calls > 0 and len(self.live_raised) == self.live_calls

    def all_none(self) -> bool:
        return self.live_none > 0 and self.live_none + len(self.live_raised) == self.live_calls


@dataclasses.dataclass(frozen=True)
class Side:
    model: Any
    device: str


@dataclasses.dataclass(frozen=True)
class Pair:
    """One comparison: ``got`` against ``expected`` (None: the recorded outputs)."""

    stage: str
    expected: Side | None
    got: Side
    rtol: float | None = None
    atol: float | None = None
    exact: bool = False

    def tolerance_line(self) -> str:
        if self.rtol is None and self.atol is None:
            return f"tolerance: {'exact' if self.exact else 'torch.testing defaults per dtype'}"
        return f"tolerance: rtol={self.rtol}, atol={self.atol}"


@dataclasses.dataclass(frozen=True)
class Found:
    """The first input on which a pair differs."""

    pair: Pair
    input: Any
    expected: Any
    got: Any
    diffs: list[Difference]
    #: The recorded example's index (replay), or None (a Hypothesis input, shrunk).
    index: int | None = None

    def lines(self, indent: str = "") -> list[str]:
        return [indent + line for line in describe_differences(self.diffs)]


class _Differs(Exception):
    def __init__(self, found: Found) -> None:
        super().__init__(found.pair.stage)
        self.found = found


def compare_on(
    runner: Runner, result: CheckResult | None, pair: Pair, x: Any, recorded: Any
) -> Found | None:
    """Run ``pair.got`` on ``x`` against ``pair.expected`` (None: ``recorded``); note the
    metrics; the difference, if any."""
    side = pair.expected
    expected = recorded if side is None else runner(side.model, x, side.device)
    got = runner(pair.got.model, x, pair.got.device)
    comparison = compared(expected, got, exact=pair.exact, rtol=pair.rtol, atol=pair.atol)
    if result is not None:
        result.record(pair.stage, pair.exact, comparison)
    return Found(pair, x, expected, got, comparison.diffs) if comparison.diffs else None


def replay(
    runner: Runner, result: CheckResult | None, pair: Pair, records: list[Any]
) -> Found | None:
    """Each recorded input, against its recorded output or ``pair.expected``'s: the first
    difference, or None."""
    for index, record in enumerate(records):
        found = compare_on(runner, result, pair, record.input, record.output)
        if found is not None:
            return dataclasses.replace(found, index=index)
    return None


def explore(
    runner: Runner,
    result: CheckResult | None,
    pair: Pair,
    derandomize: bool,
    before: Callable[[Any, int], None] | None = None,
) -> tuple[int, Found | None]:
    """Hypothesis inputs: how many ran, and the first difference (shrunk), or None.

    ``before(x, n)`` runs first on the ``n``-th input; an error it raises is not shrunk (a
    nondeterministic model is reported on the input where it showed)."""
    assert pair.expected is not None

    def prop(x: Any, n: int) -> None:
        if before is not None:
            before(x, n)
        found = compare_on(runner, result, pair, x, None)
        if found is not None:
            raise _Differs(found)

    try:
        return run_property(runner.request, prop, derandomize), None
    except _Differs as differs:
        return 0, differs.found
