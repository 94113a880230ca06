"""ApplyWatch: a replication whose apply keeps failing is broken, whatever a single read shows."""

from __future__ import annotations

from dataclasses import replace

from sync.apply_watch import NO_WORKER_GRACE, ApplyWatch
from sync.status import SyncStatus

HEALTHY = SyncStatus(phase="streaming", slot_exists=True, slot_active=True, wal_status="reserved",
                     lag_bytes=0, retained_wal_bytes=0, subscription_enabled=True,
                     subscription_worker=True, heartbeat_seq=10, heartbeat_lag_seconds=0.01,
                     heartbeat_age_seconds=0.1, heartbeat_written_seq=10, apply_errors=3)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def no_causes() -> list[str]:
    return []


def test_errors_from_before_the_first_read_do_not_count() -> None:
    watch = ApplyWatch()
    assert watch.judge(HEALTHY, no_causes).broken is None
    assert watch.judge(HEALTHY, no_causes).streaming


def test_rising_errors_break_it_until_a_later_heartbeat_gets_through() -> None:
    watch = ApplyWatch()
    watch.judge(HEALTHY, no_causes)
    # The worker is back between two failures: a single read would call this streaming.
    failing = replace(HEALTHY, apply_errors=4, heartbeat_written_seq=12)
    judged = watch.judge(failing, lambda: ["public.accounts has no primary key on green"])
    assert judged.broken is not None
    assert "failed 1 more time(s)" in judged.broken
    assert "likely cause: public.accounts has no primary key on green" in judged.broken
    assert not judged.streaming
    # No new error, but nothing written after the failure has been applied: still broken.
    stuck = replace(failing, heartbeat_seq=12, heartbeat_written_seq=14)
    assert watch.judge(stuck, no_causes).broken is not None
    healed = replace(stuck, heartbeat_seq=13)
    assert watch.judge(healed, no_causes).broken is None


def test_a_disabled_subscription_is_broken_at_once() -> None:
    off = replace(HEALTHY, subscription_enabled=False, subscription_worker=False)
    judged = ApplyWatch().judge(off, no_causes)
    assert judged.broken is not None
    assert "disabled" in judged.broken


def test_no_worker_is_broken_only_past_a_restarts_time() -> None:
    clock = Clock()
    watch = ApplyWatch(clock)
    gone = replace(HEALTHY, subscription_worker=False, apply_errors=None)
    assert watch.judge(gone, no_causes).broken is None
    clock.now += NO_WORKER_GRACE / 2
    assert watch.judge(gone, no_causes).broken is None
    clock.now += NO_WORKER_GRACE
    judged = watch.judge(gone, no_causes)
    assert judged.broken is not None
    assert "no apply worker" in judged.broken
    back = replace(HEALTHY, heartbeat_seq=11, heartbeat_written_seq=11, apply_errors=None)
    assert watch.judge(back, no_causes).broken is None


def test_a_copy_in_progress_is_not_judged() -> None:
    copying = replace(HEALTHY, phase="copying", subscription_enabled=False, subscription_worker=False)
    assert ApplyWatch().judge(copying, no_causes).broken is None
