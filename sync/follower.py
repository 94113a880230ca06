"""Following a running replication from blue to green, one tick at a time: the heartbeat on
blue, the stream's status read on both sides, schema drift checked at its own (slower) cadence,
and both connections kept open, dropped when a server goes away and reopened when it is back.
One home for the continuous sync service (`cutover sync --follow`) and the daemon."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import psycopg

from config.settings import Settings
from sync.apply_watch import ApplyWatch
from sync.callbacks import Clock
from sync.errors import SyncError
from sync.livepair import LivePair
from sync.status import SyncStatus, beat


@dataclass(frozen=True)
class Tick:
    """What one tick found."""

    status: SyncStatus | None
    """None when a side could not be read this tick (see error and Follower.down)."""
    fresh_drift: bool = False
    """The status's drift, new tables and readiness were checked this tick (else carried over
    from the last check)."""
    error: BaseException | None = None
    lost: frozenset[str] = frozenset()
    """Sides that went down this tick: each is a new outage."""
    back: dict[str, float] = field(default_factory=dict)
    """Sides reachable again this tick, and for how many seconds they were not."""


class Follower:
    def __init__(self, settings: Settings, purpose: str, *, beat_every: float, drift_every: float,
                 clock: Clock = time.monotonic) -> None:
        """purpose names the connections (application_name); a heartbeat is written at most
        every beat_every seconds, drift checked every drift_every."""
        self.settings, self.clock = settings, clock
        self.beat_every, self.drift_every = beat_every, drift_every
        self.link = LivePair(settings, purpose)
        self.watch = ApplyWatch()
        self.latest: SyncStatus | None = None
        """The last status read, None after a tick that could not read one."""
        self._next_beat = 0.0
        self._next_drift = 0.0

    @property
    def down(self) -> dict[str, str]:
        """Side -> why it is unreachable, while it is."""
        return self.link.down

    def up(self, env: str) -> bool:
        return self.link.up(env)

    def step(self) -> Tick:
        now = self.clock()
        fresh_drift = now >= self._next_drift
        was_down = set(self.link.down)
        try:
            blue, green = self.link.open()
            if now >= self._next_beat:
                beat(blue)
                self._next_beat = now + self.beat_every
            status = self.watch.read(blue, green, self.settings.sync, with_drift=fresh_drift)
        except (SyncError, psycopg.Error) as exc:
            # A server restarting, a dropped connection: unknown this tick, reconnected the next.
            self.link.failed(exc)
            self.latest = None
            return Tick(None, error=exc, lost=frozenset(set(self.link.down) - was_down))
        if fresh_drift:
            self._next_drift = now + self.drift_every
        elif self.latest is not None:
            status = replace(status, drift=self.latest.drift, blocking_drift=self.latest.blocking_drift,
                             new_tables=self.latest.new_tables, not_ready=self.latest.not_ready)
        self.latest = status
        return Tick(status, fresh_drift, back=self.link.succeeded())

    def close(self) -> None:
        self.link.close()
