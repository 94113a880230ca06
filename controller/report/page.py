"""`cutover report`, the page: one self-contained HTML file (no script, no external asset) drawn
from the journal. An SVG timeline with stacked panels on one time axis (green's weight over the
phases, each SLO check's green value against its threshold and blue's baseline, replication lag)
with a red line at every breach and rollback, then a table of phase changes, jobs, breaches and
rollbacks. Only what the events hold is shown, and every piece of it is escaped."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from controller.report.series import final_phase, timeline
from controller.report.svg import render_svg
from controller.report.text import clock, esc, fmt, nonempty, num, obj, utc
from controller.state.journal import Event, EventKind

MAX_ROWS = 2000
"""Table rows; beyond this the middle is left out (the first and last half are kept)."""

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
        derived = f" = {v['derivation']}" if nonempty(v.get("derivation")) else ""
        values.append(f"limit {fmt(limit)}{derived}")
    if v.get("streak"):
        values.append(f"{v['streak']} failing in a row")
    if (evidence := num(v.get("evidence"))) is not None:
        values.append(f"evidence {evidence:.1f}")
    text = f"{v.get('check', '?')}: {v.get('outcome', '?')}"
    if v.get("dry_run"):
        text += " (dry run)"
    if nonempty(v.get("reason")):
        text += f": {v['reason']}"
    return text + (f" ({', '.join(values)})" if values else "")


def _phase_row(d: dict[str, Any]) -> str:
    reason = nonempty(d.get("reason"))
    return f"{d.get('from', '?')} \u2192 {d.get('to', '?')}" + (f": {reason}" if reason else "")


def _job_row(d: dict[str, Any]) -> str:
    seconds = num(d.get("seconds"))
    text = f"{d.get('job', '?')} {'ok' if d.get('ok') else 'FAILED'}"
    text += f" in {seconds:.1f} s" if seconds is not None else ""
    return text + (f": {d['detail']}" if nonempty(d.get("detail")) else "")


def _rollback_row(d: dict[str, Any]) -> str:
    seconds = num(d.get("seconds"))
    text = "traffic back to blue" + (f" in {seconds:.2f} s" if seconds is not None else "")
    verdict = obj(d.get("verdict"))
    if verdict:
        text += f", after {verdict_text(verdict)}"
    elif nonempty(d.get("reason")):
        text += f": {d['reason']}"
    return text + (f"; ERROR: {d['error']}" if nonempty(d.get("error")) else "")


def _reverted_row(report: dict[str, Any]) -> str:
    pause = num(report.get("pause_ms"))
    text = "writes back on blue" + (f" (write pause {pause:.0f} ms)" if pause is not None else "")
    return text + (f"; blue and green differed: {report['difference']}"
                   if nonempty(report.get("difference")) else "")


ROWS: dict[EventKind, Callable[[dict[str, Any]], str]] = {
    EventKind.PHASE: _phase_row,
    EventKind.JOB: _job_row,
    EventKind.BREACH: verdict_text,
    EventKind.ROLLBACK: _rollback_row,
    EventKind.PAUSED: lambda d: "paused after " + verdict_text(obj(d.get("verdict"))),
    EventKind.REVERTED: lambda d: _reverted_row(obj(d.get("report"))),
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
