"""`cutover sync --follow`, the continuous sync service, run as a real process."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from controller.lab.processes import free_port
from tests.syncfixtures import DbPair, assert_same_data


def test_follow_streams_exports_metrics_and_stops_on_sigterm(pair: DbPair, tmp_path: Path) -> None:
    with pair.blue() as b:
        b.execute("CREATE TABLE t (id int PRIMARY KEY, v text);"
                  "INSERT INTO t SELECT i, 'v' FROM generate_series(1, 1000) i")
    port = free_port()
    config = tmp_path / "cutover.toml"
    config.write_text(f'[blue.database]\ndsn = "{pair.dsn("blue")}"\n'
                      f'[green.database]\ndsn = "{pair.dsn("green")}"\n'
                      '[sync]\nheartbeat_interval = "200ms"\ninterval = "1s"\n'
                      f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
    proc = subprocess.Popen([sys.executable, "-m", "controller", "sync", "--follow", "--config",
                             str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        text = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
                if "cutover_sync_streaming 1.0" in text and "cutover_sync_lag_seconds " in text:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        assert "cutover_sync_streaming 1.0" in text
        assert "cutover_sync_rows_copied_total 1000.0" in text
        for name in ("cutover_sync_lag_bytes", "cutover_sync_lag_seconds",
                     "cutover_sync_slot_retained_wal_bytes", "cutover_sync_heartbeat_age_seconds",
                     "cutover_loop_heartbeat_timestamp_seconds"):
            assert f"\n{name} " in text, name
        promtool = shutil.which("promtool")
        assert promtool, "promtool is missing: `make setup` installs prometheus"
        lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                              text=True, check=False)
        assert lint.returncode == 0, lint.stdout + lint.stderr
        with pair.blue() as b:
            b.execute("INSERT INTO t SELECT i, 'later' FROM generate_series(1001, 1100) i")
        pair.wait_caught_up()
        assert_same_data(pair)
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, output
    assert "streaming: lag" in output
