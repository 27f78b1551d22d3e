"""``--modelpack-html PATH``: one self-contained page of every modelpack check.

Per golden and device: the verdict, headline, detail (drift diffs coloured) and fix, the state
diff when there is one, the environment and structure tree recorded in the golden's manifest, and
for each comparison a plot of per-input max abs and max rel error against the tolerance.

The page loads nothing: inline CSS, inline SVG, no script, and a Content-Security-Policy that
forbids any fetch. Everything taken from a row or a manifest is escaped: a golden is untrusted
input, and so are the model's outputs quoted in failure messages.
"""

from __future__ import annotations

import math
import platform
import sys
from html import escape
from pathlib import Path
from typing import Any

from ..golden.fileio import write_atomic
from ..golden.manifest import parse_manifest
from .plot import comparison_svg, fmt
from .summary import Report, format_size

#: A manifest bigger than this is not read for the page (the gate reads it with its own checks).
MANIFEST_LIMIT = 16 << 20
#: At most this many structure-tree lines per golden are shown.
TREE_LIMIT = 2000

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#1d232a;background:#fafbfc}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:0}
.meta{color:#57606a;margin-bottom:16px} .card{background:#fff;border:1px solid #d0d7de;
border-left:6px solid #2da44e;border-radius:6px;padding:12px 16px;margin:12px 0}
.card.failed{border-left-color:#cf222e} .card.warn{border-left-color:#bf8700}
.badge{display:inline-block;border-radius:10px;padding:1px 9px;font-size:12px;font-weight:600;
color:#fff;background:#2da44e;margin-left:8px;vertical-align:middle}
.failed .badge{background:#cf222e} .headline{font-weight:600;margin:8px 0 4px}
pre{background:#f6f8fa;border-radius:4px;padding:8px;overflow-x:auto;margin:4px 0;
font:12px/1.4 ui-monospace,monospace;white-space:pre-wrap} .add{color:#116329;background:#dafbe1}
.del{color:#82071e;background:#ffebe9} .fix{color:#0a3069;font-weight:600}
table.kv td{padding:0 12px 0 0;font-size:13px} .stage{margin:8px 0 2px;font-weight:600}
.plots{display:flex;flex-wrap:wrap;gap:8px} svg.plot{background:#fff}
.frame{fill:none;stroke:#8c959f} .grid{stroke:#eaeef2} .limit{stroke:#cf222e;stroke-dasharray:4 3}
.pt{font-size:11px;fill:#1d232a} .tick{font-size:9px;fill:#57606a} .lim{font-size:10px;fill:#cf222e}
.ok{fill:#2da44e} .bad{fill:#cf222e} .note{color:#57606a;font-size:13px}
summary{cursor:pointer;color:#0969da;margin-top:6px}
"""


def write_html(report: Report, path: Path) -> None:
    """Render the session's report and write it atomically to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, render_html(report).encode("utf-8"))


def render_html(report: Report) -> str:
    body = [
        "<h1>pytest-modelpack report</h1>",
        f'<div class="meta">{escape(report.totals("no checks"))} — '
        f"<b>{'FAILED' if report.failed() else 'PASSED'}</b><br>"
        f"this run: {escape(_environment())}</div>",
    ]
    body += _problems(report) + [_row_card(row) for row in report.sorted_rows()]
    body += [
        f'<div class="note">skipped: {escape(str(skip.get("nodeid")))} — '
        f"{escape(str(skip.get('reason')))}</div>"
        for skip in report.skips
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">"
        "<title>pytest-modelpack report</title>"
        f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _environment() -> str:
    parts = [f"Python {platform.python_version()}"]
    torch = sys.modules.get("torch")
    if torch is not None:
        parts.append(f"torch {getattr(torch, '__version__', '?')}")
    parts.append(platform.platform(terse=True))
    return ", ".join(parts)


def _problems(report: Report) -> list[str]:
    out = [
        f'<div class="card failed"><div class="headline">{escape(problem)}</div></div>'
        for problem in report.problems
    ]
    cls = "failed" if report.unused_fails() else "warn"
    for error in report.unused:
        out.append(
            f'<div class="card {cls}"><div class="headline">{escape(error.headline)}</div>'
            f"{_pre(error.detail)}{_fix(error.fix)}</div>"
        )
    if report.unused_note:
        out.append(f'<div class="note">unused goldens: {escape(report.unused_note)}</div>')
    return out


def _pre(lines: Any) -> str:
    if not lines:
        return ""
    shown = []
    for line in (str(x) for x in lines):
        text = escape(line)
        stripped = line.lstrip()
        if stripped.startswith("+") and not stripped.startswith("+++"):
            text = f'<span class="add">{text}</span>'
        elif stripped.startswith("-") and not stripped.startswith("---"):
            text = f'<span class="del">{text}</span>'
        shown.append(text)
    return "<pre>" + "\n".join(shown) + "</pre>"


def _fix(fix: Any) -> str:
    return f'<pre class="fix">fix: {escape(str(fix))}</pre>' if fix else ""


def _row_card(row: dict[str, Any]) -> str:
    verdict = str(row.get("verdict"))
    cls = "failed" if verdict == "failed" else "warn" if row.get("warnings") else ""
    parts = [
        f'<section class="card {cls}"><h2>{escape(str(row["name"]))} '
        f'[{escape(str(row["device"]))}]<span class="badge">{escape(verdict)}</span></h2>',
        '<table class="kv"><tr>'
        f"<td>test: {escape(str(row.get('nodeid')))}</td>"
        f"<td>mode: {escape(str(row.get('mode')))}</td>"
        f"<td>examples: {int(row.get('examples') or 0)}</td>"
        f"<td>bundle: {escape(format_size(row.get('bundle_size')))}</td>"
        f"<td>time: {float(row.get('seconds') or 0.0):.2f}s</td></tr></table>",
    ]
    if row.get("headline"):
        parts.append(
            f'<div class="headline">modelpack: {escape(str(row["name"]))}: '
            f"{escape(str(row['headline']))}</div>"
        )
        parts.append(_pre(row.get("error_detail")))
        parts.append(_fix(row.get("fix")))
    if row.get("warnings"):
        parts.append('<div class="stage">warnings</div>' + _pre(row["warnings"]))
    state_diff = row.get("state_diff")
    if state_diff:
        parts.append('<div class="stage">state diff</div>' + _pre(state_diff))
    parts += [_comparison(c) for c in row.get("comparisons") or []]
    parts += [_manifest(Path(str(row.get("golden")))), "</section>"]
    return "".join(parts)


def _comparison(comparison: dict[str, Any]) -> str:
    points = comparison.get("points") or []
    used = [float(p[2]) for p in points if isinstance(p, list) and len(p) == 3]
    worst = max(used, default=0.0)
    n = int(comparison.get("inputs") or len(points))
    if comparison.get("exact"):
        tol = "exact"
    else:
        tol = f"rtol={fmt(comparison.get('rtol'))}, atol={fmt(comparison.get('atol'))}"
    if not used:
        verdict = "no numeric output to measure"
    elif worst == 0:
        verdict = "every output identical"
    elif math.isfinite(worst):
        verdict = f"worst input used {worst * 100:.3g}% of the tolerance"
    else:
        verdict = "outside an exact tolerance"
    shown = f" (first {len(points)} plotted)" if len(points) < n else ""
    return (
        f'<div class="stage">{escape(str(comparison.get("stage")))} — {n} input(s){shown}, '
        f"{escape(tol)}: {escape(verdict)}</div>"
        f'<div class="plots">{comparison_svg(comparison)}</div>'
        '<div class="note">passes when |got − expected| ≤ atol + rtol·|expected| for every '
        "element; green = within tolerance, red = outside</div>"
    )


def _manifest(folder: Path) -> str:
    """The golden's recorded environment and structure tree (JSON only; nothing unpickled); a
    manifest that does not validate shows nothing (its row already carries the error)."""
    path = folder / "manifest.json"
    try:
        if not path.is_file() or path.stat().st_size > MANIFEST_LIMIT:
            return ""
        manifest = parse_manifest(path.read_bytes())
    except (OSError, ValueError):
        return ""
    out = []
    rows = "".join(
        f"<tr><td>{escape(str(k))}</td><td>{escape(str(v))}</td></tr>"
        for k, v in manifest.environment.items()
    )
    rows += "".join(
        f"<tr><td>created by {escape(k)}</td><td>{escape(str(v))}</td></tr>"
        for k, v in (("test", manifest.created_by.test), ("device", manifest.created_by.device))
    )
    out.append(
        f'<details><summary>golden environment</summary><table class="kv">{rows}</table></details>'
    )
    tree = manifest.structure
    if tree:
        lines = [f"{k}: {v}" for k, v in list(tree.items())[:TREE_LIMIT]]
        if len(tree) > TREE_LIMIT:
            lines.append(f"... and {len(tree) - TREE_LIMIT} more")
        out.append(
            f"<details><summary>structure tree ({len(tree)} entries)</summary>"
            f"<pre>{escape(chr(10).join(lines))}</pre></details>"
        )
    return "".join(out)
