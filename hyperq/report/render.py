"""The report's HTML: stat cards and three inline-SVG charts. Everything the page needs is
in the file (no CDN), so it opens on a cluster login node without network."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from hyperq.common.duration import format_timestamp
from hyperq.report.data import Point, ReportData, quartiles

WIDTH = 960
HEIGHT = 380
MARGIN_LEFT = 64
MARGIN_RIGHT = 24
MARGIN_TOP = 40
MARGIN_BOTTOM = 48
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
FINISHED_COLOR = "#2ca02c"
FAILED_COLOR = "#d62728"


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        high = low + 1
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _fmt(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e6 else f"{value:.3g}"


class _Plot:
    """One chart's frame: scales, axes and grid; the caller adds the marks."""

    def __init__(
        self, chart_id: str, title: str, x: tuple[float, float], y: tuple[float, float]
    ) -> None:
        self.chart_id = chart_id
        self.title = title
        self.x0, self.x1 = x if x[1] > x[0] else (x[0], x[0] + 1)
        self.y0, self.y1 = y if y[1] > y[0] else (y[0], y[0] + 1)
        self.inner_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
        self.inner_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
        self.marks: list[str] = []

    def sx(self, x: float) -> float:
        return MARGIN_LEFT + (x - self.x0) / (self.x1 - self.x0) * self.inner_w

    def sy(self, y: float) -> float:
        return MARGIN_TOP + self.inner_h - (y - self.y0) / (self.y1 - self.y0) * self.inner_h

    def axes(self, x_label: str, y_label: str, x_ticks: bool = True) -> str:
        parts = []
        for tick in _nice_ticks(self.y0, self.y1):
            y = self.sy(tick)
            parts.append(
                f'<line class="grid" x1="{MARGIN_LEFT}" x2="{WIDTH - MARGIN_RIGHT}" '
                f'y1="{y:.1f}" y2="{y:.1f}"/>'
                f'<text class="tick" x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" '
                f'text-anchor="end">{_fmt(tick)}</text>'
            )
        if x_ticks:
            for tick in _nice_ticks(self.x0, self.x1, 8):
                x = self.sx(tick)
                parts.append(
                    f'<line class="axis" x1="{x:.1f}" x2="{x:.1f}" '
                    f'y1="{MARGIN_TOP + self.inner_h}" y2="{MARGIN_TOP + self.inner_h + 5}"/>'
                    f'<text class="tick" x="{x:.1f}" y="{MARGIN_TOP + self.inner_h + 18}" '
                    f'text-anchor="middle">{_fmt(tick)}</text>'
                )
        bottom = MARGIN_TOP + self.inner_h
        parts.append(
            f'<line class="axis" x1="{MARGIN_LEFT}" x2="{WIDTH - MARGIN_RIGHT}" '
            f'y1="{bottom}" y2="{bottom}"/>'
            f'<line class="axis" x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT}" '
            f'y1="{MARGIN_TOP}" y2="{bottom}"/>'
            f'<text class="label" x="{MARGIN_LEFT + self.inner_w / 2}" y="{HEIGHT - 8}" '
            f'text-anchor="middle">{html.escape(x_label)}</text>'
            f'<text class="label" transform="translate(16 {MARGIN_TOP + self.inner_h / 2}) '
            f'rotate(-90)" text-anchor="middle">{html.escape(y_label)}</text>'
        )
        return "".join(parts)

    def svg(self, axes: str, legend: Sequence[tuple[str, str]]) -> str:
        legend_html = "".join(
            f'<span class="key"><span class="swatch" style="background:{color}"></span>'
            f"{html.escape(name)}</span>"
            for name, color in legend
        )
        return (
            f'<figure class="chart" id="{self.chart_id}">'
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
            f'width="{WIDTH}" height="{HEIGHT}" role="img">'
            f'<text class="title" x="{WIDTH / 2}" y="22" text-anchor="middle">'
            f"{html.escape(self.title)}</text>{axes}{''.join(self.marks)}</svg>"
            f'<figcaption class="legend">{legend_html}</figcaption></figure>'
        )


def _step_path(plot: _Plot, points: Sequence[Point]) -> str:
    commands = []
    previous_y: float | None = None
    for x, y in points:
        if previous_y is None:
            commands.append(f"M{plot.sx(x):.1f},{plot.sy(y):.1f}")
        else:
            commands.append(f"H{plot.sx(x):.1f}V{plot.sy(y):.1f}")
        previous_y = y
    return "".join(commands)


def worker_chart(data: ReportData) -> str:
    values = [y for points in data.worker_series.values() for _x, y in points]
    plot = _Plot(
        "worker-stats", "Global worker statistics", data.x_range, (0, max([1.0, *values]) * 1.1)
    )
    legend = []
    for i, (name, points) in enumerate(data.worker_series.items()):
        color = PALETTE[i % len(PALETTE)]
        dash = ' stroke-dasharray="6 3"' if " alloc on " in name else ""
        plot.marks.append(
            f'<path class="series" data-name="{html.escape(name)}" fill="none" '
            f'stroke="{color}" stroke-width="2"{dash} d="{_step_path(plot, points)}"/>'
        )
        legend.append((name, color))
    return plot.svg(plot.axes("Time (s since server start)", "Count / allocation"), legend)


def task_count_chart(data: ReportData) -> str:
    labels = list(data.requests)
    counts = [
        (len(data.finished.get(label, ())), len(data.failed.get(label, ()))) for label in labels
    ]
    top = max([1, *(max(c) for c in counts)]) * 1.1
    plot = _Plot("task-counts", "Task counts", (0, max(len(labels), 1)), (0, top))
    slot = plot.inner_w / max(len(labels), 1)
    bar = slot * 0.35
    for i, (label, (finished, failed)) in enumerate(zip(labels, counts, strict=True)):
        left = MARGIN_LEFT + i * slot + slot * 0.15
        for j, (count, color, kind) in enumerate(
            ((finished, FINISHED_COLOR, "finished"), (failed, FAILED_COLOR, "failed"))
        ):
            y = plot.sy(count)
            plot.marks.append(
                f'<rect class="bar" data-kind="{kind}" data-request="{label}" '
                f'x="{left + j * bar:.1f}" y="{y:.1f}" width="{bar:.1f}" '
                f'height="{MARGIN_TOP + plot.inner_h - y:.1f}" fill="{color}">'
                f"<title>{kind} {label}: {count}</title></rect>"
            )
        plot.marks.append(
            f'<text class="tick" x="{MARGIN_LEFT + (i + 0.5) * slot:.1f}" '
            f'y="{MARGIN_TOP + plot.inner_h + 18}" text-anchor="middle">{label}</text>'
        )
    legend = [("finished", FINISHED_COLOR), ("failed", FAILED_COLOR)]
    return plot.svg(plot.axes("Resource request", "Tasks", x_ticks=False), legend)


def duration_chart(data: ReportData) -> str:
    boxes: list[tuple[str, list[float], str]] = []
    for label in data.requests:
        for kind, source, color in (
            ("Finished", data.finished, FINISHED_COLOR),
            ("Failed", data.failed, FAILED_COLOR),
        ):
            values = source.get(label) or []
            if values:
                boxes.append((f"{kind} {label}", values, color))
    top = max([1.0, *(max(v) for _n, v, _c in boxes)]) * 1.1
    plot = _Plot("task-durations", "Task durations", (0, max(len(boxes), 1)), (0, top))
    slot = plot.inner_w / max(len(boxes), 1)
    for i, (name, values, color) in enumerate(boxes):
        low, q1, median, q3, high = quartiles(values)
        center = MARGIN_LEFT + (i + 0.5) * slot
        half = min(slot * 0.3, 40)
        plot.marks.append(
            f'<g class="box" data-name="{name}">'
            f'<line x1="{center:.1f}" x2="{center:.1f}" y1="{plot.sy(high):.1f}" '
            f'y2="{plot.sy(low):.1f}" stroke="{color}"/>'
            f'<rect x="{center - half:.1f}" y="{plot.sy(q3):.1f}" width="{2 * half:.1f}" '
            f'height="{max(plot.sy(q1) - plot.sy(q3), 1):.1f}" fill="{color}" '
            f'fill-opacity="0.35" stroke="{color}"/>'
            f'<line x1="{center - half:.1f}" x2="{center + half:.1f}" '
            f'y1="{plot.sy(median):.1f}" y2="{plot.sy(median):.1f}" stroke="{color}" '
            f'stroke-width="2"/>'
            f"<title>{name}: n={len(values)}, min {low:.3g}s, median {median:.3g}s, "
            f"max {high:.3g}s</title></g>"
            f'<text class="tick" x="{center:.1f}" y="{MARGIN_TOP + plot.inner_h + 18}" '
            f'text-anchor="middle">{name}</text>'
        )
    return plot.svg(plot.axes("Task kind", "Duration (s)", x_ticks=False), [])


STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 24px; margin: 0 0 16px; }
.cards { display: flex; gap: 16px; margin-bottom: 24px; }
.card { border: 1px solid #ddd; border-radius: 8px; padding: 12px 16px; min-width: 200px; }
.card .name { font-size: 12px; color: #666; text-transform: uppercase; }
.card .value { font-size: 18px; margin-top: 4px; }
.chart { margin: 0 0 32px; }
.chart svg { display: block; }
.chart .title { font-size: 16px; font-weight: 600; }
.chart .tick { font-size: 11px; fill: #555; }
.chart .label { font-size: 12px; fill: #333; }
.chart .grid { stroke: #eee; }
.chart .axis { stroke: #888; }
.legend { font-size: 12px; display: flex; flex-wrap: wrap; gap: 4px 16px; margin-left: 64px; }
.swatch { display: inline-block; width: 12px; height: 12px; margin-right: 4px;
  vertical-align: middle; }
.requests { font-family: monospace; font-size: 13px; margin: 0 0 32px 64px; }
"""

# Marks the page once the browser has laid out every chart with a non-empty size; a
# headless browser (the tests, a CI check) reads it back from the DOM.
CHECK_SCRIPT = """
window.addEventListener("load", () => {
  const charts = [...document.querySelectorAll(".chart svg")];
  const drawn = charts.filter((svg) => {
    const marks = svg.querySelectorAll("path.series, rect.bar, g.box");
    return [...marks].some((m) => { const b = m.getBBox(); return b.width + b.height > 0; });
  });
  document.body.dataset.chartsDrawn = drawn.length + "/" + charts.length;
});
"""


def render_html(data: ReportData) -> str:
    cards = [("Server started", format_timestamp(data.server_started, fraction=False))]
    filtering = data.window.card()
    if filtering is not None:
        cards.append(("Time filtering", filtering))
    cards_html = "".join(
        f'<div class="card"><div class="name">{html.escape(name)}</div>'
        f'<div class="value">{html.escape(value)}</div></div>'
        for name, value in cards
    )
    requests = "".join(
        f"<div>{html.escape(label)} = {html.escape(text)}</div>"
        for label, text in data.requests.items()
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        "<title>HQ Journal Report</title>"
        f"<style>{STYLE}</style></head><body>"
        "<h1>HQ Journal Report</h1>"
        f'<div class="cards">{cards_html}</div>'
        f"{worker_chart(data)}"
        f"{task_count_chart(data)}"
        f'<div class="requests">{requests}</div>'
        f"{duration_chart(data)}"
        f'<div class="requests">{requests}</div>'
        f"<script>{CHECK_SCRIPT}</script>"
        "</body></html>\n"
    )
