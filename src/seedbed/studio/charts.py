"""Charts as inline SVG, drawn on the server: no chart library, nothing to fetch, and the same picture in a
screenshot, a saved page and a browser without JavaScript. Two charts over one scaling helper (`axis`): loss curves
on a log-scale y axis, since losses fall by factors, and the models' size / quality scatter with its Pareto front.

    loss_chart({"train": [(5, 2.3), (10, 1.9)], "validation": [(0, 2.5), (10, 2.0)]})  # '<svg ...'
    scatter_chart([ScatterPoint("a", 12.0, 0.9), ScatterPoint("b", 300.0, 0.7, front=True)], "MiB", "loss")
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 640, 260, 56, 110, 14, 34
COLOURS = {"train": "#1565c0", "validation": "#d0574a"}
PAST = "#b0b8c1"  # earlier runs, drawn beneath


@dataclass
class Axis:
    """Data values to pixels: `low`..`high` (log10 of the values on a log axis) onto `start`..`stop` (a y axis runs
    from the bottom pixel up, so its start is the larger)."""

    low: float
    high: float
    start: float
    stop: float
    log: bool = False

    def __call__(self, value: float) -> float:
        v = math.log10(value) if self.log else value
        return self.start + (v - self.low) / (self.high - self.low) * (self.stop - self.start)

    def bounds(self) -> tuple[float, float]:
        """The range drawn, in data units."""
        return (10 ** self.low, 10 ** self.high) if self.log else (self.low, self.high)


def axis(values: list[float], start: float, stop: float, log: bool = False, pad: float = 0.0,
         least: float = 1.0) -> Axis:
    """The axis that fits `values`, widened by `pad` of its range at each end; a single value gets a range of
    `least` (in log10 units on a log axis), so nothing divides by zero."""
    vs = [math.log10(v) if log else v for v in values]
    low, high = min(vs), max(vs)
    high = high if high > low else low + least
    margin = (high - low) * pad
    return Axis(low - margin, high + margin, start, stop, log)


def loss_chart(series: dict[str, list[tuple[float, float]]], past: dict[str, list[tuple[float, float]]] | None = None,
               title: str = "loss") -> str:
    """An SVG line chart of named (step, loss) series on a log y axis; `past` runs are drawn grey beneath."""
    past = past or {}
    points = [p for s in (*series.values(), *past.values()) for p in s if p[1] > 0]
    if not points:
        return '<p class="meta" id="no-curve">No loss logged yet.</p>'
    sx = axis([p[0] for p in points], PAD_L, W - PAD_R)
    sy = axis([p[1] for p in points], H - PAD_B, PAD_T, log=True, pad=0.05, least=0.1)
    x0, x1 = sx.bounds()

    parts = [f'<svg class="loss-chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
             f'aria-label="{escape(title)}"><rect x="{PAD_L}" y="{PAD_T}" width="{W - PAD_L - PAD_R}" '
             f'height="{H - PAD_T - PAD_B}" fill="none" stroke="#e4e7eb"/>']
    labels = ticks(*sy.bounds())
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


def linear_ticks(low: float, high: float) -> list[float]:
    """Round values between low and high for a linear axis: steps of 1, 2 or 5 times a power of ten, at most ~6."""
    raw = (high - low) / 5 or 1.0
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return [i * step for i in range(math.ceil(low / step), math.floor(high / step) + 1)]


WIDE_SPREAD = 20  # sizes spanning more than this factor get a log x axis (a 5 MiB adapter beside a 500 MiB model)
FRONT, BEHIND = "#1565c0", "#9aa5b1"


@dataclass
class ScatterPoint:
    name: str
    x: float  # size on disk (MiB)
    y: float  # the quality figure
    label: str = ""  # written after the name: a measured speed, never an invented one
    front: bool = False  # on the Pareto front: drawn filled, in colour, joined by a line


def scatter_chart(points: list[ScatterPoint], x_title: str, y_title: str) -> str:
    """An SVG scatter of named points, the Pareto front's points joined; x on a log scale when the values spread
    wide (WIDE_SPREAD), y linear."""
    if not points:
        return '<p class="meta" id="no-scatter">No model has this figure yet.</p>'
    xs = [p.x for p in points]
    log_x = min(xs) > 0 and max(xs) / min(xs) > WIDE_SPREAD
    sx = axis(xs, PAD_L, W - PAD_R, log=log_x, pad=0.06, least=0.2 if log_x else max(1.0, xs[0] * 0.2))
    ys = [p.y for p in points]
    sy = axis(ys, H - PAD_B, PAD_T, pad=0.1, least=max(abs(ys[0]) * 0.2, 1e-3))
    parts = [f'<svg class="scatter-chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
             f'aria-label="{escape(y_title)} against {escape(x_title)}"><rect x="{PAD_L}" y="{PAD_T}" '
             f'width="{W - PAD_L - PAD_R}" height="{H - PAD_T - PAD_B}" fill="none" stroke="#e4e7eb"/>']
    for tick in linear_ticks(*sy.bounds()):
        y = sy(tick)
        parts.append(f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#f0f3f6"/>'
                     f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:.3g}</text>')
    for tick in (ticks if log_x else linear_ticks)(*sx.bounds()):
        parts.append(f'<text x="{sx(tick):.1f}" y="{H - 18}" text-anchor="middle">{tick:g}</text>')
    parts.append(f'<text x="{(PAD_L + W - PAD_R) / 2:.0f}" y="{H - 3}" text-anchor="middle">{escape(x_title)}'
                 f'{" (log scale)" if log_x else ""}</text><text x="4" y="{PAD_T - 2}">{escape(y_title)}</text>')
    front = sorted((p for p in points if p.front), key=lambda p: p.x)
    if len(front) > 1:
        path = " ".join(f"{sx(p.x):.1f},{sy(p.y):.1f}" for p in front)
        parts.append(f'<polyline class="front" fill="none" stroke="{FRONT}" stroke-dasharray="4 3" points="{path}"/>')
    for p in points:
        x, y, colour = sx(p.x), sy(p.y), FRONT if p.front else BEHIND
        text = p.name + (f" · {p.label}" if p.label else "")
        parts.append(f'<circle class="point{" front" if p.front else ""}" data-name="{escape(p.name)}" cx="{x:.1f}" '
                     f'cy="{y:.1f}" r="5" fill="{colour if p.front else "#fff"}" stroke="{colour}" stroke-width="2"/>'
                     f'<text x="{x + 8:.1f}" y="{y - 7:.1f}" style="fill:{colour}">{escape(text)}</text>')
    return "".join(parts) + "</svg>"
