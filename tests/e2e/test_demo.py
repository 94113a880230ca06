"""`cutover demo` (what `make demo` runs), end to end, as a user runs it."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

from tests.labfixtures import new_lab_dir

ROW = re.compile(r"│ (\S+)\s+│ (\d+)\s+│ (\d+)\s+│ running")


def test_demo_runs_and_stops_cleanly() -> None:
    root = new_lab_dir("demo")
    done = subprocess.run(
        [sys.executable, "-m", "controller", "demo", "--dir", str(root), "--seconds", "2",
         "--rate", "600"],
        capture_output=True, text=True, timeout=180, check=False,
        env={"COLUMNS": "120", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "demo ok" in done.stdout
    assert re.search(r"preflight: (\d+)/\1 checks pass", done.stdout), done.stdout
    assert re.search(r"verify public\.lab_items: Complete \(([\d,]+) rows on blue, \1 on green\)",
                     done.stdout), done.stdout
    for stage in (10, 50, 100):
        assert re.search(rf"green +{stage} %: set and read back .* \(confirmed after", done.stdout), \
            done.stdout
    assert re.search(r"rollback: green +0 %: set and read back", done.stdout), done.stdout
    assert re.search(r"rolled back: HAProxy reads green 0 %, [\d.]+s after the fault",
                     done.stdout), done.stdout
    assert "all from green's injected fault: True" in done.stdout
    parts = ROW.findall(done.stdout)
    assert {name for name, _, _ in parts} >= {"blue_pg", "green_pg", "pgbouncer", "haproxy",
                                               "prometheus", "app:blue1", "app:green1"}
    assert not Path(root).exists(), "the demo purges its lab"
    for name, port, pid in parts:
        assert not Path(f"/proc/{pid}").exists(), f"{name} (pid {pid}) still runs"
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", int(port))) != 0, f"{name} still listens on {port}"
