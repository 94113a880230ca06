"""SLO checks that judge green, and what a breach does."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, Self

from pydantic import AnyHttpUrl, Field, model_validator

from config.base import Name, Section
from config.durations import Duration


class SloSource(StrEnum):
    HAPROXY = "haproxy"
    PROMETHEUS = "prometheus"
    HTTP = "http"
    LAG = "lag"
    DRIFT = "drift"


class HAProxyMetric(StrEnum):
    ERROR_RATIO = "error_ratio"
    LATENCY_MS = "latency_ms"
    REQUEST_RATE = "request_rate"


class OnNoData(StrEnum):
    HOLD = "hold"
    FAIL = "fail"


class SloCheck(Section):
    name: Name
    source: SloSource
    """lag: the heartbeat lag of the replication that exists (green behind blue before the
    switch, blue behind green after it); drift: the share of rows that differ."""
    metric: HAProxyMetric | None = None
    """haproxy source: error_ratio, latency_ms or request_rate. prometheus source: error_ratio
    says the query returns a ratio of failed requests, which with samples_query is judged by
    how many requests it saw."""
    query: str | None = None
    """prometheus source: PromQL; {env} is replaced by blue or green."""
    samples_query: str | None = None
    """prometheus source: PromQL for the number of requests behind the query's value in the
    same window ({env} as in query), e.g. sum(increase(http_requests_total{env="{env}"}[1m])).
    With it min_samples applies, and an error_ratio is weighed by its counts."""
    max: float | None = None
    """Green fails when its value is above this."""
    min: float | None = None
    """Green fails when its value is below this."""
    max_vs_blue: float | None = Field(default=None, gt=0)
    """Green fails when its value exceeds blue's times this (1.25 = 25 % worse)."""
    noise_floor: float = Field(default=0.0, ge=0)
    """Differences smaller than this are never a max_vs_blue failure (0 vs 1 error)."""
    interval: Duration = 1.0
    """How often the check is measured."""
    failure_limit: int = Field(default=3, ge=1)
    """Consecutive failures that make a breach."""
    min_samples: int = Field(default=20, ge=0)
    """Fewer requests than this in an interval is inconclusive, neither pass nor fail."""
    on_no_data: OnNoData = OnNoData.HOLD
    """hold (inconclusive) or fail when the source returns nothing."""
    no_data_limit: int = Field(default=10, ge=1)
    """Consecutive intervals the source cannot be asked (unreachable, a bad query, no answer
    within the interval) after which the check breaches (fail-safe): no_data_limit x interval
    after the source went silent."""
    dry_run: bool = False
    """A shadow check: judged, journaled, exported and shown, but it never breaches. For
    trying a new check or new limits on a real cutover."""

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.max is None and self.min is None and self.max_vs_blue is None:
            raise ValueError("give at least one limit: max, min or max_vs_blue")
        if self.source is SloSource.PROMETHEUS and not self.query:
            raise ValueError("source 'prometheus' needs a query (PromQL, {env} for blue/green)")
        if self.source is SloSource.HAPROXY and self.metric is None:
            raise ValueError("source 'haproxy' needs a metric: error_ratio, latency_ms or request_rate")
        if self.source is SloSource.PROMETHEUS and self.metric not in (None, HAProxyMetric.ERROR_RATIO):
            raise ValueError("source 'prometheus' takes no metric other than error_ratio (the "
                             "query says what it measures)")
        if self.samples_query is not None and self.source is not SloSource.PROMETHEUS:
            raise ValueError("samples_query is for source 'prometheus' only")
        if self.interval <= 0:
            raise ValueError("interval must be longer than 0s")
        return self


class PrometheusSource(Section):
    url: AnyHttpUrl
    """Prometheus base URL, e.g. http://127.0.0.1:9090."""
    timeout: Duration = 2.0


class SourcesSettings(Section):
    prometheus: PrometheusSource | None = None


class RollbackSettings(Section):
    on_breach: Literal["rollback", "pause"] = "rollback"
    """rollback: traffic back to blue at once; pause: hold and notify an operator."""
    database: Literal["stay", "revert"] = "stay"
    """stay: writes remain on green; revert: switch writes back to blue (nothing lost)."""
