"""A real application's schema (tests/realistic: enums, composite and range types, a domain,
triggers, views, a materialized view, partitions, identity and generated columns, RLS,
grants, TOASTed jsonb, a large object) from PostgreSQL 15 to an empty green of 15 and of 18:
the whole schema arrives, the rows compare equal by an independent checksum, verify and the
diff see no false difference, and green is ready for traffic."""

from __future__ import annotations

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
from psycopg import sql

from controller.daemon.metrics import SyncMetrics
from sync import diff, logical, objects, readiness
from sync.catalog import list_tables
from sync.pgtools import installations
from sync.preflight import Status, run_preflight
from sync.schema import SchemaDump, parse_toc, synced_schemas
from sync.sequences import copy_sequences
from sync.status import read_status
from sync.verify import Verdict, verify
from tests.realistic import PG_DUMP_FLAGS, create_schema, normalized_schema, populate, type_oids, write_some
from tests.syncfixtures import DbPair, assert_same_data

pytestmark = pytest.mark.lab

ROLES = ("records_reader", "records_writer")


def _roles(conn: psycopg.Connection[Any]) -> None:
    """The application roles the schema grants to: cluster-wide, so made on each server."""
    for role in ROLES:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone():
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))


def _realistic_blue(pair: DbPair, rows: int = 1500) -> None:
    with pair.blue() as b:
        create_schema(b, type_order_seed=0)
        populate(b, rows=rows, seed=0)
    with pair.green() as g:
        _roles(g)


def _normalized(pair: DbPair, env: str) -> str:
    """The side's schema as the newest pg_dump here prints it (it reads every older server)."""
    newest = max(installations().values(), key=lambda i: i.major)
    done = subprocess.run([str(newest.bindir / "pg_dump"), *PG_DUMP_FLAGS, "--exclude-schema=cutover",
                           "--no-publications", "--no-subscriptions",
                           f"--dbname={pair.dsn(env)}"], capture_output=True, check=True)
    return normalized_schema(done.stdout.decode())


def _assert_same_rows(pair: DbPair) -> None:
    """Every table (a partitioned one with its partitions) by an md5 of its rows' text, not
    our verify; and the large objects by their bytes."""
    assert_same_data(pair)
    with pair.blue() as b, pair.green() as g:
        large = "SELECT oid, lo_get(oid) FROM pg_largeobject_metadata ORDER BY oid"
        assert b.execute(large).fetchall() == g.execute(large).fetchall()


def _sync_and_check(pair: DbPair) -> None:
    settings = pair.settings(schemas=["records"])
    report = run_preflight(settings)
    assert report.ok, [c.as_dict() for c in report.failures()]
    large = next(c for c in report.checks if c.name == "large_objects")
    assert large.status is Status.WARN
    assert "copies them once" in large.detail
    started = logical.start(settings)
    logical.settle(settings, started)
    assert _normalized(pair, "green") == _normalized(pair, "blue")
    with pair.blue() as b:
        writes = write_some(b, 300, seed=7)
    assert len(writes) > 250
    pair.wait_caught_up()
    _assert_same_rows(pair)
    checked = verify(settings)
    assert {t.verdict for t in checked.tables} == {Verdict.COMPLETE}, checked.as_dict()
    with pair.green() as g:
        state = readiness.read(g, list_tables(g, settings.sync))
        assert state.ready, state.describe()
        # The BEFORE trigger bumping `revision` did not run again for replicated rows.
        revisions = "SELECT sum(revision) FROM records.records"
        with pair.blue() as b:
            assert b.execute(revisions).fetchone() == g.execute(revisions).fetchone()


def test_a_realistic_schema_reaches_an_empty_green_of_the_same_major(pair: DbPair) -> None:
    _realistic_blue(pair)
    _sync_and_check(pair)


def test_a_realistic_schema_reaches_an_empty_green_of_postgresql_18(pair_18: DbPair) -> None:
    _realistic_blue(pair_18)
    with pair_18.green() as g:
        assert g.info.server_version >= 180000
    _sync_and_check(pair_18)


@pytest.mark.parametrize("green_seed", [1, 3])
def test_hashes_do_not_depend_on_the_clusters_type_oids(pair: DbPair, green_seed: int) -> None:
    """Green's own schema, its types created in another order (other OIDs): one diff cycle
    fills it; then a second changes nothing, verify finds no difference, and neither server
    logs an error for a type without a hash function (the catalog is asked, not probed)."""
    logs = {env: pair.lab.state.log(f"{env}_pg") for env in ("blue", "green")}
    logged = {env: path.stat().st_size for env, path in logs.items()}
    with pair.blue() as b, pair.green() as g:
        create_schema(b, type_order_seed=0)
        create_schema(g, type_order_seed=green_seed)
        populate(b, rows=800, seed=green_seed)
        assert set(type_oids(b).items()).isdisjoint(type_oids(g).items())
    settings = pair.settings(schemas=["records"], mode="diff")
    first = diff.cycle(settings)
    assert first.total("inserted") > 800
    second = diff.cycle(settings)
    changed = {t.table: (t.inserted, t.updated, t.deleted) for t in second.tables
               if t.inserted or t.updated or t.deleted}
    assert changed == {}
    checked = verify(settings)
    assert {t.verdict for t in checked.tables} == {Verdict.COMPLETE}, checked.as_dict()
    _assert_same_rows(pair)
    for env, path in logs.items():
        with path.open("rb") as log:
            log.seek(logged[env])
            assert b"could not identify" not in log.read(), f"{env}'s log has hash probe errors"


def test_a_differing_row_is_named_by_its_range_with_bounds(pair: DbPair) -> None:
    _realistic_blue(pair, rows=600)
    settings = pair.settings(schemas=["records"])
    logical.start(settings)
    pair.wait_caught_up()
    with pair.green() as g:
        g.execute("ALTER SUBSCRIPTION cutover DISABLE")
        g.execute("SET session_replication_role = replica")  # no trigger: one value changes
        g.execute("UPDATE records.records SET title = title || ' (edited on green)' "
                  "WHERE id = (SELECT min(id) FROM records.records)")
    report = verify(settings, rechecks=0)
    bad = [t for t in report.tables if t.verdict is not Verdict.COMPLETE]
    assert [t.table for t in bad] == ["records.records"]
    assert bad[0].verdict is Verdict.DIFFERS
    assert all("…" not in r and r.startswith("id in [") for r in bad[0].differing)


def _restore_part_of_the_schema(pair: DbPair, entries: int) -> None:
    """What a run killed in the middle of the schema copy leaves: the marker, and the first
    `entries` objects of blue's pre-data on green."""
    settings = pair.settings(schemas=["records"])
    with pair.blue() as b:
        tables = list_tables(b, settings.sync)
    with pair.green() as g:
        objects.write_phase(g, objects.pg_name(settings.sync), objects.SCHEMA_COPYING, True)
    with SchemaDump(settings, tables) as dump:
        dump.restore("pre-data")  # dumps once; then green is reset to only part of it
        path = Path(dump._dir.name) / "schema.dump"
        listed = subprocess.run([str(max(installations().values(), key=lambda i: i.major).bindir
                                     / "pg_restore"), "--list", "--section=pre-data", str(path)],
                                capture_output=True, check=True).stdout.decode()
        with pair.green() as g:
            g.execute("DROP SCHEMA records CASCADE")
        part = path.with_suffix(".part")
        part.write_text("".join(e.line + "\n" for e in parse_toc(listed)[:entries]))
        subprocess.run([str(max(installations().values(), key=lambda i: i.major).bindir / "pg_restore"),
                        "--section=pre-data", f"--use-list={part}", f"--dbname={pair.dsn('green')}",
                        str(path)], capture_output=True, check=False)


@pytest.mark.parametrize("entries", [12, 10_000], ids=["midway", "all-pre-data"])
def test_a_run_killed_during_the_schema_copy_is_completed_by_the_next(pair: DbPair, entries: int) -> None:
    """Killed midway (some types and tables on green) or right after the tables: the re-run
    completes the schema, builds every key and index, and streams."""
    _realistic_blue(pair, rows=300)
    _restore_part_of_the_schema(pair, entries)
    settings = pair.settings(schemas=["records"])
    report = run_preflight(settings)
    assert report.ok, [c.as_dict() for c in report.failures()]
    logical.settle(settings, logical.start(settings))
    assert _normalized(pair, "green") == _normalized(pair, "blue")
    pair.wait_caught_up()
    _assert_same_rows(pair)
    with pair.green() as g:
        keyless = g.execute("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                            "WHERE n.nspname = 'records' AND c.relkind = 'r' AND NOT EXISTS "
                            "(SELECT FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)").fetchall()
    assert keyless == []


def test_status_and_metrics_name_what_is_not_ready_and_a_rerun_makes_it_ready(pair: DbPair) -> None:
    _realistic_blue(pair, rows=300)
    settings = pair.settings(schemas=["records"])
    logical.settle(settings, logical.start(settings))
    with pair.green() as g:
        g.execute("REFRESH MATERIALIZED VIEW records.record_stats WITH NO DATA")
        g.execute("CREATE TABLE records.new_on_green (id int PRIMARY KEY)")  # never analyzed
    with pair.blue() as b, pair.green() as g:
        status = read_status(b, g, settings.sync)
    assert set(status.not_ready) == {"records.record_stats: materialized view not populated",
                                     "records.new_on_green: never analyzed"}
    metrics = SyncMetrics()
    metrics.export(status.as_dict())
    assert metrics.registry.get_sample_value("cutover_sync_green_not_ready_objects") == 2
    logical.settle(settings, None)  # what a re-run of `cutover sync` does once green streams
    with pair.blue() as b, pair.green() as g:
        assert read_status(b, g, settings.sync).not_ready == []


def test_what_a_schema_uses_elsewhere_reaches_green_18(pair_18: DbPair) -> None:
    """An extension installed in a schema of its own, a sequence in another schema behind a
    default, an array of a domain (binary COPY would carry the domain's OID), a commented
    foreign key: green gets them all, and the sequence is carried with the others."""
    with pair_18.blue() as b:
        b.execute("CREATE SCHEMA extensions; CREATE EXTENSION citext SCHEMA extensions;"
                  "CREATE SCHEMA shared; CREATE SEQUENCE shared.order_no START 1000;"
                  "CREATE DOMAIN code AS text CHECK (VALUE ~ '^[A-Z]+$');"
                  "CREATE TABLE orders (id int PRIMARY KEY, email extensions.citext NOT NULL, "
                  "  no bigint NOT NULL DEFAULT nextval('shared.order_no'));"
                  "CREATE TABLE codes (id int PRIMARY KEY, tags code[] NOT NULL);"
                  "CREATE TABLE lines (id int PRIMARY KEY, order_id int NOT NULL REFERENCES orders);"
                  "COMMENT ON CONSTRAINT lines_order_id_fkey ON lines IS 'each line of an order';"
                  "INSERT INTO orders (id, email) SELECT i, 'User' || i || '@Example.org' "
                  "  FROM generate_series(1, 300) i;"
                  "INSERT INTO codes SELECT i, ARRAY['AB', 'CD'] FROM generate_series(1, 300) i;"
                  "INSERT INTO lines SELECT i, i FROM generate_series(1, 300) i")
    settings = pair_18.settings()
    assert run_preflight(settings).ok
    logical.settle(settings, logical.start(settings))
    pair_18.wait_caught_up()
    assert_same_data(pair_18)
    assert {t.verdict for t in verify(settings).tables} == {Verdict.COMPLETE}
    with pair_18.green() as g:
        assert g.execute("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n "
                         "ON n.oid = e.extnamespace WHERE e.extname = 'citext'").fetchone() == ("extensions",)
        assert g.execute("SELECT obj_description(oid, 'pg_constraint') FROM pg_constraint "
                         "WHERE conname = 'lines_order_id_fkey'").fetchone() == ("each line of an order",)
        assert g.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                         "WHERE attrelid = 'orders'::regclass AND attname = 'email'").fetchone() \
            == ("extensions.citext",)
    with pair_18.blue() as b:
        b.execute("SELECT nextval('shared.order_no') FROM generate_series(1, 5)")
    copied = copy_sequences_of(pair_18)
    with pair_18.blue() as b, pair_18.green() as g:
        last = "SELECT last_value FROM shared.order_no"
        assert b.execute(last).fetchone() == g.execute(last).fetchone()
    assert copied >= 1


def copy_sequences_of(pair: DbPair) -> int:
    """What `cutover sync --sequences` and the switch do, for the pair."""
    settings = pair.settings()
    with pair.blue() as b, pair.green() as g:
        return copy_sequences(b, g, synced_schemas(b, settings)).copied


def test_preflight_names_database_settings_green_lacks(pair: DbPair) -> None:
    with pair.blue() as b:
        b.execute(sql.SQL("ALTER DATABASE {} SET search_path = records, public").format(
            sql.Identifier(pair.name)))
        b.execute("CREATE TABLE t (id int PRIMARY KEY)")
    check = next(c for c in run_preflight(pair.settings()).checks if c.name == "database_settings")
    assert check.status is Status.WARN
    assert "search_path=records, public" in check.detail
    with pair.green() as g:
        g.execute(sql.SQL("ALTER DATABASE {} SET search_path = records, public").format(
            sql.Identifier(pair.name)))
    check = next(c for c in run_preflight(pair.settings()).checks if c.name == "database_settings")
    assert check.status is Status.PASS


class KillAt(threading.Thread):
    """SIGKILLs a process group as soon as the nth statement matching `where` (SQL over
    pg_stat_activity) is seen running on one side: `cutover sync` killed at that point, with
    the tools it started (pg_restore), as systemd stopping its unit would."""

    def __init__(self, dsn: str, where: str, nth: int, pgid: int) -> None:
        super().__init__(daemon=True)
        self.dsn, self.where, self.nth, self.pgid = dsn, where, nth, pgid
        self.killed = threading.Event()
        self.stop = threading.Event()
        self.start()

    def run(self) -> None:
        seen: set[tuple[int, Any]] = set()
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                rows = conn.execute("SELECT pid, query_start FROM pg_stat_activity WHERE "
                                    f"pid <> pg_backend_pid() AND state = 'active' AND ({self.where})"
                                    ).fetchall()
                seen.update((int(r[0]), r[1]) for r in rows)
                if len(seen) >= self.nth:
                    os.killpg(self.pgid, signal.SIGKILL)
                    self.killed.set()
                    return
                time.sleep(0.001)


KILL_POINTS = {
    "schema pre-data": ("green", "application_name = 'pg_restore' AND query ~* 'CREATE (TABLE|TYPE)'", 3),
    "a copy chunk": ("blue", "application_name LIKE 'cutover-copy%' AND query ~* '^COPY'", 2),
    "an index": ("green", "query ~* '^\\s*CREATE (UNIQUE )?INDEX'", 2),
    "a constraint": ("green", "query ~* 'ADD CONSTRAINT'", 2),
    "foreign key validation": ("green", "query ~* 'VALIDATE CONSTRAINT'", 1),
    "subscription creation": ("green", "query ~* '^\\s*CREATE SUBSCRIPTION'", 1),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_sync_killed_at_any_point_is_completed_by_the_next_run(pair: DbPair, tmp_path: Path,
                                                                 point: str) -> None:
    """`cutover sync` SIGKILLed (with pg_restore, if running) at each point of an initial sync;
    the next run ends with blue's whole schema and rows on green, every key built, every
    foreign key validated, streaming."""
    _realistic_blue(pair, rows=4000)
    config = pair.config_file(tmp_path, extra='schemas = ["records"]\n')
    side, where, nth = KILL_POINTS[point]
    proc = subprocess.Popen([sys.executable, "-m", "controller", "sync", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    killer = KillAt(pair.dsn(side), where, nth, proc.pid)
    proc.wait(300)
    killer.stop.set()
    assert killer.killed.is_set(), f"the sync ended (exit {proc.returncode}) before {point}"
    settings = pair.settings(schemas=["records"])
    logical.settle(settings, logical.start(settings))
    assert _normalized(pair, "green") == _normalized(pair, "blue")
    with pair.blue() as b:
        write_some(b, 100, seed=3)
    pair.wait_caught_up()
    _assert_same_rows(pair)
    with pair.green() as g:
        pending = g.execute("SELECT conname FROM pg_constraint c JOIN pg_namespace n ON n.oid = "
                            "c.connamespace WHERE n.nspname = 'records' AND NOT c.convalidated").fetchall()
    with pair.blue() as b:
        on_blue = b.execute("SELECT conname FROM pg_constraint c JOIN pg_namespace n ON n.oid = "
                            "c.connamespace WHERE n.nspname = 'records' AND NOT c.convalidated").fetchall()
    assert sorted(pending) == sorted(on_blue), "a foreign key left NOT VALID"
