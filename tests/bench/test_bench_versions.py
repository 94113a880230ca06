"""Across majors (issue 15): the lab's blue (PostgreSQL 15) into a green of PostgreSQL 18, a
standalone cluster the lab's own code starts (tests/versionfixtures.py), with the machinery of
test_bench_initial_copy.py and test_bench_verify.py, which takes its green server:

1. the initial copy of `pgbench -s 50` into an empty database: ours (copy_jobs 2 and 4, timed
   until green streams) beside native logical replication (CREATE SUBSCRIPTION on 18, copy_data,
   from a publication on 15) and `pg_dump -Fc | pg_restore` with PostgreSQL 18's client tools
   (the ones Cutover itself picks for the pair). Goals: ours <= 0.7 x native, <= 0.9 x
   pg_dump|pg_restore;
2. verify of the same data 15 -> 18 beside `count(*)` and one hash scan per table on both sides;
3. the realistic application schema (tests/realistic, CUTOVER_BENCH_REALISTIC_ROWS records,
   default 50 000) into an empty database: ours (logical.start + logical.settle: foreign keys
   validated, every table analyzed, the materialized views refreshed) beside pg_dump -Fc |
   pg_restore of the whole database with owners and grants (18's tools). Ratio printed, no goal.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from controller.lab.lab import Lab
from sync.pgtools import installations
from tests.bench.conftest import (
    BENCH_TIMEOUT,
    SCALE,
    BenchDb,
    Server,
    create_db,
    describe_source,
    drop_db,
    env_int,
    lab_server,
)
from tests.bench.test_bench_initial_copy import (
    DUMP,
    Bench,
    Method,
    ours_methods,
    report,
    run_rotated,
    workdir,
)
from tests.bench.test_bench_verify import verify_bench
from tests.realistic import create_schema, populate
from tests.versionfixtures import start_cluster, stop_cluster

GREEN_MAJOR = 18
REALISTIC_ROWS = env_int("CUTOVER_BENCH_REALISTIC_ROWS", 50_000)
REALISTIC_ROLES = ("records_reader", "records_writer")


@pytest.fixture(scope="module")
def green18() -> Iterator[Server]:
    """A PostgreSQL 18 cluster with the lab's settings, stopped by PID afterwards."""
    cluster = start_cluster(GREEN_MAJOR)
    try:
        yield Server(f"green {cluster.install.major}", cluster.port, cluster.proc.pid,
                     cluster.install.major)
    finally:
        stop_cluster(cluster)


@pytest.mark.timeout(BENCH_TIMEOUT)
def test_initial_copy_15_to_18(lab: Lab, source: BenchDb, green18: Server) -> None:
    with workdir() as work:
        bench = Bench(lab, source, green18, work)
        assert bench.bindir == installations()[GREEN_MAJOR].bindir, "the anchors run 18's tools"
        methods = [*ours_methods(bench), Method("native logical", bench.native),
                   Method(DUMP, bench.dump_restore)]
        run_rotated(bench, methods)
    print(f"\n[bench] pg_dump, pg_restore of {bench.bindir}")
    print(report(f"initial copy, pgbench -s {SCALE} ({describe_source(source)}), "
                 f"{source.server.label} -> {green18.label}", methods))
    assert all(m.seconds for m in methods), "a method never ran"


@pytest.mark.timeout(BENCH_TIMEOUT)
def test_verify_15_to_18(lab: Lab, source: BenchDb, green18: Server) -> None:
    verify_bench(lab, source, green18)


def _roles(server: Server) -> None:
    """The application roles the realistic schema grants to: cluster-wide, made on each server."""
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        for role in REALISTIC_ROLES:
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone():
                conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))


@pytest.fixture(scope="module")
def realistic(lab: Lab, green18: Server) -> Iterator[BenchDb]:
    """The realistic schema with REALISTIC_ROWS records on blue; read only."""
    db = create_db(lab_server(lab, "blue"), "bench_realistic")
    try:
        _roles(green18)
        with db.connect() as conn:
            create_schema(conn)
            populate(conn, rows=REALISTIC_ROWS, seed=0)
            conn.execute("VACUUM ANALYZE")
        yield db
    finally:
        drop_db(db)


@pytest.mark.timeout(BENCH_TIMEOUT)
def test_realistic_copy_15_to_18(lab: Lab, realistic: BenchDb, green18: Server) -> None:
    with workdir() as work:
        # Owners and grants kept, as ours keeps them (the app must use its tables on green).
        bench = Bench(lab, realistic, green18, work, sync={"schemas": ["records"]}, settle=True,
                      dump_flags=())
        methods = [*ours_methods(bench), Method(DUMP, bench.dump_restore)]
        run_rotated(bench, methods)
    print(report(f"realistic schema, {REALISTIC_ROWS:,} records ({describe_source(realistic)}), "
                 f"{realistic.server.label} -> {green18.label}, ours through settle", methods,
                 goals={DUMP: None}))
    assert all(m.seconds for m in methods), "a method never ran"
