"""No secret anywhere: a whole `cutover run` with a webhook, its secrets given by environment
and by a credentials directory, then every command; stdout and stderr, the lab's logs (the
servers', with DDL statement logging on), the journal, the report, /status, /metrics, the
notifications and the environment of every child (hooks, pg_dump, pg_restore, psql) are
searched for each secret."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from config import Settings
from controller.lab.lab import Lab
from controller.lab.load import HttpLoad
from controller.traffic.haproxy import HAProxyBalancer
from sync.pgtools import CLIENT_PROGRAMS, ENV_BINDIR, pg_bindir
from tests.integration.test_daemon import BUSY_HOST_LATENCY_FLOOR, daemon_settings, prepare
from tests.switchfixtures import Routed
from tests.syncfixtures import assert_same_data
from tests.tomltext import config_toml


class Webhook:
    """A Slack-style receiver on loopback; the URL's path is its token."""

    def __init__(self) -> None:
        self.token = f"webhook-{uuid.uuid4().hex}"
        self.bodies: list[str] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                bodies.append(self.rfile.read(length).decode(errors="replace"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/{self.token}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    try:
        yield hook
    finally:
        hook.close()


def recording_pg_tools(bindir: Path, records: Path) -> Path:
    """A bin directory whose pg_dump, pg_restore and psql write their environment to records,
    then run the real program."""
    wrappers = records.parent / "pgbin"
    wrappers.mkdir()
    for program in CLIENT_PROGRAMS:
        script = wrappers / program
        script.write_text(f"#!/bin/sh\nenv > {records}/{program}-$$.env\n"
                          f"exec {bindir / program} \"$@\"\n")
        script.chmod(0o755)
    return wrappers


def found_in(text: str, secrets: dict[str, str]) -> list[str]:
    return [name for name, value in secrets.items() if value in text]


@pytest.mark.timeout(300)
def test_no_secret_reaches_any_output_log_store_or_child(
        routed: Routed, lab: Lab, hap: HAProxyBalancer, tmp_path: Path, webhook: Webhook) -> None:
    prepare(routed)
    records = tmp_path / "children"
    records.mkdir()
    hooks = [{"at": at, "command": ["/bin/sh", "-c", f"env > {records}/hook-{{at}}-$$.env"],
              "on_failure": "ignore"}
             for at in ("before_sync", "before_switch", "after_switch", "before_traffic",
                        "after_stage", "before_finalize", "after_finalize")]
    data = daemon_settings(routed, lab, tmp_path, traffic={
        "finalize": "auto", "stages": [{"weight": 50, "bake": "2s"}, {"weight": 100, "bake": "2s"}]},
        latency_floor=BUSY_HOST_LATENCY_FLOOR, hooks=hooks).model_dump(mode="json")
    settings = Settings.model_validate(data)
    config = tmp_path / "cutover.toml"
    config.write_text(config_toml(data))
    assert "password" not in config.read_text()

    secrets = {name: f"{name}-{uuid.uuid4().hex}" for name in
               ("blue_password", "green_password", "admin_password")}
    secrets["webhook"] = webhook.token
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    (credentials / "green__database__password").write_text(secrets["green_password"])
    (credentials / "switchover__pgbouncer__admin_password").write_text(secrets["admin_password"])
    env = {**os.environ, "CUTOVER_BLUE__DATABASE__PASSWORD": secrets["blue_password"],
           "CUTOVER_NOTIFY__WEBHOOK": webhook.url, "CREDENTIALS_DIRECTORY": str(credentials),
           ENV_BINDIR: str(recording_pg_tools(pg_bindir(), records))}
    # The lab trusts loopback, so a password never travels; with DDL logged, a CREATE
    # SUBSCRIPTION that carried one into the statement would land in the servers' logs.
    for side in ("blue", "green"):
        with routed.pair.connect(side) as conn:
            conn.execute(f"ALTER DATABASE {routed.pair.name} SET log_statement = 'ddl'")

    outputs: dict[str, str] = {}
    base = f"http://{settings.metrics.listen}"
    log = tmp_path / "run.log"
    with HttpLoad(lab.state.frontend_url, rate=300), log.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "controller", "run", "--config", str(config),
                                 "--until-done", "--period", "0.1"], env=env, stdout=sink,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 200
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    status = httpx.get(f"{base}/status", timeout=2)
                    if status.json().get("phase") == "shifting":
                        outputs["/status"] = status.text
                        outputs["/metrics"] = httpx.get(f"{base}/metrics", timeout=2).text
                        outputs["/healthz"] = httpx.get(f"{base}/healthz", timeout=2).text
                except (httpx.HTTPError, ValueError):
                    pass
                time.sleep(0.1)
            assert proc.wait(timeout=60) == 0, log.read_text(errors="replace")[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    outputs["run"] = log.read_text(errors="replace")
    assert "/status" in outputs, "never saw the daemon shifting"
    assert json.loads(outputs["/status"])["phase"] == "shifting"
    assert "finalized" in outputs["run"]

    report = tmp_path / "report.html"
    for args in (["config", "check"], ["config", "show"], ["config", "show", "--json"],
                 ["status", "--json"], ["status"], ["history", "--json"], ["history"],
                 ["report", "-o", str(report)], ["traffic", "--json"], ["preflight", "--json"],
                 ["verify", "--json"]):
        done = subprocess.run([sys.executable, "-m", "controller", *args, "--config", str(config)],
                              env=env, capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL, check=False)
        assert done.returncode in (0, 1), f"{args}: {done.stderr[-2000:]}"
        assert "Traceback" not in done.stderr, f"{args}: {done.stderr[-2000:]}"
        outputs[" ".join(args)] = done.stdout + done.stderr
    outputs["report"] = report.read_text()
    for journal in tmp_path.glob("state.db*"):
        outputs[journal.name] = journal.read_bytes().decode("latin-1")
    for lab_log in (lab.root / "logs").glob("*"):
        outputs[f"lab {lab_log.name}"] = lab_log.read_bytes().decode("latin-1")
    outputs["notifications"] = "\n".join(webhook.bodies)
    assert webhook.bodies, "no notification was sent: the webhook was not exercised"
    assert "**********" in outputs["config show --json"]  # the secrets were there, masked

    leaks = {where: names for where, text in outputs.items() if (names := found_in(text, secrets))}
    assert not leaks, f"secrets found: {leaks}"

    hook_envs = list(records.glob("hook-*.env"))
    tool_envs = list(records.glob("pg_*.env")) + list(records.glob("psql-*.env"))
    assert {p.name.split("-")[1] for p in hook_envs} >= {"before_sync", "before_switch",
                                                         "after_switch", "after_finalize"}
    assert tool_envs, "no PostgreSQL program ran through the recording wrappers"
    for path in hook_envs + tool_envs:
        variables = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
        assert not [k for k in variables if k.startswith("CUTOVER_")], path.name
        assert "CREDENTIALS_DIRECTORY" not in variables, path.name
        others = dict(secrets)
        own = variables.get("PGPASSWORD")
        if path in tool_envs:  # its own connection's password, if any (`pg_dump --version`: none)
            assert own in (None, secrets["blue_password"], secrets["green_password"]), path.name
            others = {k: v for k, v in secrets.items() if v != own}
        else:
            assert own is None, path.name
        assert not found_in(path.read_text(), others), path.name
    passwords = {read_variable(p, "PGPASSWORD") for p in tool_envs}
    assert {secrets["blue_password"], secrets["green_password"]} <= passwords, \
        "pg_dump or pg_restore never got its connection's password: the check above saw none"
    assert_same_data(routed.pair)


def read_variable(path: Path, name: str) -> str | None:
    for line in path.read_text().splitlines():
        if line.startswith(f"{name}="):
            return line.partition("=")[2]
    return None
