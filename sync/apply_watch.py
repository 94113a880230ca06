"""Whether green's apply really works, judged across reads of the sync's status.

A subscription whose apply worker hits an error does not stop: the worker exits and comes
back a few seconds later (wal_retrieve_retry_interval), to fail on the same change again, for
ever. Caught between two failures it looks like any healthy subscription (a worker runs, the
slot is active), and blue retains WAL the whole time. So the replication counts as broken
when green's error counters rose since the previous read, when its subscription is disabled
(disable_on_error, or by hand), or when no worker has run for longer than a restart takes;
and it stays broken until green has applied a heartbeat written after the last failure seen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from config.replication import SyncSettings
from sync.connections import Conn
from sync.status import SyncStatus, apply_blockers, read_status

NO_WORKER_GRACE = 20.0
"""Seconds without an apply worker before that counts as broken: a worker restarting after
an error, or a new subscription's, is back well within this."""


class ApplyWatch:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.errors: int | None = None
        self.reason: str | None = None
        self.until_seq: int | None = None
        """Broken until green applied a heartbeat newer than this one."""
        self.no_worker_since: float | None = None
        self.causes: list[str] = []

    def read(self, blue: Conn, green: Conn, settings: SyncSettings, with_drift: bool = True) -> SyncStatus:
        """read_status, judged."""
        return self.judge(read_status(blue, green, settings, with_drift=with_drift),
                          lambda: apply_blockers(blue, green, settings))

    def judge(self, status: SyncStatus, diagnose: Callable[[], list[str]]) -> SyncStatus:
        """The status with `broken` set while the replication does not work; diagnose names
        what green lacks (asked only when a failure is new)."""
        if status.phase != "streaming":  # copying, or no sync: not judged here
            self.errors, self.reason, self.no_worker_since = status.apply_errors, None, None
            return status
        now = self.clock()
        written = status.heartbeat_written_seq or 0
        failure = None
        if status.subscription_enabled is False:
            failure = ("green's subscription is disabled (disable_on_error after an apply error, or "
                       "by hand): fix the cause, then ALTER SUBSCRIPTION ... ENABLE")
        elif (self.errors is not None and status.apply_errors is not None
              and status.apply_errors > self.errors):
            failure = (f"green's apply worker failed {status.apply_errors - self.errors} more time(s) "
                       f"({status.apply_errors} errors since the subscription was made; the "
                       "messages are in green's server log)")
        if status.apply_errors is not None:
            self.errors = status.apply_errors
        if status.subscription_worker:
            self.no_worker_since = None
        elif self.no_worker_since is None:
            self.no_worker_since = now
        elif failure is None and now - self.no_worker_since > NO_WORKER_GRACE:
            failure = f"no apply worker has run on green for {now - self.no_worker_since:.0f}s"
        if failure is not None:
            if self.reason is None:  # newly broken: the catalogs asked once, not every failure
                self.causes = diagnose()
            self.reason = failure + (f"; likely cause: {'; '.join(self.causes[:3])}"
                                     if self.causes else "")
            self.until_seq = written
        elif self.reason is not None and (status.heartbeat_seq or 0) > (self.until_seq or 0):
            self.reason = None  # a heartbeat written after the last failure got through
        return replace(status, broken=self.reason) if self.reason else status
