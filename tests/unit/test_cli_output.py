"""What the CLI prints holds names from the user's databases and configs: they must print as
they are, brackets included (rich markup would eat `[traffic]` and fail on `[/x]`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from controller.cli.common import fail
from controller.cli.syncing import _print_preflight
from controller.daemon.phases import Phase, State
from controller.state.journal import EventKind, Journal
from sync.preflight import Check, Report, Status

HOSTILE = 'public."[/x] [bold]t"'


def test_an_error_naming_a_config_section_prints_the_brackets(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit):
        fail(f"watch needs a [traffic] section; table {HOSTILE}")
    assert f"error: watch needs a [traffic] section; table {HOSTILE}" in capsys.readouterr().err


def test_a_table_with_brackets_in_its_name_prints_in_the_preflight_table(
        capsys: pytest.CaptureFixture[str]) -> None:
    _print_preflight(Report([Check("primary keys", Status.FAIL, HOSTILE,
                                   fix=f"ALTER TABLE {HOSTILE} REPLICA IDENTITY FULL")]))
    printed = capsys.readouterr().out
    assert HOSTILE in printed
    assert f"ALTER TABLE {HOSTILE} REPLICA IDENTITY FULL" in printed
    assert "fail" in printed


def test_status_and_history_in_a_pipe_print_long_names_whole(tmp_path: Path) -> None:
    """Through a real pipe, as under systemd or `| tee`: rich assumes 80 columns there."""
    check = "checkout_p99_latency_for_the_eu_west_payment_gateway_primary_cluster"
    config = tmp_path / "cutover.toml"
    config.write_text('[state]\npath = "state.db"\n')
    store = Journal(tmp_path / "state.db")
    store.save_state(State(phase=Phase.SHIFTING, stage=0, applied=True).as_dict())
    verdict = {"check": check, "outcome": "fail", "breach": True, "green": 0.9, "threshold": 0.5,
               "reason": f"green 0.9 above limit 0.5 = max 0.5 on {check}", "streak": 3}
    store.record(EventKind.SAMPLE, {"weights": {"blue": 90, "green": 10}, "checks": {check: verdict}})
    store.record(EventKind.BREACH, verdict)
    store.close()
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR")}
    for command in ("status", "history"):
        done = subprocess.run([sys.executable, "-m", "controller", command, "--config", str(config)],
                              capture_output=True, text=True, timeout=60, env=env, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "\u2026" not in done.stdout, done.stdout
        assert any(check in line for line in done.stdout.splitlines()), done.stdout
