"""A fresh pair of databases (same name on blue and green) in the shared lab, with settings
pointing at them, and an independent checksum to prove blue and green hold the same rows."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from config.settings import Settings
from controller.lab import postgres
from controller.lab.lab import Lab
from controller.lab.load import Pgbench
from sync import logical
from sync.status import wait_applied
from sync.verify import Verdict, VerifyReport, verify


@dataclass
class DbPair:
    lab: Lab
    name: str
    green_port: int | None = None
    """Green's server when it is not the lab's green (e.g. a cluster of another major)."""

    def server_dsn(self, env: str, dbname: str) -> str:
        if env == "green" and self.green_port is not None:
            return postgres.dsn(self.green_port, dbname)
        return self.lab.state.db_dsn(env, dbname)

    def dsn(self, env: str) -> str:
        return self.server_dsn(env, self.name)

    def settings(self, **sync: Any) -> Settings:
        return Settings.model_validate({"blue": {"database": {"dsn": self.dsn("blue")}},
                                        "green": {"database": {"dsn": self.dsn("green")}},
                                        "sync": {"copy_jobs": 2, **sync}})

    def config_file(self, directory: Path, extra: str = "") -> Path:
        path = directory / "cutover.toml"
        path.write_text(f'[blue.database]\ndsn = "{self.dsn("blue")}"\n'
                        f'[green.database]\ndsn = "{self.dsn("green")}"\n'
                        f"[sync]\ncopy_jobs = 2\n{extra}"
                        "[metrics]\nenabled = false\n")
        return path

    def connect(self, env: str) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn(env), autocommit=True)

    def blue(self) -> psycopg.Connection[Any]:
        return self.connect("blue")

    def green(self) -> psycopg.Connection[Any]:
        return self.connect("green")

    def wait_caught_up(self, timeout: float = 30.0) -> None:
        """Until green has applied a heartbeat written on blue after everything so far."""
        with self.blue() as b, self.green() as g:
            assert wait_applied(b, g, timeout), "green did not catch up with blue"


def table_checksum(conn: psycopg.Connection[Any], schema: str, table: str) -> tuple[int, str]:
    """Row count and md5 over every row's text in a total order: independent of Cutover's
    own verify, so a test's final comparison does not trust the code under test."""
    ident = sql.SQL(".").join([sql.Identifier(schema), sql.Identifier(table)])
    row = conn.execute(sql.SQL(
        "SELECT count(*), coalesce(md5(string_agg(r, '|' ORDER BY r)), '') "
        "FROM (SELECT t::text AS r FROM {} t) s").format(ident)).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def user_tables(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    rows = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition "
        "AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'cutover') ORDER BY 1, 2"
    ).fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


CATALOG_QUERIES = [
    # relfilenode moves with a refresh, a rewrite or a TRUNCATE
    "SELECT oid::regclass::text, relkind, relfilenode FROM pg_class "
    "WHERE relnamespace NOT IN (SELECT oid FROM pg_namespace WHERE nspname LIKE 'pg_temp%%' "
    "OR nspname LIKE 'pg_toast_temp%%') ORDER BY 1",
    "SELECT tgrelid::regclass::text, tgname, tgenabled FROM pg_trigger ORDER BY 1, 2",
    "SELECT proname, pronamespace::regnamespace::text FROM pg_proc "
    "WHERE pronamespace <> 'pg_catalog'::regnamespace ORDER BY 1, 2",
    "SELECT pubname FROM pg_publication ORDER BY 1",
    "SELECT prpubid, prrelid::regclass::text FROM pg_publication_rel ORDER BY 1, 2",
    "SELECT subname, subenabled FROM pg_subscription ORDER BY 1",
    "SELECT slot_name FROM pg_replication_slots ORDER BY 1",
    "SELECT setdatabase, setrole, setconfig FROM pg_db_role_setting ORDER BY 1, 2",
    "SELECT count(*) FROM pg_statistic",
    "SELECT coalesce(sum(analyze_count), 0) FROM pg_stat_user_tables",
]


def catalog_snapshot(dsn: str) -> list[list[tuple[Any, ...]]]:
    """What a command that "changes nothing" must leave as it was: objects, triggers,
    publications, subscriptions, slots, database settings, statistics, refreshes."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [conn.execute(q).fetchall() for q in CATALOG_QUERIES]


def assert_same_data(pair: DbPair) -> None:
    with pair.blue() as b, pair.green() as g:
        tables = user_tables(b)
        assert tables, "nothing to compare"
        for schema, table in tables:
            assert table_checksum(b, schema, table) == table_checksum(g, schema, table), \
                f"{schema}.{table} differs between blue and green"


@contextmanager
def new_pair(lab: Lab, green_port: int | None = None) -> Iterator[DbPair]:
    """A fresh database of one name on blue and green, dropped afterwards with what the sync
    left on both sides."""
    the_pair = DbPair(lab, f"t_{uuid.uuid4().hex[:10]}", green_port)
    ident = sql.Identifier(the_pair.name)
    for env in ("blue", "green"):
        with psycopg.connect(the_pair.server_dsn(env, "postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    try:
        yield the_pair
    finally:
        logical.drop(the_pair.settings())
        for env in ("blue", "green"):
            with psycopg.connect(the_pair.server_dsn(env, "postgres"), autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(ident))


@pytest.fixture
def pair(lab: Lab) -> Iterator[DbPair]:
    with new_pair(lab) as the_pair:
        yield the_pair


def verify_while_writing(settings: Settings, dsn: str) -> VerifyReport:
    """Verify while pgbench writes through dsn: no difference may be reported that is only
    writes in flight (every table Complete or Changing)."""
    bench = Pgbench(dsn, clients=4, seconds=8)
    bench.start()
    try:
        time.sleep(1)
        report = verify(settings)
    finally:
        result = bench.wait(timeout=60)
    assert result.transactions > 100
    assert {t.verdict for t in report.tables} <= {Verdict.COMPLETE, Verdict.CHANGING}, report.as_dict()
    return report
