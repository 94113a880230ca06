"""Verify: per table row counts and checksums by key range, blue vs green, in the seed
guide's words: Complete, Extra data, Data loss, Differs.

Under concurrent writes blue and green are never read at the same instant, so a first-pass
difference is only a suspicion: the differing ranges are read again once the follower (green,
or blue after the switch) has applied the primary's latest heartbeat, up to `rechecks`
times. A range still differing whose primary side stayed the same is a real difference; one
that kept changing on the primary in every pass is
reported as Changing (not verifiable under this write load; the switch verifies under the
fence, where nothing changes).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from psycopg import sql

from config.settings import Settings
from sync import objects
from sync.catalog import Table, list_tables, table_by_name
from sync.checksums import (
    INTEGER_TYPES,
    ChunkSum,
    IntBuckets,
    KeyRange,
    boundaries,
    bucket_sums,
    chunk_sum,
    int_bounds,
    key_span,
    key_type,
    ranges_between,
    row_hash,
    widest,
)
from sync.connections import Conn, connect, databases
from sync.status import wait_applied


class Verdict(StrEnum):
    COMPLETE = "Complete"
    EXTRA_DATA = "Extra data"
    DATA_LOSS = "Data loss"
    DIFFERS = "Differs"
    CHANGING = "Changing"
    MISSING = "Missing on green"


@dataclass
class TableReport:
    table: str
    verdict: Verdict
    blue_rows: int
    green_rows: int
    chunks: int
    differing: list[str] = field(default_factory=list)
    """The key ranges that differ, named."""

    def as_dict(self) -> dict[str, Any]:
        return {"table": self.table, "status": self.verdict.value, "blue_rows": self.blue_rows,
                "green_rows": self.green_rows, "chunks": self.chunks,
                "differing_ranges": self.differing}


@dataclass
class VerifyReport:
    tables: list[TableReport]
    seconds: float

    @property
    def ok(self) -> bool:
        return all(t.verdict in (Verdict.COMPLETE, Verdict.CHANGING) for t in self.tables)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "seconds": round(self.seconds, 3),
                "tables": [t.as_dict() for t in self.tables]}


@dataclass
class _Chunk:
    rng: KeyRange
    blue: ChunkSum
    green: ChunkSum


def verify(settings: Settings, rechecks: int = 3, catch_up_timeout: float = 30.0) -> VerifyReport:
    blue_db, green_db = databases(settings)
    started = time.monotonic()
    reports = []
    with connect(blue_db, "verify") as blue, connect(green_db, "verify") as green:
        for table in list_tables(blue, settings.sync):
            reports.append(_verify_table(settings, blue, green, table, rechecks, catch_up_timeout))
    return VerifyReport(reports, time.monotonic() - started)


def _both(settings: Settings, work: Any) -> tuple[Any, Any]:
    """Run work(conn) on blue and green at the same time, each on its own connection."""
    blue_db, green_db = databases(settings)

    def on(db: Any) -> Any:
        # Whole-table scans of big tables outlast any sensible per-statement limit.
        with connect(db, "verify-scan", statement_timeout=0) as conn:
            return work(conn)
    with ThreadPoolExecutor(max_workers=2) as pool:
        b, g = pool.submit(on, blue_db), pool.submit(on, green_db)
        return b.result(), g.result()


def _verify_table(settings: Settings, blue: Conn, green: Conn, table: Table, rechecks: int,
                  catch_up_timeout: float) -> TableReport:
    theirs = table_by_name(green, table.schema, table.name)
    if theirs is None:
        # How much green lacks: blue's rows counted, not a sentinel.
        row = blue.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(
            sql.Identifier(table.schema), sql.Identifier(table.name))).fetchone()
        return TableReport(table.qualified, Verdict.MISSING, int(row[0]) if row else 0, 0, 0)
    columns = tuple(c for c in table.columns if c in theirs.columns)
    rowhash = row_hash(blue, green, table, theirs, columns)
    chunks = _first_pass(settings, blue, table, rowhash, max(table.est_rows, theirs.est_rows))
    suspects = [c for c in chunks if c.blue != c.green]
    changing: list[_Chunk] = []
    primary = _primary(settings, blue, green) if suspects else None
    for _ in range(rechecks):
        if not suspects or primary is None or not _caught_up(primary, blue, green, catch_up_timeout):
            break
        still: list[_Chunk] = []
        changing = []
        for c in suspects:
            # The follower first: a change the primary makes after its read then shows as
            # "changing", never as a difference that stayed.
            if primary == "blue":
                g_sum = chunk_sum(green, table, rowhash, c.rng)
                b_sum = chunk_sum(blue, table, rowhash, c.rng)
            else:
                b_sum = chunk_sum(blue, table, rowhash, c.rng)
                g_sum = chunk_sum(green, table, rowhash, c.rng)
            again = _Chunk(c.rng, b_sum, g_sum)
            if again.blue == again.green:
                _replace(chunks, again)
                continue
            moved = again.blue != c.blue if primary == "blue" else again.green != c.green
            (changing if moved else still).append(again)
            _replace(chunks, again)
        suspects = still + changing
    blue_rows = sum(c.blue.rows for c in chunks)
    green_rows = sum(c.green.rows for c in chunks)
    verdict = _verdict(suspects, [c for c in suspects if c not in changing], blue_rows, green_rows)
    key = table.key or ("(whole table)",)
    span = widest([key_span(blue, table), key_span(green, theirs)]) if suspects else None
    return TableReport(table.qualified, verdict, blue_rows, green_rows, len(chunks),
                       [c.rng.label(key, span) for c in suspects])


def _verdict(suspects: list[_Chunk], differing: list[_Chunk], blue_rows: int, green_rows: int) -> Verdict:
    """Chunks still differing after the rechecks, and not because they kept changing, are a
    difference: lost rows, extra rows, or rows that differ."""
    if not suspects:
        return Verdict.COMPLETE
    if not differing:
        return Verdict.CHANGING
    if green_rows < blue_rows:
        return Verdict.DATA_LOSS
    if green_rows > blue_rows:
        return Verdict.EXTRA_DATA
    return Verdict.DIFFERS


def _replace(chunks: list[_Chunk], new: _Chunk) -> None:
    for i, c in enumerate(chunks):
        if c.rng == new.rng:
            chunks[i] = new


def _first_pass(settings: Settings, blue: Conn, table: Table, rowhash: sql.Composable,
                est_rows: int) -> list[_Chunk]:
    chunk_rows = settings.sync.chunk_rows
    whole = KeyRange(None, None)
    if not table.key:
        b, g = _both(settings, lambda c: chunk_sum(c, table, rowhash, whole))
        return [_Chunk(whole, b, g)]
    if len(table.key) == 1 and key_type(blue, table) in INTEGER_TYPES:
        b_bounds, g_bounds = _both(settings, lambda c: int_bounds(c, table.ident, table.key[0]))
        present = [x for x in (b_bounds, g_bounds) if x is not None]
        if not present:
            return [_Chunk(whole, ChunkSum(0, 0), ChunkSum(0, 0))]
        low, high = min(x[0] for x in present), max(x[1] for x in present)
        # The planner's row estimate sizes the buckets: counting would cost a scan per side.
        buckets = IntBuckets.plan(low, high, est_rows or high - low + 1, chunk_rows)
        b_sums, g_sums = _both(settings, lambda c: bucket_sums(c, table, rowhash, buckets))
        empty = ChunkSum(0, 0)
        return [_Chunk(buckets.range_of(i), b_sums.get(i, empty), g_sums.get(i, empty))
                for i in range(buckets.count)]
    ranges = ranges_between(boundaries(blue, table, chunk_rows))

    def sums(conn: Conn) -> list[ChunkSum]:
        return [chunk_sum(conn, table, rowhash, r) for r in ranges]
    b_list, g_list = _both(settings, sums)
    return [_Chunk(r, b, g) for r, b, g in zip(ranges, b_list, g_list, strict=True)]


def _primary(settings: Settings, blue: Conn, green: Conn) -> str | None:
    """The side the other follows: blue while green subscribes to it, green after the switch
    while blue follows it through the reverse replication; None when neither follows (then
    rechecking cannot help)."""
    for primary, follower, subscription in (("blue", green, objects.pg_name(settings.sync)),
                                            ("green", blue, objects.reverse_name(settings.sync))):
        enabled = follower.execute("SELECT subenabled FROM pg_subscription WHERE subname = %s",
                                   [subscription]).fetchone()
        if enabled is not None and enabled[0]:
            return primary
    return None


def _caught_up(primary: str, blue: Conn, green: Conn, timeout: float) -> bool:
    """Wait until the follower has applied everything the primary committed before now."""
    if primary == "blue":
        return wait_applied(blue, green, timeout)
    return wait_applied(green, blue, timeout)
