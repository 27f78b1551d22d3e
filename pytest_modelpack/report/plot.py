"""Inline SVG plots of per-input errors against the tolerance (for the HTML report).

Pure string building: no plotting library, no script, no network. Every number is formatted by
this module; the only text taken from a row (the stage name) is escaped.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

WIDTH, HEIGHT = 300, 150
LEFT, RIGHT, TOP, BOTTOM = 46, 8, 18, 22
ZERO_BAND = 12


def fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if math.isinf(x):
        return "inf"
    return "0" if x == 0 else f"{x:.2g}"


def _panel(
    values: list[float], used: list[float], limit: float | None, title: str, limit_name: str
) -> str:
    """One log-scale panel: a dot per input (green within tolerance, red outside), and the
    tolerance as a dashed line."""
    finite = [v for v in values if v > 0 and math.isfinite(v)]
    anchors = finite + ([limit] if limit else [])
    lo = min(anchors) / 10 if anchors else 1e-9
    hi = max(anchors) * 10 if anchors else 1.0
    lo_e, hi_e = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    if hi_e - lo_e < 2:
        lo_e -= 1
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    log_h = plot_h - ZERO_BAND  # a log axis has no 0: zeros get a band of their own below it

    def y_of(v: float) -> float:
        if v <= 0:
            return TOP + plot_h - ZERO_BAND / 2
        if not math.isfinite(v):
            return TOP
        t = (math.log10(v) - lo_e) / (hi_e - lo_e)
        return TOP + log_h * (1 - min(max(t, 0.0), 1.0))

    n = max(len(values), 1)
    parts = [
        f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
        f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img">',
        f"<title>{escape(title)}</title>",
        f'<text x="{LEFT}" y="12" class="pt">{escape(title)}</text>',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" class="frame"/>',
    ]
    step = max(1, (hi_e - lo_e) // 4)
    for e in range(lo_e, hi_e + 1, step):
        y = y_of(10.0**e)
        parts += [
            f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>',
            f'<text x="{LEFT - 4}" y="{y + 3:.1f}" class="tick" text-anchor="end">1e{e}</text>',
        ]
    parts += [
        f'<text x="{LEFT - 4}" y="{TOP + plot_h - 3}" class="tick" text-anchor="end">0</text>'
        f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{TOP + log_h}" y2="{TOP + log_h}" '
        'class="grid"/>',
        f'<text x="{LEFT + plot_w}" y="{HEIGHT - 4}" class="tick" text-anchor="end">'
        f"input 1..{len(values)}</text>",
    ]
    if limit:
        y = y_of(limit)
        parts.append(
            f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" class="limit"/>'
            f'<text x="{LEFT + 3}" y="{y - 3:.1f}" class="lim">{limit_name}={fmt(limit)}</text>'
        )
    else:
        parts.append(
            f'<text x="{LEFT + 3}" y="{TOP + log_h - 4}" class="lim">{limit_name}=0 (exact)</text>'
        )
    for i, (v, u) in enumerate(zip(values, used, strict=False)):
        cls = "ok" if u <= 1 else "bad"
        x = LEFT + plot_w * ((i + 0.5) / n)
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y_of(v):.1f}" r="2.6" class="{cls}">'
            f"<title>input #{i + 1}: {fmt(v)} ({fmt(u * 100) if math.isfinite(u) else 'inf'}% of "
            f"the tolerance)</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)


def comparison_svg(comparison: dict[str, Any]) -> str:
    """Two panels for one comparison stage: max abs error vs atol, max rel error vs rtol."""
    points = comparison.get("points") or []
    values = [[float(v) for v in p] for p in points if isinstance(p, list) and len(p) == 3]
    used = [p[2] for p in values]
    atol, rtol = (_number(comparison.get(name)) for name in ("atol", "rtol"))
    return _panel([p[0] for p in values], used, atol, "max abs error per input", "atol") + _panel(
        [p[1] for p in values], used, rtol, "max rel error per input", "rtol"
    )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and value > 0 else None
