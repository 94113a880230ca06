"""Checks on the data itself: replication lag (seconds, by heartbeat) and data drift (the share
of rows green is missing or has extra, from verify). Both read blue and green directly."""

from __future__ import annotations

import psycopg

from config.settings import Settings
from config.slo import SloCheck
from controller.slo.readings import NO_DATA, Measurement, Reading
from sync.errors import SyncError
from sync.livepair import LivePair
from sync.status import beat, heartbeat, running_stream
from sync.verify import verify


class LagSource:
    """The heartbeat lag in seconds of the replication that runs now: blue -> green before
    the switch, green -> blue (the way back) after it. A beat is written on every measure, so a
    stalled apply shows as the age of the last applied beat, growing, not as its last good lag.
    With no replication either way (mid-switch, or none configured) it is not judged."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.link: LivePair | None = None
        """One connection per side, kept between measurements (reopened after an outage)."""

    def measure(self, check: SloCheck) -> Measurement:
        if self.link is None:
            self.link = LivePair(self.settings, "slo-lag")
        try:
            blue, green = self.link.open()
            stream = running_stream(blue, green, self.settings.sync)
            if stream is None:
                return Measurement(NO_DATA, NO_DATA, error=(
                    "lag not judged: no replication either way (no subscription on green "
                    "or blue: is `cutover sync` running?)"))
            source, follower = (blue, green) if stream.source == "blue" else (green, blue)
            hb = heartbeat(follower)
            if hb is None or hb.lag_seconds is None:
                return Measurement(NO_DATA, NO_DATA, error=(
                    f"lag not judged yet: {stream.follower} has applied no heartbeat from "
                    f"{stream.source}"))
            beat(source)
        except (SyncError, psycopg.Error) as exc:
            self.link.failed(exc)
            return Measurement(NO_DATA, NO_DATA, error=str(exc).strip())
        stalled = (hb.age_seconds or 0.0) - check.interval
        return Measurement(Reading(max(hb.lag_seconds, stalled)), NO_DATA)

    def close(self) -> None:
        if self.link is not None:
            self.link.close()


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
