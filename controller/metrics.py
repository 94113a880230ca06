"""Cutover's Prometheus metrics (prefix cutover_, units in the names), on their own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from config.operations import MetricsSettings


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
        self.drift = Gauge("cutover_sync_schema_drift_tables",
                           "Tables whose schema differs between blue and green", registry=r)
        self.rows_copied = Counter("cutover_sync_rows_copied",
                                   "Rows copied by the initial copy", registry=r)
        self.heartbeat = Gauge("cutover_loop_heartbeat_timestamp_seconds",
                               "Unix time of the sync loop's last iteration", registry=r)

    def serve(self, settings: MetricsSettings) -> None:
        host, _, port = settings.listen.rpartition(":")
        start_http_server(int(port), addr=host.strip("[]"), registry=self.registry)
