"""The watch loop: measure each check at its own interval (monotonic clock), judge it, and on
a breach put all traffic back on blue at once, recording the verdict that caused it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from config import ConfigError
from config.errors import Problem
from config.settings import Settings, need_traffic
from config.slo import SloCheck, SloSource
from controller.journal import EventKind
from controller.rollback import report_breach, roll_back
from controller.slo.haproxy_source import HAProxySource
from controller.slo.judge import CheckState, Outcome, Verdict, judge
from controller.slo.probe_source import HttpProbeSource
from controller.slo.prometheus_source import PrometheusSource
from controller.slo.readings import MetricSource
from controller.slo.sync_sources import DriftSource, LagSource
from controller.store import open_store
from controller.traffic.haproxy import RuntimeApi
from controller.traffic.shift import ShiftResult

Clock = Callable[[], float]


def build_sources(settings: Settings) -> dict[SloSource, MetricSource]:
    """One source per kind the checks use; a missing section is a ConfigError naming it."""
    used = {c.source for c in settings.slo}
    sources: dict[SloSource, MetricSource] = {}
    if SloSource.HAPROXY in used:
        traffic = need_traffic(settings, "an slo check with source 'haproxy'")
        if traffic.haproxy is None:
            raise ConfigError([Problem("traffic.haproxy", "missing; slo checks with source "
                                       "'haproxy' read its stats (socket or address)")])
        api = RuntimeApi(traffic.haproxy.socket, traffic.haproxy.address, traffic.haproxy.timeout)
        sources[SloSource.HAPROXY] = HAProxySource(
            api, traffic.haproxy.backend, {"blue": traffic.blue_servers, "green": traffic.green_servers})
    if SloSource.PROMETHEUS in used:
        assert settings.sources.prometheus is not None  # the settings validator insists
        sources[SloSource.PROMETHEUS] = PrometheusSource(settings.sources.prometheus)
    if SloSource.HTTP in used:
        urls = {env: str(getattr(settings, env).health_url) for env in ("blue", "green")}
        sources[SloSource.HTTP] = HttpProbeSource(urls)
    if SloSource.LAG in used:
        sources[SloSource.LAG] = LagSource(settings)
    if SloSource.DRIFT in used:
        sources[SloSource.DRIFT] = DriftSource(settings)
    return sources


class Watch:
    """Measures and judges; knows nothing of what a breach does."""

    def __init__(self, checks: list[SloCheck], sources: Mapping[SloSource, MetricSource],
                 clock: Clock = time.monotonic, baselines: Mapping[str, float] | None = None) -> None:
        """baselines: blue's last values per check from before a restart, so a stage where
        blue serves nothing (100 %) still has something to hold green to."""
        self.checks, self.sources, self.clock = checks, sources, clock
        self.states = {c.name: CheckState(baseline=(baselines or {}).get(c.name)) for c in checks}
        self.latest: dict[str, Verdict] = {}
        now = clock()
        self.due = {c.name: now for c in checks}

    def step(self) -> list[Verdict]:
        """Measure and judge every check that is due; returns their verdicts."""
        verdicts = []
        for check in self.checks:
            now = self.clock()
            if now < self.due[check.name]:
                continue
            # Fixed cadence: the next one is due an interval after this one was due.
            self.due[check.name] = max(self.due[check.name] + check.interval, now)
            verdict = judge(check, self.sources[check.source].measure(check), self.states[check.name])
            self.latest[check.name] = verdict
            verdicts.append(verdict)
        return verdicts

    def next_due(self) -> float:
        return min(self.due.values())


@dataclass
class WatchResult:
    breach: Verdict | None = None
    rollback: ShiftResult | None = None
    rollback_error: str | None = None
    detect_to_rollback_seconds: float | None = None
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    revert: dict[str, Any] | None = None
    """rollback.database = "revert": the switch back to blue's report."""
    revert_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"breach": self.breach.as_dict() if self.breach else None,
                "rollback": self.rollback.as_dict() if self.rollback else None,
                "rollback_error": self.rollback_error,
                "detect_to_rollback_seconds": self.detect_to_rollback_seconds,
                "revert": self.revert, "revert_error": self.revert_error,
                "checks": {name: v.as_dict() for name, v in self.verdicts.items()}}


def require_checks(settings: Settings) -> None:
    if not settings.slo:
        raise ConfigError([Problem("slo", "no checks configured; add [[slo]] entries")])


def watch(settings: Settings, *, duration: float | None = None, act: bool = True,
          stop: threading.Event | None = None, on_verdict: Callable[[Verdict], None] = lambda _: None,
          sources: Mapping[SloSource, MetricSource] | None = None,
          clock: Clock = time.monotonic) -> WatchResult:
    """Watch until a breach, `duration` seconds, or `stop`. On a breach with act=True: traffic
    100 % blue at once (rollback.on_breach = "rollback") or hold (= "pause"), journaled and
    notified either way."""
    require_checks(settings)
    stop = stop or threading.Event()
    owned = sources is None
    sources = sources if sources is not None else build_sources(settings)
    the_watch = Watch(settings.slo, sources, clock)
    started = clock()
    result = WatchResult()
    try:
        while not stop.is_set() and (duration is None or clock() - started < duration):
            for verdict in the_watch.step():
                on_verdict(verdict)
                if verdict.breach and result.breach is None:
                    result.breach = verdict
            if result.breach is not None:
                if act:
                    _act(settings, result, clock)
                break
            stop.wait(max(0.0, min(the_watch.next_due() - clock(), 0.5)))
    finally:
        result.verdicts = dict(the_watch.latest)
        if owned:
            for source in sources.values():
                source.close()
    return result


def _act(settings: Settings, result: WatchResult, clock: Clock) -> None:
    assert result.breach is not None
    verdict = result.breach
    detected = clock()
    journal = open_store(settings)
    try:
        report_breach(settings, journal, verdict)
        if settings.rollback.on_breach == "pause":
            journal.record(EventKind.PAUSED, {"verdict": verdict.as_dict()})
            return
        started = clock()
        rolled = roll_back(settings, journal, f"{verdict.check}: {verdict.reason}",
                           verdict=verdict.as_dict())
        result.rollback, result.rollback_error = rolled.traffic, rolled.traffic_error
        result.detect_to_rollback_seconds = started - detected + rolled.traffic_seconds
        result.revert = rolled.revert.as_dict() if rolled.revert else None
        result.revert_error = rolled.revert_error
    finally:
        journal.close()


def outcome_colour(outcome: Outcome) -> str:
    return {Outcome.PASS: "green", Outcome.FAIL: "red", Outcome.INCONCLUSIVE: "yellow"}[outcome]
