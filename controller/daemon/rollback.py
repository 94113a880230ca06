"""The rollback, one for the daemon and `cutover watch` alike.

Traffic goes back to blue first, all at once (the balancer's read-back is the proof). Then,
with rollback.database = "revert" and writes on green, writes go back to blue by the switch
in reverse, and never back again to the side that breached, whatever its comparison finds.
Journaled (rollback; the switch's steps; reverted or revert failed), notified, and followed
by the after_rollback hooks.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from config.operations import HookPoint, NotifyEvent
from config.replication import SwitchMethod
from config.settings import Settings, need_traffic
from controller.daemon.hooks import run_point
from controller.daemon.notify import Notifier
from controller.report.page import verdict_text
from controller.slo.judge import Verdict
from controller.state.journal import EventKind
from controller.state.store import StateStore
from controller.traffic.balancer import TrafficError
from controller.traffic.factory import Balancers, balancer_for
from controller.traffic.shift import ShiftResult, shift
from sync.callbacks import Say
from sync.connections import connect, databases
from sync.endpoint import target_of
from sync.errors import SyncError
from sync.status import running_stream
from sync.switch import switch
from sync.switch_report import SwitchReport, endpoint_for

log = logging.getLogger(__name__)



@dataclass
class RollbackResult:
    traffic: ShiftResult | None = None
    traffic_error: str | None = None
    traffic_seconds: float = 0.0
    revert: SwitchReport | None = None
    """The switch back to blue, when writes moved."""
    revert_error: str | None = None
    writes_stayed: str | None = None
    """Why writes were not moved (none to move, or not asked to)."""

    def as_dict(self) -> dict[str, Any]:
        return {"traffic": self.traffic.as_dict() if self.traffic else None,
                "traffic_error": self.traffic_error, "traffic_seconds": round(self.traffic_seconds, 3),
                "revert": self.revert.as_dict() if self.revert else None,
                "revert_error": self.revert_error, "writes_stayed": self.writes_stayed}


def report_breach(settings: Settings, journal: StateStore, verdict: Verdict) -> None:
    """A breach, journaled and notified, before anything is done about it."""
    journal.record(EventKind.BREACH, verdict.as_dict())
    text = verdict_text(verdict.as_dict())
    log.warning("SLO breach on green: %s", text)
    Notifier(settings.notify, settings.service).send(
        NotifyEvent.BREACH, f"SLO breach on green: {text}", verdict.as_dict())


def roll_back(settings: Settings, journal: StateStore, reason: str, *,
              verdict: dict[str, Any] | None = None, writes_on_green: bool | None = None,
              say: Say = lambda _: None, balancers: Balancers = balancer_for) -> RollbackResult:
    """writes_on_green: what the caller knows (the daemon's state); None: read from the
    replication that runs (green -> blue means writes are on green)."""
    result = RollbackResult()
    started = time.monotonic()
    lb = balancers(need_traffic(settings, "a rollback"))
    try:
        result.traffic = shift(lb, 0, observe=False)
        if result.traffic.overlooked:
            say(f"traffic is on blue; the balancer's check said: {result.traffic.overlooked}")
    except TrafficError as exc:
        result.traffic_error = str(exc)
    finally:
        lb.close()
    result.traffic_seconds = time.monotonic() - started
    data = {"reason": reason, "verdict": verdict, "seconds": round(result.traffic_seconds, 3),
            "result": result.traffic.as_dict() if result.traffic else None,
            "error": result.traffic_error}
    journal.record(EventKind.ROLLBACK, data)
    if result.traffic_error is None:
        _revert_writes(settings, journal, result, writes_on_green, say)
    Notifier(settings.notify, settings.service).send(NotifyEvent.ROLLBACK, _summary(result, reason),
                                                     {**data, "revert_error": result.revert_error})
    if result.traffic_error is None:
        failed = run_point(settings, journal, HookPoint.AFTER_ROLLBACK,
                           {"phase": "rolling_back", "stage": None, "weight": 0})
        if failed is not None:
            say(f"hook {failed.name} at after_rollback failed: {failed.detail}")
    return result


def _summary(r: RollbackResult, reason: str) -> str:
    if r.traffic_error is not None:
        return f"ROLLBACK FAILED after {reason}: {r.traffic_error}"
    text = f"rolled traffic back to blue{' and writes too' if r.revert is not None else ''} after {reason}"
    return text + (f"; writes NOT back on blue: {r.revert_error}" if r.revert_error else "")


def _revert_writes(settings: Settings, journal: StateStore, result: RollbackResult,
                   writes_on_green: bool | None, say: Say) -> None:
    if settings.rollback.database != "revert":
        result.writes_stayed = "rollback.database = \"stay\""
        return
    if settings.switchover is None or settings.switchover.method is SwitchMethod.NONE:
        result.writes_stayed = "blue and green share one database"
        return
    try:
        if writes_on_green is None:
            writes_on_green = _writes_on_green(settings)
        if not writes_on_green:
            result.writes_stayed = "writes are on blue already"
            return

        def record(step: str, details: dict[str, Any]) -> None:
            journal.record(EventKind.SWITCH, {"to": "blue", "step": step, **details})
        # Writes never go back to the side that just breached, whatever a comparison finds.
        result.revert = switch(settings, "blue", say=say, record=record, back_on_difference=False)
    except (SyncError, psycopg.Error) as exc:
        result.revert_error = str(exc).strip()
    if result.revert_error is None:
        journal.record(EventKind.REVERTED, {"report": result.revert.as_dict() if result.revert else None})
    else:
        journal.record(EventKind.REVERT_FAILED, {"error": result.revert_error})


def _writes_on_green(settings: Settings) -> bool:
    """Where the write endpoint points, where it can be read back (PgBouncer's file); else
    from the replication: blue following green means the switch moved writes to green."""
    blue_db, green_db = databases(settings)
    pointed = endpoint_for(settings).points_at()
    if pointed is not None:
        return pointed == target_of(green_db)
    with connect(blue_db, "rollback") as blue, connect(green_db, "rollback") as green:
        stream = running_stream(blue, green, settings.sync)
    return stream is not None and stream.source == "green"
