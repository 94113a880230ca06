"""Two `cutover run` processes of one service on the PostgreSQL state store: one leads (a
session advisory lock), the other waits; SIGKILL the leader mid-bake and the standby takes
over within seconds, continuing where the leader was, with no job done twice. A deposed
leader's writes are refused by the fencing epoch."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from config import Settings
from config.operations import StateSettings
from controller.cli import app
from controller.lab.lab import Lab
from controller.lab.load import HttpLoad, pgbench_init
from controller.lab.processes import free_port
from controller.state.journal import EventKind
from controller.state.pgstore import Deposed, Leadership, PgStore
from controller.traffic.haproxy import HAProxyBalancer
from sync.status import wait_applied
from tests.integration.test_daemon import BUSY_HOST_LATENCY_FLOOR, daemon_settings
from tests.integration.test_daemon_restart import DaemonProcess
from tests.switchfixtures import AckedWriter, Routed
from tests.syncfixtures import assert_same_data
from tests.tomltext import config_toml
from tests.trafficfixtures import set_fault

TAKEOVER_LIMIT = 10.0


@pytest.fixture
def store_dsn(lab: Lab) -> Iterator[str]:
    """A database of its own for the state store, on blue's server (not the app's database,
    which the switch fences)."""
    name = f"cutover_store_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(lab.state.db_dsn("blue", "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield lab.state.db_dsn("blue", name)
    finally:
        with psycopg.connect(lab.state.db_dsn("blue", "postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_a_deposed_leader_cannot_write(store_dsn: str) -> None:
    state = StateSettings(backend="postgres", dsn=store_dsn)
    first = Leadership(state, "svc")
    epoch = first.try_acquire()
    assert epoch == 1
    other = Leadership(state, "svc")
    assert other.try_acquire() is None, "the lock is held: the other daemon must wait"
    old = PgStore(state, "svc", epoch)
    old.save_state({"phase": "shifting"})
    first.release()  # the leader's session is gone (as when its process dies)
    # The server lets the lock go once that backend has exited, a moment after the close:
    # the standby tries again, as the daemon does every period.
    deadline = time.monotonic() + 10
    while (taken := other.try_acquire()) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert taken == 2
    with pytest.raises(Deposed):
        old.save_state({"phase": "rolling_back"})
    with pytest.raises(Deposed):
        old.record(EventKind.DECISION, {"reason": "stale"})
    assert old.take_intents() == []
    new = PgStore(state, "svc", 2)
    assert new.load_state() == {"phase": "shifting"}
    assert [e.kind for e in new.events()] == []
    old.close()
    new.close()
    other.release()


@pytest.mark.timeout(300)
def test_killing_the_leader_lets_the_standby_continue(routed: Routed, lab: Lab, hap: HAProxyBalancer,
                                                       tmp_path: Path, store_dsn: str) -> None:
    pgbench_init(routed.pair.dsn("blue"), 1)
    with routed.pair.blue() as conn:
        conn.execute("ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
    data = daemon_settings(routed, lab, tmp_path, traffic={
        "finalize": "manual", "stages": [{"weight": 10, "bake": "6s"}, {"weight": 100, "bake": "2s"}]},
        state={"backend": "postgres", "dsn": store_dsn},
        latency_floor=BUSY_HOST_LATENCY_FLOOR).model_dump(mode="json")
    daemons = []
    for name in ("a", "b"):
        listen = f"127.0.0.1:{free_port()}"
        config = tmp_path / f"{name}.toml"
        config.write_text(config_toml({**data, "metrics": {**data["metrics"], "listen": listen}}))
        daemons.append((DaemonProcess(config, tmp_path / f"{name}.log"), listen))
    (a, listen_a), (b, listen_b) = daemons
    settings = Settings.model_validate(data)
    try:
        with AckedWriter(routed) as writer, HttpLoad(lab.state.frontend_url, rate=400):
            a.start(listen_a)
            a.wait_for(lambda s: True, 60, "a leading")
            # b waits as the standby from early on, so its start-up does not race a's bake.
            b.start(listen_b)
            deadline = time.monotonic() + 30
            while "standby" not in b.log.read_text(errors="replace"):
                assert time.monotonic() < deadline, f"b never waited as the standby:\n{b.tail()}"
                time.sleep(0.05)
            a.wait_for(lambda s: s["phase"] == "shifting" and s["applied"] and s["bake_seconds"] > 1,
                       120, "stage 1 baking")
            assert b.status() is None, "the standby must not act (nor serve status) while a leads"
            before = a.status()
            a.kill()
            killed = time.monotonic()
            b.wait_for(lambda s: s["phase"] == "shifting" and s["applied"], 30, "b taking over")
            takeover = time.monotonic() - killed
            final = b.wait_for(lambda s: s["phase"] == "promoted", 120, "all traffic on green")
    finally:
        a.terminate()
        b.terminate()
        set_fault(lab, "green")
    print(f"\n[ha] leader killed -> standby acting (stage re-applied, read back): {takeover:.2f} s")
    assert takeover < TAKEOVER_LIMIT
    assert final["switched"] is True
    assert routed.primary() == "green"
    assert hap.read().green_percent == 100
    with routed.pair.green() as g, routed.pair.blue() as bl:
        assert not writer.missing_on(g), "an acknowledged write is missing on the primary"
        assert wait_applied(g, bl, 60)
    assert_same_data(routed.pair)
    store = PgStore(settings.state, settings.service)
    jobs = [(e.data["job"], e.data.get("stage")) for e in store.events("job") if e.data["ok"]]
    leaders = [e.data["epoch"] for e in store.events("leader")]
    resumed = [e.data["state"] for e in store.events("start")][-1]
    store.close()
    assert leaders == [1, 2]
    # Nothing done twice: one copy, one switch, each stage baked once (b re-applied the
    # stage it found live, then continued its bake).
    assert [j for j, _ in jobs].count("copy") == 1
    assert [j for j, _ in jobs].count("switch") == 1
    assert [j for j in jobs if j[0] == "stage_done"] == [("stage_done", 0), ("stage_done", 1)]
    assert before is not None
    assert resumed["stage"] == before["stage"] == 0
    assert resumed["bake_seconds"] >= before["bake_seconds"] - 1.0


def test_status_on_a_postgres_store_no_daemon_created_says_so_and_creates_nothing(
        store_dsn: str, tmp_path: Path) -> None:
    config = tmp_path / "cutover.toml"
    config.write_text(f'[state]\nbackend = "postgres"\ndsn = "{store_dsn}"\n')
    done = CliRunner().invoke(app, ["status", "--json", "--config", str(config)])
    assert done.exit_code == 1, done.output
    assert "no state store" in done.output
    with psycopg.connect(store_dsn) as conn:
        assert conn.execute("SELECT to_regnamespace('cutover_store')").fetchone() == (None,)
    PgStore(StateSettings(backend="postgres", dsn=store_dsn), "svc").close()  # a daemon's open
    again = CliRunner().invoke(app, ["status", "--json", "--config", str(config)])
    assert again.exit_code == 0, again.output
