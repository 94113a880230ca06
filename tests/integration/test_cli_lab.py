"""`cutover lab ...` against the running lab."""

from __future__ import annotations

import json

import httpx
from typer.testing import CliRunner

from controller.cli import app
from controller.lab.lab import Lab

runner = CliRunner()


def test_lab_status_json_lists_every_part_running(lab: Lab) -> None:
    result = runner.invoke(app, ["lab", "status", "--dir", str(lab.root), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["up"] is True
    names = {c["name"] for c in data["components"]}
    assert {"blue_pg", "green_pg", "pgbouncer", "haproxy", "prometheus", "app:green2"} <= names


def test_lab_env_points_at_the_lab(lab: Lab) -> None:
    result = runner.invoke(app, ["lab", "env", "--dir", str(lab.root)])
    assert result.exit_code == 0
    assert f"export CUTOVER_CONFIG='{lab.state.config_file}'" in result.output
    assert f"export LAB_URL='{lab.state.frontend_url}'" in result.output


def test_the_labs_config_file_passes_config_check(lab: Lab) -> None:
    result = runner.invoke(app, ["config", "check", "--config", str(lab.state.config_file)])
    assert result.exit_code == 0, result.output


def test_lab_fault_sets_and_clears_an_environment(lab: Lab) -> None:
    result = runner.invoke(app, ["lab", "fault", "green", "--error-ratio", "0.5",
                                 "--latency", "20ms", "--dir", str(lab.root)])
    assert result.exit_code == 0, result.output
    try:
        for server in lab.state.servers_of("green"):
            state = httpx.get(f"{lab.state.app_url(server)}/admin/fault", timeout=5).json()
            assert state == {"error_ratio": 0.5, "latency_ms": 20.0, "hang": False}
    finally:
        assert runner.invoke(app, ["lab", "fault", "green", "--dir", str(lab.root)]).exit_code == 0
    for server in lab.state.servers_of("green"):
        assert httpx.get(f"{lab.state.app_url(server)}/admin/fault", timeout=5).json()["error_ratio"] == 0


def test_lab_fault_on_an_unknown_server_is_a_usage_error(lab: Lab) -> None:
    result = runner.invoke(app, ["lab", "fault", "purple7", "--dir", str(lab.root)])
    assert result.exit_code == 2
    assert "purple7" in result.output
    assert "blue1" in result.output


def test_lab_load_reports_requests_and_no_failures(lab: Lab) -> None:
    result = runner.invoke(app, ["lab", "load", "--rate", "100", "--duration", "2s",
                                 "--dir", str(lab.root), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["failed"] == 0
    assert data["requests"] >= 150  # 200 due; slack for the start on a busy machine
    assert data["by_env"] == {"blue": data["requests"]}


def test_lab_commands_on_a_missing_lab_say_how_to_start_one(tmp_path: object) -> None:
    result = runner.invoke(app, ["lab", "status", "--dir", "/tmp/no-such-cutover-lab"])
    assert result.exit_code == 2
    assert "cutover lab up" in result.output
