"""Charts drawn on the server as SVG: grouped bars and lines, with no script and no library.

Each chart is an ``<svg role="img">`` named by its own ``<title>`` and ``<desc>``; every bar and
point carries a ``<title>`` with its exact value, and the pages show the same numbers as tables.
Every fragment is a ``Markup`` template whose arguments are escaped as they are filled in, so no
text reaches the SVG unescaped. Values stay ``Decimal`` (or integer minor units); floats appear
only as pixel coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from markupsafe import Markup

from billing.core import money

Value = Decimal | int | None
COLORS = ("#2457c5", "#c25e00", "#1e7b3a", "#8e3bb5")
FONT = 12
CHAR_WIDTH = 7  # a generous average advance of the 12 px system font, for margins and spacing

SVG = Markup(
    '<svg xmlns="http://www.w3.org/2000/svg" class="chart-svg" viewBox="0 0 {} {}" role="img" '
    'aria-labelledby="{}-title" aria-describedby="{}-desc" font-family="system-ui, sans-serif" '
    'font-size="{}" fill="#1d2430"><title id="{}-title">{}</title><desc id="{}-desc">{}</desc>'
)
BAR = Markup(
    '<rect class="bar series-{}" x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}</title></rect>'
)
LINE = Markup('<polyline class="line series-{}" points="{}" fill="none" stroke="{}" stroke-width="2"/>')
POINT = Markup('<circle class="point series-{}" cx="{}" cy="{}" r="4" fill="{}"><title>{}</title></circle>')
GRID = Markup('<line class="grid" x1="{}" x2="{}" y1="{}" y2="{}" stroke="{}"/>')
TICK = Markup('<text class="tick" x="{}" y="{}" text-anchor="end" dominant-baseline="middle">{}</text>')
LABEL = Markup('<text class="label" x="{}" y="{}" text-anchor="middle">{}</text>')
EMPTY = Markup('<text class="empty" x="{}" y="{}" text-anchor="middle">No data</text>')
KEY = Markup(
    '<rect class="key series-{}" x="{}" y="6" width="12" height="12" fill="{}"/>'
    '<text class="legend" x="{}" y="16">{}</text>'
)


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[Value]


@dataclass(frozen=True)
class Chart:
    """What a chart shows. ``id`` must be unique on the page (element ids derive from it)."""

    id: str
    title: str
    description: str
    labels: Sequence[str]
    series: Sequence[Series]
    text: Callable[[Decimal], str] = money.format_decimal
    integer: bool = False  # axis ticks in whole units (amounts in minor units)
    axis_labels: Sequence[str] | None = None  # shorter labels under the axis; ``labels`` otherwise


@dataclass(frozen=True)
class Frame:
    width: int
    height: int
    left: float
    top: float = 30
    right: float = 10
    bottom: float = 34

    @property
    def plot_width(self) -> float:
        return self.width - self.left - self.right

    @property
    def plot_bottom(self) -> float:
        return self.height - self.bottom

    def band(self, count: int) -> float:
        return self.plot_width / max(count, 1)


def bar_chart(chart: Chart, *, width: int = 640, height: int = 280) -> Markup:
    """Bars side by side per label, one per series, from a zero baseline (negative bars go down)."""
    ticks = nice_ticks(_values(chart), integer=chart.integer)
    frame = _frame(chart, ticks, width, height)
    scale = _scale(frame, ticks)
    band = frame.band(len(chart.labels))
    bar = band * 0.8 / max(len(chart.series), 1)
    parts = _axes(chart, frame, ticks, scale)
    for s, series in enumerate(chart.series):
        for i, value in enumerate(series.values):
            if value is None:
                continue
            x = frame.left + i * band + band * 0.1 + s * bar
            top, bottom = sorted((scale(Decimal(value)), scale(Decimal(0))))
            title = _point_text(chart, series, i)
            parts.append(BAR.format(s, _n(x), _n(top), _n(bar), _n(bottom - top), _color(s), title))
    return _svg(chart, frame, parts)


def line_chart(
    chart: Chart, *, width: int = 640, height: int = 240, maximum: Decimal | None = None
) -> Markup:
    """A line per series through the labels' centres, broken where a value is missing.

    ``maximum`` fixes the top of the axis (100 for percentages) instead of fitting the data.
    """
    ticks = nice_ticks([*_values(chart), maximum], integer=chart.integer)
    frame = _frame(chart, ticks, width, height)
    scale = _scale(frame, ticks)
    band = frame.band(len(chart.labels))
    parts = _axes(chart, frame, ticks, scale)
    for s, series in enumerate(chart.series):
        points = [
            (i, frame.left + band * (i + 0.5), scale(Decimal(v)))
            for i, v in enumerate(series.values)
            if v is not None
        ]
        for run in _runs(points):
            if len(run) > 1:
                parts.append(LINE.format(s, " ".join(f"{_n(x)},{_n(y)}" for _, x, y in run), _color(s)))
        for i, x, y in points:
            parts.append(POINT.format(s, _n(x), _n(y), _color(s), _point_text(chart, series, i)))
    return _svg(chart, frame, parts)


def nice_ticks(values: Sequence[Value], *, count: int = 5, integer: bool = False) -> list[Decimal]:
    """Evenly spaced round ticks (1, 2 or 5 times a power of ten) from <= min(0, values) to >= max."""
    known = [Decimal(v) for v in values if v is not None]
    low, high = min([Decimal(0), *known]), max([Decimal(0), *known])
    if low == high:
        return [Decimal(0), Decimal(1)]
    raw = (high - low) / count
    power = Decimal(1).scaleb(max(raw.adjusted(), 0) if integer else raw.adjusted())
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    quantum = Decimal(1).scaleb(min(int(step.normalize().as_tuple().exponent), 0))
    first = (low / step).to_integral_value(ROUND_FLOOR)
    last = (high / step).to_integral_value(ROUND_CEILING)
    return [((first + k) * step).quantize(quantum) for k in range(int(last - first) + 1)]


def _values(chart: Chart) -> list[Value]:
    return [v for series in chart.series for v in series.values]


def _frame(chart: Chart, ticks: Sequence[Decimal], width: int, height: int) -> Frame:
    widest = max(len(chart.text(tick)) for tick in ticks)
    return Frame(width, height, left=12 + widest * CHAR_WIDTH)


def _scale(frame: Frame, ticks: Sequence[Decimal]) -> Callable[[Decimal], float]:
    low, span = ticks[0], float(ticks[-1] - ticks[0])
    height = frame.plot_bottom - frame.top

    def y(value: Decimal) -> float:
        return frame.plot_bottom - float(value - low) / span * height

    return y


def _axes(
    chart: Chart, frame: Frame, ticks: Sequence[Decimal], scale: Callable[[Decimal], float]
) -> list[Markup]:
    parts = []
    right = _n(frame.width - frame.right)
    for tick in ticks:
        y = _n(scale(tick))
        stroke = "#5b6574" if tick == 0 else "#d9dee5"
        parts.append(GRID.format(_n(frame.left), right, y, y, stroke))
        parts.append(TICK.format(_n(frame.left - 6), y, chart.text(tick)))
    labels = chart.axis_labels or chart.labels
    band = frame.band(len(labels))
    room = max((len(label) for label in labels), default=0) * CHAR_WIDTH + 12
    every = max(1, math.ceil(len(labels) * room / frame.plot_width))
    for i, label in enumerate(labels):
        if i % every == 0:
            parts.append(LABEL.format(_n(frame.left + band * (i + 0.5)), _n(frame.plot_bottom + 18), label))
    if all(v is None or v == 0 for v in _values(chart)):
        middle = (frame.top + frame.plot_bottom) / 2
        parts.append(EMPTY.format(_n(frame.left + frame.plot_width / 2), _n(middle)))
    return parts + _legend(chart, frame)


def _legend(chart: Chart, frame: Frame) -> list[Markup]:
    if len(chart.series) < 2:
        return []
    parts, x = [], frame.left
    for s, series in enumerate(chart.series):
        parts.append(KEY.format(s, _n(x), _color(s), _n(x + 17), series.name))
        x += 17 + len(series.name) * CHAR_WIDTH + 18
    return parts


def _point_text(chart: Chart, series: Series, index: int) -> str:
    value = series.values[index]
    shown = "no value" if value is None else chart.text(Decimal(value))
    return f"{chart.labels[index]} · {series.name}: {shown}"


def _svg(chart: Chart, frame: Frame, parts: list[Markup]) -> Markup:
    head = SVG.format(
        frame.width,
        frame.height,
        chart.id,
        chart.id,
        FONT,
        chart.id,
        chart.title,
        chart.id,
        chart.description,
    )
    return head + Markup("").join(parts) + Markup("</svg>")


def _runs(points: list[tuple[int, float, float]]) -> list[list[tuple[int, float, float]]]:
    """Points split where an index is skipped (a missing value breaks the line)."""
    runs: list[list[tuple[int, float, float]]] = []
    for point in points:
        if runs and runs[-1][-1][0] == point[0] - 1:
            runs[-1].append(point)
        else:
            runs.append([point])
    return runs


def _color(series: int) -> str:
    return COLORS[series % len(COLORS)]


def _n(number: float) -> str:
    return f"{number:.2f}".rstrip("0").rstrip(".")
