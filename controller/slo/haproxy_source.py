"""HAProxy's own counters as the default metric source: per environment, from `show stat`
deltas between two calls for the same check, the error ratio, the request rate and the
response time.

Every failure a client could meet counts as an error of the server it was sent to: its 5xx
answers, and the connection errors (`econ`), response errors (`eresp`: resets, timeouts) and
retries (`wretr`) after which HAProxy answers 502/503/504 itself or tries another server. A
server that was sent requests and has answered none for STALLED_SECONDS has stopped
answering (hung, or a black hole): the reading fails and names it, and what it is sent from
then on counts as failed.

HAProxy keeps no cumulative response-time sum, only `rtime`: each server's plain mean over
its first 512 responses, then a sliding average in which each response weighs 1/512 (the
documentation says 1024; the source's TIME_STATS_SAMPLES is 512). Two
readings of it and the count of responses between them give back the mean of just those
responses (`interval_mean`), so a latency regression shows in the first interval it lasts,
not after a thousand requests. HAProxy rounds `rtime` to whole milliseconds, which makes that
mean uncertain by a margin the judge takes into account.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from config.slo import HAProxyMetric, SloCheck
from controller.slo.readings import NO_DATA, Measurement, Reading, SourceError

RESPONSE_FIELDS = ("hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other")
FAILURE_FIELDS = ("econ", "eresp", "wretr")
WINDOW = 512
"""HAProxy's TIME_STATS_SAMPLES: the responses behind `rtime`."""
STALLED_AFTER = 5
STALLED_SECONDS = 1.5
"""A server sent STALLED_AFTER requests that answered none for this long has stopped
answering; a slow one (answers taking longer than a check's interval) has not."""
Stats = dict[str, dict[str, str]]


def _int(row: dict[str, str], name: str) -> int:
    value = row.get(name) or ""
    return int(value) if value.isdigit() else 0


def interval_mean(before: float, after: float, seen_before: int, added: int) -> tuple[float, float]:
    """The mean response time of the `added` responses between two readings of `rtime`, and
    its margin from HAProxy's rounding up to whole milliseconds (the true average lies in the
    millisecond below each reading: taken at its middle, ±0.5 ms).

    With every added response taking x ms, after = a * before + b * x, where a is the old
    average's share of the new one: a plain mean while fewer than WINDOW responses were seen,
    then a sliding average that keeps (1 - 1/WINDOW) of itself per response."""
    total = seen_before + added
    if total <= WINDOW:
        a, b = seen_before / total, added / total
    else:
        plain = max(0, WINDOW - seen_before)  # added while still a plain mean
        kept = (1 - 1 / WINDOW) ** (added - plain)
        a = min(seen_before, WINDOW) / WINDOW * kept
        b = plain / WINDOW * kept + (1 - kept)
    return ((after - 0.5) - a * (before - 0.5)) / b, 0.5 * (1 + a) / b


@dataclass
class _Server:
    """One server's counters over the interval."""

    responses: int
    errors: int
    attempts: int
    sent: int
    ms: float | None
    margin: float


def _server(old: dict[str, str], new: dict[str, str]) -> _Server:
    def delta(names: Sequence[str]) -> int:
        return sum(_int(new, f) for f in names) - sum(_int(old, f) for f in names)
    fields = (*RESPONSE_FIELDS, *FAILURE_FIELDS, "lbtot")
    if any(_int(new, f) < _int(old, f) for f in fields):
        old = {}  # a restarted HAProxy or cleared counters count from zero: "since then"
    responses, failures = delta(RESPONSE_FIELDS), delta(FAILURE_FIELDS)
    errors = delta(("hrsp_5xx",)) + failures
    ms = margin = None
    if responses > 0:
        seen = sum(_int(old, f) for f in RESPONSE_FIELDS)
        ms, margin = interval_mean(_int(old, "rtime"), _int(new, "rtime"), seen, responses)
    return _Server(responses, errors, responses + failures, delta(("lbtot",)),
                   None if ms is None else max(0.0, ms), margin or 0.0)


class StatsApi(Protocol):
    """The one Runtime API call the source makes; SourceError when HAProxy cannot be asked
    (the daemon adapts traffic.haproxy.RuntimeApi to it)."""

    def server_stats(self, backend: str) -> Stats: ...

    def close(self) -> None: ...


class HAProxySource:
    def __init__(self, api: StatsApi, backend: str, servers: Mapping[str, Sequence[str]],
                 clock: Callable[[], float] = time.monotonic, *, match_backend: str | None = None) -> None:
        """match_backend: the backend of green's servers that match stages send requests to;
        its servers count as green's too (as "<backend>/<server>")."""
        self.api, self.backend, self.clock = api, backend, clock
        self.match_backend = match_backend
        self.servers: Mapping[str, Sequence[str]] = servers if match_backend is None else {
            **servers, "green": [*servers["green"], *(f"{match_backend}/{s}" for s in servers["green"])]}
        self._last: dict[str, tuple[float, Stats]] = {}
        self._answered: dict[tuple[str, str], tuple[float, int]] = {}
        """(check, server) -> when it last answered, and its lbtot then."""

    def measure(self, check: SloCheck) -> Measurement:
        try:
            stats = self.api.server_stats(self.backend)
            if self.match_backend is not None:
                matched = self.api.server_stats(self.match_backend)
                stats.update({f"{self.match_backend}/{s}": row for s, row in matched.items()})
        except SourceError as exc:
            return Measurement(NO_DATA, NO_DATA, error=str(exc))
        now = self.clock()
        previous = self._last.get(check.name)
        self._last[check.name] = (now, stats)
        if previous is None:
            return Measurement(NO_DATA, NO_DATA, error="first reading: counters need a second one")
        then, old = previous
        assert check.metric is not None
        green, blue = (self._reading(check, env, old, stats, now - then, now)
                       for env in ("green", "blue"))
        return Measurement(green, blue)

    def _reading(self, check: SloCheck, env: str, old: Stats, new: Stats,
                 seconds: float, now: float) -> Reading:
        metric = check.metric
        servers = {s: _server(old.get(s, {}), new[s]) for s in self.servers[env] if s in new}
        responses = sum(s.responses for s in servers.values())
        if metric is HAProxyMetric.REQUEST_RATE:
            return Reading(responses / seconds if seconds > 0 else None, responses)
        stalled = []
        for name, s in servers.items():
            lbtot = _int(new[name], "lbtot")
            since, sent_then = self._answered.get((check.name, name), (now, -1))
            # Silence counts from the first request it left unanswered, not from a time it
            # was sent nothing (weight 0), and from now again after counters were reset.
            if s.attempts or not s.sent or lbtot < sent_then or sent_then < 0:
                self._answered[(check.name, name)] = (now, lbtot)
                continue
            if now - since >= STALLED_SECONDS and lbtot - sent_then >= STALLED_AFTER:
                stalled.append(f"{name} was sent {lbtot - sent_then} requests and has answered "
                               f"none for {now - since:.1f}s")
                s.errors += s.sent  # unanswered, and whoever sent them is still waiting
                s.attempts += s.sent
        attempts = sum(s.attempts for s in servers.values())
        failed = f"{env}: {'; '.join(stalled)}" if stalled else None
        if metric is HAProxyMetric.ERROR_RATIO:
            errors = sum(s.errors for s in servers.values())
            if attempts == 0:
                return Reading(None, 0, failed=failed)
            return Reading(errors / attempts, attempts, failed=failed, errors=errors)
        timed = [(s.ms, s.margin, s.responses) for s in servers.values() if s.ms is not None]
        if not timed:
            return Reading(None, 0, failed=failed)
        return Reading(sum(ms * n for ms, _, n in timed) / responses, responses, failed=failed,
                       margin=sum(margin * n for _, margin, n in timed) / responses)

    def close(self) -> None:
        self.api.close()
