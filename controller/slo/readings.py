"""What a metric source hands the judge, and the interface every source implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from config.slo import SloCheck


@dataclass(frozen=True)
class Reading:
    """One environment's value of one check over one interval."""

    value: float | None
    """None: no data (an empty Prometheus result, NaN, no requests to average)."""
    samples: int | None = None
    """Requests behind the value, where the source can tell; None when it cannot."""
    failed: str | None = None
    """Set when the measurement itself is a failure (a health probe answering 500)."""
    errors: int | None = None
    """For a ratio of failed requests: how many of `samples` failed, so the judge can weigh
    the evidence (1 error in 35 requests is not 3 % with any confidence)."""
    overlapping: bool = False
    """The counts come from a window longer than the interval (Prometheus's [1m] every 15 s):
    each interval is weighed on its own, never added up across intervals."""
    margin: float = 0.0
    """How far the true value may lie from `value` because of how it was measured (HAProxy's
    averages come rounded to whole milliseconds)."""


NO_DATA = Reading(None)


class SourceError(Exception):
    """A source's backend could not be asked (unreachable, refused, malformed answer): the
    check is inconclusive, never a breach."""


@dataclass(frozen=True)
class Measurement:
    green: Reading
    blue: Reading
    error: str | None = None
    """The source could not be asked at all (unreachable, bad query): inconclusive."""


class MetricSource(Protocol):
    def measure(self, check: SloCheck) -> Measurement:
        """Blue's and green's values of this check since the previous call for it."""
        ...

    def close(self) -> None: ...
