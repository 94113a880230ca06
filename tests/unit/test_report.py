"""`cutover report`: the HTML page drawn from a real (temporary) journal, and the command."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, cast

import pytest
import typer
from typer.testing import CliRunner

from controller.cli.failures import Commands
from controller.cli.report import report_cmd
from controller.report.page import render_report
from controller.report.series import MAX_POINTS, downsample
from controller.state import journal as journal_module
from controller.state.journal import Event, EventKind, Journal

SVG = "{http://www.w3.org/2000/svg}"
T0 = 1_700_000_000.0
HOSTILE = '<script>&"'

Item = tuple[float, str, dict[str, Any]]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The journal stamps events with time.time(): make that ours, for exact positions."""
    fake = Clock()
    monkeypatch.setattr(journal_module, "time", fake)
    return fake


def journaled(path: Path, clock: Clock, items: list[Item]) -> list[Event]:
    """Record the items (seconds after T0, kind, data) in a real journal and read them back."""
    journal = Journal(path)
    try:
        for offset, kind, data in items:
            clock.now = T0 + offset
            # a kind this version does not know is written as it is: the report must skip it
            journal.record(EventKind(kind) if kind in set(EventKind) else cast(EventKind, kind), data)
        return journal.events()
    finally:
        journal.close()


def verdict(name: str, green: float | None, outcome: str = "pass", reason: str = "ok") -> dict[str, Any]:
    return {"check": name, "outcome": outcome, "breach": False, "reason": reason, "green": green,
            "baseline": 0.01, "threshold": 0.05, "streak": 0}


def sample(green_weight: float | None, lag: float | None, checks: dict[str, Any] | None = None,
           phase: str = "shifting") -> dict[str, Any]:
    weights = None if green_weight is None else {"blue": 100 - green_weight, "green": green_weight}
    return {"phase": phase, "stage": 0, "weights": weights, "lag_seconds": lag, "lag_bytes": None,
            "checks": checks or {}}


def cutover(seconds: int = 60, rollback_at: float = 30.5) -> list[Item]:
    items: list[Item] = [
        (0, "start", {"state": {"phase": "streaming"}}),
        (1, "phase", {"from": "streaming", "to": "switching", "reason": "in sync", "state": {}}),
        (2, "job", {"job": "switch", "ok": True, "detail": "write pause 72 ms", "seconds": 0.4}),
        (3, "phase", {"from": "switching", "to": "shifting", "reason": "writes on green", "state": {}}),
    ]
    for s in range(4, seconds + 1):
        failing = rollback_at - 3 <= s < rollback_at
        check = verdict("error_ratio", 0.2 if failing else 0.01, "fail" if failing else "pass")
        live = s < rollback_at
        items.append((s, "sample", sample(10.0 if live else 0.0, 0.02, {"error_ratio": check} if live else {},
                                          "shifting" if live else "rolled_back")))
    breach = {**verdict("error_ratio", 0.2, "fail", "5xx 20 % > 5 %"), "breach": True}
    items += [(rollback_at - 0.2, "breach", breach),
              (rollback_at, "rollback", {"verdict": breach, "seconds": 0.2, "result": None, "error": None}),
              (rollback_at + 0.5, "phase", {"from": "shifting", "to": "rolled_back", "reason": "breach"})]
    return sorted(items, key=lambda i: i[0])


def svg_of(page: str) -> ET.Element:
    start, end = page.index("<svg"), page.index("</svg>") + len("</svg>")
    return ET.fromstring(page[start:end])


def panel(svg: ET.Element, key: str) -> ET.Element:
    found = [g for g in svg.iter(f"{SVG}g") if g.get("data-panel") == key]
    assert len(found) == 1, [g.get("data-panel") for g in svg.iter(f"{SVG}g")]
    return found[0]


def paths(element: ET.Element, css: str) -> list[str]:
    return [p.get("d", "") for p in element.iter(f"{SVG}path") if css in (p.get("class") or "").split()]


def points_in(d: str) -> int:
    return len(re.findall(r"[MLH]", d))


def axis(svg: ET.Element) -> dict[float, float]:
    """Tick label seconds (read from its mm:ss text) -> x."""
    ticks: dict[float, float] = {}
    for text in svg.iter(f"{SVG}text"):
        if text.get("class") == "tick":
            minutes, seconds = (text.text or "").split(":")
            ticks[int(minutes) * 60 + int(seconds)] = float(text.get("x", "nan"))
    return ticks


# -- the page -------------------------------------------------------------------------------


def test_page_has_summary_panels_and_table(tmp_path: Path, clock: Clock) -> None:
    page = render_report(journaled(tmp_path / "j.db", clock, cutover()), "records")
    assert page.startswith("<!DOCTYPE html>")
    for outside in ("<script", "src=", "href=", "url("):
        assert outside not in page, "self-contained"
    assert "records" in page
    assert "<dt>final phase</dt><dd>rolled_back</dd>" in page
    assert "<dt>rollbacks</dt><dd>1</dd>" in page
    assert "<dt>breaches</dt><dd>1</dd>" in page
    svg = svg_of(page)
    for key in ("weight", "check:error_ratio", "lag"):
        panel(svg, key)
    assert any(r.get("class") == "phase" for r in panel(svg, "weight").iter(f"{SVG}rect"))
    assert paths(panel(svg, "check:error_ratio"), "threshold")
    assert paths(panel(svg, "check:error_ratio"), "baseline")
    assert list(panel(svg, "check:error_ratio").iter(f"{SVG}circle")), "fail outcomes are marked"
    table = page[page.index("<table"):]
    assert "streaming \u2192 switching: in sync" in table
    assert "switch ok in 0.4 s: write pause 72 ms" in table
    assert "traffic back to blue in 0.20 s" in table


def test_every_revert_shows_the_daemons_and_the_watchs_alike(tmp_path: Path, clock: Clock) -> None:
    revert = {"report": {"to": "blue", "pause_ms": 61.4, "difference": None}}
    items: list[Item] = [
        (0, "rollback", {"reason": "SLO breach: errors: 5xx 20 %", "verdict": None, "seconds": 0.12,
                         "result": None, "error": None}),
        (1, "switch", {"to": "blue", "step": "resume: done", "seconds": 0.001}),
        (1.5, "reverted", revert),
        (9, "rollback", {"reason": "operator abort", "verdict": None, "seconds": 0.1, "result": None,
                         "error": None}),
        (10, "revert failed", {"error": "blue is 9,000,000 bytes behind"}),
    ]
    page = render_report(journaled(tmp_path / "j.db", clock, items), "app")
    table = page[page.index("<table"):]
    assert "traffic back to blue in 0.12 s: SLO breach: errors: 5xx 20 %" in table
    assert "writes back on blue (write pause 61 ms)" in table
    assert "writes NOT back on blue: blue is 9,000,000 bytes behind" in table
    assert "<dt>rollbacks</dt><dd>2</dd>" in page
    assert "<dt>writes reverted</dt><dd>1 (1 failed)</dd>" in page


def test_rollback_marker_sits_at_its_time_on_the_axis(tmp_path: Path, clock: Clock) -> None:
    svg = svg_of(render_report(journaled(tmp_path / "j.db", clock, cutover(60, 30.5)), "app"))
    ticks = axis(svg)
    assert set(ticks) == {0, 10, 20, 30, 40, 50, 60}
    rollbacks = [line for line in svg.iter(f"{SVG}line") if line.get("class") == "marker rollback"]
    assert len(rollbacks) == 1
    expected = ticks[0] + 30.5 / 60 * (ticks[60] - ticks[0])
    assert float(rollbacks[0].get("x1", "nan")) == pytest.approx(expected, abs=0.15)
    assert ticks[30] < expected < ticks[40]
    breaches = [line for line in svg.iter(f"{SVG}line") if line.get("class") == "marker breach"]
    assert len(breaches) == 1
    assert float(breaches[0].get("x1", "nan")) < expected
    labels = [t.text or "" for t in svg.iter(f"{SVG}text") if t.get("class") == "marker-label"]
    assert "rollback 00:30" in labels
    assert "breach error_ratio 00:30" in labels


def test_hostile_names_and_reasons_are_escaped(tmp_path: Path, clock: Clock) -> None:
    reason = '</td><img src=x onerror="alert(1)"> & \x1b[31m'
    bad = verdict(HOSTILE, 0.3, "fail", reason)
    items: list[Item] = [
        (0, "sample", sample(10.0, None, {HOSTILE: bad})),
        (1, "sample", sample(10.0, None, {HOSTILE: bad})),
        (2, "breach", {**bad, "breach": True}),
        (3, "phase", {"from": "shifting", "to": "rolling_back", "reason": reason}),
        (4, "job", {"job": "rollback", "ok": False, "detail": reason, "seconds": 1}),
    ]
    page = render_report(journaled(tmp_path / "j.db", clock, items), 'svc"<b>', title="<i>x</i>")
    for raw in ("<script", "<img", "<b>", "<i>", "\x1b"):
        assert raw not in page
    assert "&lt;script&gt;&amp;&quot;" in page
    assert "&lt;i&gt;x&lt;/i&gt;" in page
    svg = svg_of(page)  # still well-formed XML, control character included
    hostile = panel(svg, f"check:{HOSTILE}")
    assert [t.text for t in hostile.iter(f"{SVG}text") if t.get("class") == "title"] == [f"check {HOSTILE}"]
    labels = [t.text or "" for t in svg.iter(f"{SVG}text") if t.get("class") == "marker-label"]
    assert labels == [f"breach {HOSTILE} 00:02"]


def test_null_values_are_gaps_not_zeros(tmp_path: Path, clock: Clock) -> None:
    lags = [1.0, 2.0, None, None, 3.0, 4.0, None, 5.0]
    items: list[Item] = [(i, "sample", sample(None if lag is None else 50.0, lag))
                         for i, lag in enumerate(lags)]
    svg = svg_of(render_report(journaled(tmp_path / "j.db", clock, items), "app"))
    (lag,) = paths(panel(svg, "lag"), "lag")
    runs = [r for r in re.split(r"(?=M)", lag) if r]
    assert [points_in(r) for r in runs] == [2, 2, 1]
    assert runs[2].endswith("h0"), "a lone value is still drawn, as a dot"
    (weight,) = paths(panel(svg, "weight"), "weight")
    assert weight.count("M") == 3
    (frame,) = [r for r in panel(svg, "lag").iter(f"{SVG}rect") if r.get("class") == "frame"]
    zero_line = float(frame.get("y", "nan")) + float(frame.get("height", "nan"))
    ys = [float(y) for y in re.findall(r"[ML][\d.]+ ([\d.]+)", lag)]
    assert len(ys) == 5
    assert all(y < zero_line - 10 for y in ys), "no gap is drawn as a zero"


def test_thousands_of_samples_are_downsampled(tmp_path: Path, clock: Clock) -> None:
    items: list[Item] = []
    for i in range(5000):
        seconds = None if 2000 <= i < 2100 else (i % 17) / 10
        check = verdict("latency", float(i % 101), "fail" if i % 500 == 0 else "pass")
        items.append((i, "sample", sample(float(i % 3) * 10, seconds, {"latency": check})))
    page = render_report(journaled(tmp_path / "j.db", clock, items), "app")
    svg = svg_of(page)
    drawn = [d for p in svg.iter(f"{SVG}g") for d in paths(p, "line")]
    assert len(drawn) == 5  # weight; latency's green, baseline and threshold; lag
    assert all(0 < points_in(d) <= MAX_POINTS for d in drawn)
    (lag,) = paths(panel(svg, "lag"), "lag")
    assert lag.count("M") == 2, "the gap survives the reduction"
    assert len(page) < 300_000


def test_downsample_keeps_extremes_and_gaps() -> None:
    points: list[tuple[float, float | None]] = [(float(i), float(i % 10)) for i in range(10_000)]
    points[5000] = (5000.0, None)
    points[7777] = (7777.0, 1000.0)
    reduced = downsample(points, 300)
    assert len(reduced) <= 300
    assert (5000.0, None) in reduced
    assert (7777.0, 1000.0) in reduced
    assert reduced == sorted(reduced, key=lambda p: p[0])
    assert downsample(points[:10], 300) == points[:10]


def test_empty_journal_says_so(tmp_path: Path, clock: Clock) -> None:
    page = render_report(journaled(tmp_path / "j.db", clock, []), "app")
    assert "no events yet" in page
    assert "<svg" not in page
    assert page.rstrip().endswith("</html>")


def test_a_single_event_draws(tmp_path: Path, clock: Clock) -> None:
    events = journaled(tmp_path / "j.db", clock, [(0, "phase", {"from": "pending", "to": "preflight"})])
    page = render_report(events, "app")
    svg = svg_of(page)
    assert axis(svg)[0] == pytest.approx(72.0)
    assert "<dt>final phase</dt><dd>preflight</dd>" in page
    assert "pending \u2192 preflight" in page


def test_unknown_kinds_and_odd_data_are_ignored(tmp_path: Path, clock: Clock) -> None:
    items: list[Item] = [
        (0, "future-kind", {"anything": [1, 2]}),
        (1, "sample", {"phase": 7, "weights": "broken", "lag_seconds": "3", "checks": {"c": "nope"}}),
        (2, "sample", {"weights": {"green": True}, "checks": {"c": {"green": float("nan")}}}),
        (3, "switch", {"to": "green", "step": "pause: start"}),
    ]
    svg = svg_of(render_report(journaled(tmp_path / "j.db", clock, items), "app"))
    assert [g.get("data-panel") for g in svg.iter(f"{SVG}g")] == ["weight"]


# -- the command ----------------------------------------------------------------------------

runner = CliRunner()


@pytest.fixture
def cli() -> typer.Typer:
    """`cutover report` alone, with the failure mapping every command has."""
    app = typer.Typer(cls=Commands)
    app.callback()(lambda: None)  # a group, as `cutover` is, not a lone command
    app.command(name="report")(report_cmd)
    return app



def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "cutover.toml"
    path.write_text('service = "records"\n[state]\npath = "state.db"\n')
    return path


def test_command_writes_the_report(tmp_path: Path, clock: Clock, cli: typer.Typer) -> None:
    journaled(tmp_path / "state.db", clock, cutover())
    output = tmp_path / "out" / "report.html"
    output.parent.mkdir()
    result = runner.invoke(cli, ["report", "--config", str(config_file(tmp_path)), "-o", str(output)])
    assert result.exit_code == 0, result.output
    assert str(output) in result.stdout
    page = output.read_text(encoding="utf-8")
    assert "records" in page
    svg_of(page)


def test_command_without_a_journal_exits_1_and_creates_nothing(tmp_path: Path, cli: typer.Typer) -> None:
    output = tmp_path / "report.html"
    result = runner.invoke(cli, ["report", "--config", str(config_file(tmp_path)), "--output", str(output)])
    assert result.exit_code == 1, result.output
    assert str(tmp_path / "state.db") in result.stderr
    assert not (tmp_path / "state.db").exists(), "the journal is not created"
    assert not output.exists()


def test_command_with_a_bad_config_exits_2(tmp_path: Path, cli: typer.Typer) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[state]\nnot_a_key = 1\n")
    result = runner.invoke(cli, ["report", "--config", str(bad), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 2, result.output
