"""`cutover run`: the whole cutover as one resumable service. A fixed-cadence loop on the
monotonic clock: observe (intents, the running job, replication, the SLO watch), decide once
(controller.daemon.phases, pure), persist, then start the one effect decided. Signal handlers only
set flags; the HTTP endpoints read a snapshot the loop publishes."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from config import ConfigError, Settings, load_settings
from config.operations import NotifyEvent
from config.replication import SwitchMethod, SyncMode
from config.slo import SloSource
from controller.daemon import sdnotify
from controller.daemon.http import Snapshot, serve_http
from controller.daemon.jobs import Jobs
from controller.daemon.metrics import DaemonMetrics
from controller.daemon.notify import Notifier
from controller.daemon.observe import SyncProbe, WeightProbe, split_dict
from controller.daemon.phases import (
    LIVE_TRAFFIC,
    TERMINAL,
    Breach,
    Decision,
    Intent,
    Observations,
    Phase,
    State,
    decide,
)
from controller.daemon.plan import Mode, Plan, Stage
from controller.daemon.record import Recorder
from controller.daemon.rollback import report_breach
from controller.daemon.watch import Watch, build_sources
from controller.slo.judge import Outcome, Verdict
from controller.slo.readings import MetricSource
from controller.state.journal import EventKind, StoreError
from controller.state.pgstore import Deposed, Leadership
from controller.state.store import StateStore, open_store
from controller.traffic.factory import Balancers, balancer_for
from sync.callbacks import Say
from sync.status import SyncStatus

log = logging.getLogger("cutover.daemon")
SAMPLE_EVERY = 1.0
"""Seconds between journal samples (what `cutover report` draws)."""
STOP_WAIT = 60.0
"""On SIGTERM, how long a running job (a switch undoes or finishes itself) may take."""


def last_baselines(store: StateStore) -> dict[str, float]:
    """Each check's blue baseline as the last journaled sample had it."""
    last = store.last_events(1, ("sample",))
    checks = last[0].data.get("checks", {}) if last else {}
    return {name: float(v["baseline"]) for name, v in checks.items()
            if isinstance(v, dict) and isinstance(v.get("baseline"), int | float)}


def plan_for(settings: Settings) -> Plan:
    traffic = settings.traffic
    diff_every = settings.sync.interval if settings.sync.mode == SyncMode.DIFF else None
    if traffic is None:
        return Plan(Mode.SYNC_ONLY, diff_every=diff_every)
    no_writes = settings.switchover is None or settings.switchover.method is SwitchMethod.NONE
    return Plan(Mode.SHARED if no_writes else Mode.FULL,
                tuple(Stage(s.weight, s.bake, s.gate) for s in traffic.stages),
                auto_switch=settings.switchover.auto if settings.switchover else False,
                hold=traffic.hold, auto_finalize=traffic.finalize == "auto",
                on_breach=settings.rollback.on_breach, diff_every=diff_every,
                control=traffic.control_percent, starved_after=traffic.starved_after,
                gate_poll=traffic.gate_poll)


class Daemon:
    def __init__(self, settings: Settings, *, config_path: Path | None = None, period: float = 0.25,
                 until_done: bool = False, say: Say | None = None,
                 sources: Mapping[SloSource, MetricSource] | None = None,
                 balancers: Balancers = balancer_for, threaded_jobs: bool = True) -> None:
        """sources, balancers, threaded_jobs: the real ones unless given (tests of the loop's
        glue without servers: fake sources and balancer, jobs run inside the tick)."""
        self.settings, self.config_path, self.period = settings, config_path, period
        self.until_done = until_done
        self.say = say or (lambda m: log.info("%s", m))
        self.plan = plan_for(settings)
        self.metrics = DaemonMetrics([p.value for p in Phase], with_sync=self.plan.mode is not Mode.SHARED)
        self.store: StateStore  # opened by run(), in the thread that runs the loop (sqlite)
        self.leadership: Leadership | None = None
        self.deposed: str | None = None
        """Why this daemon stopped acting: another one leads (PostgreSQL store, HA)."""
        self.notifier = Notifier(settings.notify, settings.service)
        self.recorder = Recorder(self.notifier, self.say)
        self.jobs = Jobs(settings, self.metrics, self.say, balancers=balancers, threaded=threaded_jobs)
        self.sync = SyncProbe(settings) if self.plan.mode is not Mode.SHARED else None
        self.weights = WeightProbe(settings, balancers)
        self.sources = sources
        self.own_sources = sources is None
        self.watch: Watch | None = None
        self.stop = threading.Event()
        self.reload = threading.Event()
        self.state = State()
        self.broken: str | None = None
        """Why the replication does not work, as last told."""
        self.snapshot = Snapshot(self.state, "", None, None, None, {}, time.monotonic())
        self.server: ThreadingHTTPServer | None = None
        self.next_sample = 0.0
        self.next_watchdog = 0.0
        self.resumed_baselines: dict[str, float] = {}
        """Blue's baselines from the journal's last sample, for the first watch after a restart."""

    # -- start and stop ------------------------------------------------------------------

    def run(self) -> State:
        """Until SIGTERM/SIGINT (or, with until_done, a finished or rolled-back cutover)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: self.stop.set())
            signal.signal(signal.SIGINT, lambda *_: self.stop.set())
            signal.signal(signal.SIGHUP, lambda *_: self.reload.set())
        self.store = open_store(self.settings)
        try:
            if self.settings.state.backend == "postgres" and not self._lead():
                return self.state
            self._start()
            self._loop()
        except Deposed as exc:
            # Stop acting at once: the new leader reconciles whatever this one was doing.
            self.deposed = str(exc)
            log.error("%s", exc)
        finally:
            sdnotify.notify("STOPPING=1", f"STATUS=stopping in {self.state.phase.value}")
            self._shutdown()
        return self.state

    def begin(self) -> None:
        """What run() does before its first tick (one store, SQLite; no leader election), for
        a caller that ticks by itself: tests of the loop's glue. close() ends it."""
        self.store = open_store(self.settings)
        self._start()

    def close(self) -> None:
        self._shutdown()

    def _loop(self) -> None:
        """A tick every period until stopped."""
        last = next_tick = time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic()
            if self.leadership is not None and not self.leadership.held():
                raise Deposed("the leader lock's session was lost; another daemon may lead")
            self.tick(min(now - last, 4 * self.period))
            last = now
            if self.until_done and self.state.phase in TERMINAL and self.jobs.current is None:
                break
            next_tick += self.period
            late = time.monotonic() - next_tick
            if late > self.period:  # overran a whole period: warn, then keep the cadence
                self.metrics.loop_overruns.inc()
                log.warning("tick overran by %.2fs", late)
                next_tick = time.monotonic()
            self.stop.wait(max(0.0, next_tick - time.monotonic()))

    def _lead(self) -> bool:
        """PostgreSQL store: wait as the standby until this daemon holds the service's leader
        lock (False: stopped first), then use a store fenced by the new epoch."""
        self.leadership = Leadership(self.settings.state, self.settings.service)
        waiting = False
        while not self.stop.is_set():
            try:
                epoch = self.leadership.try_acquire()
            except StoreError as exc:
                log.warning("%s", exc)
                epoch = None
            if epoch is not None:
                self.store.close()
                self.store = open_store(self.settings, epoch)
                self.jobs.epoch = epoch
                self.say(f"leading {self.settings.service!r} (epoch {epoch})")
                self.store.record(EventKind.LEADER, {"epoch": epoch})
                return True
            if not waiting:
                waiting = True
                self.say("standby: another daemon leads this service; taking over when it stops")
                sdnotify.notify("READY=1", "STATUS=standby")
            self._ping_watchdog(time.monotonic(), "standby")
            self.stop.wait(self.period)
        return False

    def _start(self) -> None:
        saved = self.store.load_state()
        if saved is not None:
            # A job in flight when the daemon died is run again (every job is idempotent);
            # a stage's weights are re-applied and read back before its bake continues.
            self.state = replace(State.from_dict(saved), applied=False)
            if self.state.phase in LIVE_TRAFFIC:
                self.resumed_baselines = last_baselines(self.store)
            self.say(f"resuming in {self.state.phase.value}"
                     + (f" stage {self.state.stage + 1}" if self.state.phase is Phase.SHIFTING else "")
                     + f" ({self.state.reason})")
        self.store.record(EventKind.START, {"state": self.state.as_dict(), "mode": self.plan.mode.value,
                                    "reconciled": self._reconcile()})
        # /status answers with the persisted phase from its first response, not a blank state.
        self.snapshot = replace(self.snapshot, state=self.state, reason=self.state.reason,
                                tick_at=time.monotonic())
        self.metrics.phase.state(self.state.phase.value)
        if self.settings.metrics.enabled:
            self.server = serve_http(lambda: self.snapshot, self.metrics.registry, self.settings,
                                     stall=max(5.0, 20 * self.period))
            self.say(f"status on http://{self.settings.metrics.listen}/status")
            if (warning := self.settings.metrics.exposure_warning()) is not None:
                log.warning(warning)
        sdnotify.notify("READY=1", f"STATUS={self.state.phase.value}")

    def _reconcile(self) -> dict[str, Any]:
        """What the balancer and the replication really look like, before the first decision."""
        seen: dict[str, Any] = {"weights": split_dict(self.weights.read())}
        if self.sync is not None and self.state.phase in (Phase.STREAMING, Phase.COPYING):
            status = self.sync.read()
            seen["streaming"] = status.streaming if status else None
            if self.state.phase is Phase.STREAMING and status is not None and not status.streaming \
                    and status.phase != "streaming":
                # The journal says streaming, the databases do not: copy (resumably) again.
                self.state = replace(self.state, phase=Phase.COPYING, reason="not streaming on restart")
        return seen

    def _shutdown(self) -> None:
        if self.jobs.current is not None and self.deposed is None:
            self.say("waiting for the running job to finish or undo itself")
            self.jobs.wait(STOP_WAIT)
        if self.deposed is None and (self.leadership is None or self.leadership.epoch is not None):
            try:
                self.store.save_state(self.state.as_dict())
                self.store.record(EventKind.STOP, {"state": self.state.as_dict()})
            except Deposed as exc:
                self.deposed = str(exc)
        if self.leadership is not None:
            self.leadership.release()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        for closeable in (self.sync, self.weights):
            if closeable is not None:
                closeable.close()
        self._drop_watch()
        if self.own_sources and self.sources is not None:
            for source in self.sources.values():
                source.close()
        self.store.close()

    # -- one tick --------------------------------------------------------------------------

    def tick(self, elapsed: float) -> Decision:
        if self.reload.is_set():
            self.reload.clear()
            self._reload()
        intents = tuple(Intent(k) for k in self.store.take_intents() if k in Intent.__members__.values())
        running, done = self.jobs.poll()
        if done is not None:  # a shift or a rollback just ended: status shows the weights now
            self.next_sample = 0.0
        sync_status = None
        if self.sync is not None and self.state.phase is Phase.STREAMING:
            sync_status = self.sync.read()
            self._tell_broken(sync_status)
        breach, passing, starved = self._watch_slo()
        obs = Observations(elapsed=elapsed, intents=intents, running=running, done=done,
                           sync_ready=self.sync is not None and (sync_status is not None or self.sync.by_diff)
                           and self.sync.ready(),
                           sync_held=self.sync.held() if self.sync is not None else "",
                           breach=breach, slo_passing=passing, starved=starved)
        decision = decide(self.state, obs, self.plan)
        self.recorder.record(self.store, self.state, decision, obs)
        self.state = decision.state
        if decision.effect is not None:
            self.jobs.start(decision.effect, self.state)
        self._publish(decision, sync_status.as_dict() if sync_status else None)
        return decision

    def _tell_broken(self, status: SyncStatus | None) -> None:
        """A replication that breaks, or heals, is logged and notified once."""
        broken = status.broken if status is not None else self.broken
        if broken == self.broken:
            return
        self.broken = broken
        text = f"replication is broken: {broken}" if broken else "replication works again"
        (log.error if broken else log.info)("%s", text)
        self.notifier.send(NotifyEvent.REPLICATION, text, {"broken": broken})

    def _watch_slo(self) -> tuple[Breach | None, bool, tuple[str, ...]]:
        """A breach, whether every check passes, and the checks starved of evidence."""
        if self.state.phase not in LIVE_TRAFFIC:
            self._drop_watch()  # the next stage 1 (a retry) starts with fresh streaks
        if not (self.state.phase in LIVE_TRAFFIC and self.state.applied and self.settings.slo):
            return None, True, ()
        if self.watch is None:
            if self.sources is None:
                self.sources = build_sources(self.settings)
            self.watch = Watch(self.settings.slo, self.sources, baselines=self.resumed_baselines)
            self.resumed_baselines = {}
        # After the last stage blue serves nothing: relative limits have nothing live to use.
        self.watch.blue_live = self.state.phase is not Phase.PROMOTED
        breach: Verdict | None = None
        for verdict in self.watch.step(wait=min(0.02, self.period / 4)):  # a quick source answers now
            self._export_verdict(verdict)
            if verdict.breach and breach is None:
                breach = verdict
        # A shadow (dry_run) check neither holds nor passes a bake.
        judged = {c.name for c in self.settings.slo if not c.dry_run}
        latest = {n: v for n, v in self.watch.latest.items() if n in judged}
        passing = len(latest) == len(judged) and all(v.outcome is Outcome.PASS for v in latest.values())
        failing = any(v.outcome is Outcome.FAIL for v in latest.values())
        starved = () if failing else tuple(
            n for n, v in latest.items() if v.outcome is Outcome.INCONCLUSIVE)
        if breach is None:
            return None, passing, starved
        self.metrics.breaches.inc()
        report_breach(self.settings, self.store, breach)
        return Breach(breach.check, breach.reason), False, ()

    def _drop_watch(self) -> None:
        if self.watch is not None:
            self.watch.close()
            self.watch = None

    def _export_verdict(self, v: Verdict) -> None:
        self.metrics.slo_passing.labels(v.check).set(1 if v.outcome is Outcome.PASS else 0)
        if v.green is not None:
            self.metrics.slo_value.labels(v.check, "green").set(v.green)
        if v.baseline is not None:
            self.metrics.slo_value.labels(v.check, "blue").set(v.baseline)

    def _publish(self, d: Decision, sync: dict[str, Any] | None) -> None:
        now = time.monotonic()
        m = self.metrics
        m.phase.state(self.state.phase.value)
        m.stage.set(self.state.stage + 1 if self.state.phase in LIVE_TRAFFIC else 0)
        m.paused.set(1 if self.state.paused else 0)
        m.heartbeat.set_to_current_time()
        weights = self.snapshot.weights
        if now >= self.next_sample:
            self.next_sample = now + SAMPLE_EVERY
            weights = split_dict(self.weights.read())
            if weights is not None:
                for env in ("blue", "green"):
                    m.weight.labels(env).set(weights[env])
            if sync is not None:
                m.sync.export(sync)
            checks = {n: v.as_dict() for n, v in self.watch.latest.items()} if self.watch else {}
            self.store.record(EventKind.SAMPLE, {
                "phase": self.state.phase.value, "stage": self.state.stage, "weights": weights,
                "lag_seconds": sync.get("heartbeat_lag_seconds") if sync else None,
                "lag_bytes": sync.get("lag_bytes") if sync else None,
                "not_ready": sync.get("not_ready") if sync else None, "checks": checks})
            self.store.save_state(self.state.as_dict())  # also the store's liveness mark
        job = self.jobs.current.effect.job.value if self.jobs.current else None
        self.snapshot = Snapshot(self.state, d.reason, job, weights,
                                 sync if sync is not None else self.snapshot.sync,
                                 {n: v.as_dict() for n, v in self.watch.latest.items()} if self.watch
                                 else self.snapshot.checks if self.state.phase in LIVE_TRAFFIC else {},
                                 now)
        self._ping_watchdog(now, self._status_line())

    def _ping_watchdog(self, now: float, status: str) -> None:
        period = sdnotify.watchdog_period()
        if period is not None and now >= self.next_watchdog:
            self.next_watchdog = now + period / 2
            sdnotify.notify("WATCHDOG=1", f"STATUS={status}")

    def _status_line(self) -> str:
        s = self.state
        where = f" stage {s.stage + 1}" if s.phase in LIVE_TRAFFIC else ""
        return f"{s.phase.value}{where}{' (paused)' if s.paused else ''}: {self.snapshot.reason}"

    def _reload(self) -> None:
        """SIGHUP: SLO checks, hooks, notifications, bakes and hold may change; the shape of
        the cutover (databases, balancer, number of stages) may not while it runs."""
        if self.config_path is None:
            return
        try:
            new = load_settings(self.config_path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            return
        plan = plan_for(new)
        if plan.mode is not self.plan.mode or len(plan.stages) != len(self.plan.stages):
            log.error("reload refused: the mode or the number of stages changed; restart to change them")
            return
        self.settings, self.plan = new, plan
        self.jobs.settings = new
        self.notifier = Notifier(new.notify, new.service)
        self._drop_watch()
        self.say("config reloaded")
        self.store.record(EventKind.RELOAD, {"plan": {"stages": [s.weight for s in plan.stages]}})
