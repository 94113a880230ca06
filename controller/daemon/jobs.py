"""The effects the phase machine asks for, run one at a time in a worker thread so the loop
keeps its cadence (heartbeat, SLO watch, operator intents) while a copy or a switch runs.
Every job is idempotent: a daemon killed mid-job runs it again and it finishes or undoes
what the earlier run left (the copy resumes, the switch reconciles, a shift re-applies)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from config import ConfigError
from config.operations import HookPoint
from config.replication import SwitchMethod, SyncMode
from config.settings import Settings, need_traffic
from controller.daemon.hooks import first_failure, run_hooks, run_point
from controller.daemon.metrics import DaemonMetrics
from controller.daemon.phases import Effect, Failure, Job, JobResult, State
from controller.daemon.rollback import roll_back
from controller.state.journal import EventKind
from controller.state.store import StateStore, open_store
from controller.traffic.balancer import TrafficError
from controller.traffic.factory import Balancers, balancer_for
from controller.traffic.shift import Seen, shift
from sync import diff, logical, readiness
from sync.callbacks import Say
from sync.copy import CopyProgress, ProgressLines
from sync.errors import SyncError
from sync.preflight import Status, run_preflight
from sync.switch import switch
from sync.switch_report import SwitchUnfinished

log = logging.getLogger("cutover.jobs")


class HookFailed(Exception):
    def __init__(self, detail: str, failure: Failure) -> None:
        super().__init__(detail)
        self.failure = failure


@dataclass
class _Running:
    effect: Effect
    thread: threading.Thread | None
    """None when the job ran inside start() (threaded=False)."""
    started: float
    result: JobResult | None = None


class Jobs:
    """Starts a job, and tells the loop when it has finished (each result seen once)."""

    def __init__(self, settings: Settings, metrics: DaemonMetrics, say: Say, *,
                 balancers: Balancers = balancer_for, threaded: bool = True) -> None:
        """threaded=False runs each job to its end inside start() (tests of the loop's glue,
        with a fake balancer); the daemon runs them beside the loop."""
        self.settings, self.metrics, self.say = settings, metrics, say
        self.balancers, self.threaded = balancers, threaded
        self.current: _Running | None = None
        self.epoch: int | None = None
        """The leader's epoch (PostgreSQL store): the jobs' journal writes are fenced by it."""

    def start(self, effect: Effect, state: State) -> None:
        assert self.current is None or self.current.result is not None, "one job at a time"
        if not self.threaded:
            self.current = _Running(effect, None, time.monotonic())
            self._run(effect, state)
            return
        thread = threading.Thread(target=self._run, args=(effect, state), name=f"job-{effect.job}",
                                  daemon=True)
        self.current = _Running(effect, thread, time.monotonic())
        thread.start()

    def poll(self) -> tuple[Job | None, JobResult | None]:
        """(the job still running, or the result of one that finished since the last poll)."""
        cur = self.current
        if cur is None:
            return None, None
        if cur.thread is not None and cur.thread.is_alive():
            return cur.effect.job, None
        self.current = None
        assert cur.result is not None
        return None, cur.result

    def wait(self, timeout: float) -> None:
        if self.current is not None and self.current.thread is not None:
            self.current.thread.join(timeout)

    def _run(self, effect: Effect, state: State) -> None:
        assert self.current is not None
        running = self.current
        started = time.monotonic()
        journal = open_store(self.settings, self.epoch)  # sqlite objects stay in their thread
        try:
            ctx = _Context(self.settings, journal, self.metrics, self.say, effect, state, self.balancers)
            result = _JOBS[effect.job](ctx)
        except HookFailed as exc:
            result = JobResult(effect.job, False, str(exc), exc.failure)
        except SwitchUnfinished as exc:
            result = JobResult(effect.job, False, str(exc).strip(), Failure.FINISH)
        except (SyncError, TrafficError, ConfigError, psycopg.Error, OSError) as exc:
            result = JobResult(effect.job, False, str(exc).strip())
        except Exception as exc:  # a bug must not kill the loop: report it, the decision holds
            log.exception("job %s crashed", effect.job.value)
            result = JobResult(effect.job, False, f"internal error: {type(exc).__name__}: {exc}")
        seconds = time.monotonic() - started
        self.metrics.jobs.labels(effect.job.value, "ok" if result.ok else "failed").inc()
        journal.record(EventKind.JOB, {"job": effect.job.value, **effect.as_dict(), "ok": result.ok,
                               "detail": result.detail, "seconds": round(seconds, 3)})
        journal.close()
        running.result = result


@dataclass
class _Context:
    settings: Settings
    journal: StateStore
    metrics: DaemonMetrics
    say: Say
    effect: Effect
    state: State
    balancers: Balancers

    def hooks(self, point: HookPoint) -> None:
        failed = run_point(self.settings, self.journal, point, {
            "phase": self.state.phase.value, "stage": self.effect.stage, "weight": self.effect.weight})
        if failed is not None:
            raise HookFailed(f"hook {failed.name} at {point.value}: {failed.detail}",
                             Failure.ROLLBACK if failed.on_failure == "rollback" else Failure.HOLD)


def _preflight(c: _Context) -> JobResult:
    c.hooks(HookPoint.BEFORE_SYNC)
    report = run_preflight(c.settings)
    failed = [ch for ch in report.checks if ch.status is Status.FAIL]
    if failed:
        return JobResult(Job.PREFLIGHT, False, "; ".join(f"{ch.name}: {ch.detail} ({ch.fix})"
                                                         for ch in failed))
    return JobResult(Job.PREFLIGHT, True, f"{len(report.checks)} checks pass")


def _copy(c: _Context) -> JobResult:
    if c.settings.sync.mode == SyncMode.DIFF:  # a first full diff cycle fills green
        diff.ensure_schema(c.settings, say=c.say)
        report = diff.cycle(c.settings, say=c.say)
        readiness.ready_green(c.settings, say=c.say, fresh=True)
        return JobResult(Job.COPY, True, f"diff: {report.total('blue_rows'):,} rows compared, "
                         f"{report.total('inserted') + report.total('updated'):,} written, "
                         f"{report.total('deleted'):,} deleted")
    last = CopyProgress()
    lines = ProgressLines(c.say)

    def progress(p: CopyProgress) -> None:
        c.metrics.sync.rows_copied.inc(max(0, p.rows - last.rows))
        last.rows = p.rows
        lines(p)
    started = logical.start(c.settings, say=c.say, progress=progress)
    logical.settle(c.settings, started, say=c.say)
    what = "already streaming" if started.already_streaming else f"{started.rows_copied:,} rows copied"
    return JobResult(Job.COPY, True, what)


def _sync_cycle(c: _Context) -> JobResult:
    report = diff.cycle(c.settings, say=lambda _: None)
    c.metrics.sync.diff_cycle(report)
    return JobResult(Job.SYNC_CYCLE, True, f"diff cycle in {report.seconds:.1f}s: "
                     f"+{report.total('inserted'):,} ~{report.total('updated'):,} "
                     f"-{report.total('deleted'):,}")


def _switch(c: _Context) -> JobResult:
    c.hooks(HookPoint.BEFORE_SWITCH)

    def record(step: str, details: dict[str, Any]) -> None:
        c.journal.record(EventKind.SWITCH, {"to": "green", "step": step, **details})
    report = switch(c.settings, "green", say=c.say, record=record)
    if report.pause_ms is not None:
        c.metrics.write_pause.set(report.pause_ms / 1000)
    try:
        c.hooks(HookPoint.AFTER_SWITCH)
    except HookFailed as exc:  # writes are on green now: a failed hook cannot undo that
        c.say(f"{exc} (writes stay on green)")
    pause = "" if report.pause_ms is None else f"write pause {report.pause_ms:.0f} ms"
    return JobResult(Job.SWITCH, True, pause if not report.already else "finished an earlier switch")


def _shift(c: _Context) -> JobResult:
    if c.effect.stage == 0:
        c.hooks(HookPoint.BEFORE_TRAFFIC)
    assert c.effect.weight is not None
    return _shift_to(c, c.effect.weight)


def _shift_to(c: _Context, weight: int) -> JobResult:
    """The stage's weight, and its match in a match stage (any other stage ends a match)."""
    traffic = need_traffic(c.settings, "cutover run")
    stages = traffic.stages
    match = stages[c.effect.stage].match if c.effect.stage is not None and c.effect.stage < len(stages) \
        else None
    lb = c.balancers(traffic)
    try:
        result = shift(lb, weight, match=match, tolerance=traffic.split_tolerance,
                       confirm_timeout=traffic.confirm_timeout, observe=match is None)
    finally:
        lb.close()
    c.journal.record(EventKind.SHIFT, result.as_dict())
    seen = result.observed
    detail = f"green {weight} % read back"
    if seen.seen is Seen.CONFIRMED:
        detail += f", {seen.green_percent:.1f} % of {seen.requests} requests served by green"
    elif seen.seen is not Seen.NOT_OBSERVABLE:
        detail += f" ({seen.seen.value})"
    return JobResult(Job.SHIFT, True, detail)


def _starved(c: _Context) -> JobResult:
    c.hooks(HookPoint.STAGE_STARVED)
    return JobResult(Job.STARVED, True)


def _approve(c: _Context) -> JobResult:
    """The approve_stage hooks, each journaled: approved when none fails. A refusal is "not
    yet" (the gate asks again), not a failure to notify, unless the hook says rollback."""
    context = {"service": c.settings.service, "phase": c.state.phase.value, "stage": c.effect.stage,
               "weight": c.effect.weight}
    outcomes = run_hooks(c.settings.hooks, HookPoint.APPROVE_STAGE, context)
    for o in outcomes:
        c.journal.record(EventKind.HOOK, {"at": HookPoint.APPROVE_STAGE.value, **o.as_dict()})
    refused = first_failure(outcomes)
    if refused is None:
        return JobResult(Job.APPROVE, True)
    return JobResult(Job.APPROVE, False, f"hook {refused.name}: {refused.detail}",
                     Failure.ROLLBACK if refused.on_failure == "rollback" else Failure.HOLD)


def _stage_done(c: _Context) -> JobResult:
    if c.effect.weight is not None:  # the last stage's control moves to green
        _shift_to(c, c.effect.weight)
    c.hooks(HookPoint.AFTER_STAGE)
    return JobResult(Job.STAGE_DONE, True)


def _finalize(c: _Context) -> JobResult:
    c.hooks(HookPoint.BEFORE_FINALIZE)
    if _moves_writes(c.settings):
        # Blue no longer needs to follow: once it has what green took (it stays a complete
        # copy as of now), drop the reverse replication and our objects.
        sw = c.settings.switchover
        if c.state.switched and sw is not None and c.settings.sync.mode is SyncMode.LOGICAL:
            # Bounded: a broken reverse stream must not hold finalize for catch_up_timeout.
            logical.settle_follower(c.settings, min(sw.catch_up_timeout, 60.0), say=c.say)
        logical.drop(c.settings, say=c.say)
    c.hooks(HookPoint.AFTER_FINALIZE)
    return JobResult(Job.FINALIZE, True, "replication dropped" if _moves_writes(c.settings) else "")


def _rollback(c: _Context) -> JobResult:
    result = roll_back(c.settings, c.journal, c.state.reason, writes_on_green=c.state.switched,
                       say=c.say, balancers=c.balancers)
    if result.traffic_error is not None:
        raise TrafficError(result.traffic_error)
    c.metrics.rollbacks.inc()
    if result.revert is not None and result.revert.pause_ms is not None:
        c.metrics.write_pause.set(result.revert.pause_ms / 1000)
    if result.revert_error is not None:
        raise SyncError(f"traffic is on blue, but writes are not: {result.revert_error}")
    reverted = result.revert is not None
    return JobResult(Job.ROLLBACK, True, "traffic on blue" + (", writes on blue" if reverted else ""),
                     reverted=reverted)


def _moves_writes(settings: Settings) -> bool:
    return settings.switchover is not None and settings.switchover.method is not SwitchMethod.NONE


_JOBS: dict[Job, Callable[[_Context], JobResult]] = {
    Job.PREFLIGHT: _preflight, Job.COPY: _copy, Job.SWITCH: _switch, Job.SHIFT: _shift,
    Job.SYNC_CYCLE: _sync_cycle, Job.STAGE_DONE: _stage_done, Job.STARVED: _starved,
    Job.APPROVE: _approve, Job.FINALIZE: _finalize, Job.ROLLBACK: _rollback,
}
