"""Cutover's Prometheus metrics (prefix cutover_, units in the names), on their own registry."""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, start_http_server

from config.operations import MetricsSettings
from sync.diff import CycleReport

log = logging.getLogger("cutover.metrics")


class SyncMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.lag_bytes = Gauge("cutover_sync_lag_bytes",
                               "Blue WAL not yet confirmed by green (slot confirmed_flush_lsn)",
                               registry=r)
        self.lag_seconds = Gauge("cutover_sync_lag_seconds",
                                 "Heartbeat apply time on green minus write time on blue",
                                 registry=r)
        self.heartbeat_age = Gauge("cutover_sync_heartbeat_age_seconds",
                                   "Time since green last applied a heartbeat", registry=r)
        self.retained_wal = Gauge("cutover_sync_slot_retained_wal_bytes",
                                  "WAL blue keeps for the slot", registry=r)
        self.streaming = Gauge("cutover_sync_streaming", "1 while green streams from blue",
                               registry=r)
        self.apply_errors = Gauge("cutover_sync_apply_errors",
                                  "Errors green's apply and table-sync workers hit since the "
                                  "subscription was made (pg_stat_subscription_stats)", registry=r)
        self.broken = Gauge("cutover_sync_broken",
                            "1 while the replication does not work (apply errors rising, "
                            "subscription disabled, no apply worker)", registry=r)
        self.drift = Gauge("cutover_sync_schema_drift_tables",
                           "Tables whose schema differs between blue and green", registry=r)
        self.not_ready = Gauge("cutover_sync_green_not_ready_objects",
                               "Green's tables never analyzed and materialized views not populated",
                               registry=r)
        self.rows_copied = Counter("cutover_sync_rows_copied",
                                   "Rows copied by the initial copy", registry=r)
        self.database_up = Gauge("cutover_sync_database_up",
                                 "1 while the sync loop reaches the database, 0 while it cannot",
                                 ["env"], registry=r)
        # A counter, not only the gauge: a restart shorter than a scrape interval still counts.
        self.database_outages = Counter("cutover_sync_database_outages",
                                        "Times the sync loop lost a database (restart, dropped "
                                        "connection)", ["env"], registry=r)
        for env in ("blue", "green"):  # both series from the start, at 0
            self.database_outages.labels(env)
        self.diff_cycle_failures = Counter("cutover_diff_cycle_failures",
                                           "Diff cycles that failed (retried at the next)", registry=r)
        self.heartbeat = Gauge("cutover_loop_heartbeat_timestamp_seconds",
                               "Unix time of the sync loop's last iteration", registry=r)
        self.diff_rows_compared = Counter("cutover_diff_rows_compared",
                                          "Blue rows compared by diff cycles", registry=r)
        self.diff_buckets_differing = Gauge("cutover_diff_buckets_differing",
                                            "Buckets that differed in the last diff cycle", registry=r)
        self.diff_rows_applied = Counter("cutover_diff_rows_applied",
                                         "Rows written to green by diff cycles", ["op"], registry=r)
        self.diff_cycle_seconds = Gauge("cutover_diff_cycle_seconds",
                                        "Duration of the last diff cycle", registry=r)
        self.diff_cycles = Counter("cutover_diff_cycles", "Diff cycles completed", registry=r)

    def export(self, status: dict[str, Any], *, with_drift: bool = True) -> None:
        """A SyncStatus (as_dict) as gauges: the sync service's and the daemon's alike. A
        status read without drift leaves the drift and readiness gauges as they were."""
        for key, gauge in (("lag_bytes", self.lag_bytes), ("heartbeat_lag_seconds", self.lag_seconds),
                           ("heartbeat_age_seconds", self.heartbeat_age),
                           ("retained_wal_bytes", self.retained_wal)):
            if status.get(key) is not None:
                gauge.set(float(status[key]))
        self.streaming.set(1 if status.get("streaming") else 0)
        self.broken.set(1 if status.get("broken") else 0)
        if status.get("apply_errors") is not None:
            self.apply_errors.set(float(status["apply_errors"]))
        if with_drift:
            self.drift.set(len(status.get("drift") or []))
            self.not_ready.set(len(status.get("not_ready") or []))

    def diff_cycle(self, report: CycleReport) -> None:
        self.diff_rows_compared.inc(report.total("blue_rows"))
        self.diff_buckets_differing.set(report.total("buckets_differing"))
        if not report.dry_run:
            for op in ("inserted", "updated", "deleted"):
                self.diff_rows_applied.labels(op).inc(report.total(op))
        self.diff_cycle_seconds.set(report.seconds)
        self.diff_cycles.inc()
        self.heartbeat.set_to_current_time()

    def serve(self, settings: MetricsSettings) -> None:
        host, port = settings.address()
        start_http_server(port, addr=host, registry=self.registry)
        if (warning := settings.exposure_warning()) is not None:
            log.warning(warning)


class DaemonMetrics:
    """`cutover run`: the sync gauges plus the phase machine, traffic, SLOs and actions."""

    def __init__(self, phases: list[str], registry: CollectorRegistry | None = None, *,
                 with_sync: bool = True) -> None:
        """with_sync=False (a shared database, no sync): the sync gauges are kept off the
        served registry, so no `cutover_sync_streaming 0` sets off an alert."""
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.sync = SyncMetrics(r if with_sync else None)
        self.heartbeat = self.sync.heartbeat if with_sync else Gauge(
            "cutover_loop_heartbeat_timestamp_seconds", "Unix time of the loop's last iteration",
            registry=r)
        self.phase = Enum("cutover_phase", "The phase the controller is in", states=phases, registry=r)
        self.stage = Gauge("cutover_stage", "Traffic stage, 1-based (0: none yet)", registry=r)
        self.paused = Gauge("cutover_paused", "1 while held by the operator or a failed step", registry=r)
        self.weight = Gauge("cutover_traffic_weight_percent", "Share of traffic the balancer reads back",
                            ["env"], registry=r)
        self.slo_value = Gauge("cutover_slo_value", "Latest measured value of an SLO check",
                               ["check", "env"], registry=r)
        self.slo_passing = Gauge("cutover_slo_passing",
                                 "1 when the check's latest verdict passes, 0 when it fails or is "
                                 "inconclusive", ["check"], registry=r)
        self.breaches = Counter("cutover_breaches", "SLO breaches (failure_limit reached)", registry=r)
        self.rollbacks = Counter("cutover_rollbacks", "Rollbacks of traffic to blue", registry=r)
        self.write_pause = Gauge("cutover_write_pause_seconds",
                                 "Write pause (endpoint paused to resumed) of the last switch", registry=r)
        self.jobs = Counter("cutover_jobs", "Jobs run by the controller", ["job", "result"], registry=r)
        self.loop_overruns = Counter("cutover_loop_overruns",
                                     "Ticks that took longer than the loop period", registry=r)
