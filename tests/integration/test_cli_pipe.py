"""What the CLI prints to a pipe (a log, CI, journald) keeps every name whole: rich assumes
80 columns off a terminal, and used to cut table cells to `public.pgbench_ac…`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.syncfixtures import DbPair

LONG = "orders_archived_by_customer_region_and_fiscal_quarter"  # 53 characters, of 63


def piped(*args: str) -> subprocess.CompletedProcess[str]:
    # stdout a pipe, as under systemd or `| tee`; COLUMNS unset, so rich's own default.
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR")}
    return subprocess.run([sys.executable, "-m", "controller", *args], capture_output=True,
                          text=True, timeout=120, env=env, check=False)


@pytest.mark.check
def test_preflight_and_verify_in_a_pipe_print_long_names_whole(pair: DbPair, tmp_path: Path) -> None:
    with pair.blue() as b, pair.green() as g:
        b.execute(f"CREATE TABLE {LONG}_nokey (v int)")  # preflight: no key, named in its cell
        b.execute(f"INSERT INTO {LONG}_nokey VALUES (1), (2), (3)")
        for conn in (b, g):
            conn.execute(f"CREATE TABLE {LONG} (id int PRIMARY KEY, v text)")
        b.execute(f"INSERT INTO {LONG} SELECT i, 'x' FROM generate_series(1, 50) i")
    config = pair.config_file(tmp_path)
    preflight = piped("preflight", "--config", str(config))
    assert preflight.returncode == 1, preflight.stdout + preflight.stderr
    verify = piped("verify", "--config", str(config))
    assert verify.returncode == 1, verify.stdout + verify.stderr
    for done, name in ((preflight, f"public.{LONG}_nokey"), (verify, f"public.{LONG}")):
        assert "\u2026" not in done.stdout, done.stdout
        # Whole on one line, as grep would look for it.
        assert any(name in line for line in done.stdout.splitlines()), done.stdout
    # A table green lacks shows how many rows it lacks.
    missing = rf"{LONG}_nokey\s*│\s*Missing on green\s*│\s*3\s*│\s*0\s*│"
    assert re.search(missing, verify.stdout), verify.stdout
