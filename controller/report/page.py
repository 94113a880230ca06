"""`cutover report`, the page: one self-contained HTML file (no script, no external asset) drawn
from the journal. An SVG timeline with stacked panels on one time axis (green's weight over the
phases, each SLO check's green value against its threshold and blue's baseline, replication lag)
with a red line at every breach and rollback, then a table of phase changes, jobs, breaches and
rollbacks. Only what the events hold is shown, and every piece of it is escaped."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from controller.state.journal import Event, EventKind

MAX_POINTS = 1500
"""Per drawn series: more samples than this are reduced (gaps, minima and maxima kept)."""
MAX_ROWS = 2000
"""Table rows; beyond this the middle is left out (the first and last half are kept)."""

WIDTH = 1000
LEFT = 72
RIGHT = 20
PLOT_W = WIDTH - LEFT - RIGHT
TOP = 36
"""Room above the panels for the breach and rollback labels (two rows)."""
TITLE_H = 22
PANEL_H = 100
AXIS_H = 28

Point = tuple[float, float | None]
"""(seconds since the first event, value); None is a gap, never drawn as zero."""

PHASE_FILL = {
    "pending": "#eeeeee", "preflight": "#e8eaf6", "copying": "#e3f2fd", "streaming": "#e0f7fa",
    "switching": "#fff3e0", "shifting": "#e8f5e9", "promoted": "#c8e6c9", "finalizing": "#dcedc8",
    "finalized": "#c5e1a5", "rolling_back": "#ffebee", "rolled_back": "#ffcdd2",
}
OTHER_FILL = "#f5f5f5"
MARKED = (EventKind.BREACH, EventKind.ROLLBACK)

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

PAGE_STYLE = """
body { font: 14px/1.4 sans-serif; color: #222; margin: 1.5em auto; max-width: 1040px; padding: 0 1em; }
h1 { font-size: 1.4em; margin: 0 0 .4em; }
dl.summary { display: grid; grid-template-columns: max-content auto; gap: .15em 1em; margin: 0 0 1em; }
dl.summary dt { font-weight: bold; }
dl.summary dd { margin: 0; }
svg { width: 100%; height: auto; border: 1px solid #ddd; background: #fff; }
table { border-collapse: collapse; width: 100%; margin-top: 1em; font-size: 13px; }
th, td { text-align: left; padding: .25em .5em; border-bottom: 1px solid #eee; vertical-align: top; }
td.t { white-space: nowrap; font-variant-numeric: tabular-nums; }
td.text { word-break: break-word; }
tr.bad td { background: #ffebee; }
.empty { color: #666; font-style: italic; }
"""

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def esc(value: object) -> str:
    """Text for HTML and the inline SVG (which must stay well-formed XML)."""
    return html.escape(_NOT_XML.sub("\ufffd", str(value)), quote=True)


def num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def fmt(value: float) -> str:
    return f"{value:.4g}"


def clock(seconds: float) -> str:
    """mm:ss (minutes keep counting past the hour)."""
    s = max(0, int(seconds))
    return f"{s // 60:02d}:{s % 60:02d}"


def utc(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# -- from events to series ------------------------------------------------------------------


@dataclass
class CheckSeries:
    green: list[Point] = field(default_factory=list)
    baseline: list[Point] = field(default_factory=list)
    threshold: list[Point] = field(default_factory=list)
    fails: list[Point] = field(default_factory=list)

    def has_values(self) -> bool:
        return any(v is not None for s in (self.green, self.baseline, self.threshold) for _, v in s)


@dataclass(frozen=True)
class Span:
    start: float
    end: float
    phase: str


@dataclass(frozen=True)
class Marker:
    t: float
    kind: str
    label: str


@dataclass
class Timeline:
    t0: float
    span: float
    weight: list[Point]
    lag: list[Point]
    checks: dict[str, CheckSeries]
    phases: list[Span]
    markers: list[Marker]


def timeline(events: Sequence[Event]) -> Timeline:
    t0 = min(e.at for e in events)
    span = max(e.at for e in events) - t0
    samples = [e for e in events if e.kind == EventKind.SAMPLE]
    weights = [(e.at - t0, num(_dict(e.data.get("weights")).get("green"))) for e in samples]
    lag = [(e.at - t0, num(e.data.get("lag_seconds"))) for e in samples]
    return Timeline(t0, span if span > 0 else 1.0, weights, lag, check_series(samples, t0),
                    phase_spans(events, t0, span), markers(events, t0))


def check_series(samples: Sequence[Event], t0: float) -> dict[str, CheckSeries]:
    names = list(dict.fromkeys(n for e in samples for n in _dict(e.data.get("checks")) if isinstance(n, str)))
    series = {n: CheckSeries() for n in names}
    for e in samples:
        checks = _dict(e.data.get("checks"))
        for name, s in series.items():
            _add_verdict(s, e.at - t0, _dict(checks.get(name)))
    return {n: s for n, s in series.items() if s.has_values() or s.fails}


def _add_verdict(s: CheckSeries, t: float, verdict: dict[str, Any]) -> None:
    green = num(verdict.get("green"))
    s.green.append((t, green))
    s.baseline.append((t, num(verdict.get("baseline"))))
    s.threshold.append((t, num(verdict.get("threshold"))))
    if verdict.get("outcome") == "fail":
        s.fails.append((t, green))


def phase_of(e: Event) -> str | None:
    if e.kind == EventKind.PHASE:
        return _str(e.data.get("to"))
    if e.kind == EventKind.SAMPLE:
        return _str(e.data.get("phase"))
    if e.kind in (EventKind.START, EventKind.STOP, EventKind.DECISION):
        return _str(_dict(e.data.get("state")).get("phase"))
    return None


def phase_marks(events: Sequence[Event], t0: float) -> list[tuple[float, str]]:
    marks: list[tuple[float, str]] = []
    for e in events:
        before = _str(e.data.get("from")) if e.kind == EventKind.PHASE else None
        if before is not None and not marks:
            marks.append((0.0, before))  # what it was in before the first change we saw
        phase = phase_of(e)
        if phase is not None:
            marks.append((e.at - t0, phase))
    return marks


def phase_spans(events: Sequence[Event], t0: float, span: float) -> list[Span]:
    spans: list[Span] = []
    for t, phase in phase_marks(events, t0):
        if spans and spans[-1].phase == phase:
            continue
        if spans:
            spans[-1] = Span(spans[-1].start, max(t, spans[-1].start), spans[-1].phase)
        spans.append(Span(t, span, phase))
    return spans


def final_phase(events: Sequence[Event]) -> str | None:
    marks = phase_marks(events, 0.0)
    return marks[-1][1] if marks else None


def markers(events: Sequence[Event], t0: float) -> list[Marker]:
    found: list[Marker] = []
    for e in events:
        if e.kind == EventKind.BREACH:
            check = _str(e.data.get("check"))
            found.append(Marker(e.at - t0, "breach", f"breach {check}" if check else "breach"))
        elif e.kind == EventKind.ROLLBACK:
            found.append(Marker(e.at - t0, "rollback", "rollback"))
    return found


def downsample(points: Sequence[Point], limit: int = MAX_POINTS) -> list[Point]:
    """At most `limit` points: per bucket its minimum, its maximum and its first gap, in order."""
    if len(points) <= limit:
        return list(points)
    size = math.ceil(len(points) / (limit // 3))
    out: list[Point] = []
    for start in range(0, len(points), size):
        out.extend(_reduce(points[start:start + size]))
    return out


def _reduce(bucket: Sequence[Point]) -> list[Point]:
    valued = [i for i, (_, v) in enumerate(bucket) if v is not None]
    gaps = [i for i, (_, v) in enumerate(bucket) if v is None]
    keep = set(gaps[:1])
    if valued:
        keep.add(min(valued, key=lambda i: bucket[i][1] or 0.0))
        keep.add(max(valued, key=lambda i: bucket[i][1] or 0.0))
    return [bucket[i] for i in sorted(keep)]


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


# -- the table --------------------------------------------------------------------------------


def verdict_text(v: dict[str, Any]) -> str:
    """A verdict whole: what was seen, on how many requests, the limit and where it came
    from, the streak and the evidence (the journal's, the log's, history's and the report's)."""
    values = []
    for label, key, samples in (("green", "green", "green_samples"), ("blue", "baseline", "blue_samples")):
        if (x := num(v.get(key))) is not None:
            n = v.get(samples)
            values.append(f"{label} {fmt(x)}" + (f" over {n} requests" if isinstance(n, int) else ""))
    if (limit := num(v.get("threshold"))) is not None:
        values.append(f"limit {fmt(limit)}" + (f" = {v['derivation']}" if _str(v.get("derivation")) else ""))
    if v.get("streak"):
        values.append(f"{v['streak']} failing in a row")
    if (evidence := num(v.get("evidence"))) is not None:
        values.append(f"evidence {evidence:.1f}")
    text = f"{v.get('check', '?')}: {v.get('outcome', '?')}"
    if v.get("dry_run"):
        text += " (dry run)"
    if _str(v.get("reason")):
        text += f": {v['reason']}"
    return text + (f" ({', '.join(values)})" if values else "")


def _phase_row(d: dict[str, Any]) -> str:
    reason = _str(d.get("reason"))
    return f"{d.get('from', '?')} \u2192 {d.get('to', '?')}" + (f": {reason}" if reason else "")


def _job_row(d: dict[str, Any]) -> str:
    seconds = num(d.get("seconds"))
    text = f"{d.get('job', '?')} {'ok' if d.get('ok') else 'FAILED'}"
    text += f" in {seconds:.1f} s" if seconds is not None else ""
    return text + (f": {d['detail']}" if _str(d.get("detail")) else "")


def _rollback_row(d: dict[str, Any]) -> str:
    seconds = num(d.get("seconds"))
    text = "traffic back to blue" + (f" in {seconds:.2f} s" if seconds is not None else "")
    verdict = _dict(d.get("verdict"))
    if verdict:
        text += f", after {verdict_text(verdict)}"
    elif _str(d.get("reason")):
        text += f": {d['reason']}"
    return text + (f"; ERROR: {d['error']}" if _str(d.get("error")) else "")


def _reverted_row(report: dict[str, Any]) -> str:
    pause = num(report.get("pause_ms"))
    text = "writes back on blue" + (f" (write pause {pause:.0f} ms)" if pause is not None else "")
    return text + (f"; blue and green differed: {report['difference']}"
                   if _str(report.get("difference")) else "")


ROWS: dict[EventKind, Callable[[dict[str, Any]], str]] = {
    EventKind.PHASE: _phase_row,
    EventKind.JOB: _job_row,
    EventKind.BREACH: verdict_text,
    EventKind.ROLLBACK: _rollback_row,
    EventKind.PAUSED: lambda d: "paused after " + verdict_text(_dict(d.get("verdict"))),
    EventKind.REVERTED: lambda d: _reverted_row(_dict(d.get("report"))),
    EventKind.REVERT_FAILED: lambda d: f"writes NOT back on blue: {d.get('error')}",
    EventKind.INTENT: lambda d: f"operator asked to {d.get('intent', '?')}",
}


def is_bad(e: Event) -> bool:
    return e.kind in (EventKind.BREACH, EventKind.ROLLBACK, EventKind.REVERT_FAILED) or (
        e.kind == EventKind.JOB and not e.data.get("ok"))


def row(e: Event, t0: float) -> str:
    text = ROWS[EventKind(e.kind)](e.data)
    css = ' class="bad"' if is_bad(e) else ""
    return (f'<tr{css}><td class="t" title="{esc(utc(e.at))}">{clock(e.at - t0)}</td>'
            f"<td>{esc(e.kind)}</td><td class=\"text\">{esc(text)}</td></tr>")


def render_table(events: Sequence[Event], t0: float) -> str:
    rows = [row(e, t0) for e in events if e.kind in ROWS]
    if not rows:
        return '<p class="empty">No phase changes, jobs, breaches or rollbacks were journaled.</p>'
    if len(rows) > MAX_ROWS:
        half = MAX_ROWS // 2
        left_out = f'<tr><td colspan="3" class="empty">{len(rows) - 2 * half:,} rows left out</td></tr>'
        rows = [*rows[:half], left_out, *rows[-half:]]
    head = "<thead><tr><th>time</th><th>kind</th><th>what</th></tr></thead>"
    return "<table>" + head + "<tbody>\n" + "\n".join(rows) + "\n</tbody></table>"


# -- the page ---------------------------------------------------------------------------------


def summary(events: Sequence[Event], service: str) -> str:
    first, last = min(e.at for e in events), max(e.at for e in events)
    items = [("service", service), ("from", utc(first)), ("to", f"{utc(last)} ({clock(last - first)})"),
             ("final phase", final_phase(events) or "unknown"),
             ("rollbacks", str(sum(e.kind == EventKind.ROLLBACK for e in events))),
             ("breaches", str(sum(e.kind == EventKind.BREACH for e in events))),
             ("writes reverted", _reverts(events)),
             ("events", f"{len(events):,} ({sum(e.kind == EventKind.SAMPLE for e in events):,} samples)")]
    return _dl(items)


def _reverts(events: Sequence[Event]) -> str:
    done = sum(e.kind == EventKind.REVERTED for e in events)
    failed = sum(e.kind == EventKind.REVERT_FAILED for e in events)
    return f"{done}" + (f" ({failed} failed)" if failed else "")


def _dl(items: Sequence[tuple[str, str]]) -> str:
    return '<dl class="summary">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items) + "</dl>"


def page(title: str, body: str) -> str:
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>", f"<style>{PAGE_STYLE}</style>", "</head>", "<body>",
        f"<h1>{esc(title)}</h1>", body, "</body>", "</html>", ""])


def render_report(events: Sequence[Event], service: str, title: str | None = None) -> str:
    """The whole page, from the journal's events (oldest first)."""
    title = title or f"Cutover report: {service}"
    if not events:
        return page(title, _dl([("service", service)])
                    + '<p class="empty">The journal has no events yet: nothing to draw.</p>')
    tl = timeline(events)
    body = "\n".join([summary(events, service), "<h2>Timeline</h2>", render_svg(tl),
                      "<h2>Events</h2>", render_table(events, tl.t0)])
    return page(title, body)
