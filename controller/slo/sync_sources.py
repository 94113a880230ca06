"""Checks on the data itself: replication lag (seconds, by heartbeat) and data drift (the share
of rows green is missing or has extra, from verify). Both read blue and green directly."""

from __future__ import annotations

import psycopg

from config.settings import Settings
from config.slo import SloCheck
from controller.slo.readings import NO_DATA, Measurement, Reading
from sync.connections import connect, databases
from sync.errors import SyncError
from sync.status import beat, read_status
from sync.verify import verify


class LagSource:
    """Green's heartbeat lag in seconds. A beat is written on every measure, so a stalled
    apply shows as the age of the last applied beat, growing, not as its last good lag."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def measure(self, check: SloCheck) -> Measurement:
        try:
            blue_db, green_db = databases(self.settings)
            with connect(blue_db, "slo-lag") as blue, connect(green_db, "slo-lag") as green:
                status = read_status(blue, green, self.settings.sync, with_drift=False)
                if status.heartbeat_lag_seconds is None:
                    return Measurement(NO_DATA, NO_DATA,
                                       error="no heartbeat on green: is `cutover sync` running?")
                beat(blue)
        except (SyncError, psycopg.Error) as exc:
            return Measurement(NO_DATA, NO_DATA, error=str(exc).strip())
        stalled = (status.heartbeat_age_seconds or 0.0) - check.interval
        return Measurement(Reading(max(status.heartbeat_lag_seconds, stalled)), NO_DATA)

    def close(self) -> None:
        pass


class DriftSource:
    """Rows green is missing or has extra, as a share of blue's rows (0.001 = 0.1 %)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def measure(self, check: SloCheck) -> Measurement:
        try:
            report = verify(self.settings, rechecks=2, catch_up_timeout=check.interval)
        except (SyncError, psycopg.Error) as exc:
            return Measurement(NO_DATA, NO_DATA, error=str(exc).strip())
        blue_rows = sum(max(0, t.blue_rows) for t in report.tables)
        off = sum(abs(t.blue_rows - t.green_rows) for t in report.tables if t.blue_rows >= 0)
        return Measurement(Reading(off / blue_rows if blue_rows else 0.0), NO_DATA)

    def close(self) -> None:
        pass
