"""The write switch through the lab's real PgBouncer, with pgbench writing through it: blue ->
green -> blue with checksums equal after each, a transaction that holds the pause past the
timeout, sequences, and a controller killed between any two steps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from config import load_settings
from config.replication import CommandEndpointSettings, SwitchMethod
from config.settings import Settings
from config.slo import SloCheck, SloSource
from controller.cli import app
from controller.daemon.watch import watch
from controller.lab.lab import Lab
from controller.lab.load import HttpLoad, Pgbench, pgbench_init
from controller.slo.sync_sources import LagSource
from controller.state.journal import Journal
from controller.traffic.haproxy import HAProxyBalancer
from controller.traffic.shift import shift
from sync import logical
from sync.diff import cycle as diff_cycle
from sync.errors import SyncError
from sync.preflight import Status, run_preflight
from sync.status import wait_applied
from sync.switch import switch
from sync.verify import Verdict, verify
from tests.switchfixtures import AckedWriter, Routed, user_commands
from tests.syncfixtures import DbPair, assert_same_data, catalog_snapshot, verify_while_writing
from tests.tomltext import config_toml
from tests.trafficfixtures import set_fault


def read_only(pair: DbPair, env: str) -> bool:
    with psycopg.connect(pair.dsn(env)) as conn:
        row = conn.execute("SHOW default_transaction_read_only").fetchone()
    return row == ("on",)


STRAY = 9999
"""A teller put on one side only: the difference the comparisons must find."""


def equal_without_the_stray_row(routed: Routed, on: str) -> None:
    """The stray row deleted where it was put (through a fence, if there is one): then the
    two sides must be equal."""
    with (routed.pair.green() if on == "green" else routed.pair.blue()) as conn:
        conn.execute("SET default_transaction_read_only = off")
        conn.execute(f"DELETE FROM pgbench_tellers WHERE tid = {STRAY}")
    routed.pair.wait_caught_up()
    assert_same_data(routed.pair)


def start_sync(routed: Routed, scale: int = 2) -> None:
    pgbench_init(routed.pair.dsn("blue"), scale)
    with routed.pair.blue() as b:
        b.execute("ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
    logical.start(routed.settings)
    routed.pair.wait_caught_up()


@pytest.mark.check
def test_switch_there_and_back_under_load_loses_nothing(routed: Routed) -> None:
    start_sync(routed)
    bench = Pgbench(routed.dsn, clients=4, seconds=12)
    bench.start()
    time.sleep(2)
    there = switch(routed.settings, "green")
    assert routed.primary() == "green"
    assert there.pause_ms is not None
    assert there.pause_ms < 2000
    assert read_only(routed.pair, "blue")
    assert not read_only(routed.pair, "green")
    # The lag check measures the way back now (green -> blue): small, not a growing age.
    lag_check = SloCheck(name="lag", source=SloSource.LAG, max=10, interval=1.0)
    lags = []
    for _ in range(3):
        time.sleep(1.0)
        measured = LagSource(routed.settings).measure(lag_check)
        assert measured.error is None, measured.error
        lags.append(measured.green.value)
    assert all(v is not None and 0 <= v < 2 for v in lags), lags
    back = switch(routed.settings, "blue")
    assert routed.primary() == "blue"
    assert not read_only(routed.pair, "blue")
    assert read_only(routed.pair, "green")
    result = bench.wait(timeout=60)
    assert result.failed == 0
    assert result.transactions > 100
    routed.pair.wait_caught_up()  # blue -> green again after the way back
    assert_same_data(routed.pair)
    with routed.pair.blue() as b:
        assert b.execute("SELECT count(*) FROM pgbench_history").fetchone() == (result.transactions,)
    assert back.sequences >= 0
    assert {"fence", "drain", "sequences", "verify", "stop and slot", "repoint", "resume"} \
        <= set(there.steps)
    # The default compares the sides as they stood at the fence once writes flow again.
    assert there.verified == "after resume"
    assert there.tables_verified == 4


def test_the_way_back_pauses_writers_only_once_blue_has_applied_a_big_transaction(
        routed: Routed) -> None:
    """A big transaction on green just before going back: blue is still applying it when the
    switch starts. Writers wait outside the pause (and are told so); the pause itself stays
    short, and nothing is lost."""
    start_sync(routed, scale=4)
    # A lag limit in bytes it stays under: what is still being applied must hold it anyway.
    settings = routed.settings.model_copy(update={
        "sync": routed.settings.sync.model_copy(update={"max_lag_bytes": 1 << 30})})
    switch(settings, "green")
    said: list[str] = []
    with AckedWriter(routed) as writer:
        with routed.connect() as conn:  # through PgBouncer, on green: 400,000 rows in one go
            conn.execute("UPDATE pgbench_accounts SET abalance = abalance + 1")
        back = switch(settings, "blue", say=said.append)
        time.sleep(0.5)
    assert any("waiting for blue to catch up before pausing writes" in m for m in said), said
    assert back.pause_ms is not None
    assert back.pause_ms < 1000, f"the pause drained the backlog: {back.pause_ms:.0f} ms"
    assert back.steps["catch up"] > back.pause_ms / 1000
    assert routed.primary() == "blue"
    with routed.pair.blue() as b:
        assert not writer.missing_on(b), "an acknowledged write is missing"
        assert b.execute("SELECT min(abalance) FROM pgbench_accounts").fetchone() == (1,)
    routed.pair.wait_caught_up()
    assert_same_data(routed.pair)


def with_switchover(routed: Routed, **update: Any) -> Settings:
    assert routed.settings.switchover is not None
    return routed.settings.model_copy(update={
        "switchover": routed.settings.switchover.model_copy(update=update)})


@pytest.mark.parametrize("verify_at", ["after_resume", "in_pause"])
def test_a_difference_at_the_fence_leaves_writes_on_blue_losing_nothing(
        routed: Routed, verify_at: str) -> None:
    """Green holds a row blue never had: after the resume the switch goes straight back to
    blue (pgbench's writes on green meanwhile come with it); in the pause it aborts."""
    start_sync(routed)
    with routed.pair.green() as g:
        g.execute(f"INSERT INTO pgbench_tellers (tid, bid, tbalance) VALUES ({STRAY}, 1, 0)")
    settings = with_switchover(routed, verify_at=verify_at)
    bench = Pgbench(routed.dsn, clients=4, seconds=6)
    bench.start()
    time.sleep(1)
    expected = "reverted" if verify_at == "after_resume" else "failed and was undone"
    with pytest.raises(SyncError, match=rf"{expected}.*pgbench_tellers: 20 rows on the old "
                                        r"primary, 21 on green at the fence"):
        switch(settings, "green")
    result = bench.wait(timeout=60)
    assert result.failed == 0
    assert routed.primary() == "blue"
    assert not read_only(routed.pair, "blue")
    with routed.pair.blue() as b:
        assert b.execute("SELECT count(*) FROM pgbench_history").fetchone() == (result.transactions,)
        assert b.execute(f"SELECT count(*) FROM pgbench_tellers WHERE tid = {STRAY}").fetchone() == (0,)
    # Green streams from blue again (fenced if writes went there and back, as after any
    # switch back); without its stray row it equals blue.
    assert read_only(routed.pair, "green") == (verify_at == "after_resume")
    equal_without_the_stray_row(routed, "green")


def test_checksums_after_the_resume_catch_a_changed_value(routed: Routed) -> None:
    start_sync(routed, scale=1)
    with routed.pair.green() as g:
        g.execute("UPDATE pgbench_tellers SET filler = 'changed on green' WHERE tid = 3")
    settings = with_switchover(routed, verify="checksums")
    with pytest.raises(SyncError, match=r"reverted: public.pgbench_tellers: 10 rows \(same count, "
                                        r"different contents\)"):
        switch(settings, "green")
    assert routed.primary() == "blue"
    with routed.pair.green() as g:
        g.execute("SET default_transaction_read_only = off")
        g.execute("UPDATE pgbench_tellers SET filler = NULL WHERE tid = 3")
    routed.pair.wait_caught_up()
    assert_same_data(routed.pair)


def test_a_table_green_never_received_refuses_the_switch_until_the_sync_takes_it_in(routed: Routed) -> None:
    """A table created on blue after the sync started is not replicated: switching would leave
    its rows behind on blue. The precheck refuses, naming it, before anything pauses."""
    start_sync(routed, scale=1)
    with routed.pair.blue() as b:
        b.execute("CREATE TABLE newer (id int PRIMARY KEY); INSERT INTO newer VALUES (1), (2)")
    with pytest.raises(SyncError, match=r"green cannot take the writes yet: public\.newer is on "
                                        r"blue but not replicated.*re-run `cutover sync`"):
        switch(routed.settings, "green")
    assert routed.primary() == "blue"
    assert not read_only(routed.pair, "blue")
    with routed.pair.green() as g:
        assert g.execute("SELECT subenabled FROM pg_subscription").fetchall() == [(True,)]
        assert g.execute("SELECT to_regclass('public.newer')").fetchone() == (None,)
    # As the refusal says: the sync takes the table in, and then the switch goes ahead.
    assert logical.join_new_tables(routed.settings) == ["public.newer"]
    assert switch(routed.settings, "green").pause_ms is not None
    assert routed.primary() == "green"
    with routed.pair.green() as g, routed.pair.blue() as b:
        assert g.execute("SELECT count(*) FROM newer").fetchone() == (2,)
        assert wait_applied(g, b, 30)
    assert_same_data(routed.pair)


def test_a_transaction_holding_the_pause_aborts_the_switch_cleanly(routed: Routed) -> None:
    start_sync(routed, scale=1)
    holder = routed.connect()
    holder.autocommit = False
    holder.execute("UPDATE pgbench_branches SET bbalance = bbalance + 1 WHERE bid = 1")
    with pytest.raises(SyncError, match=r"could not pause .* within 2s"):
        switch(routed.settings, "green")
    holder.commit()
    holder.close()
    assert routed.primary() == "blue"
    assert not read_only(routed.pair, "blue")
    with routed.connect() as conn:
        conn.execute("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, 1, 7, now())")
    routed.pair.wait_caught_up()
    assert_same_data(routed.pair)


def test_sequences_continue_on_the_new_primary(routed: Routed) -> None:
    with routed.pair.blue() as b:
        b.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, note text);"
                  "CREATE TABLE ident (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v int);"
                  "INSERT INTO orders (note) SELECT 'o' FROM generate_series(1, 500);"
                  "INSERT INTO ident (v) SELECT generate_series(1, 300)")
    logical.start(routed.settings)
    routed.pair.wait_caught_up()
    switch(routed.settings, "green")
    with routed.connect() as conn:
        row = conn.execute("INSERT INTO orders (note) VALUES ('after') RETURNING id").fetchone()
        assert row == (501,)
        assert conn.execute("INSERT INTO ident (v) VALUES (0) RETURNING id").fetchone() == (301,)
    switch(routed.settings, "blue")
    with routed.connect() as conn:
        assert conn.execute("INSERT INTO orders (note) VALUES ('back') RETURNING id").fetchone() == (502,)
    routed.pair.wait_caught_up()
    assert_same_data(routed.pair)


runner = CliRunner()


class Killed(BaseException):
    """The controller dying at a step: nothing of ours catches it, so nothing is undone."""


STEPS = ["pause: done", "fence: done", "drain: done", "sequences: done", "stop and slot: done",
         "unfence new primary: done", "repoint: done", "resume: done", "verify: done",
         "subscribe back: done"]


@pytest.mark.parametrize("at", STEPS)
def test_killed_between_steps_then_rerun_ends_consistent(routed: Routed, at: str) -> None:
    start_sync(routed, scale=1)

    def die(step: str, _details: dict[str, Any]) -> None:
        if step == at:
            raise Killed(step)

    with AckedWriter(routed) as writer:
        time.sleep(0.5)
        with pytest.raises(Killed):
            switch(routed.settings, "green", record=die)
        report = switch(routed.settings, "green")  # the operator re-runs it
        time.sleep(0.5)
    assert routed.primary() == "green"
    assert report.already or report.pause_ms is not None
    if at in ("repoint: done", "resume: done", "verify: done", "subscribe back: done"):
        # Repointed, not finished: the fence snapshot died with the first run.
        assert report.verified == "after resume, live"
        assert report.tables_verified + len(report.not_compared) == 4
    else:  # undone, then switched afresh
        assert report.verified == "after resume"
    assert read_only(routed.pair, "blue")
    assert not read_only(routed.pair, "green")
    with routed.pair.green() as g:
        assert not writer.missing_on(g), "an acknowledged write is missing on the new primary"
    # Blue is current through the reverse replication: nothing lost for a way back.
    with routed.pair.green() as g, routed.pair.blue() as b:
        assert wait_applied(g, b, 30)
    assert_same_data(routed.pair)


def test_killed_before_the_comparison_the_rerun_compares_live_and_goes_back_on_a_difference(
        routed: Routed) -> None:
    """Killed after the resume, before comparing: the rerun finishes the switch, compares the
    two sides live once blue caught up, finds green's stray row and puts writes back on blue."""
    start_sync(routed, scale=1)
    with routed.pair.green() as g:
        g.execute(f"INSERT INTO pgbench_tellers (tid, bid, tbalance) VALUES ({STRAY}, 1, 0)")

    def die(step: str, _details: dict[str, Any]) -> None:
        if step == "resume: done":
            raise Killed(step)

    with AckedWriter(routed) as writer:
        time.sleep(0.5)
        with pytest.raises(Killed):
            switch(routed.settings, "green", record=die)
        assert routed.primary() == "green"
        dry = switch(routed.settings, "green", dry_run=True)  # says what it would do, does nothing
        assert dry.dry_run
        assert dry.already
        with routed.pair.blue() as b:
            assert b.execute("SELECT count(*) FROM pg_subscription").fetchone() == (0,)
        with pytest.raises(SyncError, match=r"reverted.*pgbench_tellers: Extra data \(10 rows on "
                                            r"blue, 11 on green\)"):
            switch(routed.settings, "green")
        time.sleep(0.5)
    assert routed.primary() == "blue"
    assert not read_only(routed.pair, "blue")
    with routed.pair.blue() as b:
        assert not writer.missing_on(b), "an acknowledged write is missing on blue"
        assert b.execute(f"SELECT count(*) FROM pgbench_tellers WHERE tid = {STRAY}").fetchone() == (0,)
    equal_without_the_stray_row(routed, "green")


def test_a_switch_back_that_finds_a_difference_stays_when_asked_to(routed: Routed) -> None:
    """The rollback's way back (back_on_difference=False): a difference after the resume is
    reported, and writes stay on blue instead of returning to the side that breached."""
    start_sync(routed, scale=1)
    switch(routed.settings, "green")
    with routed.pair.blue() as b:  # a row the fenced blue took that green never had
        b.execute("SET default_transaction_read_only = off")
        b.execute("ALTER SUBSCRIPTION cutover_reverse DISABLE")
        b.execute(f"INSERT INTO pgbench_tellers (tid, bid, tbalance) VALUES ({STRAY}, 1, 0)")
        b.execute("ALTER SUBSCRIPTION cutover_reverse ENABLE")
    report = switch(routed.settings, "blue", back_on_difference=False)
    assert report.difference is not None
    assert "pgbench_tellers" in report.difference
    assert routed.primary() == "blue"
    assert not read_only(routed.pair, "blue")
    equal_without_the_stray_row(routed, "blue")


def test_a_breach_with_database_revert_puts_writes_back_on_blue(
        routed: Routed, lab: Lab, hap: HAProxyBalancer, tmp_path: Path) -> None:
    """rollback.database = "revert": traffic back on blue, then writes too, nothing lost."""
    start_sync(routed, scale=1)
    lab_config = load_settings(lab.state.config_file)
    settings = routed.settings.model_copy(update={
        "traffic": lab_config.traffic, "slo": [c for c in lab_config.slo if c.source == "haproxy"],
        "rollback": lab_config.rollback.model_copy(update={"database": "revert"}),
        "state": lab_config.state.model_copy(update={"path": tmp_path / "state.db"})})
    switch(settings, "green")
    with routed.connect() as conn:  # written on green: must survive the way back
        conn.execute("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
                     "VALUES (1, 1, 1, 4242424, now())")
    with HttpLoad(lab.state.frontend_url, rate=500):
        shift(hap, 10)
        time.sleep(1)
        set_fault(lab, "green", error_ratio=0.5)
        result = watch(settings, duration=30)
    assert result.breach is not None
    assert result.rollback is not None
    assert result.revert_error is None, result.revert_error
    assert result.revert is not None
    assert routed.primary() == "blue"
    assert hap.read().green_percent == 0
    with routed.pair.blue() as b:
        assert b.execute("SELECT count(*) FROM pgbench_history WHERE delta = 4242424").fetchone() == (1,)
    routed.pair.wait_caught_up()
    assert_same_data(routed.pair)
    journal = Journal(tmp_path / "state.db")
    events = journal.events()
    journal.close()
    kinds = [e.kind for e in events]
    # The daemon's rollback, journaled as the daemon journals it: the way back's steps are
    # switch events to blue, and the revert has its own event.
    assert kinds[:2] == ["breach", "rollback"]
    assert kinds[-1] == "reverted"
    assert "resume: done" in [e.data["step"] for e in events if e.kind == "switch" and e.data["to"] == "blue"]


def test_command_endpoint_switches_through_the_users_scripts(routed: Routed, tmp_path: Path) -> None:
    """switchover.method = "command": pause, repoint and resume are the user's own argv
    commands; here psql against PgBouncer's admin console and a script rewriting its file."""
    start_sync(routed, scale=1)
    assert routed.settings.switchover is not None
    commands = user_commands(routed.lab.state.pgbouncer_admin_dsn, routed.pair.name, routed.file, tmp_path)
    settings = routed.settings.model_copy(update={"switchover": routed.settings.switchover.model_copy(
        update={"method": SwitchMethod.COMMAND, "pgbouncer": None,
                "command": CommandEndpointSettings.model_validate(commands)})})
    bench = Pgbench(routed.dsn, clients=2, seconds=6)
    bench.start()
    time.sleep(1)
    report = switch(settings, "green")
    result = bench.wait(timeout=60)
    assert report.pause_ms is not None
    assert routed.primary() == "green"
    assert result.failed == 0
    # A command endpoint cannot say where it points: the mark on green does. Run again (a
    # daemon restarted, an operator unsure), the switch is found done, not undone.
    again = switch(settings, "green")
    assert again.already
    assert routed.primary() == "green"
    with routed.connect() as conn:  # pgbench's deltas lie within ±5000: this one is ours alone
        conn.execute("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
                     "VALUES (1, 1, 1, 77777, now())")
    with routed.pair.green() as g, routed.pair.blue() as b:
        assert wait_applied(g, b, 30)
        assert b.execute("SELECT count(*) FROM pgbench_history WHERE delta = 77777").fetchone() == (1,)
    assert_same_data(routed.pair)


def test_cli_switch_dry_run_then_switch_and_back(routed: Routed, tmp_path: Path) -> None:
    start_sync(routed, scale=1)
    config = tmp_path / "cutover.toml"
    config.write_text(f"""
[blue.database]
dsn = "{routed.pair.dsn('blue')}"
[green.database]
dsn = "{routed.pair.dsn('green')}"
[switchover]
method = "pgbouncer"
fence_timeout = "2s"
[switchover.pgbouncer]
admin_dsn = "{routed.lab.state.pgbouncer_admin_dsn}"
databases = ["{routed.pair.name}"]
databases_file = "{routed.file}"
[state]
path = "{tmp_path / 'state.db'}"
""")
    args = ["--config", str(config)]
    with routed.pair.blue() as b:  # a view that is not ready on green: a dry run only says so
        b.execute("CREATE MATERIALIZED VIEW branch_totals AS "
                  "SELECT bid, sum(abalance) FROM pgbench_accounts GROUP BY bid")
    with routed.pair.green() as g:
        g.execute("CREATE MATERIALIZED VIEW branch_totals AS "
                  "SELECT bid, sum(abalance) FROM pgbench_accounts GROUP BY bid WITH NO DATA")
    before = [catalog_snapshot(routed.pair.dsn(side)) for side in ("blue", "green")]
    assert runner.invoke(app, ["config", "check", *args]).exit_code == 0
    dry = runner.invoke(app, ["switch", "--dry-run", "--json", *args])
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout)["dry_run"] is True
    assert "not ready for traffic" in dry.stderr
    assert routed.primary() == "blue"
    # Nothing changed on either server, and nothing was written (not even the journal).
    assert [catalog_snapshot(routed.pair.dsn(side)) for side in ("blue", "green")] == before
    assert not (tmp_path / "state.db").exists()
    done = runner.invoke(app, ["switch", "--to", "green", "--json", *args])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["pause_ms"] > 0
    assert routed.primary() == "green"
    again = runner.invoke(app, ["switch", "--to", "green", "--json", *args])
    assert json.loads(again.stdout)["already"] is True
    back = runner.invoke(app, ["switch", "--to", "blue", *args])
    assert back.exit_code == 0, back.output
    assert "switched writes to blue" in back.output
    assert routed.primary() == "blue"
    assert runner.invoke(app, ["switch", "--to", "purple", *args]).exit_code == 2
    journal = Journal(tmp_path / "state.db")
    steps = [e.data["step"] for e in journal.events("switch")]
    journal.close()
    assert "fence: start" in steps
    assert "repoint: done" in steps
    routed.pair.wait_caught_up()
    assert_same_data(routed.pair)


def test_diff_mode_switches_by_a_final_diff_there_and_back(routed: Routed) -> None:
    """sync.mode = diff: no replication at all. Under the fence a full diff makes the new
    primary equal to the old; the way back is the same diff reversed: nothing lost."""
    pgbench_init(routed.pair.dsn("blue"), 1)
    with routed.pair.blue() as b:  # the diff sync finds rows by key
        b.execute("ALTER TABLE pgbench_history ADD COLUMN hid bigserial PRIMARY KEY")
    logical.start(routed.settings)  # green's schema and rows, the fast way; then no replication
    logical.drop(routed.settings)
    settings = routed.settings.model_copy(update={
        "sync": routed.settings.sync.model_copy(update={"mode": "diff"})})
    with AckedWriter(routed) as writer:
        time.sleep(0.5)
        there = switch(settings, "green")
        assert routed.primary() == "green"
        assert read_only(routed.pair, "blue")
        time.sleep(0.5)
        back = switch(settings, "blue")
        assert routed.primary() == "blue"
        time.sleep(0.3)
    assert there.pause_ms is not None
    assert back.pause_ms is not None
    assert "drain" in there.steps
    assert there.verified is None, "the final diff compared every row: no separate verify"
    with routed.pair.blue() as b:
        assert not writer.missing_on(b), "a write acknowledged on green did not come back"
    diff_cycle(settings)  # green catches up with what blue took after the way back
    assert_same_data(routed.pair)


def test_verify_after_the_switch_rechecks_against_the_reverse_replication(routed: Routed) -> None:
    """Once green is the primary, blue follows it: a verify under green's writes must wait for
    blue to catch up with green before it calls a range different, as it does the other way."""
    start_sync(routed)
    switch(routed.settings, "green")
    settings = routed.settings.model_copy(update={"sync": routed.settings.sync.model_copy(
        update={"chunk_rows": 20000})})
    verify_while_writing(settings, routed.dsn)  # through PgBouncer: onto green
    with routed.pair.green() as g, routed.pair.blue() as b:
        assert wait_applied(g, b, 30)
    after = verify(settings)
    assert {t.verdict for t in after.tables} == {Verdict.COMPLETE}, after.as_dict()
    assert_same_data(routed.pair)


def test_green_expanded_takes_writes_in_its_new_column_and_the_way_back_loses_none(
        routed: Routed) -> None:
    """Expand: green has a column blue lacks (and a table of its own). After the switch the
    application writes on green, new column included; the reverse publication carries only
    blue's columns, so blue's apply worker keeps going, and after the way back every row is
    on blue as green had it."""
    with routed.pair.blue() as b:
        b.execute("CREATE TABLE items (id int PRIMARY KEY, v text);"
                  "INSERT INTO items SELECT i, 'v' || i FROM generate_series(1, 500) i")
    with routed.pair.green() as g:  # the v7 schema: a nullable column, a defaulted one, a new table
        g.execute("CREATE TABLE items (id int PRIMARY KEY, v text, note text, "
                  "flag boolean NOT NULL DEFAULT true);"
                  "CREATE TABLE green_only (id int PRIMARY KEY)")
    logical.start(routed.settings)
    routed.pair.wait_caught_up()
    assert switch(routed.settings, "green").pause_ms is not None
    with routed.connect() as conn:  # through PgBouncer: now green
        conn.execute("INSERT INTO items (id, v, note, flag) SELECT i, 'new' || i, 'n', false "
                     "FROM generate_series(501, 600) i")
        conn.execute("UPDATE items SET v = 'changed', note = 'seen' WHERE id <= 50")
        conn.execute("DELETE FROM items WHERE id BETWEEN 100 AND 109")
        conn.execute("INSERT INTO green_only VALUES (1)")
    with routed.pair.green() as g, routed.pair.blue() as b:
        assert wait_applied(g, b, 30), "blue stopped following green"
        sub = b.execute("SELECT count(*) FROM pg_stat_subscription_stats WHERE apply_error_count > 0"
                        ).fetchone()
        assert sub == (0,), "blue's apply worker failed on green's columns"
    switch(routed.settings, "blue")
    assert routed.primary() == "blue"
    query = "SELECT md5(string_agg(format('%s|%s', id, v), ',' ORDER BY id)), count(*) FROM items"
    with routed.pair.blue() as b, routed.pair.green() as g:
        assert b.execute(query).fetchone() == g.execute(query).fetchone()
        assert b.execute("SELECT count(*) FROM items").fetchone() == (590,)
        assert b.execute("SELECT v FROM items WHERE id = 7").fetchone() == ("changed",)


def test_preflight_refuses_what_would_stop_either_direction(pair: DbPair, tmp_path: Path) -> None:
    """A green-only NOT NULL column without a default (blue's rows arrive without it) and a
    narrowed type (blue's values may not fit): named with the fix; sync refuses, nothing changed."""
    with pair.blue() as b:
        b.execute("CREATE TABLE r (id int PRIMARY KEY, code varchar(40))")
    with pair.green() as g:
        g.execute("CREATE TABLE r (id int PRIMARY KEY, code varchar(8), owner text NOT NULL)")
    schema = next(c for c in run_preflight(pair.settings()).checks if c.name == "schema")
    assert schema.status is Status.FAIL
    assert "r.owner is NOT NULL without a default" in schema.detail
    assert "r.code is character varying(8) on green but character varying(40)" in schema.detail
    assert "ALTER TABLE public.r ALTER COLUMN owner SET DEFAULT" in schema.fix
    result = runner.invoke(app, ["sync", "--config", str(pair.config_file(tmp_path))])
    assert result.exit_code == 1
    assert "owner" in result.output
    with pair.blue() as b:
        assert b.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'cutover'"
                         ).fetchone() == (0,)


def test_the_repoint_keeps_the_database_lines_options(routed: Routed) -> None:
    """Only host, port and dbname change: pool_size, user, pool_mode and client_encoding stay,
    and PgBouncer runs the entry with them on the new primary."""
    name = routed.pair.name
    lines = routed.file.read_text().splitlines(keepends=True)
    ours = [i for i, line in enumerate(lines) if line.partition("=")[0].strip() == name]
    assert len(ours) == 1
    lines[ours[0]] = lines[ours[0]].rstrip("\n") + (" pool_size=7 user=postgres pool_mode=transaction "
                                                    "client_encoding=UTF8\n")
    lines.insert(ours[0], "; the bank's pool, sized for its app servers\n")
    routed.file.write_text("".join(lines))
    routed.endpoint._run("RELOAD")
    start_sync(routed, scale=1)
    switch(routed.settings, "green")
    text = routed.file.read_text()
    assert "; the bank's pool, sized for its app servers\n" in text
    green_port = routed.lab.state.port("green_pg")
    assert (f"{name} = host=127.0.0.1 port={green_port} dbname={name} pool_size=7 user=postgres "
            "pool_mode=transaction client_encoding=UTF8\n") in text
    with routed.endpoint._admin() as admin:
        cur = admin.execute("SHOW DATABASES")
        columns = [d.name for d in cur.description or ()]
        row = next(dict(zip(columns, r, strict=True)) for r in cur.fetchall() if r[0] == name)
    assert (row["port"], row["pool_size"], row["pool_mode"]) == (green_port, 7, "transaction")
    assert routed.primary() == "green"
    switch(routed.settings, "blue")
    assert "pool_size=7 user=postgres pool_mode=transaction client_encoding=UTF8" in routed.file.read_text()
    assert routed.primary() == "blue"


def test_a_failure_of_an_unexpected_kind_in_the_pause_is_undone(routed: Routed) -> None:
    """The databases file's directory unusable (here its temporary file is a directory, an
    IsADirectoryError inside the pause, as a read-only directory or a full disk would give):
    the switch undoes itself, writes flow on blue at once, and the error names what failed."""
    start_sync(routed, scale=1)
    blocker = routed.file.with_name(f".{routed.file.name}.cutover")
    blocker.mkdir()
    try:
        with pytest.raises(SyncError, match=r"failed and was undone .*IsADirectoryError"):
            switch(routed.settings, "green")
    finally:
        blocker.rmdir()
    assert routed.primary() == "blue"
    assert not read_only(routed.pair, "blue")
    with routed.connect() as conn:  # not held: PgBouncer is resumed
        conn.execute("SET statement_timeout = '2s'")
        conn.execute("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, 1, 8, now())")
    routed.pair.wait_caught_up()
    assert_same_data(routed.pair)
    assert switch(routed.settings, "green").pause_ms is not None  # the next switch goes through
    assert routed.primary() == "green"


def test_an_undone_way_back_leaves_only_green_writable(routed: Routed) -> None:
    """The way back fails after blue was unfenced for it (here at the repoint): undone, blue is
    fenced again, writes stay on green, and blue keeps following it."""
    start_sync(routed, scale=1)
    switch(routed.settings, "green")

    def fail_at_repoint(step: str, _: dict[str, Any]) -> None:
        if step == "repoint: start":
            raise LookupError("injected")
    with pytest.raises(SyncError, match=r"failed and was undone .*LookupError"):
        switch(routed.settings, "blue", record=fail_at_repoint)
    assert routed.primary() == "green"
    assert read_only(routed.pair, "blue")
    assert not read_only(routed.pair, "green")
    with routed.connect() as conn:
        conn.execute("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, 1, 5, now())")
    with routed.pair.green() as g, routed.pair.blue() as b:
        assert wait_applied(g, b, 30)
    assert_same_data(routed.pair)
    assert switch(routed.settings, "blue").pause_ms is not None  # the next one goes through
    assert routed.primary() == "blue"


def test_a_green_only_column_the_way_back_cannot_leave_out_refuses_the_switch(routed: Routed) -> None:
    """REPLICA IDENTITY FULL on green with a column blue lacks: a column list cannot leave it
    out, so blue's apply would stop at green's first write. Refused before the pause, named
    with the fix; the forward replication keeps going."""
    with routed.pair.blue() as b:
        b.execute("CREATE TABLE notes (id int PRIMARY KEY, v text);"
                  "INSERT INTO notes SELECT i, 'v' FROM generate_series(1, 100) i")
    with routed.pair.green() as g:
        g.execute("CREATE TABLE notes (id int PRIMARY KEY, v text, extra text);"
                  "ALTER TABLE notes REPLICA IDENTITY FULL")
    logical.start(routed.settings)
    routed.pair.wait_caught_up()
    with pytest.raises(SyncError, match=r"the way back could not replicate public.notes \(only green has "
                                        r"extra\).*primary key"):
        switch(routed.settings, "green")
    assert routed.primary() == "blue"
    with routed.pair.blue() as b:
        b.execute("UPDATE notes SET v = 'after' WHERE id <= 10")
    routed.pair.wait_caught_up()
    with routed.pair.green() as g:
        assert g.execute("SELECT count(*) FROM notes WHERE v = 'after'").fetchone() == (10,)


@pytest.mark.parametrize("verify", ["checksums", "counts"])
def test_a_controller_killed_inside_the_pause_does_not_hold_the_writers(
        routed: Routed, tmp_path: Path, verify: str) -> None:
    """`cutover switch` SIGKILLed while PgBouncer holds the writers: its fence guardian sees it
    die and lets writes flow (the old primary unfenced when PgBouncer still serves it) within
    fence_timeout + 1 s; a write client loses nothing, and the next switch reconciles."""
    start_sync(routed, scale=5)
    config = tmp_path / "cutover.toml"
    config.write_text(config_toml({
        **routed.settings.model_dump(mode="json"),
        "switchover": {**routed.settings.model_dump(mode="json")["switchover"],
                       "verify": verify, "verify_at": "in_pause"},
        "state": {"path": str(tmp_path / "state.db")}}))
    fence_timeout = 2.0
    with AckedWriter(routed) as writer:
        time.sleep(0.3)
        proc = subprocess.Popen([sys.executable, "-m", "controller", "switch", "--config", str(config)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with routed.endpoint._admin() as admin:
            while not _paused(admin, routed.pair.name):
                assert proc.poll() is None, "the switch ended before it paused"
                time.sleep(0.002)
        os.kill(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        proc.wait(10)
        written = threading.Event()

        def write() -> None:
            with routed.connect() as conn:  # blocks while the writers are held
                conn.execute("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
                             "VALUES (1, 1, 1, -1, now())")
            written.set()
        threading.Thread(target=write, daemon=True).start()
        assert written.wait(fence_timeout + 10), "writers still held 12 s after the controller died"
        stall = time.monotonic() - killed
        time.sleep(0.3)
    assert stall <= fence_timeout + 1.0, f"writers held {stall:.2f}s after the controller died"
    switch(routed.settings, "green")  # reconciles what the killed one left, then switches
    with routed.pair.green() as g:
        assert not writer.missing_on(g), "an acknowledged write is missing"
    with routed.pair.green() as g, routed.pair.blue() as b:
        assert wait_applied(g, b, 30)
    assert_same_data(routed.pair)


def _paused(admin: psycopg.Connection[Any], name: str) -> bool:
    cur = admin.execute("SHOW DATABASES")
    names = [d.name for d in cur.description or ()]
    return any(dict(zip(names, r, strict=True)).get("paused") == 1 for r in cur.fetchall() if r[0] == name)
