"""Driving Hypothesis: inputs for a property (shrunk on failure) and inputs to record.

Round-trip and gate keep no example database (``database=None``): they write nothing of their own.
Hypothesis' one-time caches (the unicode charmap ``st.text`` builds, the constants it collects
from the project's source) stay where Hypothesis keeps them for any project (``.hypothesis/`` in
the working directory, or ``HYPOTHESIS_STORAGE_DIRECTORY``), so they are built once, not on
every run.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from typing import Any

from .. import errors
from ..golden.examples import encode_value
from .request import CheckRequest


def hypothesis_settings(max_examples: int, derandomize: bool, **extra: Any) -> Any:
    from hypothesis import HealthCheck, Verbosity, settings

    return settings(
        max_examples=max_examples,
        derandomize=derandomize,
        database=None,  # no example database: only Hypothesis' own caches are ever written
        deadline=None,  # model calls are slow and vary; timing is not what we test
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
        report_multiple_bugs=False,
        print_blob=False,
        **extra,
    )


def run_property(request: CheckRequest, prop: Callable[[Any, int], None], derandomize: bool) -> int:
    """Run ``prop(x, n)`` on Hypothesis inputs (``n``: how many ran before); return how many
    inputs ran. Errors come out shrunk, but for NONDETERMINISTIC and an output that cannot be
    compared (UNRECORDABLE VALUE: too deep, too big, a generator), which no input fixes."""
    from hypothesis import errors as hyp_errors
    from hypothesis import given

    count = 0
    #: An error that must not be shrunk, carried out of the Hypothesis run.
    abort: errors.ModelpackError | None = None

    def counted(x: Any) -> None:
        nonlocal count, abort
        if abort is not None:
            # Without the old traceback: re-raising one exception object grows its traceback
            # on every call, and Hypothesis formats it each time (quadratic while shrinking).
            raise abort.with_traceback(None)
        count += 1
        try:
            prop(x, count - 1)
        except (errors.Nondeterministic, errors.Unrecordable) as exc:
            abort = exc
            raise

    examples = request.examples or request.settings.examples
    test = hypothesis_settings(examples, derandomize)(given(request.inputs)(counted))
    try:
        test()
    except hyp_errors.Unsatisfiable as exc:
        raise errors.UsageError(
            "the inputs strategy produced no usable example",
            detail=[str(exc)],
            fix="loosen filters/assume() in the strategy passed as inputs=",
        ) from None
    except (errors.ModelpackError, hyp_errors.HypothesisException) as exc:
        if abort is not None:
            raise abort from None
        if isinstance(exc, errors.ModelpackError):
            raise
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
    return count


def draw_inputs(request: CheckRequest, n: int) -> list[Any]:
    """``n`` distinct inputs from the strategy, the same ones every time (derandomized)."""
    from hypothesis import Phase, given, seed

    collected: dict[str, Any] = {}  # by the input's recorded JSON: the first of equal ones

    def collect(x: Any) -> None:
        if len(collected) < n:
            collected.setdefault(json.dumps(encode_value(x, path="input"), sort_keys=True), x)

    # A seed of the golden's name, not derandomize: derandomize seeds from this function's own
    # source, so any edit to pytest-modelpack would re-draw every golden's recorded inputs.
    settings = hypothesis_settings(n * 4, False, phases=[Phase.generate])
    try:
        seed(zlib.crc32(request.name.encode()))(settings(given(request.inputs)(collect)))()
    except errors.ModelpackError:
        raise
    except Exception as exc:
        raise errors.UsageError(
            "could not draw inputs to record", detail=[f"{type(exc).__name__}: {exc}"]
        ) from None
    return list(collected.values())
