"""`cutover sync --follow`: the continuous sync service. A heartbeat, the replication's status
and metrics every heartbeat_interval, until SIGTERM; it outlives its servers' restarts."""

from __future__ import annotations

import signal
import threading
import time

import psycopg
from rich.console import Console

from config import Settings
from controller.cli.common import err, out, print_json
from controller.daemon.metrics import SyncMetrics
from sync import logical
from sync.errors import SyncError
from sync.follower import Follower, Tick
from sync.livepair import ENVS
from sync.status import SyncStatus


def status_line(s: SyncStatus) -> str:
    def num(v: float | None, unit: str, fmt: str = ",.0f") -> str:
        return "?" if v is None else f"{v:{fmt}}{unit}"
    lag_ms = None if s.heartbeat_lag_seconds is None else s.heartbeat_lag_seconds * 1000
    if s.broken:
        return f"BROKEN: {s.broken}"
    return (f"{'streaming' if s.streaming else s.phase}: lag {num(s.lag_bytes, ' B')} / "
            f"{num(lag_ms, ' ms', ',.1f')}, slot {s.wal_status or '-'}, retained WAL "
            f"{num(s.retained_wal_bytes, ' B')}" + (f", DRIFT: {'; '.join(s.drift)}" if s.drift else "")
            + (f", green not ready: {'; '.join(s.not_ready)}" if s.not_ready else ""))


def follow_forever(settings: Settings, metrics: SyncMetrics, as_json: bool) -> None:
    """Heartbeat, status and metrics every heartbeat_interval until SIGTERM. A database that
    restarts or drops the connection is reported once, retried each tick, and welcomed back:
    the service outlives its servers' restarts (the subscription reconnects by itself)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if settings.metrics.enabled:
        metrics.serve(settings.metrics)
        out.print(f"  metrics on http://{settings.metrics.listen}/metrics")
    console = err if as_json else out
    period = settings.sync.heartbeat_interval
    # A beat every tick (the loop's period is the heartbeat interval); drift (catalog queries
    # on both sides) and the status line at the report's slower cadence.
    follower = Follower(settings, "follow", beat_every=0.0,
                        drift_every=max(period, min(settings.sync.interval, 10.0)))
    broken: str | None = None
    said: set[str] = set()
    refused: set[str] = set()
    try:
        next_tick = time.monotonic()
        while not stop.is_set():
            tick = follower.step()
            for env in tick.lost:
                metrics.database_outages.labels(env).inc()
            if tick.status is None:
                metrics.streaming.set(0)
                _say_once(console, said, tick.error, follower.down, period)
            else:
                said.clear()
                broken = _report(settings, tick, metrics, console, as_json, broken, refused)
            for env in ENVS:
                metrics.database_up.labels(env).set(1 if follower.up(env) else 0)
            metrics.heartbeat.set_to_current_time()
            next_tick += period
            stop.wait(max(0.0, next_tick - time.monotonic()))
    finally:
        follower.close()


def _report(settings: Settings, tick: Tick, metrics: SyncMetrics, console: Console, as_json: bool,
            broken: str | None, refused: set[str]) -> str | None:
    """A tick that read the status: metrics, what changed, and at the drift cadence the status
    line and new tables taken in. Returns the replication's breakage as now said."""
    assert tick.status is not None
    for env, seconds in tick.back.items():
        console.print(f"{env} reachable again after {seconds:.1f}s")
    _export(metrics, tick.status, tick.fresh_drift)
    broken = _say_broken(console, tick.status, broken)
    if tick.fresh_drift:
        if tick.status.new_tables and settings.sync.join_new_tables:
            _join(settings, console, refused)
        if as_json:
            print_json(tick.status.as_dict())
        else:
            out.print(status_line(tick.status))
    return broken


def _say_broken(console: Console, status: SyncStatus, said: str | None) -> str | None:
    """A broken replication, said once per failure, and when it heals."""
    if status.broken != said:
        console.print(f"replication is broken: {status.broken}" if status.broken else
                      "replication works again: a heartbeat got through")
    return status.broken


def _join(settings: Settings, console: Console, refused: set[str]) -> None:
    """The continuous sync takes in tables created on blue while it runs (without waiting
    for their copy: the heartbeat goes on); what it cannot take is reported once."""
    try:
        logical.join_new_tables(settings, say=console.print, wait=False, partial=True)
    except (SyncError, psycopg.Error) as exc:
        if str(exc) not in refused:
            refused.add(str(exc))
            console.print(f"cannot take in a new table: {exc}")


def _say_once(console: Console, said: set[str], exc: BaseException | None, down: dict[str, str],
              period: float) -> None:
    """What went wrong: once per side that is down, or per distinct error while both are up,
    until the loop works again."""
    problems = {env: f"{env} unreachable: {why}" for env, why in down.items()} \
        or {str(exc): f"status unavailable: {str(exc).strip()}"}
    for key, problem in problems.items():
        if key not in said:
            said.add(key)
            console.print(f"{problem}; retrying every {period:g}s")


def _export(metrics: SyncMetrics, s: SyncStatus, with_drift: bool = True) -> None:
    metrics.export(s.as_dict(), with_drift=with_drift)
    metrics.heartbeat.set_to_current_time()
