"""Verify of `pgbench -s 50` (5 M identical rows), green synced by our logical.start:
`verify(settings)` beside two anchors run the same way (blue and green at once, every table):
a plain `SELECT count(*)` (the least any row-by-row comparison must read) and one
`count(*), sum(hashtextextended(t::text, 0))` scan per table (a whole-table checksum with no
key ranges). Goal: verify <= 5 s. verify_bench takes its green server, so
test_bench_versions.py measures the same into a green of another major.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from psycopg import sql

from config.settings import Settings
from controller.lab.lab import Lab
from sync import logical
from sync.verify import Verdict, verify
from tests.bench.conftest import (
    BENCH_TIMEOUT,
    REPEAT,
    SCALE,
    BenchDb,
    CpuWatch,
    Server,
    checkpoint,
    create_db,
    describe_source,
    drop_db,
    lab_server,
    median,
    summarize,
    sync_settings,
    wait_quiet,
)
from tests.syncfixtures import user_tables

NAME = "bench_verify"


def _on_both(blue: BenchDb, green: BenchDb, query: sql.SQL) -> None:
    """Run query over every user table, blue and green at the same time (as verify does)."""
    def scan(db: BenchDb) -> list[tuple[object, ...]]:
        with db.connect() as conn:
            return [tuple(conn.execute(query.format(sql.Identifier(s, t))).fetchone() or ())
                    for s, t in user_tables(conn)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        b, g = pool.submit(scan, blue), pool.submit(scan, green)
        assert b.result() == g.result(), "the anchor sees different data on blue and green"


@pytest.mark.timeout(BENCH_TIMEOUT)
def test_verify_5m_rows(lab: Lab, source: BenchDb) -> None:
    verify_bench(lab, source, lab_server(lab, "green"))


def verify_bench(lab: Lab, source: BenchDb, server: Server) -> None:
    """Green synced by logical.start into a fresh database on server, then measured."""
    green = create_db(server, "bench_verify")
    settings = sync_settings(source, green, name=NAME)
    try:
        logical.start(settings)
        for conn in (source.connect(), green.connect()):
            with conn:
                conn.execute("VACUUM ANALYZE")
        _measure(lab, source, green, lambda: _verify(settings))
    finally:
        logical.drop(settings)
        drop_db(green)


def _verify(settings: Settings) -> None:
    report = verify(settings)
    bad = [t for t in report.tables if t.verdict is not Verdict.COMPLETE]
    assert not bad, f"verify found differences in identical data: {[t.as_dict() for t in bad]}"


def _measure(lab: Lab, blue: BenchDb, green: BenchDb, ours: Callable[[], None]) -> None:
    jobs: dict[str, Callable[[], None]] = {
        "verify (ours)": ours,
        "count(*) both sides": lambda: _on_both(blue, green, sql.SQL("SELECT count(*) FROM {}")),
        "hash scan both sides": lambda: _on_both(blue, green, sql.SQL(
            "SELECT count(*), sum(hashtextextended(t::text, 0)) FROM {} t")),
    }
    seconds: dict[str, list[float]] = {k: [] for k in jobs}
    disturbed = 0
    checkpoint(lab, green.server)
    for job in jobs.values():  # warm: every table in shared buffers or the OS cache
        job()
    for i in range(REPEAT):
        for label, job in jobs.items():
            wait_quiet("a verify run")
            with CpuWatch(lab, green.server) as watch:
                started = time.monotonic()
                job()
                seconds[label].append(time.monotonic() - started)
            disturbed += bool(watch.note())
            print(f"[bench] run {i + 1}/{REPEAT} {label}: {seconds[label][-1]:.2f} s{watch.note()}")
    med = {k: median(v) for k, v in seconds.items()}
    mine = med["verify (ours)"]
    title = (f"verify, pgbench -s {SCALE} ({describe_source(blue)}), identical, "
             f"{blue.server.label} -> {green.server.label}")
    lines = [f"\n{title}, medians of {REPEAT}:"]
    for label, values in seconds.items():
        runs = " ".join(f"{v:.2f}" for v in values)
        ratio = "" if label == "verify (ours)" else f"   ours / this {mine / med[label]:.2f}"
        lines.append(f"    {label:<22}{med[label]:6.2f} s{ratio}   (runs: {runs})")
    goal = f"goal <= 5 s{'' if mine <= 5 else '  MISSED'}"
    lines.append(f"    {goal}")
    for label, values in seconds.items():
        versus = ("; ".join(f"{mine / med[k]:.2f} x {k}" for k in seconds if k != label) + f"; {goal}"
                  if label == "verify (ours)" else "")
        summarize(title, label, values, versus)
    if disturbed:
        lines.append(f"    {disturbed} run(s) disturbed by other work (>= 5 % of the CPUs)")
    print("\n".join(lines))
