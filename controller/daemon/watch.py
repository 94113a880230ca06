"""The watch loop: measure each check at its own interval (monotonic clock), judge it, and on
a breach put all traffic back on blue at once, recording the verdict that caused it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from config import ConfigError
from config.errors import Problem
from config.settings import Settings, need_traffic
from config.slo import SloCheck, SloSource
from controller.daemon.rollback import report_breach, roll_back
from controller.slo.haproxy_source import HAProxySource
from controller.slo.judge import CheckState, Outcome, Verdict, judge
from controller.slo.probe_source import HttpProbeSource
from controller.slo.prometheus_source import PrometheusSource
from controller.slo.readings import NO_DATA, Measurement, MetricSource, SourceError
from controller.slo.sync_sources import DriftSource, LagSource
from controller.state.journal import EventKind
from controller.state.store import open_store
from controller.traffic.balancer import TrafficError
from controller.traffic.haproxy import RuntimeApi
from controller.traffic.shift import ShiftResult
from sync.callbacks import Clock


class HAProxyStats:
    """traffic.haproxy.RuntimeApi as the SLO source's StatsApi: its failures are the source's."""

    def __init__(self, api: RuntimeApi) -> None:
        self.api = api

    def server_stats(self, backend: str) -> dict[str, dict[str, str]]:
        try:
            return self.api.server_stats(backend)
        except TrafficError as exc:
            raise SourceError(str(exc)) from exc

    def close(self) -> None:
        self.api.close()


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
            HAProxyStats(api), traffic.haproxy.backend,
            {"blue": traffic.blue_servers, "green": traffic.green_servers},
            match_backend=traffic.haproxy.match_backend)
    if SloSource.PROMETHEUS in used:
        assert settings.sources.prometheus is not None  # the settings validator insists
        sources[SloSource.PROMETHEUS] = PrometheusSource(settings.sources.prometheus)
    if SloSource.HTTP in used:
        urls = {env: getattr(settings, env).probe_urls() for env in ("blue", "green")}
        sources[SloSource.HTTP] = HttpProbeSource(urls)
    if SloSource.LAG in used:
        sources[SloSource.LAG] = LagSource(settings)
    if SloSource.DRIFT in used:
        sources[SloSource.DRIFT] = DriftSource(settings)
    return sources


class Watch:
    """Measures and judges; knows nothing of what a breach does.

    Each source is asked on a thread of its own, and each measurement has its check's
    interval to answer: a source that hangs or retries (HAProxy's socket gone, Prometheus
    slow) delays no other check, and its own check gets an inconclusive "no answer" verdict
    at the deadline instead of keeping its last one, so a silent source reaches its fail-safe
    after no_data_limit intervals."""

    def __init__(self, checks: list[SloCheck], sources: Mapping[SloSource, MetricSource],
                 clock: Clock = time.monotonic, baselines: Mapping[str, float] | None = None) -> None:
        """baselines: blue's last values per check from before a restart, so a stage where
        blue serves nothing (100 %) still has something to hold green to."""
        self.checks, self.sources, self.clock = checks, sources, clock
        self.states = {c.name: CheckState(baseline=(baselines or {}).get(c.name)) for c in checks}
        self.latest: dict[str, Verdict] = {}
        now = clock()
        self.due = {c.name: now for c in checks}
        self._pools = {kind: ThreadPoolExecutor(1, thread_name_prefix=f"slo-{kind}")
                       for kind in {c.source for c in checks}}
        self.blue_live = True
        """False while blue serves nothing by design (the hold at 100 %): see judge()."""
        self._asked: dict[str, tuple[Future[Measurement], float]] = {}
        """check -> its measurement in flight, and when it is due to answer (or to be told
        silent once more)."""

    def step(self, wait: float = 0.0) -> list[Verdict]:
        """Ask every check that is due, wait up to `wait` seconds for the answers, and judge
        those that answered or ran out of time; returns their verdicts."""
        for check in self.checks:
            now = self.clock()
            if check.name in self._asked or now < self.due[check.name]:
                continue
            # Fixed cadence: the next one is due an interval after this one was due.
            self.due[check.name] = max(self.due[check.name] + check.interval, now)
            source = self.sources[check.source]
            self._asked[check.name] = (self._pools[check.source].submit(source.measure, check),
                                       now + check.interval)
        if wait > 0 and self._asked:
            futures.wait([f for f, _ in self._asked.values()], timeout=wait)
        verdicts = []
        for check in self.checks:
            if check.name not in self._asked:
                continue
            future, deadline = self._asked[check.name]
            if future.done():
                # Judged even when late: a counter source has moved on past this interval,
                # and an answer shows the source is alive (its fail-safe count starts again).
                del self._asked[check.name]
                measurement = _result(future)
            elif self.clock() >= deadline:
                # Silent for another interval: one more "no answer", towards the fail-safe.
                measurement = Measurement(NO_DATA, NO_DATA, error=f"no answer within {check.interval:g}s")
                self._asked[check.name] = (future, deadline + check.interval)
                self.due[check.name] = deadline + check.interval
            else:
                continue
            verdict = judge(check, measurement, self.states[check.name], blue_live=self.blue_live)
            self.latest[check.name] = verdict
            verdicts.append(verdict)
        return verdicts

    def next_due(self) -> float:
        """When step() next has something to do: a check due, or an answer's deadline."""
        return min([*(self.due[c.name] for c in self.checks if c.name not in self._asked),
                    *(d for _, d in self._asked.values())], default=self.clock() + 0.1)

    def close(self) -> None:
        """Stop asking; a measurement still in flight finishes on its own."""
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)


def _result(future: Future[Measurement]) -> Measurement:
    try:
        return future.result()
    except Exception as exc:  # a source's bug must not stop the watch
        return Measurement(NO_DATA, NO_DATA, error=f"{type(exc).__name__}: {exc}")


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
            for verdict in the_watch.step(wait=0.2):
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
        the_watch.close()
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
