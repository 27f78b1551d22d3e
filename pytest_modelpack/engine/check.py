"""The golden lifecycle: the one function that owns round-trip, gate and regenerate.

:func:`run_check` is what ``modelpack.check(...)`` calls. It decides, from the mode, which stages
run — the round-trip always; then the gate (``--modelpack-golden``) or regenerate
(``--modelpack-regen``) — and turns every problem into a
:class:`~pytest_modelpack.errors.ModelpackError` with headline, detail and fix, carried on the
:class:`CheckResult`. Nothing in the engine imports pytest.
"""

from __future__ import annotations

import time
import warnings

from .. import errors
from ..states import Mode, Verdict
from .gate import gate
from .regen import regenerate
from .request import CheckRequest, CheckResult
from .roundtrip import round_trip
from .runner import Runner

__all__ = ["run_check"]


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
        with warnings.catch_warnings():
            # torch warns about TypedStorage when pickling tensors; that is pickle's business.
            warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
            result.examples = round_trip(request, runner)
            if mode is Mode.GOLDEN:
                result.examples += gate(request, runner, result)
            elif mode is Mode.REGEN:
                regenerate(request, runner, result)
    except errors.ModelpackError as exc:
        result.error = exc.with_name(request.name)
        result.verdict = Verdict.FAILED
        result.detail = exc.kind
    finally:
        result.seconds = time.perf_counter() - start
    return result
