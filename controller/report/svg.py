"""The report's SVG timeline: stacked panels on one time axis, phases behind them, a red line
at every breach and rollback."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from controller.report.series import Marker, Point, Span, Timeline, downsample
from controller.report.text import clock, esc

WIDTH = 1000
LEFT = 72
RIGHT = 20
PLOT_W = WIDTH - LEFT - RIGHT
TOP = 36
"""Room above the panels for the breach and rollback labels (two rows)."""
TITLE_H = 22
PANEL_H = 100
AXIS_H = 28

PHASE_FILL = {
    "pending": "#eeeeee", "preflight": "#e8eaf6", "copying": "#e3f2fd", "streaming": "#e0f7fa",
    "switching": "#fff3e0", "shifting": "#e8f5e9", "promoted": "#c8e6c9", "finalizing": "#dcedc8",
    "finalized": "#c5e1a5", "rolling_back": "#ffebee", "rolled_back": "#ffcdd2",
}
OTHER_FILL = "#f5f5f5"

SVG_STYLE = """
text { font: 11px sans-serif; fill: #333; }
.title { font-weight: bold; }
.frame { fill: none; stroke: #999; }
.grid { stroke: #e4e4e4; }
.line { fill: none; stroke-width: 1.5; stroke-linejoin: round; stroke-linecap: round; }
.weight, .green { stroke: #2e7d32; }
.baseline { stroke: #1565c0; stroke-width: 1; }
.threshold { stroke: #e65100; stroke-width: 1; stroke-dasharray: 5 3; }
.lag { stroke: #6a1b9a; }
.fail { fill: #c62828; }
.marker { stroke: #c62828; stroke-width: 1.5; }
.marker-label { fill: #c62828; font-weight: bold; }
.phase-label { fill: #555; font-size: 10px; }
.none { fill: #888; font-style: italic; }
"""


# -- drawing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    points: list[Point]
    css: str
    label: str
    step: bool = False

    def has_values(self) -> bool:
        return any(v is not None for _, v in self.points)


@dataclass(frozen=True)
class Panel:
    key: str
    title: str
    lines: list[Line]
    fails: list[Point] = field(default_factory=list)
    fixed: tuple[float, float] | None = None
    phases: list[Span] = field(default_factory=list)


@dataclass(frozen=True)
class Scale:
    span: float
    top: float
    lo: float
    hi: float

    def x(self, t: float) -> float:
        return LEFT + min(max(t / self.span, 0.0), 1.0) * PLOT_W

    def y(self, v: float) -> float:
        return self.top + PANEL_H - (v - self.lo) / (self.hi - self.lo) * PANEL_H


def y_range(panel: Panel) -> tuple[float, float]:
    if panel.fixed is not None:
        return panel.fixed
    values = [v for line in panel.lines for _, v in line.points if v is not None]
    values += [v for _, v in panel.fails if v is not None]
    lo = min([0.0, *values])
    hi = max([lo, *values])
    if hi <= lo:
        return lo, lo + 1.0
    return lo, hi + (hi - lo) * 0.05


def panels(tl: Timeline) -> list[Panel]:
    weight = Panel("weight", "green weight %, over the phases",
                   [Line(tl.weight, "weight", "green %", step=True)], fixed=(0.0, 100.0), phases=tl.phases)
    found = [weight]
    for name, s in tl.checks.items():
        lines = [Line(s.green, "green", "green"), Line(s.baseline, "baseline", "blue (baseline)"),
                 Line(s.threshold, "threshold", "threshold")]
        found.append(Panel(f"check:{name}", f"check {name}", lines, fails=s.fails))
    lag = Line(tl.lag, "lag", "lag s")
    if lag.has_values():
        found.append(Panel("lag", "replication lag (s)", [lag]))
    return found


def path_data(points: Iterable[Point], s: Scale, step: bool) -> str:
    parts: list[str] = []
    run = 0
    for t, v in points:
        if v is None:
            parts.append("h0" if run == 1 else "")  # a lone point still shows, as a dot (round caps)
            run = 0
            continue
        x, y = s.x(t), s.y(v)
        if run == 0:
            parts.append(f"M{x:.1f} {y:.1f}")
        elif step:
            parts.append(f"H{x:.1f}V{y:.1f}")
        else:
            parts.append(f"L{x:.1f} {y:.1f}")
        run += 1
    parts.append("h0" if run == 1 else "")
    return "".join(parts)


def draw_line(line: Line, s: Scale) -> str:
    d = path_data(downsample(line.points), s, line.step)
    return f'<path class="line {line.css}" d="{d}"/>' if d else ""


def draw_fails(fails: Sequence[Point], s: Scale) -> list[str]:
    out: list[str] = []
    seen: set[int] = set()
    for t, v in fails:
        x = s.x(t)
        if round(x) in seen:
            continue
        seen.add(round(x))
        y = s.y(v) if v is not None else s.top + PANEL_H - 3
        out.append(f'<circle class="fail" cx="{x:.1f}" cy="{y:.1f}" r="2.5"/>')
    return out


def draw_phases(spans: Sequence[Span], s: Scale) -> list[str]:
    out: list[str] = []
    for sp in spans:
        x0, x1 = s.x(sp.start), s.x(sp.end)
        fill = PHASE_FILL.get(sp.phase, OTHER_FILL)
        out.append(f'<rect class="phase" x="{x0:.1f}" y="{s.top:.1f}" width="{max(x1 - x0, 0.5):.1f}" '
                   f'height="{PANEL_H}" fill="{fill}"><title>{esc(sp.phase)} {clock(sp.start)}'
                   f"\u2013{clock(sp.end)}</title></rect>")
        if x1 - x0 >= 6.5 * len(sp.phase) + 6:
            out.append(f'<text class="phase-label" x="{x0 + 3:.1f}" y="{s.top + 12:.1f}">'
                       f"{esc(sp.phase)}</text>")
    return out


def draw_y_labels(s: Scale, unit: str) -> list[str]:
    out = []
    for v in (s.lo, (s.lo + s.hi) / 2, s.hi):
        out.append(f'<text class="ylabel" x="{LEFT - 6}" y="{s.y(v) + 4:.1f}" text-anchor="end">'
                   f"{esc(f'{v:.3g}' + unit)}</text>")
        y = s.y(v)
        out.append(f'<line class="grid" x1="{LEFT}" x2="{LEFT + PLOT_W}" y1="{y:.1f}" y2="{y:.1f}"/>')
    return out


def draw_legend(panel: Panel, y: float) -> str:
    legend = [(line.css, line.label) for line in panel.lines if line.has_values()]
    legend += [("fail", "fail")] if panel.fails else []
    items = "".join(f'<tspan class="legend-{css}" fill="{_legend_colour(css)}" dx="12">\u25a0 {esc(text)}'
                    "</tspan>" for css, text in legend)
    return f'<text class="legend" x="{LEFT + PLOT_W}" y="{y:.1f}" text-anchor="end">{items}</text>'


def _legend_colour(css: str) -> str:
    return {"weight": "#2e7d32", "green": "#2e7d32", "baseline": "#1565c0", "threshold": "#e65100",
            "lag": "#6a1b9a", "fail": "#c62828"}.get(css, "#333")


def draw_panel(panel: Panel, top: float, span: float, ticks: Sequence[float]) -> str:
    lo, hi = y_range(panel)
    s = Scale(span, top, lo, hi)
    parts = [f'<g class="panel" data-panel="{esc(panel.key)}">',
             f'<text class="title" x="{LEFT}" y="{top - 7:.1f}">{esc(panel.title)}</text>',
             draw_legend(panel, top - 7), *draw_phases(panel.phases, s),
             *draw_y_labels(s, " %" if panel.key == "weight" else "")]
    parts += [f'<line class="grid" x1="{s.x(t):.1f}" x2="{s.x(t):.1f}" y1="{top:.1f}" '
              f'y2="{top + PANEL_H:.1f}"/>' for t in ticks]
    parts += [draw_line(line, s) for line in panel.lines]
    parts += draw_fails(panel.fails, s)
    if not any(line.has_values() for line in panel.lines):
        parts.append(f'<text class="none" x="{LEFT + PLOT_W / 2:.1f}" y="{top + PANEL_H / 2:.1f}" '
                     'text-anchor="middle">no values recorded</text>')
    parts.append(f'<rect class="frame" x="{LEFT}" y="{top:.1f}" width="{PLOT_W}" height="{PANEL_H}"/>')
    parts.append("</g>")
    return "\n".join(p for p in parts if p)


NICE_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def ticks(span: float, most: int = 10) -> list[float]:
    step = next((s for s in NICE_STEPS if span / s <= most), None)
    if step is None:
        step = 86400 * math.ceil(span / 86400 / most)
    return [float(k * step) for k in range(int(span // step) + 1)]


def draw_axis(tick_times: Sequence[float], span: float, y: float) -> list[str]:
    s = Scale(span, 0, 0, 1)
    return [f'<text class="tick" x="{s.x(t):.1f}" y="{y:.1f}" text-anchor="middle" '
            f'data-seconds="{t:g}">{clock(t)}</text>' for t in tick_times]


def draw_markers(found: Sequence[Marker], span: float, bottom: float) -> list[str]:
    s = Scale(span, 0, 0, 1)
    out: list[str] = []
    seen: set[tuple[str, int]] = set()
    for m in found:
        x = s.x(m.t)
        if (m.kind, round(x)) in seen:
            continue
        seen.add((m.kind, round(x)))
        row_y = 13 if len(seen) % 2 else 27
        anchor = "end" if x > LEFT + PLOT_W - 120 else "start"
        dx = -3 if anchor == "end" else 3
        out.append(f'<line class="marker {m.kind}" x1="{x:.1f}" x2="{x:.1f}" y1="{row_y - 10}" '
                   f'y2="{bottom:.1f}" data-seconds="{m.t:.3f}"><title>{esc(m.label)} at {clock(m.t)}'
                   "</title></line>")
        out.append(f'<text class="marker-label" x="{x + dx:.1f}" y="{row_y}" text-anchor="{anchor}">'
                   f"{esc(m.label)} {clock(m.t)}</text>")
    return out


def render_svg(tl: Timeline) -> str:
    drawn = panels(tl)
    tick_times = ticks(tl.span)
    block = TITLE_H + PANEL_H
    bottom = TOP + len(drawn) * block
    height = bottom + AXIS_H
    body = [draw_panel(p, TOP + i * block + TITLE_H, tl.span, tick_times) for i, p in enumerate(drawn)]
    return "\n".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" '
        f'height="{height}" role="img" aria-label="cutover timeline">',
        f"<style>{SVG_STYLE}</style>", *body,
        *draw_axis(tick_times, tl.span, bottom + 16), *draw_markers(tl.markers, tl.span, bottom), "</svg>"])
