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
from collections import Counter

from .. import errors
from ..states import Mode, Verdict
from .facts import LiveFacts
from .gate import gate, store_for
from .regen import regenerate
from .request import CheckRequest, CheckResult
from .roundtrip import round_trip
from .runs import Runner


def all_inputs_raised(runner: Runner) -> errors.AllInputsRaised:
    """EVERY INPUT RAISED: the round-trip compared exceptions only, which proves nothing about
    what the model computes (raising is behaviour, but at least one input must run normally)."""
    raised = runner.live_raised
    shown = Counter(str(error) for error in raised).most_common()
    how = "apply=" if runner.request.apply is not None else "the model"
    return errors.AllInputsRaised(
        f"all {len(raised)} of {runner.live_calls} inputs raised; at least one must run normally",
        detail=[
            *(f"{n}x {text}" for text, n in shown[:3]),
            *([f"... and {len(shown) - 3} other error(s)"] if len(shown) > 3 else []),
            f"{how} raised on every input, so live and reloaded were compared on exceptions "
            "only: nothing about the outputs was checked",
        ],
        fix=f"fix {how} (or narrow inputs=) so that at least one input runs normally; "
        "inputs that raise are still recorded and compared",
    )


def all_outputs_none(runner: Runner) -> errors.AllOutputsNone:
    """EVERY OUTPUT NONE: live and reloaded agreed on None (or an exception) for every input,
    which proves nothing about what the model computes; usually an ``apply=`` that forgot to
    return."""
    how = "apply=" if runner.request.apply is not None else "the model's postprocess"
    raised = len(runner.live_raised)
    return errors.AllOutputsNone(
        f"every output of the live model was None ({runner.live_none} of {runner.live_calls} "
        "calls" + (f"; the other {raised} raised" if raised else "") + ")",
        detail=[
            "live and reloaded were compared on None only: nothing about the outputs was "
            "checked, and a golden would record nothing"
        ],
        fix=f"make {how} return the model's output (a tensor, a number, a structure of them); "
        "if None is a real answer (nothing found), give inputs= a strategy on which the model "
        "answers at least once, e.g. st.sampled_from(real samples); an input answered with None "
        "is still compared",
    )


def run_check(request: CheckRequest) -> CheckResult:
    """Run one ``modelpack.check`` in the session's mode; the result carries any error."""
    __tracebackhide__ = True
    mode = request.settings.mode
    result = CheckResult.of(request)
    facts = LiveFacts(request)
    runner = Runner(request)
    start = time.perf_counter()
    store = (request.prefetched or store_for(request)) if mode is Mode.GOLDEN else None
    try:
        if store is not None:
            # a big golden's sha256 runs on another core during the round-trip (if the test's
            # setup did not start it already, while the fixtures built the model)
            store.prefetch()
        with warnings.catch_warnings():
            # torch warns about TypedStorage when pickling tensors; that is pickle's business.
            warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
            with result.timed("round_trip"):
                result.examples = round_trip(facts, runner, result)
            if runner.all_raised():
                raise all_inputs_raised(runner)
            if runner.all_none():
                raise all_outputs_none(runner)
            if store is not None:
                result.examples += gate(facts, runner, result, store)
            elif mode is Mode.REGEN:
                with result.timed("regen"):
                    regenerate(facts, runner, result)
    except errors.ModelpackError as exc:  # WalkLimit included: a state too large to walk
        result.error = exc.with_name(request.name)
        result.verdict = Verdict.FAILED
        result.detail = exc.kind
    except KeyboardInterrupt as exc:
        # pytest prints an interrupt with the arguments of every frame it passed through: the
        # repr of a 256 MiB storage being pickled takes minutes. Raised afresh from here, the
        # interrupt carries no frame of the check (everything was cleaned up on the way out).
        raise KeyboardInterrupt(*exc.args) from None
    finally:
        if store is not None:
            store.release()
        result.seconds = time.perf_counter() - start
    return result
