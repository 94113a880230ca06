"""The first reason to use Cutover, end to end: `cutover run` as a real process takes a
PostgreSQL 15 blue with the realistic schema (and pgbench's tables) to a green of PostgreSQL
18 (and 17), under pgbench-style writes through PgBouncer, application writes and HTTP load,
SIGKILLed once mid-copy and once mid-bake, to finalized; and the same (killed twice too) with a breach and
rollback.database = "revert", from 18 back to 15. Every acknowledged write is on the primary,
and blue and green are equal by an md5 of every table's rows (not our verify)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from config import Settings
from controller.lab.lab import Lab
from controller.lab.load import HttpLoad, Pgbench, pgbench_init
from controller.state.journal import Journal
from controller.traffic.haproxy import HAProxyBalancer
from sync.status import wait_applied
from tests.integration.test_daemon import daemon_settings
from tests.integration.test_daemon_restart import DaemonProcess, at_phase, at_stage, phase_is
from tests.realistic import Write, create_schema, populate, write_some
from tests.switchfixtures import AckedWriter, BackgroundWriter, Routed, routed_pair
from tests.syncfixtures import DbPair, assert_same_data
from tests.tomltext import config_toml
from tests.trafficfixtures import set_fault

pytestmark = [pytest.mark.lab, pytest.mark.xdist_group("heavy")]  # see test_demo


@pytest.fixture
def routed_18(lab: Lab, pair_18: DbPair) -> Iterator[Routed]:
    with routed_pair(lab, pair_18) as r:
        yield r


@pytest.fixture
def routed_17(lab: Lab, pair_17: DbPair) -> Iterator[Routed]:
    with routed_pair(lab, pair_17) as r:
        yield r


class AppWriter(BackgroundWriter):
    """The application's own writes (tests.realistic.write_some), one per transaction;
    `acked` keeps each acknowledged one."""

    def __init__(self, routed: Routed) -> None:
        super().__init__(routed.connect)
        self.acked: list[Write] = []

    def write_once(self, conn: psycopg.Connection[Any]) -> None:
        self.acked += write_some(conn, 1, seed=1000 + len(self.acked))

    def missing_on(self, conn: psycopg.Connection[Any]) -> list[Write]:
        """Acknowledged writes to records and accounts (which nothing deletes by cascade) whose
        last effect is not what the primary holds."""
        last: dict[tuple[str, tuple[Any, ...]], Write] = {}
        for w in self.acked:
            last[(w.table, w.key)] = w
        wrong = []
        for (table, key), w in last.items():
            if table not in ("records.records", "records.accounts"):
                continue
            row = conn.execute(f"SELECT 1 FROM {table} WHERE id = %s", [key[0]]).fetchone()
            if (row is None) != (w.op == "delete"):
                wrong.append(w)
        return wrong


def _prepare(routed: Routed) -> None:
    pgbench_init(routed.pair.dsn("blue"), 5)
    with routed.pair.blue() as b:
        b.execute("ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
        create_schema(b)
        populate(b, rows=3000)
    with routed.pair.green() as g:
        for role in ("records_reader", "records_writer"):
            if not g.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone():
                g.execute(f"CREATE ROLE {role} NOLOGIN")


def _settings(routed: Routed, lab: Lab, tmp_path: Path, **over: Any) -> tuple[Settings, Path]:
    base = daemon_settings(routed, lab, tmp_path, traffic={
        "finalize": "manual", "stages": [{"weight": 10, "bake": "4s"}, {"weight": 100, "bake": "3s"}]})
    data = base.model_dump(mode="json")
    data["sync"] = {**data["sync"], "schemas": ["public", "records"]}
    for section, values in over.items():
        data[section] = {**data[section], **values}
    config = tmp_path / "cutover.toml"
    config.write_text(config_toml(data))
    return Settings.model_validate(data), config


def _start_killing_mid_copy_and_mid_bake(daemon: DaemonProcess, settings: Settings, lab: Lab) -> None:
    """Start the daemon, SIGKILL it once mid-copy and once while stage 1 bakes, restarting it
    each time on the same state store."""
    listen = settings.metrics.listen
    daemon.start(listen)
    for wait in (at_phase("copying"), at_stage(0)):
        wait(daemon, settings, lab)
        daemon.kill()
        daemon.start(listen)


def _upgrade_killed_twice(routed: Routed, lab: Lab, hap: HAProxyBalancer, tmp_path: Path) -> None:
    _prepare(routed)
    settings, config = _settings(routed, lab, tmp_path)
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    pgbench = Pgbench(routed.dsn, clients=2, seconds=30, rate=50)  # through the copy and the switch
    try:
        with AckedWriter(routed) as bench, AppWriter(routed) as app, \
                HttpLoad(lab.state.frontend_url, rate=400):
            pgbench.start()
            _start_killing_mid_copy_and_mid_bake(daemon, settings, lab)
            daemon.wait_for(phase_is("promoted"), 240, "all traffic on green")
        result = pgbench.wait(timeout=120)
        assert result.transactions > 100
        assert result.failed == 0, result.output[-1000:]
        assert routed.primary() == "green"
        assert hap.read().green_percent == 100
        with routed.pair.green() as g, routed.pair.blue() as b:
            assert not bench.missing_on(g), "an acknowledged pgbench_history write is missing"
            assert not app.missing_on(g), "an acknowledged application write is missing"
            assert wait_applied(g, b, 60), "blue does not follow green"
        assert_same_data(routed.pair)
        Journal(settings.state.path).add_intent("promote")  # finalize: manual
        daemon.wait_for(phase_is("finalized"), 90, "finalized")
    finally:
        daemon.terminate()
    assert bench.written
    assert len(app.acked) > 50


@pytest.mark.timeout(600)
def test_15_to_18_killed_mid_copy_and_mid_bake_ends_finalized(
        routed_18: Routed, lab: Lab, hap: HAProxyBalancer, tmp_path: Path) -> None:
    _upgrade_killed_twice(routed_18, lab, hap, tmp_path)


@pytest.mark.timeout(600)
def test_15_to_17_killed_mid_copy_and_mid_bake_ends_finalized(
        routed_17: Routed, lab: Lab, hap: HAProxyBalancer, tmp_path: Path) -> None:
    _upgrade_killed_twice(routed_17, lab, hap, tmp_path)


@pytest.mark.timeout(600)
def test_a_breach_on_18_after_two_kills_reverts_writes_to_15_losing_nothing(
        routed_18: Routed, lab: Lab, hap: HAProxyBalancer, tmp_path: Path) -> None:
    _prepare(routed_18)
    settings, config = _settings(routed_18, lab, tmp_path, rollback={"database": "revert"},
                                 traffic={"stages": [{"weight": 10, "bake": "120s"},
                                                     {"weight": 100, "bake": "1s"}]})
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    try:
        with AckedWriter(routed_18) as bench, AppWriter(routed_18) as app, \
                HttpLoad(lab.state.frontend_url, rate=400):
            _start_killing_mid_copy_and_mid_bake(daemon, settings, lab)
            daemon.wait_for(lambda s: s["phase"] == "shifting" and s["applied"], 240, "stage 1 live")
            time.sleep(2)  # writes land on green (18) first: the way back must carry them
            set_fault(lab, "green", error_ratio=0.5)
            daemon.wait_for(phase_is("rolled_back"), 120, "the rollback")
    finally:
        set_fault(lab, "green")
        daemon.terminate()
    assert routed_18.primary() == "blue"
    assert hap.read().green_percent == 0
    with routed_18.pair.blue() as b, routed_18.pair.green() as g:
        assert not bench.missing_on(b), "an acknowledged pgbench_history write is missing on blue"
        assert not app.missing_on(b), "an acknowledged application write is missing on blue"
        assert wait_applied(b, g, 60), "green does not follow blue again"
    assert_same_data(routed_18.pair)
