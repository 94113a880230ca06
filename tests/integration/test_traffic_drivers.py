"""The command, http and sql traffic drivers, each against something real: a shift script that
drives the lab's HAProxy over its TCP admin port, a control-plane HTTP server that does the
same, and a feature-flag row in the lab's PostgreSQL."""

from __future__ import annotations

import json
import os
import stat
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from pydantic import ValidationError
from typer.testing import CliRunner

from config import Settings
from config.traffic import HAProxySettings, TrafficSettings
from controller.cli import app
from controller.lab.lab import Lab
from controller.traffic.balancer import BadTrafficInput, TrafficError
from controller.traffic.factory import balancer_for
from controller.traffic.haproxy import HAProxyBalancer
from controller.traffic.shift import Seen, shift

runner = CliRunner()
TOKEN = "s3cret-token-never-printed"


def script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/bash\nset -euo pipefail\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def shift_script(tmp_path: Path, lab: Lab) -> tuple[Path, Path]:
    """The seed guide's traffic-shift.sh, made real: it sets the lab's HAProxy weights over
    the Runtime API's TCP port with bash alone."""
    port = lab.state.port("haproxy_admin")
    hap = f"""hap() {{ exec 3<>/dev/tcp/127.0.0.1/{port}; printf '%s\\n' "$1" >&3; cat <&3; exec 3<&-; }}
"""
    shifter = script(tmp_path / "traffic-shift.sh", hap + """
target= pct=
while [ $# -gt 0 ]; do
  case "$1" in
    --target) target=$2; shift 2;;
    --percentage) pct=$2; shift 2;;
    *) echo "unknown argument $1" >&2; exit 64;;
  esac
done
case "$target" in green) g=$pct;; blue) g=$((100 - pct));; *) echo "bad target $target" >&2; exit 64;; esac
b=$((100 - g))
for s in blue1 blue2; do hap "set weight app/$s $b" >/dev/null; done
for s in green1 green2; do hap "set weight app/$s $g" >/dev/null; done
""")
    reader = script(tmp_path / "traffic-read.sh", hap + """
b=$(hap "get weight app/blue1" | cut -d' ' -f1); g=$(hap "get weight app/green1" | cut -d' ' -f1)
echo "$(( 100 * g / (b + g) ))"
""")
    return shifter, reader


def command_settings(argv: list[str], readback: list[str] | None = None,
                     timeout: str = "5s") -> TrafficSettings:
    return TrafficSettings.model_validate({"driver": "command", "command": {
        "argv": argv, "readback": readback, "timeout": timeout}})


def test_command_driver_runs_the_guides_script_and_reads_back(lab: Lab, hap: HAProxyBalancer,
                                                             tmp_path: Path) -> None:
    shifter, reader = shift_script(tmp_path, lab)
    lb = balancer_for(command_settings(
        [str(shifter), "--target", "{target}", "--percentage", "{percentage}"], [str(reader)]))
    for target in (10, 50, 100, 0):
        result = shift(lb, target)
        assert result.after is not None
        assert result.after.green_percent == target
        assert result.observed.seen is Seen.NOT_OBSERVABLE
        assert hap.read().green_percent == target  # the balancer itself agrees


def test_command_driver_failures_carry_stderr_and_time_out(lab: Lab, hap: HAProxyBalancer,
                                                          tmp_path: Path) -> None:
    shifter, _ = shift_script(tmp_path, lab)
    bad_arg = balancer_for(command_settings([str(shifter), "--frobnicate", "{percentage}"]))
    with pytest.raises(TrafficError, match=r"exited 64: unknown argument --frobnicate"):
        shift(bad_arg, 10)
    slow = script(tmp_path / "slow.sh", "sleep 10\n")
    with pytest.raises(TrafficError, match="did not finish within 1s"):
        shift(balancer_for(command_settings([str(slow)], timeout="1s")), 10)
    with pytest.raises(BadTrafficInput, match="not found"):
        shift(balancer_for(command_settings([str(tmp_path / "missing.sh")])), 10)
    with pytest.raises(ValidationError, match=r"unknown placeholder \{nonsense\}"):  # when read
        command_settings([str(shifter), "{nonsense}"])
    assert hap.read().green_percent == 0


class ControlPlane(ThreadingHTTPServer):
    """A control-plane service: JSON weights in, HAProxy weights out, bearer token required."""

    def __init__(self, lb: HAProxyBalancer) -> None:
        self.lb = lb
        self.requests: list[tuple[str, str | None]] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/weights"


class _Handler(BaseHTTPRequestHandler):
    server: ControlPlane

    def _auth(self) -> bool:
        self.server.requests.append((self.command, self.headers.get("Authorization")))
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._answer(401, {"error": "bad token"})
            return False
        return True

    def _answer(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        if self._auth():
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            self.server.lb.apply(int(body["green"]))
            self._answer(200, {"ok": True})

    def do_GET(self) -> None:
        if self._auth():
            split = self.server.lb.read()
            self._answer(200, {"blue": 100 - split.green_percent, "green": split.green_percent})

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def control_plane(lab: Lab) -> Iterator[ControlPlane]:
    lb = HAProxyBalancer(HAProxySettings(address=f"127.0.0.1:{lab.state.port('haproxy_admin')}"),
                         lab.state.servers_of("blue"), lab.state.servers_of("green"))
    server = ControlPlane(lb)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        lb.close()


def test_http_driver_with_token_from_the_credentials_dir(lab: Lab, hap: HAProxyBalancer,
                                                        control_plane: ControlPlane,
                                                        tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "cutover.toml"
    config.write_text(f"""
[traffic]
driver = "http"
[traffic.http]
url = "{control_plane.url}"
readback_url = "{control_plane.url}"
""")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "traffic__http__token").write_text(TOKEN + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    result = runner.invoke(app, ["shift", "--target", "green", "--percentage", "25", "--json",
                                 "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["after"]["green_percent"] == 25
    assert hap.read().green_percent == 25
    assert ("POST", f"Bearer {TOKEN}") in control_plane.requests
    assert TOKEN not in result.output
    shown = runner.invoke(app, ["config", "show", "--config", str(config)])
    assert TOKEN not in shown.output

    (creds / "traffic__http__token").write_text("wrong\n")
    result = runner.invoke(app, ["rollback", "--config", str(config)])
    assert result.exit_code == 2
    assert "refused the token" in result.output
    assert "wrong" not in result.output
    assert hap.read().green_percent == 25  # nothing changed


@pytest.fixture
def flags_db(lab: Lab) -> Iterator[str]:
    name = f"flags_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(lab.state.db_dsn("blue", "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = lab.state.db_dsn("blue", name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE feature_flags (feature_name text PRIMARY KEY, enabled bool, "
                     "rollout_percentage int)")
        conn.execute("INSERT INTO feature_flags VALUES ('fhir_integration', true, 0), "
                     "('other', true, 0)")
    try:
        yield dsn
    finally:
        with psycopg.connect(lab.state.db_dsn("blue", "postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def sql_settings(dsn: str, **over: str) -> TrafficSettings:
    return TrafficSettings.model_validate({"driver": "sql", "sql": {
        "dsn": dsn, "feature": "fhir_integration", **over}})


def test_sql_driver_sets_and_reads_the_flag_row(flags_db: str) -> None:
    lb = balancer_for(sql_settings(flags_db))
    result = shift(lb, 10)
    assert result.after is not None
    assert result.after.green_percent == 10
    with psycopg.connect(flags_db) as conn:
        rows = conn.execute("SELECT feature_name, rollout_percentage FROM feature_flags "
                            "ORDER BY 1").fetchall()
    assert rows == [("fhir_integration", 10), ("other", 0)]


def test_sql_driver_bad_names_are_clear_and_change_nothing(flags_db: str) -> None:
    with pytest.raises(BadTrafficInput, match=r"traffic\.sql\.feature: no row"):
        shift(balancer_for(sql_settings(flags_db, feature="nope")), 10)
    with pytest.raises(ValidationError, match=r"name or schema\.name"):  # refused when read
        sql_settings(flags_db, table="feature_flags; DROP TABLE feature_flags")
    with pytest.raises(BadTrafficInput, match=r"traffic\.sql\.table: no table"):
        shift(balancer_for(sql_settings(flags_db, table="feature_flags;DROP")), 10)
    # Unqualified, pg_authid is found in pg_catalog by the search path: refused when resolved.
    with pytest.raises(BadTrafficInput, match=r"traffic\.sql\.table: 'pg_authid' is pg_catalog"):
        shift(balancer_for(sql_settings(flags_db, table="pg_authid", name_column="rolname",
                                        percentage_column="rolconnlimit", feature="postgres")), 10)
    with pytest.raises(BadTrafficInput, match=r"traffic\.sql\.percentage_column"):
        shift(balancer_for(sql_settings(flags_db, percentage_column='x"; DROP TABLE y; --')), 10)
    with psycopg.connect(flags_db) as conn:
        assert conn.execute("SELECT sum(rollout_percentage) FROM feature_flags").fetchone() == (0,)


def test_unreachable_sql_database_names_it_without_password(lab: Lab) -> None:
    settings = TrafficSettings.model_validate({"driver": "sql", "sql": {
        "dsn": "host=127.0.0.1 port=1 dbname=flags user=app", "password": "hunter2",
        "feature": "f"}})
    with pytest.raises(TrafficError) as caught:
        shift(balancer_for(settings), 10)
    assert "127.0.0.1:1/flags" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert os.environ.get("PGPASSWORD") is None


def test_the_http_token_goes_to_the_control_planes_origin_only(
        hap: HAProxyBalancer, control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch) -> None:
    """A readback_url on another origin (here localhost for 127.0.0.1) is asked without it."""
    monkeypatch.setenv("CUTOVER_TRAFFIC__HTTP__TOKEN", TOKEN)
    elsewhere = control_plane.url.replace("127.0.0.1", "localhost")
    settings = Settings.model_validate({"traffic": {"driver": "http", "http": {
        "url": control_plane.url, "readback_url": elsewhere}}})
    assert settings.traffic is not None
    lb = balancer_for(settings.traffic)
    try:
        lb.apply(10)
        with pytest.raises(BadTrafficInput, match="refused the token"):
            lb.read()
    finally:
        lb.close()
    assert ("POST", f"Bearer {TOKEN}") in control_plane.requests
    assert ("GET", None) in control_plane.requests
    assert ("GET", f"Bearer {TOKEN}") not in control_plane.requests
    hap.apply(0)
