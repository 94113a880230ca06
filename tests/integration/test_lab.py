"""Each lab part works for real: PostgreSQL, PgBouncer, HAProxy's Runtime API, the apps'
fault switch and metrics, Prometheus, and the load generators."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import psycopg
import pytest

from controller.lab import haproxy
from controller.lab.lab import Lab
from controller.lab.load import HttpLoad, LoadProcess, Pgbench, pgbench_init
from controller.lab.processes import LabError, is_running
from tests.labfixtures import new_lab_dir


def haproxy_cmd(lab: Lab, command: str) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(lab.state.haproxy_socket))
        s.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


@pytest.mark.check
def test_both_clusters_run_with_logical_wal(lab: Lab) -> None:
    for env in ("blue", "green"):
        with psycopg.connect(lab.state.db_dsn(env)) as conn:
            assert conn.execute("SHOW wal_level").fetchone() == ("logical",)
            row = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
            assert row is not None
            assert row[0] >= 150000


def test_servers_run_unprivileged_when_started_by_root(lab: Lab) -> None:
    for name in ("blue_pg", "pgbouncer", "haproxy"):
        proc = lab.state.procs[name]
        uid = os.stat(f"/proc/{proc.pid}").st_uid
        if os.geteuid() == 0:
            assert uid != 0, f"{name} runs as root"
        else:
            assert uid == os.geteuid()


def test_write_through_pgbouncer_lands_in_blue_only(lab: Lab) -> None:
    marker = f"pgb-{uuid.uuid4()}"
    with psycopg.connect(lab.state.pgbouncer_dsn, autocommit=True, prepare_threshold=None) as conn:
        conn.execute("INSERT INTO lab_items (env, payload) VALUES ('test', %s)", [marker])
    with psycopg.connect(lab.state.db_dsn("blue")) as conn:
        assert conn.execute("SELECT count(*) FROM lab_items WHERE payload = %s",
                            [marker]).fetchone() == (1,)
    with psycopg.connect(lab.state.db_dsn("green")) as conn:
        assert conn.execute("SELECT to_regclass('lab_items')").fetchone() == (None,)


def test_app_writes_reach_blue_through_pgbouncer(lab: Lab) -> None:
    resp = httpx.post(f"{lab.state.frontend_url}/api/items", timeout=5)
    assert resp.status_code == 201
    assert resp.headers["x-env"] == "blue"
    with psycopg.connect(lab.state.db_dsn("blue")) as conn:
        row = conn.execute("SELECT env FROM lab_items WHERE id = %s", [resp.json()["id"]]).fetchone()
    assert row == ("blue",)


def test_haproxy_set_weight_changes_which_app_answers(lab: Lab) -> None:
    with httpx.Client(base_url=lab.state.frontend_url, timeout=5) as client:
        before = Counter(client.get("/api/items").headers["x-env"] for _ in range(20))
        assert before == {"blue": 20}
        for s in lab.state.servers_of("green"):
            assert haproxy_cmd(lab, f"set weight app/{s} 100").strip() == ""
        for s in lab.state.servers_of("blue"):
            haproxy_cmd(lab, f"set weight app/{s} 0")
        try:
            green = lab.state.servers_of("green")[0]
            assert haproxy_cmd(lab, f"get weight app/{green}").startswith("100 ")
            after = Counter(client.get("/api/items").headers["x-env"] for _ in range(20))
            assert after == {"green": 20}
            servers = Counter(client.get("/api/items").headers["x-server"] for _ in range(20))
            assert set(servers) == set(lab.state.servers_of("green")), "both green servers serve"
        finally:
            for s in lab.state.servers_of("blue"):
                haproxy_cmd(lab, f"set weight app/{s} 100")
            for s in lab.state.servers_of("green"):
                haproxy_cmd(lab, f"set weight app/{s} 0")


def test_haproxy_runtime_api_over_tcp(lab: Lab) -> None:
    with socket.create_connection(("127.0.0.1", lab.state.port("haproxy_admin")), timeout=5) as s:
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    names = {line.split(",")[1] for line in data.decode().splitlines()[1:] if line.startswith("app,")}
    assert set(lab.state.servers) <= names


def test_fault_switch_makes_the_app_return_5xx_then_recovers(lab: Lab) -> None:
    green = lab.state.app_url(lab.state.servers_of("green")[0])
    with httpx.Client(base_url=green, timeout=5) as client:
        assert client.get("/api/health").status_code == 200
        set_resp = client.post("/admin/fault", json={"error_ratio": 1.0})
        assert set_resp.json() == {"error_ratio": 1.0, "latency_ms": 0.0, "hang": False}
        try:
            codes = {client.get(p).status_code for _ in range(10) for p in ("/api/items", "/api/whoami")}
            assert codes == {500}
        finally:
            client.post("/admin/fault", json={})
        assert client.get("/api/items").status_code == 200
        server = lab.state.servers_of("green")[0]
        assert client.get("/api/whoami").json() == {"env": "green", "server": server}


def test_fault_switch_adds_latency(lab: Lab) -> None:
    blue = lab.state.app_url(lab.state.servers_of("blue")[0])
    with httpx.Client(base_url=blue, timeout=5) as client:
        client.post("/admin/fault", json={"latency_ms": 150})
        try:
            started = time.monotonic()
            assert client.get("/api/health").status_code == 200
            assert time.monotonic() - started >= 0.15
        finally:
            client.post("/admin/fault", json={})


def test_fault_switch_rejects_bad_values(lab: Lab) -> None:
    blue = lab.state.app_url(lab.state.servers_of("blue")[0])
    resp = httpx.post(f"{blue}/admin/fault", json={"error_ratio": 2}, timeout=5)
    assert resp.status_code == 400
    assert httpx.get(f"{blue}/admin/fault", timeout=5).json()["error_ratio"] == 0.0


def test_app_metrics_are_labelled_by_env(lab: Lab) -> None:
    green = lab.state.app_url(lab.state.servers_of("green")[0])
    httpx.get(f"{green}/api/health", timeout=5)
    text = httpx.get(f"{green}/metrics", timeout=5).text
    assert 'lab_app_requests_total{code="200",env="green"' in text


def test_prometheus_returns_the_apps_request_counter(lab: Lab) -> None:
    with httpx.Client(base_url=lab.state.prometheus_url, timeout=5) as client:
        for _ in range(20):
            httpx.get(f"{lab.state.frontend_url}/api/items", timeout=5)
        deadline = time.monotonic() + 30
        envs: set[str] = set()
        while time.monotonic() < deadline:
            body = client.get("/api/v1/query",
                              params={"query": "sum by (env) (lab_app_requests_total)"}).json()
            assert body["status"] == "success"
            envs = {r["metric"]["env"] for r in body["data"]["result"] if float(r["value"][1]) > 0}
            if "blue" in envs:
                break
            time.sleep(0.5)
        assert "blue" in envs


def test_http_load_generator_counts_every_request(lab: Lab) -> None:
    with HttpLoad(lab.state.frontend_url, rate=200, write_ratio=0.2) as load:
        time.sleep(2)
    report = load.report()
    assert 300 <= report.total <= 440
    assert report.failed == 0
    assert report.by_env() == {"blue": report.total}
    assert report.latency_ms(99) < 1000  # counted from the due time: a stall of ours counts too


def test_load_in_its_own_process_reports_while_running_and_once_stopped(lab: Lab) -> None:
    with pytest.raises(LabError, match="plain http"):
        LoadProcess("https://127.0.0.1:1", rate=1).start()
    with LoadProcess(lab.state.frontend_url, rate=200, write_ratio=0.2) as load:
        time.sleep(1)
        midway = load.report()
        time.sleep(1)
        stopped = load.stop()
    assert 0 < midway.total < stopped.total
    assert 300 <= stopped.total <= 440
    assert stopped.failed == 0
    assert stopped.by_env() == {"blue": stopped.total}
    assert load.report() == stopped  # the process is gone; what it reported stays


def test_pgbench_through_pgbouncer_has_no_failures(lab: Lab) -> None:
    pgbench_init(lab.state.db_dsn("blue", user="app"), scale=1)
    try:
        bench = Pgbench(lab.state.pgbouncer_dsn, clients=4, seconds=2)
        bench.start()
        result = bench.wait(timeout=30)
        assert result.transactions > 0
        assert result.failed == 0
        with psycopg.connect(lab.state.db_dsn("blue")) as conn:
            row = conn.execute("SELECT count(*) FROM pgbench_history").fetchone()
        assert row == (result.transactions,), "every pgbench transaction landed in blue"
    finally:
        with psycopg.connect(lab.state.db_dsn("blue", user="app"), autocommit=True) as conn:
            conn.execute("DROP TABLE pgbench_accounts, pgbench_branches, pgbench_tellers, "
                         "pgbench_history CASCADE")


def test_lab_up_is_idempotent_and_down_stops_exactly_its_processes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Started from a directory the lab's user cannot enter, as from a clone in root's home.
    private = tmp_path / "home"
    private.mkdir(mode=0o700)
    monkeypatch.chdir(private)
    root = new_lab_dir("idem")
    lab = Lab(root)
    try:
        lab.up()
        first = {k: v.pid for k, v in lab.state.procs.items()}
        again = Lab(root)
        again.up()
        assert {k: v.pid for k, v in again.state.procs.items()} == first
        assert json.loads((root / "lab.json").read_text())["procs"].keys() == first.keys()
        procs = list(again.state.procs.values())
        again.down()
        assert not any(is_running(p) for p in procs)
        assert (root / "blue" / "PG_VERSION").exists(), "down without --purge keeps the data"
        assert Lab(root).components()[0].running is False
    finally:
        Lab(root).down(purge=True)
    assert not Path(root).exists()


def test_a_config_haproxy_refuses_reaches_the_user_with_haproxy_own_words(tmp_path: Path) -> None:
    with pytest.raises(LabError) as refused:
        haproxy.write_config(tmp_path, (1, 2, 4), {"blue 1": 3}, {}, [], None)
    assert "haproxy" in str(refused.value)
    assert "ALERT" in str(refused.value), str(refused.value)
