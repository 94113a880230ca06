"""The daemon's metrics: what a mode has no use for is not exported."""

from __future__ import annotations

from prometheus_client.exposition import generate_latest

from controller.daemon.metrics import DaemonMetrics


def test_a_shared_database_exports_no_sync_gauges_but_keeps_the_loop_heartbeat() -> None:
    shared = DaemonMetrics(["pending"], with_sync=False)
    shared.heartbeat.set_to_current_time()
    text = generate_latest(shared.registry).decode()
    assert "cutover_sync_streaming" not in text
    assert "cutover_sync_lag" not in text
    assert "cutover_loop_heartbeat_timestamp_seconds" in text
    full = generate_latest(DaemonMetrics(["pending"]).registry).decode()
    assert "cutover_sync_streaming" in full
    assert "cutover_loop_heartbeat_timestamp_seconds" in full
