"""Prometheus: one instant query per environment over the HTTP API, `{env}` in the query
replaced by blue or green. An empty result or NaN is "no data", not zero and not an error.
With `samples_query` the requests behind each value are asked too, so min_samples applies
and an error ratio is weighed by its counts like HAProxy's."""

from __future__ import annotations

import math
from typing import Any

import httpx

from config.slo import HAProxyMetric, SloCheck
from config.slo import PrometheusSource as PrometheusSettings
from controller.slo.readings import NO_DATA, Measurement, Reading


class QueryError(Exception):
    pass


class PrometheusSource:
    def __init__(self, settings: PrometheusSettings, transport: httpx.BaseTransport | None = None) -> None:
        """transport: httpx's default (the network) unless given (tests: httpx.MockTransport)."""
        self.base = str(settings.url).rstrip("/")
        self.client = httpx.Client(timeout=settings.timeout, transport=transport)

    def measure(self, check: SloCheck) -> Measurement:
        try:
            green, blue = (self._reading(check, env) for env in ("green", "blue"))
        except QueryError as exc:
            return Measurement(NO_DATA, NO_DATA, error=str(exc))
        return Measurement(green, blue)

    def _reading(self, check: SloCheck, env: str) -> Reading:
        assert check.query is not None
        value = self.instant(check.query.replace("{env}", env))
        if check.samples_query is None:
            return Reading(value)
        counted = self.instant(check.samples_query.replace("{env}", env))
        samples = round(counted) if counted is not None else 0
        if value is None or check.metric != HAProxyMetric.ERROR_RATIO:
            return Reading(value, samples)
        # increase() extrapolates to fractions; errors are whole and never more than requests.
        return Reading(value, samples, errors=min(samples, round(value * samples)), overlapping=True)

    def instant(self, query: str) -> float | None:
        try:
            response = self.client.get(f"{self.base}/api/v1/query", params={"query": query})
        except httpx.HTTPError as exc:
            raise QueryError(f"Prometheus at {self.base} unreachable: {exc}") from None
        try:
            body = response.json()
        except ValueError:
            raise QueryError(f"Prometheus answered HTTP {response.status_code}, not JSON") from None
        try:
            return self._one_number(body)
        except (AttributeError, KeyError, IndexError, TypeError, ValueError):
            raise QueryError(f"Prometheus's answer is malformed: {str(body)[:200]}") from None

    @staticmethod
    def _one_number(body: Any) -> float | None:
        """The value of an instant query's answer; QueryError for anything but one number."""
        if body.get("status") != "success":
            raise QueryError(f"Prometheus refused the query ({body.get('errorType')}): "
                             f"{body.get('error')}")
        data = body.get("data", {})
        result = data.get("result")
        if data.get("resultType") == "scalar":
            return _number(result[1])
        if data.get("resultType") != "vector":
            raise QueryError(f"the query returns a {data.get('resultType')}; it must return one "
                             "number (an instant vector of one series or a scalar)")
        if not result:
            return None
        if len(result) > 1:
            raise QueryError(f"the query returns {len(result)} series; aggregate it (sum, avg, "
                             "max) to one per environment")
        return _number(result[0]["value"][1])

    def close(self) -> None:
        self.client.close()


def _number(text: str) -> float | None:
    value = float(text)
    return None if math.isnan(value) else value
