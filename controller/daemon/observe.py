"""What the loop looks at each tick, apart from the jobs: replication (heartbeat lag, the
switch gate) and the load balancer's weights. Errors become "unknown", never a crash: the
loop must keep its cadence when a server is down."""

from __future__ import annotations

import logging
from typing import Any

from config.replication import SyncMode
from config.settings import Settings
from controller.traffic.balancer import LoadBalancer, Split, TrafficError
from controller.traffic.factory import Balancers, balancer_for
from sync.follower import Follower
from sync.status import SyncStatus

log = logging.getLogger("cutover.observe")
DRIFT_EVERY = 10.0
"""Schema drift needs catalog queries on both sides: not every tick."""


class SyncProbe:
    """Writes the heartbeat on blue and reads lag while green streams from blue."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.by_diff = settings.sync.mode == SyncMode.DIFF
        self.follower: Follower | None = None
        self._problem: str | None = None

    @property
    def latest(self) -> SyncStatus | None:
        return None if self.follower is None else self.follower.latest

    def read(self) -> SyncStatus | None:
        if self.by_diff:
            return None
        if self.follower is None:
            self.follower = Follower(self.settings, "daemon", drift_every=DRIFT_EVERY,
                                     beat_every=self.settings.sync.heartbeat_interval)
        tick = self.follower.step()
        if tick.error is not None:
            problem = ", ".join(sorted(self.follower.down)) or str(tick.error).strip()
            if problem != self._problem:  # once per problem, not every tick of an outage
                log.warning("replication status unavailable: %s", str(tick.error).strip())
                self._problem = problem
            return None
        self._problem = None
        for env, seconds in tick.back.items():
            log.warning("%s reachable again after %.1fs", env, seconds)
        return tick.status

    def ready(self) -> bool:
        """The auto-switch gate: streaming, with lag in bytes and in time under the limits.
        sync.mode = diff has no stream to wait for: the switch's final diff under the fence
        brings green level, however far behind it is (a longer pause the further)."""
        if self.by_diff:
            return True
        s, limits = self.latest, self.settings.sync
        return (s is not None and s.streaming and s.lag_bytes is not None
                and s.lag_bytes <= limits.max_lag_bytes and s.heartbeat_lag_seconds is not None
                and s.heartbeat_lag_seconds <= limits.max_lag
                and (s.heartbeat_age_seconds or 0.0) <= max(limits.max_lag, 3 * limits.heartbeat_interval)
                and not s.blocking_drift)

    def held(self) -> str:
        """Why the switch must wait beyond lag, when green lacks what blue's writes need."""
        s = self.latest
        if self.by_diff or s is None:
            return ""
        if s.broken:
            return f"replication is broken: {s.broken}"
        if not s.blocking_drift:
            return ""
        return (f"schema drift: {'; '.join(s.blocking_drift[:3])}; re-run `cutover sync` to add "
                "new tables, add missing columns on green")

    def close(self) -> None:
        if self.follower is not None:
            self.follower.close()


class WeightProbe:
    """What the balancer holds now (read back, not what we last set)."""

    def __init__(self, settings: Settings, balancers: Balancers = balancer_for) -> None:
        self.lb: LoadBalancer | None = None
        if settings.traffic is not None:
            self.lb = balancers(settings.traffic)

    def read(self) -> Split | None:
        if self.lb is None:
            return None
        try:
            return self.lb.read()
        except TrafficError as exc:
            log.warning("load balancer unreadable: %s", exc)
            return None

    def close(self) -> None:
        if self.lb is not None:
            self.lb.close()


def split_dict(split: Split | None) -> dict[str, Any] | None:
    if split is None:
        return None
    return {"blue": round(100.0 - split.green_percent, 2), "green": round(split.green_percent, 2)}
