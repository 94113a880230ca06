"""`cutover demo` (what `make demo` runs), end to end, as a user runs it."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from controller.lab.lab import Lab
from tests.labfixtures import new_lab_dir

ROW = re.compile(r"│ (\S+)\s+│ (\d+)\s+│ (\d+)\s+│ running")


@pytest.mark.xdist_group("heavy")  # never beside the upgrade tests (Makefile's loadgroup)
def test_demo_runs_and_stops_cleanly() -> None:
    root = new_lab_dir("demo")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "controller", "demo", "--dir", str(root), "--seconds", "2",
             "--rate", "600"],
            capture_output=True, text=True, timeout=300, check=False, cwd="/tmp",
            env={"COLUMNS": "120", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"})
    finally:
        if root.exists():  # a demo killed on the timeout leaves its lab: stop exactly that
            Lab(root).down(purge=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "demo ok" in done.stdout
    out = done.stdout
    # Run 1: the daemon syncs, switches, and rolls back on its own when green breaks at 10 %.
    assert re.search(r"pending -> preflight", out), out
    assert re.search(r"copying -> streaming: green streams from blue", out), out
    assert re.search(r"switching -> shifting: writes switched to green: write pause \d+ ms", out), out
    assert re.search(r"shifting -> rolling_back: SLO breach: ", out), out
    assert "run 1 ended rolled_back" in out
    assert re.search(r"run 1 ended rolled_back .*; writes on blue", out), out
    # Run 2: retry, the whole cutover through every stage to finalized.
    for stage in (2, 3):
        assert f"stage {stage - 1} baked" in out
    assert "shifting -> promoted: all traffic on green" in out
    assert "finalizing -> finalized" in out
    assert "run 2 ended finalized; writes on green" in out
    assert "all from green's injected fault: True" in out
    assert re.search(r"writes acknowledged: (\d+), rows found on green \(the primary\): \1", out), out
    assert re.search(r"lab_items on blue and green: ([\d,]+) and \1 rows, checksums equal", out), out
    report = re.search(r"report: (\S+\.html)", out)
    assert report, out
    assert "<svg" in Path(report.group(1)).read_text()
    Path(report.group(1)).unlink()
    parts = ROW.findall(done.stdout)
    assert {name for name, _, _ in parts} >= {"blue_pg", "green_pg", "pgbouncer", "haproxy",
                                               "prometheus", "app:blue1", "app:green1"}
    assert not Path(root).exists(), "the demo purges its lab"
    for name, port, pid in parts:
        assert not Path(f"/proc/{pid}").exists(), f"{name} (pid {pid}) still runs"
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", int(port))) != 0, f"{name} still listens on {port}"
