"""Logical sync against the lab's real PostgreSQL: preflight, a consistent parallel copy of
awkward tables, streaming, re-runs after a killed copy, writes during the copy, cleanup."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import generate_latest
from typer.testing import CliRunner

from config import load_settings
from controller.cli import app
from controller.daemon.metrics import SyncMetrics
from controller.daemon.observe import SyncProbe
from controller.lab.load import Pgbench, pgbench_init
from sync import logical
from sync.catalog import table_by_name
from sync.checksums import row_hash
from sync.errors import SyncError
from sync.foreign_keys import validate_pending
from sync.preflight import Status, run_preflight
from sync.status import read_status
from sync.verify import Verdict, verify
from tests.syncfixtures import DbPair, assert_same_data, verify_while_writing

runner = CliRunner()

ZOO = """
CREATE TABLE composite (region text, id int, amount numeric(12,2), PRIMARY KEY (region, id));
CREATE TABLE serials (id serial PRIMARY KEY, note text);
CREATE TABLE idents (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v int);
CREATE TABLE kinds (id int PRIMARY KEY, j jsonb, b bytea, a int[], t text, f float8,
                    ts timestamptz, u uuid);
CREATE TABLE events (id bigint, at date, payload text, PRIMARY KEY (id, at))
    PARTITION BY RANGE (at);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE nokey_fixed (a int, b text);
ALTER TABLE nokey_fixed REPLICA IDENTITY FULL;
CREATE SCHEMA "My Schema";
CREATE TABLE "My Schema"."Table ""Quoted"" Name" ("Odd Col" int PRIMARY KEY, "UPPER" text);
CREATE SEQUENCE free_standing START 100;

INSERT INTO composite SELECT r, i, i * 1.5 FROM unnest(ARRAY['eu', 'us', 'ap']) r,
    generate_series(1, 2000) i;
INSERT INTO serials (note) SELECT 'note ' || i FROM generate_series(1, 3000) i;
INSERT INTO idents (v) SELECT i FROM generate_series(1, 3000) i;
INSERT INTO kinds SELECT i,
    CASE WHEN i % 7 = 0 THEN NULL ELSE jsonb_build_object('i', i, 'tags', jsonb_build_array('a', i)) END,
    CASE WHEN i % 5 = 0 THEN NULL ELSE decode(md5(i::text), 'hex') END,
    ARRAY[i, NULL, i + 1],
    CASE WHEN i % 3 = 0 THEN 'Grüße, 東京, emoji 🚀 ' || i ELSE NULL END,
    i / 7.0, '2026-01-01 00:00:00+00'::timestamptz + i * interval '1 minute',
    md5(i::text)::uuid
    FROM generate_series(1, 5000) i;
INSERT INTO events SELECT i, DATE '2025-06-01' + (i % 400), 'e' || i FROM generate_series(1, 4000) i;
INSERT INTO nokey_fixed SELECT i % 50, 'dup' FROM generate_series(1, 500) i;
INSERT INTO "My Schema"."Table ""Quoted"" Name" SELECT i, upper(md5(i::text)) FROM generate_series(1, 500) i;
SELECT nextval('free_standing'), nextval('free_standing');
ANALYZE;
"""

CHANGES = """
INSERT INTO composite VALUES ('mars', 1, 9.99);
UPDATE composite SET amount = -1 WHERE id % 100 = 0;
DELETE FROM composite WHERE region = 'ap' AND id < 50;
INSERT INTO serials (note) VALUES ('after copy');
INSERT INTO idents (v) VALUES (-1);
UPDATE kinds SET j = '{"changed": true}', b = NULL, t = 'ünïcödé' WHERE id % 10 = 1;
DELETE FROM kinds WHERE id > 4990;
INSERT INTO events VALUES (99999, '2026-03-01', 'new partition row');
UPDATE events SET payload = 'moved' WHERE id = 5;
UPDATE nokey_fixed SET b = 'changed' WHERE a = 3;
DELETE FROM nokey_fixed WHERE a = 4;
UPDATE "My Schema"."Table ""Quoted"" Name" SET "UPPER" = 'x' WHERE "Odd Col" < 10;
"""


class Terminator(threading.Thread):
    """Terminates the first other backend matching `where` (SQL over pg_stat_activity) as soon
    as one shows up: an interruption at a chosen moment of the sync."""

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]], where: str) -> None:
        super().__init__()
        self.connect, self.where, self.killed = connect, where, threading.Event()
        self.start()

    def run(self) -> None:
        with self.connect() as conn:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not self.killed.is_set():
                row = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                   f"WHERE pid <> pg_backend_pid() AND {self.where} LIMIT 1").fetchone()
                if row and row[0]:
                    self.killed.set()
                time.sleep(0.002)

    def done(self) -> bool:
        """Whether it terminated one (waits for the thread)."""
        self.join()
        return self.killed.is_set()


@pytest.mark.check
def test_preflight_fails_on_a_table_without_key_and_names_the_fix(pair: DbPair) -> None:
    with pair.blue() as b:
        b.execute("CREATE TABLE ok (id int PRIMARY KEY); CREATE TABLE \"No Key\" (a int)")
    report = run_preflight(pair.settings())
    keys = next(c for c in report.checks if c.name == "primary_keys")
    assert keys.status is Status.FAIL
    assert '"No Key"' in keys.detail
    assert 'ALTER TABLE public."No Key" REPLICA IDENTITY FULL' in keys.fix
    assert not report.ok
    with pair.blue() as b:
        b.execute('ALTER TABLE "No Key" REPLICA IDENTITY FULL')
    assert run_preflight(pair.settings()).ok


def test_sync_refuses_to_start_on_a_failed_check_and_changes_nothing(pair: DbPair,
                                                                    tmp_path: Path) -> None:
    with pair.blue() as b:
        # A hostile name: brackets that rich markup would take for styles.
        b.execute('CREATE TABLE "[/x] [bold]nokey" (a int)')
    result = runner.invoke(app, ["sync", "--config", str(pair.config_file(tmp_path))])
    assert result.exit_code == 1
    assert 'ALTER TABLE public."[/x] [bold]nokey" REPLICA IDENTITY FULL' in result.output
    with pair.blue() as b:
        assert b.execute("SELECT count(*) FROM pg_replication_slots").fetchone() == (0,)
        assert b.execute("SELECT count(*) FROM pg_publication").fetchone() == (0,)
        assert b.execute("SELECT to_regnamespace('cutover')").fetchone() == (None,)
    with pair.green() as g:
        assert g.execute("SELECT count(*) FROM pg_class WHERE relname LIKE '%nokey'").fetchone() == (0,)


@pytest.mark.check
def test_copies_awkward_tables_then_streams_changes(pair: DbPair) -> None:
    with pair.blue() as b:
        b.execute(ZOO)
    assert run_preflight(pair.settings(schemas=["public", "My Schema"])).ok
    settings = pair.settings(schemas=["public", "My Schema"], split_rows=1000)
    result = logical.start(settings)
    assert result.tables == 7
    assert result.rows_copied == 6000 + 3000 + 3000 + 5000 + 4000 + 500 + 500
    assert_same_data(pair)
    with pair.green() as g:
        indexes = g.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'kinds'").fetchone()
        assert indexes == (1,), "primary keys are built after the copy"
    with pair.blue() as b:
        b.execute(CHANGES)
    pair.wait_caught_up()
    assert_same_data(pair)
    report = verify(settings)
    assert {t.verdict for t in report.tables} == {Verdict.COMPLETE}
    assert len(report.tables) == 7


def test_tables_copied_whole_arrive_frozen_and_all_visible(pair: DbPair) -> None:
    """COPY FREEZE for a table copied whole: green's index-only scans need no heap visit from
    the start. A table cut into page ranges shares its transaction with no one, so it cannot."""
    with pair.blue() as b:
        b.execute(ZOO)
    logical.start(pair.settings(schemas=["public", "My Schema"], split_rows=1000, copy_jobs=2))
    assert_same_data(pair)
    with pair.green() as g:
        def pages(table: str) -> tuple[int, int]:
            row = g.execute("SELECT relpages, relallvisible FROM pg_class WHERE oid = %s::regclass",
                            [table]).fetchone()
            assert row is not None
            return int(row[0]), int(row[1])
        whole = pages('"My Schema"."Table ""Quoted"" Name"')
        assert whole[0] > 0
        assert whole[1] == whole[0], whole
        split = pages("composite")
        assert split[0] > 1
        vacuumed = g.execute("SELECT coalesce(last_autovacuum, last_vacuum) IS NOT NULL "
                             "FROM pg_stat_user_tables WHERE relid = 'composite'::regclass").fetchone()
        if vacuumed == (False,):  # autovacuum may have set it all-visible since, legitimately
            assert split[1] == 0, split
        g.execute("SET enable_seqscan = off")
        plan = "\n".join(str(r[0]) for r in g.execute(
            'EXPLAIN (ANALYZE, COSTS OFF) SELECT "Odd Col" FROM "My Schema"."Table ""Quoted"" Name" '
            'WHERE "Odd Col" < 100').fetchall())
        assert "Index Only Scan" in plan, plan
        assert "Heap Fetches: 0" in plan, plan


def test_sequences_are_copied_so_new_rows_never_collide(pair: DbPair, tmp_path: Path) -> None:
    with pair.blue() as b:
        b.execute(ZOO)
    config = pair.config_file(tmp_path)
    assert runner.invoke(app, ["sync", "--config", str(config)]).exit_code == 0
    result = runner.invoke(app, ["sync", "--sequences", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["copied"] == 3
    with pair.green() as g:
        # Green takes writes of its own now: the ids continue after blue's.
        g.execute("ALTER SUBSCRIPTION cutover DISABLE")
        row = g.execute("INSERT INTO serials (note) VALUES ('on green') RETURNING id").fetchone()
        assert row == (3001,)
        row = g.execute("INSERT INTO idents (v) VALUES (0) RETURNING id").fetchone()
        assert row == (3001,)
        assert g.execute("SELECT nextval('free_standing')").fetchone() == (102,)


def test_rerun_after_a_killed_copy_worker_converges(pair: DbPair) -> None:
    with pair.blue() as b:
        b.execute("CREATE TABLE big (id bigint PRIMARY KEY, pad text)")
        b.execute("INSERT INTO big SELECT i, repeat(md5(i::text), 4) FROM generate_series(1, 400000) i")
        b.execute("ANALYZE big")
    settings = pair.settings(split_rows=20000, copy_jobs=2)
    killer = Terminator(pair.blue, "application_name LIKE 'cutover-copy-%' AND query LIKE 'COPY%'")
    with pytest.raises(SyncError, match="re-run"):
        logical.start(settings)
    assert killer.done()
    with pair.green() as g:
        partial = g.execute("SELECT count(*) FROM big").fetchone()
        assert partial is not None
        assert partial[0] < 400000
    result = logical.start(settings)
    assert result.resumed_from == "copying"
    assert result.rows_copied == 400000
    assert_same_data(pair)
    with pair.blue() as b:
        assert b.execute("SELECT count(*) FROM pg_replication_slots").fetchone() == (1,)


def test_rerun_after_an_interrupted_index_build_resumes_without_recopying(pair: DbPair) -> None:
    with pair.blue() as b:
        b.execute("CREATE TABLE big (id bigint PRIMARY KEY, a text, b text)")
        b.execute("CREATE INDEX big_a ON big (a); CREATE INDEX big_b ON big (b)")
        b.execute("INSERT INTO big SELECT i, md5(i::text), md5((-i)::text) "
                  "FROM generate_series(1, 300000) i")
    settings = pair.settings(copy_jobs=1)
    killer = Terminator(pair.green, "query ~ '^(CREATE INDEX|ALTER TABLE ONLY .* ADD CONSTRAINT)'")
    with pytest.raises(SyncError, match="post-data"):
        logical.start(settings)
    assert killer.done()
    with pair.green() as g:
        assert g.execute("SELECT phase FROM cutover.sync_state").fetchone() == ("indexing",)
    with pair.blue() as b:
        b.execute("INSERT INTO big VALUES (0, 'written', 'between the runs')")
    result = logical.start(settings)
    assert result.resumed_from == "indexing"
    assert result.rows_copied == 0  # the copy was not redone
    pair.wait_caught_up()
    assert_same_data(pair)
    with pair.green() as g:
        indexes = g.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'big'").fetchone()
        assert indexes == (3,)


def test_foreign_keys_come_not_valid_and_are_validated_once_green_streams(pair: DbPair,
                                                                          tmp_path: Path) -> None:
    with pair.blue() as b:
        b.execute("CREATE TABLE parent (id int PRIMARY KEY);"
                  "CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent);"
                  "CREATE TABLE loose (id int PRIMARY KEY, parent_id int);"
                  "INSERT INTO parent SELECT generate_series(1, 100);"
                  "INSERT INTO child SELECT i, i % 100 + 1 FROM generate_series(1, 5000) i;"
                  "INSERT INTO loose VALUES (1, 999);"  # violates the key blue holds NOT VALID
                  "ALTER TABLE loose ADD CONSTRAINT loose_fk FOREIGN KEY (parent_id) "
                  "REFERENCES parent NOT VALID")
    settings = pair.settings()
    logical.start(settings)
    validated = "SELECT conname, convalidated FROM pg_constraint WHERE contype = 'f' ORDER BY 1"
    with pair.green() as g:
        assert g.execute(validated).fetchall() == [("child_parent_id_fkey", False), ("loose_fk", False)]
    assert validate_pending(settings) == 1
    assert validate_pending(settings) == 0
    with pair.green() as g:
        assert g.execute(validated).fetchall() == [("child_parent_id_fkey", True), ("loose_fk", False)]
    pair.wait_caught_up()
    assert_same_data(pair)
    # Through the CLI: `cutover sync` validates what is pending after it starts streaming.
    with pair.green() as g:
        g.execute("ALTER TABLE child DROP CONSTRAINT child_parent_id_fkey")
        g.execute("ALTER TABLE child ADD CONSTRAINT child_parent_id_fkey FOREIGN KEY (parent_id) "
                  "REFERENCES parent NOT VALID")
    result = runner.invoke(app, ["sync", "--config", str(pair.config_file(tmp_path))])
    assert result.exit_code == 0, result.output
    assert "validating foreign key child_parent_id_fkey" in result.output
    with pair.green() as g:
        assert g.execute(validated).fetchall() == [("child_parent_id_fkey", True), ("loose_fk", False)]


def test_writes_during_the_copy_all_arrive(pair: DbPair) -> None:
    pgbench_init(pair.dsn("blue"), scale=3)
    with pair.blue() as b:
        b.execute("ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
    bench = Pgbench(pair.dsn("blue"), clients=4, seconds=6)
    bench.start()
    time.sleep(1)
    logical.start(pair.settings(split_rows=50000))
    result = bench.wait(timeout=60)
    assert result.transactions > 100
    assert result.failed == 0
    pair.wait_caught_up()
    assert_same_data(pair)
    with pair.green() as g:
        assert g.execute("SELECT count(*) FROM pgbench_history").fetchone() == (result.transactions,)


def test_drop_removes_every_object_even_after_an_interrupted_copy(pair: DbPair,
                                                                  tmp_path: Path) -> None:
    with pair.blue() as b:
        b.execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 10)")
    config = pair.config_file(tmp_path)
    assert runner.invoke(app, ["sync", "--once", "--config", str(config)]).exit_code == 0
    with pair.green() as g:  # as if a crash left the marker mid-copy
        g.execute("UPDATE cutover.sync_state SET phase = 'copying'")
    result = runner.invoke(app, ["sync", "--drop", "--config", str(config)])
    assert result.exit_code == 0, result.output
    with pair.blue() as b:
        assert b.execute("SELECT count(*) FROM pg_replication_slots").fetchone() == (0,)
        assert b.execute("SELECT count(*) FROM pg_publication").fetchone() == (0,)
        assert b.execute("SELECT to_regnamespace('cutover')").fetchone() == (None,)
    with pair.green() as g:
        assert g.execute("SELECT count(*) FROM pg_subscription").fetchone() == (0,)
        assert g.execute("SELECT to_regnamespace('cutover')").fetchone() == (None,)
    assert runner.invoke(app, ["sync", "--drop", "--config", str(config)]).exit_code == 0


def test_verify_names_data_loss_extra_data_and_differing_ranges(pair: DbPair,
                                                                 tmp_path: Path) -> None:
    with pair.blue() as b:
        b.execute("CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE b (id int PRIMARY KEY);"
                  "CREATE TABLE c (k text PRIMARY KEY, v int);"
                  "INSERT INTO a SELECT i, 'v' FROM generate_series(1, 5000) i;"
                  "INSERT INTO b SELECT generate_series(1, 100);"
                  "INSERT INTO c SELECT 'key' || i, i FROM generate_series(1, 300) i")
    config = pair.config_file(tmp_path, "chunk_rows = 1000\n")
    assert runner.invoke(app, ["sync", "--config", str(config)]).exit_code == 0
    clean = runner.invoke(app, ["verify", "--config", str(config), "--json"])
    assert clean.exit_code == 0, clean.output
    assert {t["status"] for t in json.loads(clean.stdout)["tables"]} == {"Complete"}
    with pair.green() as g:
        g.execute("ALTER SUBSCRIPTION cutover DISABLE")
        g.execute("DELETE FROM a WHERE id = 4321; INSERT INTO b VALUES (1000);"
                  "UPDATE c SET v = -1 WHERE k = 'key7'")
    result = runner.invoke(app, ["verify", "--config", str(config), "--json"])
    assert result.exit_code == 1
    by_table = {t["table"]: t for t in json.loads(result.stdout)["tables"]}
    assert by_table["public.a"]["status"] == "Data loss"
    # An open end is shown as the highest key either side has, so the range names its rows.
    assert by_table["public.a"]["differing_ranges"] == ["id in [4001, 5000]"]
    assert by_table["public.b"]["status"] == "Extra data"
    assert by_table["public.b"]["differing_ranges"] == ["id in [1, 1000]"]
    assert by_table["public.c"]["status"] == "Differs"
    assert len(by_table["public.c"]["differing_ranges"]) == 1


def test_verify_hashes_values_and_falls_back_to_text_for_types_without_hash(pair: DbPair,
                                                                           tmp_path: Path) -> None:
    with pair.blue() as b:
        b.execute("CREATE TABLE w (id int PRIMARY KEY, j json, p point, n numeric, f float8);"
                  "INSERT INTO w SELECT i, json_build_object('i', i), point(i, -i), i / 3.0, "
                  "CASE WHEN i = 700 THEN 0 ELSE i END "
                  "FROM generate_series(1, 2000) i")
    config = pair.config_file(tmp_path, "chunk_rows = 500\n")
    assert runner.invoke(app, ["sync", "--config", str(config)]).exit_code == 0
    with pair.blue() as b, pair.green() as g:
        table = table_by_name(b, "public", "w")
        assert table is not None
        expr = row_hash(b, g, table, table, table.columns).as_string(b)
    assert expr == ('hash_record_extended(ROW("id", "j"::text, "p"::text, "n", float8send(CASE WHEN '
                    '"f" = \'NaN\' THEN \'NaN\'::float8 ELSE "f" END)), 0)')
    assert json.loads(runner.invoke(app, ["verify", "--config", str(config), "--json"]).stdout)["ok"]
    with pair.green() as g:
        g.execute("ALTER SUBSCRIPTION cutover DISABLE")
        g.execute("""UPDATE w SET j = '{"i": 5}' WHERE id = 5""")  # same value, other text
        g.execute("UPDATE w SET p = point(0, 0) WHERE id = 1500")
        g.execute("UPDATE w SET f = NULL WHERE id = 700")  # hashfloat8(0) is what NULL adds
    result = runner.invoke(app, ["verify", "--config", str(config), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)["tables"][0]
    assert report["status"] == "Differs"
    assert len(report["differing_ranges"]) == 3


def test_status_shows_heartbeat_lag_and_schema_drift(pair: DbPair, tmp_path: Path) -> None:
    with pair.blue() as b:
        b.execute("CREATE TABLE t (id int PRIMARY KEY)")
    config = pair.config_file(tmp_path)
    assert runner.invoke(app, ["sync", "--config", str(config)]).exit_code == 0
    result = runner.invoke(app, ["sync", "--once", "--config", str(config), "--json"])
    status = json.loads(result.stdout)
    assert status["streaming"] is True
    assert status["heartbeat_lag_seconds"] is not None
    assert 0 <= status["heartbeat_lag_seconds"] < 5
    assert status["wal_status"] == "reserved"
    assert status["drift"] == []
    with pair.blue() as b:
        b.execute("ALTER TABLE t ADD COLUMN added_on_blue text; CREATE TABLE newer (id int PRIMARY KEY)")
    status = json.loads(runner.invoke(app, ["sync", "--once", "--config", str(config),
                                            "--json"]).stdout)
    assert any("added_on_blue" in d for d in status["blocking_drift"])
    # The new table joined the sync on that run (see the test below); the column cannot.
    assert not any("newer" in d for d in status["drift"])
    with pair.blue() as b:
        b.execute("ALTER TABLE t ALTER COLUMN id TYPE bigint")
    status = json.loads(runner.invoke(app, ["sync", "--once", "--config", str(config),
                                            "--json"]).stdout)
    assert "public.t.id is bigint on blue but integer on green; alter it on green the same " \
        "way, or values may fail to apply" in status["drift"]


def test_an_apply_that_keeps_failing_is_broken_never_streaming(pair: DbPair, tmp_path: Path) -> None:
    """Green's table lost its key: every UPDATE fails to apply, the worker comes back every few
    seconds to fail again. That is a failure in `sync --once` (exit 1, the cause named), on
    /metrics and in the daemon's hold reason, until the cause is fixed."""
    with pair.blue() as b:
        b.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance int);"
                  "INSERT INTO accounts SELECT i, 0 FROM generate_series(1, 100) i")
    config = pair.config_file(tmp_path)
    assert runner.invoke(app, ["sync", "--config", str(config)]).exit_code == 0
    with pair.green() as g:
        g.execute("ALTER TABLE accounts DROP CONSTRAINT accounts_pkey")
    with pair.blue() as b:
        b.execute("UPDATE accounts SET balance = 1 WHERE id <= 10")
    once = runner.invoke(app, ["sync", "--once", "--json", "--config", str(config)])
    assert once.exit_code == 1, once.output
    status = json.loads(once.stdout)
    assert status["streaming"] is False
    assert "public.accounts has no primary key or replica identity index on green" in status["broken"]
    assert "replication is broken" in once.stderr
    probe = SyncProbe(load_settings(config))
    metrics = SyncMetrics()
    try:
        deadline = time.monotonic() + 30
        while (seen := probe.read()) is None or seen.broken is None:
            assert time.monotonic() < deadline, "the daemon's probe never saw the failures"
            time.sleep(0.5)
        metrics.export(seen.as_dict())
        assert probe.held().startswith("replication is broken: green's apply worker failed")
        assert not probe.ready()
    finally:
        probe.close()
    exposed = generate_latest(metrics.registry).decode()
    assert "cutover_sync_broken 1.0" in exposed
    assert "cutover_sync_streaming 0.0" in exposed
    with pair.green() as g:  # the cause fixed: the stuck transaction applies, streaming again
        g.execute("ALTER TABLE accounts ADD PRIMARY KEY (id)")
    deadline = time.monotonic() + 60
    while (again := runner.invoke(app, ["sync", "--once", "--json", "--config", str(config)])).exit_code:
        assert time.monotonic() < deadline, again.output
    assert json.loads(again.stdout)["streaming"] is True
    pair.wait_caught_up()
    assert_same_data(pair)


def test_a_table_created_on_blue_while_streaming_joins_when_sync_is_run_again(
        pair: DbPair, tmp_path: Path) -> None:
    with pair.blue() as b:
        b.execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)")
    config = pair.config_file(tmp_path)
    assert runner.invoke(app, ["sync", "--config", str(config)]).exit_code == 0
    with pair.blue() as b:  # a migration on blue, while green streams
        b.execute('CREATE TABLE "New Table" (id int PRIMARY KEY, v text, at timestamptz DEFAULT now());'
                  "CREATE INDEX ON \"New Table\" (v);"
                  "INSERT INTO \"New Table\" (id, v) SELECT i, 'v' || i FROM generate_series(1, 5000) i")
    with pair.blue() as b, pair.green() as g:
        drift = read_status(b, g, load_settings(config).sync).blocking_drift
    assert drift == ['public."New Table" is on blue but not replicated: it was created after the '
                     "sync started (`cutover sync` adds it)"]
    again = runner.invoke(app, ["sync", "--config", str(config)])
    assert again.exit_code == 0, again.output
    assert 'added 1 table(s) created on blue since the sync started: public."New Table"' in again.output
    with pair.green() as g:  # its schema came whole: the index too
        assert g.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'New Table'").fetchone() == (2,)
    with pair.blue() as b:  # and it streams from now on
        b.execute("UPDATE \"New Table\" SET v = 'changed' WHERE id <= 10;"
                  "DELETE FROM \"New Table\" WHERE id > 4990; INSERT INTO t VALUES (101)")
    pair.wait_caught_up()
    assert_same_data(pair)
    status = json.loads(runner.invoke(app, ["sync", "--once", "--json", "--config", str(config)]).stdout)
    assert status["drift"] == []
    # A new table without a key would make blue refuse its UPDATEs once published: refused.
    with pair.blue() as b:
        b.execute("CREATE TABLE keyless (a int); INSERT INTO keyless VALUES (1)")
    refused = runner.invoke(app, ["sync", "--config", str(config)])
    assert refused.exit_code == 2, refused.output
    assert "ALTER TABLE public.keyless REPLICA IDENTITY FULL" in refused.output
    with pair.blue() as b:
        assert b.execute("SELECT count(*) FROM pg_publication_tables WHERE tablename = 'keyless'"
                         ).fetchone() == (0,)
        b.execute("UPDATE keyless SET a = 2")  # blue's writes are unaffected


def test_unknown_table_in_config_is_a_usage_error_naming_it(pair: DbPair, tmp_path: Path) -> None:
    config = pair.config_file(tmp_path, 'tables = ["public.nope; DROP TABLE x"]\n')
    result = runner.invoke(app, ["sync", "--config", str(config)])
    assert result.exit_code == 2
    assert "nope; DROP TABLE x" in result.output
    with pair.blue() as b:
        assert b.execute("SELECT count(*) FROM pg_publication").fetchone() == (0,)


def test_connection_error_names_the_database_without_secrets(pair: DbPair,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    monkeypatch.setenv("CUTOVER_GREEN__DATABASE__DSN", "host=127.0.0.1 port=1 dbname=x user=y")
    monkeypatch.setenv("CUTOVER_GREEN__DATABASE__PASSWORD", "s3cr3t-value")
    result = runner.invoke(app, ["preflight", "--config", str(pair.config_file(tmp_path)), "--json"])
    assert result.exit_code == 1
    assert "s3cr3t-value" not in result.output
    checks = json.loads(result.stdout)["checks"]
    assert checks[0]["name"] == "connect_green"
    assert "127.0.0.1:1" in checks[0]["detail"]


def test_green_with_its_own_expanded_schema_is_checked_and_synced(pair: DbPair) -> None:
    with pair.blue() as b:
        b.execute("CREATE TABLE results (id int PRIMARY KEY, status text, score float8);"
                  "INSERT INTO results SELECT i, 'ok', i / 3.0 FROM generate_series(1, 1000) i")
    with pair.green() as g:  # the v2 schema: an extra column with a default, its own index
        g.execute("CREATE TABLE results (id int PRIMARY KEY, status text, score float8, "
                  "aspect text NOT NULL DEFAULT 'structural');"
                  "CREATE INDEX results_aspect ON results (aspect)")
    report = run_preflight(pair.settings())
    schema = next(c for c in report.checks if c.name == "schema")
    assert schema.status is Status.PASS
    assert "green-only column" in schema.detail
    logical.start(pair.settings())
    with pair.blue() as b:
        b.execute("UPDATE results SET status = 'late' WHERE id <= 10")
    pair.wait_caught_up()
    query = "SELECT md5(string_agg(format('%s|%s|%s', id, status, score), ',' ORDER BY id)) FROM results"
    with pair.blue() as b, pair.green() as g:
        assert b.execute(query).fetchone() == g.execute(query).fetchone()
        assert g.execute("SELECT DISTINCT aspect FROM results").fetchall() == [("structural",)]
    assert {t.verdict for t in verify(pair.settings()).tables} == {Verdict.COMPLETE}


def test_green_missing_a_blue_column_fails_preflight(pair: DbPair) -> None:
    with pair.blue() as b:
        b.execute("CREATE TABLE r (id int PRIMARY KEY, legacy_flag bool)")
    with pair.green() as g:
        g.execute("CREATE TABLE r (id int PRIMARY KEY)")
    schema = next(c for c in run_preflight(pair.settings()).checks if c.name == "schema")
    assert schema.status is Status.FAIL
    assert "legacy_flag" in schema.detail


def test_verify_under_concurrent_writes_reports_no_false_difference(pair: DbPair) -> None:
    pgbench_init(pair.dsn("blue"), scale=2)
    with pair.blue() as b:
        b.execute("ALTER TABLE pgbench_history REPLICA IDENTITY FULL")
    settings = pair.settings(chunk_rows=20000)
    logical.start(settings)
    report = verify_while_writing(settings, pair.dsn("blue"))
    assert report.ok
    pair.wait_caught_up()
    after = verify(settings)
    assert {t.verdict for t in after.tables} == {Verdict.COMPLETE}, after.as_dict()
    assert_same_data(pair)
