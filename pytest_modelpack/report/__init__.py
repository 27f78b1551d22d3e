"""Reports of a session: the terminal summary, the JSON report, JUnit properties, the HTML page,
and the unused-golden judgement of a full gate run.

Rows are plain dicts (JSON-able) so pytest-xdist workers can send them to the controller.
"""

from __future__ import annotations

from .summary import Report, format_size

__all__ = ["Report", "format_size"]
