"""The daemon's footprint (design goal: RSS <= 100 MB, idle CPU <= 2 %): `cutover run` as a
process through a cutover to the 100 % hold (finalize by hand), then measured while it holds
with its loop, SLO watch and samples running: resident memory from /proc/<pid>/status and CPU
from /proc/<pid>/stat over CUTOVER_BENCH_SECONDS (default 60) of holding."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from controller.lab.lab import Lab
from controller.lab.load import HttpLoad, pgbench_init
from tests.bench.conftest import BENCH_TIMEOUT, SECONDS
from tests.integration.test_daemon import daemon_settings
from tests.integration.test_daemon_restart import DaemonProcess
from tests.switchfixtures import Routed
from tests.tomltext import config_toml

RSS_GOAL_MB = 100.0
CPU_GOAL = 0.02


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@pytest.mark.timeout(BENCH_TIMEOUT)
def test_daemon_footprint_while_holding(routed: Routed, lab: Lab, tmp_path: Path) -> None:
    pgbench_init(routed.pair.dsn("blue"), 1)
    with routed.pair.blue() as b:
        b.execute("ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
    data = daemon_settings(routed, lab, tmp_path, traffic={"finalize": "manual"}).model_dump(mode="json")
    config = tmp_path / "cutover.toml"
    config.write_text(config_toml(data))
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    try:
        with HttpLoad(lab.state.frontend_url, rate=600):  # enough for the SLO checks at 10 %
            daemon.start(data["metrics"]["listen"])
            daemon.wait_for(lambda s: s["phase"] == "promoted", 180, "the 100 % hold")
            assert daemon.proc is not None
            pid = daemon.proc.pid
            rss = [_rss_mb(pid)]
            cpu0, t0 = _cpu_seconds(pid), time.monotonic()
            while time.monotonic() - t0 < SECONDS:
                time.sleep(1)
                rss.append(_rss_mb(pid))
            cpu = (_cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
            assert daemon.status() is not None, "the daemon stopped while measured"
    finally:
        daemon.terminate()
    print(f"\ndaemon footprint, holding at 100 % (loop 0.1 s, HAProxy SLO checks, samples each second), "
          f"{SECONDS} s at 600 req/s:")
    print(f"    RSS max {max(rss):.1f} MB (goal <= {RSS_GOAL_MB:g} MB)"
          + ("" if max(rss) <= RSS_GOAL_MB else "  MISSED"))
    print(f"    CPU {cpu * 100:.2f} % of one core (goal <= {CPU_GOAL * 100:g} %)"
          + ("" if cpu <= CPU_GOAL else "  MISSED"))
