"""Loss curves as inline SVG, drawn on the server: no chart library, nothing to fetch, and the same picture in a
screenshot, a saved page and a browser without JavaScript. A log-scale y axis, since losses fall by factors.

    loss_chart({"train": [(5, 2.3), (10, 1.9)], "validation": [(0, 2.5), (10, 2.0)]})  # '<svg ...'
"""

from __future__ import annotations

import math
from html import escape

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 640, 260, 56, 110, 14, 34
COLOURS = {"train": "#1565c0", "validation": "#d0574a"}
PAST = "#b0b8c1"  # earlier runs, drawn beneath


def loss_chart(series: dict[str, list[tuple[float, float]]], past: dict[str, list[tuple[float, float]]] | None = None,
               title: str = "loss") -> str:
    """An SVG line chart of named (step, loss) series on a log y axis; `past` runs are drawn grey beneath."""
    past = past or {}
    points = [p for s in (*series.values(), *past.values()) for p in s if p[1] > 0]
    if not points:
        return '<p class="meta" id="no-curve">No loss logged yet.</p>'
    xs, ys = [p[0] for p in points], [math.log10(p[1]) for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 0.1
    pad = (y1 - y0) * 0.05
    y0, y1 = y0 - pad, y1 + pad

    def sx(x):
        return PAD_L + (x - x0) / (x1 - x0) * (W - PAD_L - PAD_R)

    def sy(y):
        return PAD_T + (1 - (math.log10(y) - y0) / (y1 - y0)) * (H - PAD_T - PAD_B)

    parts = [f'<svg class="loss-chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
             f'aria-label="{escape(title)}"><rect x="{PAD_L}" y="{PAD_T}" width="{W - PAD_L - PAD_R}" '
             f'height="{H - PAD_T - PAD_B}" fill="none" stroke="#e4e7eb"/>']
    labels = ticks(10 ** y0, 10 ** y1)
    if len(labels) < 3:  # a narrow range (5.3 to 6.0) holds no round value: label the curves' own ends
        labels = sorted(set(labels) | {min(p[1] for p in points), max(p[1] for p in points)})
    for tick in labels:
        y = sy(tick)
        parts.append(f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#f0f3f6"/>'
                     f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:.3g}</text>')
    parts.append(f'<text x="{PAD_L}" y="{H - 8}">step {x0:g}</text>'
                 f'<text x="{W - PAD_R}" y="{H - 8}" text-anchor="end">{x1:g}</text>')
    drawn = [(name, pts, PAST, "past") for name, pts in past.items()]
    drawn += [(name, pts, COLOURS.get(name, "#2e7d32"), "now") for name, pts in series.items()]
    legend = 0
    for name, pts, colour, kind in drawn:
        pts = [p for p in pts if p[1] > 0]
        if not pts:
            continue
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        parts.append(f'<polyline class="curve {kind}" data-name="{escape(name)}" fill="none" stroke="{colour}" '
                     f'stroke-width="{2 if kind == "now" else 1.2}" points="{path}"/>')
        if len(pts) == 1:
            parts.append(f'<circle cx="{sx(pts[0][0]):.1f}" cy="{sy(pts[0][1]):.1f}" r="3" fill="{colour}"/>')
        parts.append(f'<text x="{W - PAD_R + 8}" y="{PAD_T + 12 + 16 * legend}" fill="{colour}" style="fill:{colour}">'
                     f'{escape(name)}</text>')
        legend += 1
    return "".join(parts) + "</svg>"


def ticks(low: float, high: float) -> list[float]:
    """Round values for a log axis between low and high: 1, 2, 5 times powers of ten (at most ~6)."""
    found = [m * 10 ** e for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
             for m in (1, 2, 5) if low <= m * 10 ** e <= high]
    return found[:: max(1, len(found) // 6)]
