"""The one exception tree of pytest-modelpack.

Every failure the plugin reports is a :class:`ModelpackError` carrying a *headline* (one line that
names the golden and the kind of failure), *detail* lines and a *fix* line. The pytest adapter
renders it without the plugin's own frames; the CLI prints the same text.
"""

from __future__ import annotations

from collections.abc import Iterable


class ModelpackError(Exception):
    """Base of all pytest-modelpack failures: headline, detail, fix."""

    #: The upper-case kind shown in the headline (``CODE DRIFT``, ``OUTPUT MISMATCH`` ...).
    kind = "ERROR"

    def __init__(
        self,
        summary: str,
        *,
        name: str | None = None,
        detail: Iterable[str] = (),
        fix: str | None = None,
    ) -> None:
        self.name = name
        self.summary = summary
        self.detail = list(detail)
        self.fix = fix
        super().__init__(self.render())

    @property
    def headline(self) -> str:
        who = f"{self.name}: " if self.name else ""
        return f"modelpack: {who}{self.kind} — {self.summary}"

    def render(self) -> str:
        lines = [self.headline]
        for line in self.detail:
            lines.extend("  " + part for part in str(line).splitlines() or [""])
        if self.fix:
            fix_lines = self.fix.splitlines()
            lines.append("  fix: " + fix_lines[0])
            lines.extend("       " + part for part in fix_lines[1:])
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()

    def with_name(self, name: str) -> ModelpackError:
        """Return this error with the golden's name filled in (keeps everything else)."""
        if self.name is None:
            self.name = name
            self.args = (self.render(),)
        return self


class UsageError(ModelpackError):
    """Bad configuration: an ini option, marker argument or check() argument."""

    kind = "USAGE ERROR"


class Unpicklable(ModelpackError):
    kind = "UNPICKLABLE"


class LossyRoundTrip(ModelpackError):
    kind = "LOSSY ROUND-TRIP"


class Nondeterministic(ModelpackError):
    kind = "NONDETERMINISTIC"


class LoadError(ModelpackError):
    kind = "LOAD ERROR"


class UnsafeGolden(ModelpackError):
    kind = "UNSAFE GOLDEN"


class CorruptGolden(ModelpackError):
    kind = "CORRUPT GOLDEN"


class CodeDrift(ModelpackError):
    kind = "CODE DRIFT"


class EnvDrift(ModelpackError):
    """Environment drift made fatal by a warnings filter (``-W error::...EnvDriftWarning``)."""

    kind = "ENV DRIFT"


class OutputMismatch(ModelpackError):
    kind = "OUTPUT MISMATCH"


class MissingGolden(ModelpackError):
    kind = "MISSING GOLDEN"


class DuplicateGolden(ModelpackError):
    kind = "DUPLICATE GOLDEN"


class UnusedGolden(ModelpackError):
    """A golden folder that no check claimed in a full, unfiltered gate run."""

    kind = "UNUSED GOLDEN"


class Unrecordable(ModelpackError):
    """A model input or output that examples.json cannot hold without pickle."""

    kind = "UNRECORDABLE VALUE"


class GoldenIOError(ModelpackError):
    """The operating system refused to read or write a golden: disk full, read-only file system,
    file-size limit, permissions, a directory where a file belongs."""

    kind = "GOLDEN I/O ERROR"


class AllInputsRaised(ModelpackError):
    """Every input raised: the check compared exceptions only and proved nothing about outputs."""

    kind = "EVERY INPUT RAISED"


class AllOutputsNone(ModelpackError):
    """Every output was None: the check compared None with None and proved nothing."""

    kind = "EVERY OUTPUT NONE"


class ReportIOError(ModelpackError):
    """A report (``--modelpack-report``, ``--modelpack-html``) could not be written."""

    kind = "REPORT I/O ERROR"
