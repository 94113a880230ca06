"""The SLO judge, every rule, without servers."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from config.slo import SloCheck
from controller.daemon.watch import Watch
from controller.slo.judge import CheckState, Outcome, Verdict, judge
from controller.slo.readings import NO_DATA, Measurement, Reading


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
    assert bad.reason == "green 300 above limit 125 = blue 100 x 1.25"
    floor = judge(c, m(49.0, 22.0), state)  # the limit came from the floor, and says so
    assert floor.reason == "green 49 above limit 42 = blue 22 + noise floor 20"


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
    # Breached at the limit itself, whatever failure_limit: no_data_limit x interval is the bound.
    assert run(c, down, down, down) == [
        (Outcome.INCONCLUSIVE, False), (Outcome.INCONCLUSIVE, False), (Outcome.FAIL, True)]
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
                           "green": 0.006, "baseline": 0.004, "threshold": 0.008, "streak": 0,
                           "derivation": "blue 0.004 x 2", "green_samples": 100,
                           "blue_samples": 100, "evidence": None, "dry_run": False}


def test_at_100_percent_a_relative_check_keeps_blues_last_baseline() -> None:
    """Blue serves nothing at the last stage: green is held to blue's last good value,
    neither waved through nor left inconclusive for ever."""
    c = check(max_vs_blue=1.25, min_samples=20)
    state = CheckState()
    assert judge(c, m(100.0, 100.0), state).outcome is Outcome.PASS
    held = judge(c, m(110.0, None, bs=0), state)
    assert held.outcome is Outcome.PASS
    assert held.baseline == 100.0
    # 3 samples of blue: too few alone, so pooled with its last readings (a 5 % control).
    worse = judge(c, m(130.0, 50.0, bs=3), state)
    assert worse.outcome is Outcome.FAIL
    assert worse.threshold == pytest.approx(1.25 * (100 * 100 + 50 * 3) / 103)
    assert worse.blue_samples == 103
    held_again = judge(c, m(130.0, None, bs=0), state)  # none at all: the last baseline
    assert "last baseline" in held_again.reason
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
    fresh = Watch([c], {c.source: _Fixed()}).step(wait=5)[0]
    assert fresh.outcome is Outcome.INCONCLUSIVE
    resumed = Watch([c], {c.source: _Fixed()}, baselines={"c": 100.0}).step(wait=5)[0]
    assert resumed.outcome is Outcome.PASS
    assert resumed.baseline == 100.0
    strict = Watch([c], {c.source: _Fixed()}, baselines={"c": 80.0}).step(wait=5)[0]
    assert strict.outcome is Outcome.FAIL


def counted(errors: int, requests: int, blue_errors: int = 0, blue_requests: int = 1000) -> Measurement:
    return Measurement(Reading(errors / requests, requests, errors=errors),
                       Reading(blue_errors / blue_requests, blue_requests, errors=blue_errors))


def test_one_error_in_35_requests_is_not_evidence_but_five_are() -> None:
    c = check(max=0.01, min_samples=20, failure_limit=3)
    one = judge(c, counted(1, 35), CheckState())
    assert one.outcome is Outcome.PASS
    assert "1 errors in 35 requests" in one.reason
    five = judge(c, counted(5, 35), CheckState())
    assert five.outcome is Outcome.FAIL
    assert five.reason.startswith("green 5 errors in 35 requests (0.143) above limit 0.01 = max 0.01")
    assert (five.green_samples, five.blue_samples) == (35, 1000)


def test_gross_failure_breaches_at_once_on_evidence_not_after_failure_limit() -> None:
    c = check(max=0.01, failure_limit=3)
    state = CheckState()
    first = judge(c, counted(25, 50), state)  # 50 % errors in 50 requests
    assert first.breach
    assert first.streak == 1
    assert "evidence" in first.reason


def test_low_traffic_errors_accrue_evidence_without_passing_or_failing() -> None:
    """3 requests a second, all failing: each interval is too little traffic to judge, but
    the evidence adds up and breaches within a few seconds."""
    c = check(max=0.01, min_samples=20, failure_limit=3)
    state = CheckState()
    verdicts = [judge(c, counted(3, 3), state) for _ in range(10)]
    first = next(i for i, v in enumerate(verdicts) if v.breach)
    assert 1 <= first <= 6
    assert all(v.outcome is Outcome.INCONCLUSIVE for v in verdicts[:first])
    # The breach is a failure on the evidence, and says so before the interval's own reading.
    assert verdicts[first].outcome is Outcome.FAIL
    assert verdicts[first].reason.startswith(
        "enough evidence over the last intervals (this one alone: inconclusive, too little traffic")


def test_a_clean_green_never_accrues_evidence() -> None:
    """0.1 % background errors on both colours for an hour at 100 requests a second, judged
    against max 1 % and 2 x blue: nothing fails, no evidence."""
    import random
    rng = random.Random(7)
    c = check(max=0.01, max_vs_blue=2.0, noise_floor=0.005, failure_limit=3)
    state = CheckState()
    for _ in range(3600):
        g = sum(rng.random() < 0.001 for _ in range(100))
        b = sum(rng.random() < 0.001 for _ in range(100))
        v = judge(c, counted(g, 100, b, 100), state)
        assert not v.breach
    assert state.evidence < 5


def test_blue_with_no_errors_this_interval_does_not_make_greens_limit_zero() -> None:
    c = check(max_vs_blue=2.0, noise_floor=0.0)
    v = judge(c, counted(2, 200, 0, 200), CheckState())
    assert v.outcome is Outcome.PASS
    assert v.threshold is not None
    assert v.threshold > 0.02
    assert "(≤ " in (v.derivation or "")


def test_a_value_fails_only_past_its_limit_by_more_than_its_margin() -> None:
    c = check(metric="latency_ms", max=100)
    near = Measurement(Reading(103.0, 100, margin=5.0), NO_DATA)
    assert judge(c, near, CheckState()).outcome is Outcome.PASS
    far = Measurement(Reading(110.0, 100, margin=5.0), NO_DATA)
    v = judge(c, far, CheckState())
    assert v.outcome is Outcome.FAIL
    assert v.reason == "green 110 ± 5 above limit 100 = max 100"


def test_a_dry_run_check_is_judged_but_never_breaches() -> None:
    c = check(max=0.05, failure_limit=1, dry_run=True)
    v = judge(c, m(0.5), CheckState())
    assert v.outcome is Outcome.FAIL
    assert not v.breach
    assert v.reason.endswith("would breach (dry run)")
    assert v.as_dict()["dry_run"] is True


class _Hung:
    """A source whose every call hangs until released (HAProxy's socket gone, retrying)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def measure(self, check: SloCheck) -> Measurement:
        self.release.wait(10)
        return m(0.0)

    def close(self) -> None:
        self.release.set()


class _Healthy:
    def measure(self, check: SloCheck) -> Measurement:
        return m(0.0, 0.0)

    def close(self) -> None:
        pass


def test_a_hung_source_delays_no_other_check_and_reaches_its_fail_safe() -> None:
    hung_check = check(name="hung", source="prometheus", metric=None, query="q", max=1,
                       interval=0.2, no_data_limit=3, failure_limit=1)
    ok_check = check(name="ok", interval=0.2, max=0.5)
    hung = _Hung()
    watch = Watch([hung_check, ok_check], {hung_check.source: hung, ok_check.source: _Healthy()})
    started = time.monotonic()
    seen: dict[str, list[Verdict]] = {"hung": [], "ok": []}
    try:
        while time.monotonic() - started < 3 and not any(v.breach for v in seen["hung"]):
            for v in watch.step(wait=0.05):
                seen[v.check].append(v)
                if v.check == "ok":
                    assert time.monotonic() - started < 0.5 * len(seen["ok"]) + 0.5
    finally:
        hung.close()
        watch.close()
    assert len(seen["ok"]) >= 3
    assert all(v.outcome is Outcome.PASS for v in seen["ok"])
    # Each hang is one inconclusive "no answer" at its deadline, never the last "pass".
    assert seen["hung"][0].outcome is Outcome.INCONCLUSIVE
    assert "no answer within 0.2s" in seen["hung"][0].reason
    assert seen["hung"][-1].breach
    assert "fail-safe" in seen["hung"][-1].reason
    assert time.monotonic() - started < 2.5  # the fail-safe within no_data_limit x interval + slack


def test_in_the_hold_at_100_percent_relative_limits_are_not_judged() -> None:
    """Blue serves nothing after the last stage: a busy host slowing green must not be read
    as green being worse than blue's value from before; absolute limits still hold."""
    relative = check(metric="latency_ms", max_vs_blue=1.25, noise_floor=20)
    state = CheckState(baseline=50.0)
    v = judge(relative, m(200.0, None, bs=0), state, blue_live=False)
    assert v.outcome is Outcome.INCONCLUSIVE
    assert "blue serves no traffic" in v.reason
    both = check(metric="latency_ms", max_vs_blue=1.25, noise_floor=20, max=500)
    for green, outcome in ((200.0, Outcome.PASS), (600.0, Outcome.FAIL)):
        v = judge(both, m(green, None, bs=0), CheckState(baseline=50.0), blue_live=False)
        assert v.outcome is outcome


def test_a_limit_of_zero_fails_any_error() -> None:
    c = check(max=0.0)
    assert judge(c, counted(1, 500), CheckState()).outcome is Outcome.FAIL
    assert judge(c, counted(0, 500), CheckState()).outcome is Outcome.PASS


def test_overlapping_windows_are_weighed_one_by_one_never_added_up() -> None:
    """Prometheus's [1m] asked every 15 s counts each error four times: no CUSUM on it."""
    c = check(source="prometheus", metric="error_ratio", query="q", max=0.01, failure_limit=5)
    state = CheckState()
    seen = Measurement(Reading(0.05, 200, errors=10, overlapping=True), NO_DATA)
    verdicts = [judge(c, seen, state) for _ in range(4)]
    assert all(v.outcome is Outcome.FAIL for v in verdicts)
    assert not any(v.breach for v in verdicts)
    assert state.evidence == 0
