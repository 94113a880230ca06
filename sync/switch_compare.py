"""The switch's comparisons: both sides as they stood at the fence, or live after a rerun."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from psycopg import sql

from sync.catalog import Table
from sync.checksums import KeyRange, chunk_sum, row_hash
from sync.connections import Conn
from sync.errors import SyncError
from sync.status import wait_applied
from sync.switch_movers import Sides
from sync.switch_report import SwitchReport, VerifyDifference
from sync.verify import Verdict
from sync.verify import verify as verify_live


def compare_at_fence(src: Conn, dst: Conn, tables: list[Table], how: str,
                     fence_snapshot: str | None, to: str) -> int:
    """Both sides as they stood at the fence, each on its own connection at once, every
    table, by count or by checksums (`how`); any difference raises VerifyDifference. The
    new primary (dst) is read in the fence snapshot when there is one (after the resume),
    else as it is (under the fence). Returns how many tables were compared."""
    if how == "checksums":
        hashes = [row_hash(src, dst, t, t, t.columns) for t in tables]

        def measure(conn: Conn) -> list[tuple[int, int]]:
            whole = KeyRange(None, None)
            sums = [chunk_sum(conn, t, h, whole) for t, h in zip(tables, hashes, strict=True)]
            return [(s.rows, s.checksum) for s in sums]
    else:
        def measure(conn: Conn) -> list[tuple[int, int]]:
            counts = [conn.execute(sql.SQL("SELECT count(*) FROM {}").format(t.ident)).fetchone()
                      for t in tables]
            return [(int(c[0]) if c else -1, 0) for c in counts]

    def at_fence(conn: Conn) -> list[tuple[int, int]]:
        if fence_snapshot is None:
            return measure(conn)
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(
                sql.Literal(fence_snapshot)))
            return measure(conn)
    with ThreadPoolExecutor(max_workers=2) as pool:
        ours, theirs = pool.submit(measure, src), pool.submit(at_fence, dst)
        old_side, new_side = ours.result(), theirs.result()
    for t, a, b in zip(tables, old_side, new_side, strict=True):
        if a != b:
            what = "rows" if a[0] != b[0] else "rows (same count, different contents)"
            raise VerifyDifference(f"{t.qualified}: {a[0]} {what} on the old primary, {b[0]} "
                                   f"on {to} at the fence")
    return len(tables)


LIVE_CATCH_UP_TIMEOUT = 300.0
"""How long a live comparison waits for the old primary to follow: a rerun may come long
after the killed run, with much to apply (switchover.timeout is the pause's limit)."""


def compare_live(sides: Sides, report: SwitchReport) -> None:
    """Both sides compared live, once the old primary has applied the new one's writes so
    far: what verify calls different after its rechecks raises VerifyDifference."""
    d = sides.d
    if not wait_applied(sides.dst, sides.src, LIVE_CATCH_UP_TIMEOUT):
        raise SyncError(f"{d.src_db.describe()} did not catch up with {d.to} "
                        f"within {LIVE_CATCH_UP_TIMEOUT:g}s")
    result = verify_live(sides.settings)
    report.verified = "after resume, live"
    report.tables_verified = sum(t.verdict is Verdict.COMPLETE for t in result.tables)
    report.not_compared = [t.table for t in result.tables if t.verdict is Verdict.CHANGING]
    if report.not_compared:
        sides.say(f"not settled under {d.to}'s writes (compare them with `cutover verify` "
                  f"when quieter): {', '.join(report.not_compared)}")
    if not result.ok:
        bad = "; ".join(f"{t.table}: {t.verdict.value} ({t.blue_rows} rows on blue, "
                        f"{t.green_rows} on green)" for t in result.tables
                        if t.verdict not in (Verdict.COMPLETE, Verdict.CHANGING))
        raise VerifyDifference(bad)
