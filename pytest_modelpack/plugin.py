"""pytest hooks for pytest-modelpack, and nothing else.

Cheap to import: torch and hypothesis are imported inside the fixture, never at plugin load.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .options import (
    FLAG_DEVICE,
    FLAG_GOLDEN,
    FLAG_HTML,
    FLAG_REGEN,
    FLAG_REPORT,
    FLAG_TRUST_CODE,
    INI_BY_VALUE,
    INI_HELP,
    INI_SAFE_GLOBALS,
    settings_from_ini,
)
from .states import Mode

if TYPE_CHECKING:
    from .fixture import Modelpack
    from .options import Settings
    from .report import Report
    from .session import SessionState

STATE = pytest.StashKey["SessionState"]()
WORKER_KEY = "modelpack_rows"


#: The command-line flags, in ``--help`` order: flag -> (None for a switch, else its metavar; help).
FLAGS: dict[str, tuple[str | None, str]] = {
    FLAG_GOLDEN: (
        None,
        "CI regression gate: also verify, scan, load and compare the committed goldens "
        "(derandomized; never writes)",
    ),
    FLAG_REGEN: (
        None,
        "(re)write goldens after the round-trip passes; the summary says "
        "created / unchanged / changed",
    ),
    FLAG_DEVICE: (
        "DEVICES",
        "devices to check on, comma-separated (cpu,cuda); overrides modelpack_devices",
    ),
    FLAG_REPORT: ("PATH", "write a JSON report of every modelpack check to PATH"),
    FLAG_HTML: (
        "PATH",
        "write one self-contained HTML page of every modelpack check to PATH (verdicts, "
        "diffs, per-input error plots against the tolerance)",
    ),
    FLAG_TRUST_CODE: (
        None,
        "with --modelpack-golden: let a dill/cloudpickle golden run its own pinned code "
        "(for goldens from a trusted branch), so code drift is judged by running old code "
        "against new on the same inputs; off by default",
    ),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup(
        "modelpack", "model serialization regression testing (pytest-modelpack)"
    )
    for flag, (metavar, text) in FLAGS.items():
        if metavar is None:
            group.addoption(flag, action="store_true", default=False, help=text)
        else:
            group.addoption(flag, default=None, metavar=metavar, help=text)
    for name, (text, default) in INI_HELP.items():
        if name in (INI_SAFE_GLOBALS, INI_BY_VALUE):
            parser.addini(name, text, type="linelist", default=[])
        else:
            parser.addini(name, text, type="string", default=default)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "modelpack(devices=, examples=, recorded=, rtol=, atol=, device_rtol=, device_atol=, "
        "drift=, dir=, serializer=): pytest-modelpack settings for one test",
    )
    golden = config.getoption(FLAG_GOLDEN)
    regen = config.getoption(FLAG_REGEN)
    if golden and regen:
        raise pytest.UsageError(
            f"{FLAG_GOLDEN} and {FLAG_REGEN} cannot be used together: use {FLAG_REGEN} to "
            f"(re)write goldens, then {FLAG_GOLDEN} to check them"
        )
    mode = Mode.GOLDEN if golden else Mode.REGEN if regen else Mode.ROUNDTRIP
    ini = {name: config.getini(name) for name in INI_HELP}
    try:
        settings = settings_from_ini(
            ini, mode, config.getoption(FLAG_DEVICE), config.getoption(FLAG_TRUST_CODE)
        )
    except ValueError as exc:
        raise pytest.UsageError(f"pytest-modelpack: {exc}") from None
    from .report import Report
    from .session import SessionState

    report = Report()
    config.stash[STATE] = SessionState(settings=settings, root=Path(config.rootpath), report=report)
    if mode is not Mode.ROUNDTRIP and not hasattr(config, "workerinput"):
        _TERMINATION.install()
    config.pluginmanager.register(FinishedTests(report.finished), "modelpack-finished-tests")


class _Termination:
    """SIGTERM during a regen or a gate ends the run as Ctrl-C does (the golden being written is
    discarded, temporary files removed, locks released, the summary printed), then the process
    ends by SIGTERM as its sender expects. Installed only over the default handler, in the main
    thread of a non-xdist-worker process."""

    def __init__(self) -> None:
        self.installed = False
        self.received = False

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread() and (
            signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        ):
            signal.signal(signal.SIGTERM, self._handle)
            self.installed = True

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = True
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    def uninstall(self) -> None:
        if not self.installed:
            return
        self.installed = False
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if self.received:
            os.kill(os.getpid(), signal.SIGTERM)


_TERMINATION = _Termination()


def pytest_unconfigure(config: pytest.Config) -> None:
    _TERMINATION.uninstall()


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """A golden folder holds data, never tests: pytest does not descend into it (a golden folder
    the user cannot read would otherwise fail collection before the gate can name it)."""
    state = config.stash.get(STATE, None)
    if state is None or collection_path.name != Path(state.settings.golden_dir).name:
        return None
    ends = str(collection_path).endswith(os.sep + os.path.normpath(state.settings.golden_dir))
    return True if ends else None


def pytest_report_header(config: pytest.Config) -> str | None:
    state = config.stash.get(STATE, None)
    if state is None:
        return None
    s = state.settings
    return f"modelpack: mode={s.mode}, devices={','.join(s.devices)}, goldens in {s.golden_dir}/"


def _marker_settings(node: pytest.Item, state: SessionState) -> Settings:
    marker = node.get_closest_marker("modelpack")
    if marker is None:
        return state.settings
    if marker.args:
        raise pytest.UsageError(
            f"{node.nodeid}: @pytest.mark.modelpack takes keyword arguments only, "
            f"got positional {marker.args!r}"
        )
    try:
        return state.settings.override(marker.kwargs, f"{node.nodeid}: @pytest.mark.modelpack")
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "modelpack" not in metafunc.fixturenames:
        return
    state = metafunc.config.stash[STATE]
    settings = _marker_settings(metafunc.definition, state)
    metafunc.parametrize(
        "modelpack", list(settings.devices), indirect=True, ids=list(settings.devices)
    )


@pytest.fixture
def modelpack(request: pytest.FixtureRequest) -> Modelpack:
    """Check a live model: ``modelpack.check(model, inputs=<Hypothesis strategy>)``.

    Parametrized over devices (``[cpu]``, ``[cuda]``); an unavailable device is skipped with the
    reason. The mode comes from the command line: round-trip (default), ``--modelpack-golden``
    (the CI gate) or ``--modelpack-regen`` (write goldens).
    """
    from .fixture import Modelpack, device_unavailable

    state = request.config.stash[STATE]
    settings = _marker_settings(request.node, state)
    device = getattr(request, "param", settings.devices[0])
    reason = device_unavailable(device)
    if reason is not None:
        state.report.skips.append(
            {"nodeid": request.node.nodeid, "device": device, "reason": reason}
        )
        pytest.skip(reason)
    return Modelpack(request, state, device, settings)


def pytest_deselected(items: list[pytest.Item]) -> None:
    if not items:
        return
    state = items[0].config.stash.get(STATE, None)
    if state is not None:
        state.report.collection.deselected += len(items)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Note the golden folders of every selected test module, for the unused-golden judgement."""
    state = session.config.stash.get(STATE, None)
    if state is None:
        return
    collection = state.report.collection
    collection.selected = len(session.items)
    for item in session.items:
        module_dir = Path(item.path).parent
        collection.golden_dirs.add(str(module_dir / state.settings.golden_dir))
        try:
            settings = _marker_settings(item, state)
        except pytest.UsageError:  # reported when the test runs
            continue
        collection.golden_dirs.add(str(module_dir / settings.golden_dir))
        if "modelpack" in getattr(item, "fixturenames", ()):
            name = getattr(item, "originalname", item.name)
            collection.tests[item.nodeid] = str(module_dir / settings.golden_dir / name)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Gate: start hashing the test's goldens on another core before its fixtures build the model
    (:meth:`SessionState.prefetch`)."""
    state = item.config.stash.get(STATE, None)
    if state is None or state.settings.mode is not Mode.GOLDEN:
        return
    if "modelpack" not in getattr(item, "fixturenames", ()):
        return
    if item.get_closest_marker("skip") is not None or item.get_closest_marker("skipif"):
        return  # likely skipped: no head start for a check that may never run
    from .fixture import device_unavailable

    callspec = getattr(item, "callspec", None)
    device = callspec.params.get("modelpack") if callspec is not None else None
    try:
        if isinstance(device, str) and device_unavailable(device) is not None:
            return  # the fixture skips this device
        state.prefetch(item.nodeid, state.report.collection.golden_dirs)
    except Exception:  # noqa: BLE001 - a head start only: the check reads and says it all
        pass


def pytest_runtest_teardown(item: pytest.Item) -> None:
    """Stop a head-start hash the test's check did not take."""
    state = item.config.stash.get(STATE, None)
    if state is not None and state.early:
        state.release_prefetched(item.nodeid)


class FinishedTests:
    """Counts the tests that ran to the end (or were skipped): a run stopped early never judges
    unused goldens. A plugin object, because ``pytest_runtest_logreport`` gets no config."""

    def __init__(self, finished: set[str]) -> None:
        self.finished = finished

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" or (report.when == "setup" and not report.passed):
            self.finished.add(report.nodeid)


def _narrowing_options(config: pytest.Config) -> list[str]:
    """The options given that narrow or reorder what runs (a run with any never judges)."""
    option = config.option
    return [
        flag
        for flag, attr in (
            ("-k", "keyword"),
            ("-m", "markexpr"),
            ("--lf", "lf"),
            ("--ff", "failedfirst"),
            ("--sw", "stepwise"),
            ("--sw-skip", "stepwise_skip"),
            ("--deselect", "deselect"),
            ("--collect-only", "collectonly"),
        )
        if getattr(option, attr, None)
    ]


def _judge_unused(session: pytest.Session, state: SessionState) -> None:
    config = session.config
    if state.settings.mode is not Mode.GOLDEN:
        return
    testpaths = config.getini("testpaths")
    from_testpaths = config.args_source == pytest.Config.ArgsSource.TESTPATHS
    root = Path(config.rootpath)
    roots = [] if from_testpaths else [root / t for t in testpaths] if testpaths else [root]
    if session.exitstatus == pytest.ExitCode.INTERRUPTED:
        reason: str | None = "the run was interrupted"
    else:
        from .report.unused import not_judged_reason

        collection = state.report.collection
        reason = not_judged_reason(
            filters=_narrowing_options(config),
            args=[] if from_testpaths else list(config.args),
            roots=roots,
            invocation_dir=Path(config.invocation_params.dir),
            selected=collection.selected,
            deselected=collection.deselected,
            finished=len(state.report.finished),
        )
    state.report.judge_unused(root, state.settings.unused, reason)


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    state = config.stash.get(STATE, None)
    if state is None:
        return
    state.release_prefetched()
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: hand the rows to the controller
        workeroutput[WORKER_KEY] = {
            "rows": state.report.rows,
            "skips": state.report.skips,
            "collection": state.report.collection.to_dict(),
        }
        return
    state.report.problems.extend(state.report.duplicate_names())
    _judge_unused(session, state)
    from .report import Report
    from .report.html import write_html

    for flag, write in ((FLAG_REPORT, Report.write), (FLAG_HTML, write_html)):
        if config.getoption(flag):
            _write_report(state, flag, Path(config.getoption(flag)), write)
    if (state.report.problems or state.report.unused_fails()) and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _write_report(
    state: SessionState, flag: str, path: Path, write: Callable[[Report, Path], None]
) -> None:
    """Write one report; an OS error is a modelpack failure naming the path, not a traceback."""
    try:
        write(state.report, path)
    except OSError as exc:
        from .errors import ReportIOError

        error = ReportIOError(
            f"cannot write {path}: {exc.strerror or exc}",
            detail=[f"{flag} {path}", "the checks themselves ran; only this report is missing"],
            fix=f"pass {flag} a file path in a folder you can write to (not a folder itself)",
        )
        state.report.problems.append(error.render())


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: merge a worker's rows into the one summary."""
    state = node.config.stash.get(STATE, None)
    output = (getattr(node, "workeroutput", None) or {}).get(WORKER_KEY)
    if state is not None and output is not None:
        state.report.merge(output["rows"])
        state.report.skips.extend(output["skips"])
        state.report.collection.merge(output["collection"])


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is None or getattr(config, "workeroutput", None) is not None:
        return
    lines = state.report.lines()
    if lines:
        terminalreporter.section("modelpack")
        for line in lines:
            terminalreporter.line(line)
