"""Other PostgreSQL majors in the lab: clusters of 18 and 17 started by the lab's code, the
client programs chosen for a 15 -> 18 pair, and logical sync from the lab's 15 to them."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psycopg
import pytest

from controller.lab.processes import RunAs
from sync import logical, pgtools
from sync.connections import databases
from tests.syncfixtures import DbPair, assert_same_data
from tests.versionfixtures import Cluster

ACCOUNTS = """
CREATE TABLE pgbench_branches (bid int PRIMARY KEY, bbalance int, filler char(88));
CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, bid int REFERENCES pgbench_branches,
                               abalance int, filler char(84));
INSERT INTO pgbench_branches SELECT b, 0, '' FROM generate_series(1, 3) b;
INSERT INTO pgbench_accounts SELECT a, 1 + a % 3, 0, '' FROM generate_series(1, 5000) a;
"""

UPDATES = """
UPDATE pgbench_accounts SET abalance = abalance + aid % 97 WHERE aid % 10 = 0;
DELETE FROM pgbench_accounts WHERE aid % 250 = 0;
INSERT INTO pgbench_accounts SELECT a, 1, 7, 'new' FROM generate_series(5001, 5200) a;
"""


@pytest.mark.parametrize("fixture", ["pg18", "pg17"])
def test_cluster_of_another_major_runs_with_the_lab_settings(fixture: str,
                                                            request: pytest.FixtureRequest) -> None:
    cluster: Cluster = request.getfixturevalue(fixture)
    major = int(fixture.removeprefix("pg"))
    assert cluster.install.major == major
    with psycopg.connect(cluster.dsn()) as conn:
        assert pgtools.server_major(conn.info.server_version) == major
        assert conn.execute("SHOW wal_level").fetchone() == ("logical",)
        if major >= 18:
            assert conn.execute("SHOW max_active_replication_origins").fetchone() == ("20",)
    datadir = cluster.root / "green"
    assert Path(f"/proc/{cluster.proc.pid}/cwd").resolve() == datadir.resolve(), \
        "a server runs in its own directory, not the caller's"
    run_as = RunAs.for_lab()
    if run_as is not None:
        assert os.stat(f"/proc/{cluster.proc.pid}").st_uid == run_as.uid
        # A PyPI build runs from a copy the lab's user can read, never from the virtualenv.
        assert not cluster.install.bindir.is_relative_to(Path(sys.prefix))


def test_tools_for_15_to_18_are_18s(pair_18: DbPair) -> None:
    blue_db, green_db = databases(pair_18.settings())
    tools = pgtools.tools_for(blue_db, green_db)
    assert (tools.blue_major, tools.green_major) == (15, 18)
    assert tools.major == 18
    version = pgtools.bindir_version(tools.path("pg_dump").parent)
    assert version is not None
    assert version[0] == 18
    assert tools.warnings() == []
    with pair_18.blue() as b, pair_18.green() as g:
        check = pgtools.version_check(b.info.server_version, g.info.server_version)
    assert check.status == "pass", check.detail
    assert check.tools["pg_dump"].startswith(str(tools.path("pg_dump")))


@pytest.mark.parametrize("fixture", ["pair_18", "pair_17"])
def test_logical_sync_from_15_to_a_newer_major(fixture: str, request: pytest.FixtureRequest) -> None:
    pair: DbPair = request.getfixturevalue(fixture)
    with pair.blue() as b:
        b.execute(ACCOUNTS)
    result = logical.start(pair.settings())
    assert result.tables == 2
    assert result.rows_copied == 5003
    assert_same_data(pair)
    with pair.green() as g:
        keys = g.execute("SELECT count(*) FROM pg_constraint WHERE conrelid = "
                         "'pgbench_accounts'::regclass AND contype IN ('p', 'f')").fetchone()
        assert keys == (2,), "the schema copy (pg_dump | pg_restore) built keys on green"
    with pair.blue() as b:
        b.execute(UPDATES)
    pair.wait_caught_up()
    assert_same_data(pair)
