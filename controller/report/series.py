"""From the journal's events to what the report draws: phase spans, markers and each check's
series (pure)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from controller.report.text import nonempty, num, obj
from controller.state.journal import Event, EventKind

MAX_POINTS = 1500
"""Per drawn series: more samples than this are reduced (gaps, minima and maxima kept)."""
Point = tuple[float, float | None]
"""(seconds since the first event, value); None is a gap, never drawn as zero."""
MARKED = (EventKind.BREACH, EventKind.ROLLBACK)


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
    weights = [(e.at - t0, num(obj(e.data.get("weights")).get("green"))) for e in samples]
    lag = [(e.at - t0, num(e.data.get("lag_seconds"))) for e in samples]
    return Timeline(t0, span if span > 0 else 1.0, weights, lag, check_series(samples, t0),
                    phase_spans(events, t0, span), markers(events, t0))


def check_series(samples: Sequence[Event], t0: float) -> dict[str, CheckSeries]:
    names = list(dict.fromkeys(n for e in samples for n in obj(e.data.get("checks")) if isinstance(n, str)))
    series = {n: CheckSeries() for n in names}
    for e in samples:
        checks = obj(e.data.get("checks"))
        for name, s in series.items():
            _add_verdict(s, e.at - t0, obj(checks.get(name)))
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
        return nonempty(e.data.get("to"))
    if e.kind == EventKind.SAMPLE:
        return nonempty(e.data.get("phase"))
    if e.kind in (EventKind.START, EventKind.STOP, EventKind.DECISION):
        return nonempty(obj(e.data.get("state")).get("phase"))
    return None


def phase_marks(events: Sequence[Event], t0: float) -> list[tuple[float, str]]:
    marks: list[tuple[float, str]] = []
    for e in events:
        before = nonempty(e.data.get("from")) if e.kind == EventKind.PHASE else None
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
            check = nonempty(e.data.get("check"))
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
