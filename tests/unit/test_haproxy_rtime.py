"""Decoding HAProxy's `rtime` (a mean of the first 512 responses, then a sliding average)
back into the mean of one interval's responses, without servers."""

from __future__ import annotations

import math
import random

import pytest

from controller.slo.haproxy_source import WINDOW, interval_mean


class Server:
    """HAProxy's arithmetic for one server's d_time: the sum of a sliding window of WINDOW
    samples, reported as sum / min(seen, WINDOW) rounded up to whole milliseconds."""

    def __init__(self) -> None:
        self.sum, self.seen = 0.0, 0

    def respond(self, ms: float) -> None:
        self.seen += 1
        n = min(self.seen, WINDOW)
        self.sum = self.sum + ms if self.seen <= WINDOW else self.sum - self.sum / n + ms

    @property
    def rtime(self) -> int:
        return math.ceil(self.sum / min(self.seen, WINDOW)) if self.seen else 0


@pytest.mark.parametrize("warm", [0, 300, 5000])
@pytest.mark.parametrize("added", [50, 200, 1000])
def test_the_intervals_own_mean_comes_back_within_its_margin(warm: int, added: int) -> None:
    rng = random.Random(warm + added)
    s = Server()
    for _ in range(warm):
        s.respond(rng.gauss(20, 5))
    before, seen = s.rtime, s.seen
    new = [rng.gauss(80, 5) for _ in range(added)]  # +60 ms from now on
    for ms in new:
        s.respond(ms)
    mean, margin = interval_mean(before, s.rtime, seen, added)
    true = sum(new) / added
    assert abs(mean - true) <= margin + 0.5, (mean, true, margin)
    assert margin < 25


def test_a_regression_is_seen_in_the_first_interval_not_after_hundreds_of_requests() -> None:
    s = Server()
    for _ in range(5000):
        s.respond(20.0)
    before, seen = s.rtime, s.seen
    for _ in range(100):  # one second at 100 requests a second
        s.respond(80.0)
    assert s.rtime < 32  # HAProxy's own figure has moved a sixth of the way
    mean, margin = interval_mean(before, s.rtime, seen, 100)
    assert mean - margin > 60
