"""The daemon's glue without servers: observe -> decide -> record -> job -> publish, in shared
mode (one database, traffic only), with a fake balancer and a fake SLO source, jobs run inside
the tick. Breach, operator pause and resume, abort, retry, promote and a restart on the same
journal. The real parts' side is in tests/integration/test_daemon*.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from config import Settings
from config.slo import SloCheck, SloSource
from config.traffic import Match, TrafficSettings
from controller.daemon.loop import Daemon
from controller.daemon.phases import Phase
from controller.slo.readings import Measurement, Reading
from controller.state.journal import Journal
from controller.traffic.balancer import EnvCounters, LoadBalancer, ShareBalancer, Split

TICK = 0.05
"""Seconds a tick counts as (the bakes below last a few ticks), and slept between ticks so
that the checks' 50 ms intervals come round."""


class FakeBalancer(ShareBalancer):
    """Holds what it was told; every balancer the daemon asks for is this one."""

    def __init__(self) -> None:
        self.green = 0
        self.applied: list[int] = []
        self.match: str | None = None
        self.matches: list[str | None] = []

    def describe(self) -> str:
        return "a fake balancer"

    def check(self) -> None:
        pass

    def apply(self, green_percent: int) -> None:
        self.green = green_percent
        self.applied.append(green_percent)

    def read(self) -> Split:
        return self.expected(self.green)

    def route_matching(self, match: Match | None) -> None:
        self.match = None if match is None else match.value
        self.matches.append(self.match)

    def matching(self) -> str | None:
        return self.match

    def expected(self, green_percent: int) -> Split:
        return Split(float(green_percent), {"blue": 100 - green_percent, "green": green_percent})

    def counters(self) -> dict[str, EnvCounters] | None:
        return None

    def close(self) -> None:
        pass


class FakeSource:
    """Green's error ratio as the test sets it, over 1,000 requests an interval."""

    def __init__(self) -> None:
        self.green_errors = 0.0

    def measure(self, check: SloCheck) -> Measurement:
        return Measurement(Reading(self.green_errors, 1000, errors=round(self.green_errors * 1000)),
                           Reading(0.0, 1000, errors=0))

    def close(self) -> None:
        pass


def settings(tmp_path: Path, hooks: list[dict[str, Any]] | None = None, **traffic: Any) -> Settings:
    return Settings.model_validate({
        "service": "shop", "hooks": hooks or [],
        "traffic": {"driver": "haproxy", "blue_servers": ["blue1"], "green_servers": ["green1"],
                    "haproxy": {"socket": str(tmp_path / "haproxy.sock"), "backend": "app"},
                    "stages": [{"weight": 10, "bake": "0.2s"}, {"weight": 50, "bake": "0.2s"},
                               {"weight": 100, "bake": "0.2s"}],
                    "hold": "0.2s", "finalize": "manual", **traffic},
        "slo": [{"name": "5xx-ratio", "source": "haproxy", "metric": "error_ratio", "max": 0.05,
                 "interval": "50ms", "failure_limit": 2, "min_samples": 20}],
        "state": {"path": str(tmp_path / "state.db")},
        "metrics": {"enabled": False}})


class Harness:
    def __init__(self, settings: Settings, lb: FakeBalancer, source: FakeSource) -> None:
        def balancers(traffic: TrafficSettings) -> LoadBalancer:
            return lb
        self.settings = settings
        self.daemon = Daemon(settings, sources={SloSource.HAPROXY: source}, balancers=balancers,
                             threaded_jobs=False, say=lambda _: None)
        self.daemon.begin()

    def until(self, phase: Phase, ticks: int = 200, **fields: Any) -> None:
        """Tick until the state is in `phase` (and has `fields`); fails after `ticks`."""
        for _ in range(ticks):
            state = self.daemon.state
            if state.phase is phase and all(getattr(state, k) == v for k, v in fields.items()):
                return
            self.daemon.tick(TICK)
            time.sleep(TICK)
        raise AssertionError(f"not {phase.value} {fields} after {ticks} ticks: {self.daemon.state}")

    def intent(self, kind: str) -> None:
        store = Journal(self.settings.state.path)
        store.add_intent(kind)
        store.close()

    def close(self) -> None:
        self.daemon.close()


@pytest.fixture
def lb() -> FakeBalancer:
    return FakeBalancer()


@pytest.fixture
def source() -> FakeSource:
    return FakeSource()


@pytest.fixture
def run(tmp_path: Path, lb: FakeBalancer, source: FakeSource) -> Iterator[Harness]:
    harness = Harness(settings(tmp_path), lb, source)
    try:
        yield harness
    finally:
        harness.close()


def journal_kinds(path: Path, kind: str) -> list[dict[str, Any]]:
    store = Journal(path)
    try:
        return [e.data for e in store.events(kind)]
    finally:
        store.close()


def test_a_healthy_green_goes_through_every_stage_and_waits_to_be_promoted(
        run: Harness, lb: FakeBalancer) -> None:
    run.until(Phase.PROMOTED)
    # The last stage keeps a control share on blue while it bakes (traffic.control_percent),
    # then gives it to green.
    assert lb.applied == [10, 50, 95, 100]
    assert run.daemon.state.reason  # a decision always says why
    run.intent("promote")  # finalize = "manual"
    run.until(Phase.FINALIZED)
    phases = [d["to"] for d in journal_kinds(run.settings.state.path, "phase")]
    assert phases == ["shifting", "promoted", "finalizing", "finalized"]


def test_a_breach_at_the_first_stage_rolls_traffic_back_and_records_why(
        run: Harness, lb: FakeBalancer, source: FakeSource) -> None:
    run.until(Phase.SHIFTING, applied=True)
    source.green_errors = 0.5
    run.until(Phase.ROLLED_BACK)
    assert lb.green == 0
    assert lb.applied[-1] == 0
    breaches = journal_kinds(run.settings.state.path, "breach")
    assert breaches
    assert breaches[0]["check"] == "5xx-ratio"


def test_an_operator_pause_holds_the_stage_and_resume_continues(run: Harness, lb: FakeBalancer) -> None:
    run.until(Phase.SHIFTING, applied=True, stage=0)
    run.intent("pause")
    run.until(Phase.SHIFTING, paused=True)
    for _ in range(20):  # well past the 0.2 s bake
        run.daemon.tick(TICK)
        time.sleep(TICK / 5)
    assert (run.daemon.state.stage, lb.green) == (0, 10)
    run.intent("resume")
    run.until(Phase.PROMOTED)
    assert lb.applied == [10, 50, 95, 100]


def test_abort_puts_traffic_back_on_blue_and_retry_starts_over(
        run: Harness, lb: FakeBalancer, source: FakeSource) -> None:
    run.until(Phase.SHIFTING, applied=True, stage=1)
    run.intent("abort")
    run.until(Phase.ROLLED_BACK)
    assert lb.green == 0
    run.intent("retry")
    run.until(Phase.SHIFTING, applied=True, stage=0)
    assert lb.green == 10
    run.until(Phase.PROMOTED)


def test_a_restart_resumes_the_stage_from_the_journal(
        tmp_path: Path, lb: FakeBalancer, source: FakeSource) -> None:
    first = Harness(settings(tmp_path, stages=[{"weight": 10, "bake": "0.2s"},
                                               {"weight": 50, "bake": "30s"},
                                               {"weight": 100, "bake": "0.2s"}]), lb, source)
    first.until(Phase.SHIFTING, applied=True, stage=1)
    first.close()
    again = Harness(first.settings, lb, source)
    try:
        assert (again.daemon.state.phase, again.daemon.state.stage) == (Phase.SHIFTING, 1)
        assert not again.daemon.state.applied  # weights are applied and read back again first
        again.until(Phase.SHIFTING, applied=True, stage=1)
        assert lb.applied == [10, 50, 50]
        starts = journal_kinds(first.settings.state.path, "start")
        assert [s["state"]["stage"] for s in starts] == [0, 1]
    finally:
        again.close()


def test_closing_right_after_a_tick_that_ran_a_job_ends_cleanly(
        tmp_path: Path, lb: FakeBalancer, source: FakeSource) -> None:
    run = Harness(settings(tmp_path), lb, source)
    run.daemon.tick(TICK)  # shared mode: the first tick starts (here: runs) stage 1's shift
    assert run.daemon.jobs.current is not None
    run.close()
    assert lb.applied == [10]


def test_gates_hold_baked_stages_until_promoted_or_approved_by_their_hooks(
        tmp_path: Path, lb: FakeBalancer, source: FakeSource) -> None:
    approved = tmp_path / "qa-approved"
    s = settings(tmp_path, stages=[{"weight": 10, "bake": "0.1s", "gate": "promote"},
                                   {"weight": 50, "bake": "0.1s", "gate": "hook"},
                                   {"weight": 100, "bake": "0.1s"}], gate_poll="0.1s",
                 hooks=[{"at": "approve_stage", "name": "qa", "command": ["test", "-e", str(approved)]}])
    run = Harness(s, lb, source)
    try:
        run.until(Phase.SHIFTING, stage=0, gated=True)
        for _ in range(20):  # baked long since: it waits
            run.daemon.tick(TICK)
        assert (run.daemon.state.stage, lb.applied) == (0, [10])
        assert "waiting at its gate for `cutover promote`" in run.daemon.state.reason
        run.intent("promote")
        run.until(Phase.SHIFTING, stage=1, gated=True)
        for _ in range(10):
            run.daemon.tick(TICK)
            time.sleep(TICK)
        assert (run.daemon.state.stage, lb.applied) == (1, [10, 50])
        assert "not approved yet: hook qa" in run.daemon.state.reason
        approved.touch()
        run.until(Phase.PROMOTED)
        asks = [h["ok"] for h in journal_kinds(s.state.path, "hook") if h["at"] == "approve_stage"]
        assert len(asks) >= 2
        assert not any(asks[:-1])
        assert asks[-1]
    finally:
        run.close()


def test_a_match_stage_routes_its_requests_to_green_at_weight_0_and_the_next_stage_ends_it(
        tmp_path: Path, lb: FakeBalancer, source: FakeSource) -> None:
    haproxy = {"socket": str(tmp_path / "haproxy.sock"), "backend": "app",
               "match_acl": str(tmp_path / "match.acl"), "match_backend": "app_green"}
    s = settings(tmp_path, stages=[{"match": {"header": "X-Staff", "value": "1"}, "bake": "0.1s"},
                                   {"weight": 50, "bake": "0.1s"}, {"weight": 100, "bake": "0.1s"}],
                 haproxy=haproxy)
    run = Harness(s, lb, source)
    try:
        run.until(Phase.SHIFTING, stage=0, applied=True)
        assert (lb.applied, lb.matches) == ([0], ["1"])
        run.until(Phase.SHIFTING, stage=1, applied=True)
        assert (lb.applied[-1], lb.match) == (50, None)
        source.green_errors = 0.5  # a breach rolls back: still no match
        run.until(Phase.ROLLED_BACK)
        assert (lb.green, lb.match) == (0, None)
    finally:
        run.close()
