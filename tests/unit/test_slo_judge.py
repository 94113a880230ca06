"""The SLO judge, every rule, without servers."""

from __future__ import annotations

from typing import Any

import pytest

from config.slo import SloCheck
from controller.slo.judge import CheckState, Outcome, judge
from controller.slo.readings import NO_DATA, Measurement, Reading
from controller.slo.watch import Watch


def check(**over: Any) -> SloCheck:
    base: dict[str, Any] = {"name": "c", "source": "haproxy", "metric": "error_ratio",
                            "failure_limit": 2, "min_samples": 20}
    return SloCheck.model_validate({**base, **over})


def m(green: float | None, blue: float | None = None, gs: int | None = 100,
      bs: int | None = 100) -> Measurement:
    return Measurement(Reading(green, gs), Reading(blue, bs))


def run(c: SloCheck, *measurements: Measurement) -> list[tuple[Outcome, bool]]:
    state = CheckState()
    return [(v.outcome, v.breach) for v in (judge(c, x, state) for x in measurements)]


def test_max_and_min_are_absolute_limits() -> None:
    assert run(check(max=0.05), m(0.05), m(0.06)) == [(Outcome.PASS, False), (Outcome.FAIL, False)]
    assert run(check(min=10, metric="request_rate"), m(9.9)) == [(Outcome.FAIL, False)]


def test_breach_needs_failure_limit_consecutive_failures_and_a_pass_resets() -> None:
    c = check(max=0.05, failure_limit=3)
    outcomes = run(c, m(0.5), m(0.5), m(0.0), m(0.5), m(0.5), m(0.5))
    assert [b for _, b in outcomes] == [False, False, False, False, False, True]


def test_flapping_never_breaches() -> None:
    c = check(max=0.05, failure_limit=2)
    assert not any(b for _, b in run(c, *[m(0.5 if i % 2 else 0.0) for i in range(20)]))


def test_inconclusive_neither_clears_nor_extends_a_failure_run() -> None:
    c = check(max=0.05, failure_limit=2)
    assert run(c, m(0.5), m(0.5, gs=3), m(0.5)) == [
        (Outcome.FAIL, False), (Outcome.INCONCLUSIVE, False), (Outcome.FAIL, True)]


def test_max_vs_blue_with_noise_floor() -> None:
    c = check(max_vs_blue=1.25, noise_floor=20, metric="latency_ms")
    state = CheckState()
    ok = judge(c, m(21.0, 1.0), state)  # 21x worse, but within the 20 ms floor
    assert ok.outcome is Outcome.PASS
    assert ok.threshold == pytest.approx(21.0)
    bad = judge(c, m(300.0, 100.0), state)
    assert bad.outcome is Outcome.FAIL
    assert (bad.green, bad.baseline, bad.threshold) == (300.0, 100.0, 125.0)
    assert "worse than blue" in bad.reason


def test_zero_vs_one_error_is_not_infinitely_worse() -> None:
    c = check(max_vs_blue=2.0, noise_floor=0.01)
    assert run(c, m(0.005, 0.0)) == [(Outcome.PASS, False)]
    assert run(c, m(0.02, 0.0)) == [(Outcome.FAIL, False)]


def test_too_little_traffic_is_inconclusive_not_pass_or_fail() -> None:
    c = check(max=0.05)
    v = judge(c, m(1.0, gs=5), CheckState())
    assert v.outcome is Outcome.INCONCLUSIVE
    assert "too little traffic" in v.reason


def test_blue_with_too_little_traffic_gives_no_baseline() -> None:
    only_relative = check(max_vs_blue=2.0)
    assert run(only_relative, m(0.5, 0.0, bs=3)) == [(Outcome.INCONCLUSIVE, False)]
    with_max = check(max_vs_blue=2.0, max=0.9)
    assert run(with_max, m(0.5, 0.0, bs=3)) == [(Outcome.PASS, False)]


def test_no_data_holds_or_fails_as_configured() -> None:
    empty = Measurement(NO_DATA, NO_DATA)
    assert run(check(max=1, on_no_data="hold"), empty, empty, empty) == [(Outcome.INCONCLUSIVE, False)] * 3
    assert run(check(max=1, on_no_data="fail"), empty, empty) == [
        (Outcome.FAIL, False), (Outcome.FAIL, True)]
    nan = m(float("nan"))
    assert run(check(max=1), nan) == [(Outcome.INCONCLUSIVE, False)]


def test_an_unreachable_source_fails_safe_after_its_limit() -> None:
    down = Measurement(NO_DATA, NO_DATA, error="connection refused")
    c = check(max=1, no_data_limit=3, failure_limit=2)
    assert run(c, down, down, down, down) == [
        (Outcome.INCONCLUSIVE, False), (Outcome.INCONCLUSIVE, False),
        (Outcome.FAIL, False), (Outcome.FAIL, True)]
    # One good answer in between starts the count again.
    assert run(c, down, down, m(0.0), down, down) == [(Outcome.INCONCLUSIVE, False)] * 2 + [
        (Outcome.PASS, False)] + [(Outcome.INCONCLUSIVE, False)] * 2


def test_a_failed_probe_fails_whatever_the_limits() -> None:
    probe = Measurement(Reading(5.0, failed="green health probe: HTTP 503"), Reading(5.0))
    v = judge(check(source="http", metric=None, max=1000), probe, CheckState())
    assert v.outcome is Outcome.FAIL
    assert v.reason == "green health probe: HTTP 503"


def test_verdict_carries_values_baseline_and_threshold() -> None:
    v = judge(check(max=0.05, max_vs_blue=2.0, noise_floor=0.001), m(0.006, 0.004), CheckState())
    assert v.as_dict() == {"check": "c", "outcome": "pass", "breach": False, "reason": "within limits",
                           "green": 0.006, "baseline": 0.004, "threshold": 0.008, "streak": 0}


def test_at_100_percent_a_relative_check_keeps_blues_last_baseline() -> None:
    """Blue serves nothing at the last stage: green is held to blue's last good value,
    neither waved through nor left inconclusive for ever."""
    c = check(max_vs_blue=1.25, min_samples=20)
    state = CheckState()
    assert judge(c, m(100.0, 100.0), state).outcome is Outcome.PASS
    held = judge(c, m(110.0, None, bs=0), state)
    assert held.outcome is Outcome.PASS
    assert held.baseline == 100.0
    worse = judge(c, m(130.0, 50.0, bs=3), state)  # 3 samples of blue: not a baseline
    assert worse.outcome is Outcome.FAIL
    assert "last baseline" in worse.reason
    assert worse.threshold == 125.0
    assert judge(c, m(130.0, None, bs=0), CheckState()).outcome is Outcome.INCONCLUSIVE


class _Fixed:
    """A source that always measures the same: green 110, blue serving nothing."""

    def measure(self, check: SloCheck) -> Measurement:
        return m(110.0, None, bs=0)

    def close(self) -> None:
        pass


def test_a_watch_resumed_with_blues_baseline_still_judges_at_100_percent() -> None:
    """After a restart at the 100 % stage blue serves nothing: the journaled baseline is what
    green is held to; without it the check could never pass and the bake would never end."""
    c = check(max_vs_blue=1.25, min_samples=20, source="haproxy")
    fresh = Watch([c], {c.source: _Fixed()}).step()[0]
    assert fresh.outcome is Outcome.INCONCLUSIVE
    resumed = Watch([c], {c.source: _Fixed()}, baselines={"c": 100.0}).step()[0]
    assert resumed.outcome is Outcome.PASS
    assert resumed.baseline == 100.0
    strict = Watch([c], {c.source: _Fixed()}, baselines={"c": 80.0}).step()[0]
    assert strict.outcome is Outcome.FAIL
