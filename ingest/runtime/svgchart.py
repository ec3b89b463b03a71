"""Small inline SVG charts for the run report: lines over time, reference lines, phase bars.

Each plot area carries its scales as data attributes (`data-x-domain`, `data-x-range`, ...),
so a reader (or a test) can turn a polyline's points back into the values plotted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 880, 260
LEFT, RIGHT, TOP, BOTTOM = 72, 16, 26, 34
PHASE_COLOURS = {
    "profile": "#8ecae6",
    "plan": "#cdb4db",
    "read/COPY": "#b7e4c7",
    "commit": "#ffd6a5",
}
OTHER_PHASE = "#dddddd"


@dataclass(frozen=True)
class Scale:
    """A linear map from values (`lo`..`hi`) to pixels (`start`..`end`)."""

    lo: float
    hi: float
    start: float
    end: float

    def __call__(self, value: float) -> float:
        span = self.hi - self.lo or 1.0
        return self.start + (value - self.lo) / span * (self.end - self.start)

    def attrs(self, axis: str) -> str:
        return (
            f'data-{axis}-domain="{self.lo:g} {self.hi:g}" '
            f'data-{axis}-range="{self.start:g} {self.end:g}"'
        )


@dataclass(frozen=True)
class Line:
    """A series to draw: one value per x."""

    name: str
    values: Sequence[float]
    colour: str


@dataclass(frozen=True)
class Level:
    """A horizontal reference line, such as the memory budget."""

    label: str
    value: float
    colour: str


@dataclass(frozen=True)
class Band:
    """A shaded stretch of the x axis, such as a phase of the run."""

    label: str
    start: float
    end: float


def nice_ticks(hi: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least `hi` (steps of 1, 2 or 5 times a power of ten)."""
    if hi <= 0:
        return [0.0, 1.0]
    raw = hi / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return [i * step for i in range(math.ceil(hi / step - 1e-9) + 1)]


def phase_colour(name: str) -> str:
    """The colour a phase has in every chart of the report."""
    return PHASE_COLOURS.get(name, OTHER_PHASE)


def _x_scale(xs: Sequence[float], bands: Sequence[Band]) -> tuple[Scale, list[float]]:
    hi = max([*xs, *(b.end for b in bands), 1e-3])
    ticks = nice_ticks(hi)
    return Scale(0.0, ticks[-1], LEFT, WIDTH - RIGHT), ticks


def line_chart(
    title: str,
    xs: Sequence[float],
    lines: Sequence[Line],
    *,
    levels: Sequence[Level] = (),
    bands: Sequence[Band] = (),
    unit: str = "",
    fmt: Callable[[float], str] = lambda v: f"{v:,.0f}",
) -> str:
    """An SVG chart of `lines` over `xs` (seconds), with reference `levels` and shaded `bands`."""
    x, x_ticks = _x_scale(xs, bands)
    top = max([0.0, *(v for line in lines for v in line.values), *(lv.value for lv in levels)])
    y_ticks = nice_ticks(top * 1.05 or 1.0)
    y = Scale(0.0, y_ticks[-1], HEIGHT - BOTTOM, TOP)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}"'
        f' role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for band in bands:
        x0, x1 = x(band.start), x(band.end)
        parts.append(
            f'<rect class="band" x="{x0:.2f}" y="{TOP}" width="{max(x1 - x0, 0.5):.2f}"'
            f' height="{HEIGHT - BOTTOM - TOP}" fill="{phase_colour(band.label)}"'
            f' opacity="0.45"><title>{escape(band.label)}</title></rect>'
        )
    parts += _axes(x, y, x_ticks, y_ticks, unit, fmt)
    for level in levels:
        ly = y(level.value)
        parts.append(
            f'<line class="level" data-level="{escape(level.label)}" x1="{LEFT}" y1="{ly:.2f}"'
            f' x2="{WIDTH - RIGHT}" y2="{ly:.2f}" stroke="{level.colour}" stroke-width="1.5"'
            ' stroke-dasharray="6 4"/>'
            f'<text x="{WIDTH - RIGHT - 4}" y="{ly - 4:.2f}" text-anchor="end"'
            f' fill="{level.colour}">{escape(level.label)} {escape(fmt(level.value))}'
            f" {escape(unit)}</text>"
        )
    parts.append(f'<g class="plot" {x.attrs("x")} {y.attrs("y")} data-unit="{escape(unit)}">')
    for line in lines:
        points = " ".join(f"{x(a):.2f},{y(b):.2f}" for a, b in zip(xs, line.values, strict=True))
        parts.append(
            f'<polyline data-series="{escape(line.name)}" points="{points}" fill="none"'
            f' stroke="{line.colour}" stroke-width="2" stroke-linejoin="round"/>'
        )
    parts.append("</g></svg>")
    return "\n".join(parts)


def _axes(
    x: Scale,
    y: Scale,
    x_ticks: Sequence[float],
    y_ticks: Sequence[float],
    unit: str,
    fmt: Callable[[float], str],
) -> list[str]:
    parts = []
    for tick in y_ticks:
        ty = y(tick)
        parts.append(
            f'<line class="grid" x1="{LEFT}" y1="{ty:.2f}" x2="{WIDTH - RIGHT}" y2="{ty:.2f}"/>'
            f'<text x="{LEFT - 6}" y="{ty + 4:.2f}" text-anchor="end">{escape(fmt(tick))}</text>'
        )
    for tick in x_ticks:
        tx = x(tick)
        parts.append(
            f'<line class="tick" x1="{tx:.2f}" y1="{HEIGHT - BOTTOM}" x2="{tx:.2f}"'
            f' y2="{HEIGHT - BOTTOM + 4}"/>'
            f'<text x="{tx:.2f}" y="{HEIGHT - BOTTOM + 17}" text-anchor="middle">{tick:g} s</text>'
        )
    parts.append(
        f'<line class="axis" x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}"'
        f' y2="{HEIGHT - BOTTOM}"/>'
        f'<text x="{LEFT - 6}" y="12" text-anchor="end" class="unit">{escape(unit)}</text>'
    )
    return parts


def phase_bars(phases: Sequence[Band], total: float) -> str:
    """The run's phases as bars on the same time axis as the charts."""
    x, ticks = _x_scale([total], phases)
    row, height = 26, 26 * max(len(phases), 1) + BOTTOM
    parts = [
        f'<svg class="chart phases" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}"'
        f' height="{height}" role="img" aria-label="phases" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, band in enumerate(phases):
        x0, x1, top = x(band.start), x(band.end), i * row + 4
        parts.append(
            f'<rect data-phase="{escape(band.label)}" x="{x0:.2f}" y="{top}"'
            f' width="{max(x1 - x0, 1.5):.2f}" height="{row - 8}" rx="3"'
            f' fill="{phase_colour(band.label)}" stroke="#555" stroke-width="0.5"/>'
            f'<text x="{LEFT - 6}" y="{top + 13}" text-anchor="end">{escape(band.label)}</text>'
            f'<text x="{min(x1 + 6, WIDTH - 60):.2f}" y="{top + 13}">'
            f"{band.end - band.start:,.2f} s</text>"
        )
    base = height - BOTTOM
    for tick in ticks:
        parts.append(
            f'<text x="{x(tick):.2f}" y="{base + 17}" text-anchor="middle">{tick:g} s</text>'
        )
    parts.append(
        f'<line class="axis" x1="{LEFT}" y1="{base}" x2="{WIDTH - RIGHT}" y2="{base}"/></svg>'
    )
    return "\n".join(parts)
