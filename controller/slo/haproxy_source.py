"""HAProxy's own counters as the default metric source: per environment, from `show stat`
deltas between two calls for the same check, the 5xx ratio, the request rate and the average
response time.

HAProxy 2.6 keeps no cumulative response-time sum, only `rtime`, each server's average over
its last 1024 requests; latency is that average weighted by each server's requests in the
interval. A big change shows within a few requests; a subtle one takes up to 1024.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from config.slo import HAProxyMetric, SloCheck
from controller.slo.readings import NO_DATA, Measurement, Reading
from controller.traffic.balancer import TrafficError
from controller.traffic.haproxy import RuntimeApi

RESPONSE_FIELDS = ("hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other")
Stats = dict[str, dict[str, str]]


def _int(row: dict[str, str], name: str) -> int:
    value = row.get(name) or ""
    return int(value) if value.isdigit() else 0


class HAProxySource:
    def __init__(self, api: RuntimeApi, backend: str, servers: dict[str, Sequence[str]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.api, self.backend, self.servers, self.clock = api, backend, servers, clock
        self._last: dict[str, tuple[float, Stats]] = {}

    def measure(self, check: SloCheck) -> Measurement:
        try:
            stats = self.api.server_stats(self.backend)
        except TrafficError as exc:
            return Measurement(NO_DATA, NO_DATA, error=str(exc))
        now = self.clock()
        previous = self._last.get(check.name)
        self._last[check.name] = (now, stats)
        if previous is None:
            return Measurement(NO_DATA, NO_DATA, error="first reading: counters need a second one")
        then, old = previous
        assert check.metric is not None
        green, blue = (self._reading(check.metric, self.servers[env], old, stats, now - then)
                       for env in ("green", "blue"))
        return Measurement(green, blue)

    def _reading(self, metric: HAProxyMetric, servers: Sequence[str], old: Stats, new: Stats,
                 seconds: float) -> Reading:
        responses = errors = 0
        weighted_ms = 0.0
        for s in servers:
            if s not in new:
                continue
            before = old.get(s, {})
            # A restarted HAProxy counts from zero again: a negative delta means "since then".
            d = sum(_int(new[s], f) for f in RESPONSE_FIELDS) - sum(_int(before, f) for f in RESPONSE_FIELDS)
            e = _int(new[s], "hrsp_5xx") - _int(before, "hrsp_5xx")
            if d < 0:
                d, e = sum(_int(new[s], f) for f in RESPONSE_FIELDS), _int(new[s], "hrsp_5xx")
            responses += d
            errors += max(0, e)
            weighted_ms += d * _int(new[s], "rtime")
        if metric is HAProxyMetric.REQUEST_RATE:
            return Reading(responses / seconds if seconds > 0 else None, responses)
        if responses == 0:
            return Reading(None, 0)
        if metric is HAProxyMetric.ERROR_RATIO:
            return Reading(errors / responses, responses)
        return Reading(weighted_ms / responses, responses)

    def close(self) -> None:
        self.api.close()
