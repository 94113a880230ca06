"""The diff sync: green made equal to blue with only SELECT on blue, by comparing checksums
instead of reading a replication stream. For databases where logical replication is not
possible, and for green tables computed from blue by a query (transforms).

One cycle, per table (or transform):
1. buckets: each side groups its rows into small buckets by key and returns each bucket's
   count and sum of row hashes (sync.checksums: the expression verify uses), in one scan.
   A single integer key is bucketed by ranges (so step 2 reads ranges through the index),
   any other key (text, UUID, composite) by a hash of the key;
2. rows: for the buckets that differ, each side returns (key, row hash) pairs; their
   comparison names every row to insert, update or delete. (A bisection halving ranges
   level by level costs a round trip per level; buckets of ~bucket_rows rows are the last
   level of it in one pass);
3. apply: blue's rows for those keys go to green as COPY text (no value passes through
   Python), in batches of one transaction each: upsert on the key (green-only columns keep
   their values), delete by key.
Blue is read in one REPEATABLE READ snapshot per cycle, so a cycle copies one consistent
state. A cycle killed midway leaves whole batches; the next one finds what is left.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from config.settings import Settings
from sync import largeobjects, objects
from sync.callbacks import Say
from sync.catalog import list_tables, table_by_name
from sync.checksums import IntBuckets, int_bounds
from sync.connections import Conn, connect, databases
from sync.diff_apply import BATCH_ROWS, Applier, Key, Progress, batches, key_match
from sync.diff_targets import Side, Target, targets
from sync.errors import BadInputError, SyncError
from sync.schema import SchemaDump, synced_schemas
from sync.sequences import copy_sequences

BUCKET_ROWS = 100
"""Rows per bucket: small enough that one changed row in a bucket costs ~100 (key, hash)
pairs of step 2, large enough that step 1 returns few rows (50 k for 5 M rows)."""
MAX_BUCKETS = 2_000_000


@dataclass
class TableDiff:
    table: str
    blue_rows: int = 0
    green_rows: int = 0
    buckets: int = 0
    buckets_differing: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    incremental: bool = False
    """Only rows at or past the watermark were compared (no deletes looked for)."""


@dataclass
class CycleReport:
    dry_run: bool
    tables: list[TableDiff] = field(default_factory=list)
    seconds: float = 0.0
    sequences: int = 0

    def total(self, what: str) -> int:
        return sum(int(getattr(t, what)) for t in self.tables)

    def as_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "seconds": round(self.seconds, 3),
                "sequences": self.sequences,
                "rows_compared": self.total("blue_rows"),
                "buckets_differing": self.total("buckets_differing"),
                "inserted": self.total("inserted"), "updated": self.total("updated"),
                "deleted": self.total("deleted"),
                "tables": [vars(t) for t in self.tables]}


# -- step 1: buckets ------------------------------------------------------------------------


@dataclass(frozen=True)
class Buckets:
    """How rows fall into buckets: verify's integer ranges (checksums.IntBuckets), or key
    hashes mod count for any other key."""

    count: int
    ints: IntBuckets | None = None

    def expr(self, key: tuple[str, ...]) -> sql.Composable:
        if self.ints is not None:
            return self.ints.expr(key[0])
        keyrow = sql.SQL(", ").join(sql.Identifier(k) for k in key)
        return sql.SQL("mod(hash_record_extended(ROW({}), 0) & 9223372036854775807, {})").format(
            keyrow, sql.Literal(self.count))


def plan_buckets(target: Target, rows: int, bounds: tuple[int, int] | None,
                 bucket_rows: int = BUCKET_ROWS) -> Buckets:
    if target.int_key and bounds is not None:
        ints = IntBuckets.plan(bounds[0], bounds[1], rows, bucket_rows, cap=MAX_BUCKETS)
        return Buckets(ints.count, ints)
    return Buckets(min(MAX_BUCKETS, max(1, math.ceil(rows / bucket_rows))))


def bucket_sums(conn: Conn, target: Target, side: Side, buckets: Buckets) -> dict[int, tuple[int, int]]:
    rows = conn.execute(sql.SQL(
        "SELECT b, count(*), sum(h) FROM (SELECT {} AS b, {} AS h FROM {}) s GROUP BY b").format(
            buckets.expr(target.key), side.rowhash, side.source)).fetchall()
    return {int(b): (int(n), int(h)) for b, n, h in rows}


# -- step 2: rows of differing buckets ------------------------------------------------------


def row_hashes(conn: Conn, target: Target, side: Side, buckets: Buckets,
               differing: list[int]) -> dict[Key, int]:
    keys = sql.SQL(", ").join(sql.Identifier(k) for k in target.key)
    if buckets.ints is not None:  # ranges: index range scans joined to the bucket bounds
        lo, hi = zip(*(buckets.ints.bounds(b) for b in differing), strict=True)
        # The user's columns stay inside the subquery and ours are named by aliases outside
        # it, so no user column name can make a reference ambiguous.
        query = sql.SQL("SELECT s.* FROM (SELECT {}, {} FROM {}) AS s({}) "
                        "JOIN unnest(%s::bigint[], %s::bigint[]) AS d(lo, hi) "
                        "ON s.k0 BETWEEN d.lo AND d.hi").format(
                            keys, side.rowhash, side.source, _aliases(len(target.key)))
        params: list[Any] = [list(lo), list(hi)]
    else:
        query = sql.SQL("SELECT {}, {} FROM {} WHERE {} = ANY(%s)").format(
            keys, side.rowhash, side.source, buckets.expr(target.key))
        params = [differing]
    n = len(target.key)
    with conn.cursor(binary=True) as cur:  # hundreds of thousands of pairs: no text parsing
        return {tuple(r[:n]): int(r[n]) for r in cur.execute(query, params).fetchall()}


def _aliases(keys: int) -> sql.Composable:
    """k0, k1, ... for the key columns, then h for the row hash."""
    return sql.SQL(", ").join([*(sql.Identifier(f"k{i}") for i in range(keys)), sql.Identifier("h")])


# -- one cycle ------------------------------------------------------------------------------


def diff_target(blue: Conn, green: Conn, target: Target, dry_run: bool,
                bucket_rows: int = BUCKET_ROWS, progress: Progress = lambda _t, _d, _n: None) -> TableDiff:
    report = TableDiff(target.label)
    bounds = None
    if target.int_key:
        found = [b for b in (int_bounds(blue, target.blue.source, target.key[0]),
                             int_bounds(green, target.green_side.source, target.key[0])) if b]
        bounds = (min(b[0] for b in found), max(b[1] for b in found)) if found else None
    buckets = plan_buckets(target, target.est_rows, bounds, bucket_rows)
    report.buckets = buckets.count
    with ThreadPoolExecutor(max_workers=2) as both:  # each side scans on its own server at once
        mine = both.submit(bucket_sums, blue, target, target.blue, buckets)
        theirs = bucket_sums(green, target, target.green_side, buckets)
        ours = mine.result()
    report.blue_rows = sum(n for n, _ in ours.values())
    report.green_rows = sum(n for n, _ in theirs.values())
    differing = sorted(b for b in ours.keys() | theirs.keys() if ours.get(b) != theirs.get(b))
    report.buckets_differing = len(differing)
    if not differing:
        return report
    with ThreadPoolExecutor(max_workers=2) as both:
        blue_rows = both.submit(row_hashes, blue, target, target.blue, buckets, differing)
        had = row_hashes(green, target, target.green_side, buckets, differing)
        have = blue_rows.result()
    inserts = [k for k in have if k not in had]
    updates = [k for k, h in have.items() if k in had and had[k] != h]
    deletes = [k for k in had if k not in have]
    report.inserted, report.updated, report.deleted = len(inserts), len(updates), len(deletes)
    if not dry_run:
        Applier(blue, green, target, progress).apply(inserts + updates, deletes)
    return report


def diff_since(blue: Conn, green: Conn, target: Target, column: str, since: str,
               dry_run: bool, progress: Progress = lambda _t, _d, _n: None) -> TableDiff:
    """Incremental: blue's rows whose watermark column is at or past `since`, against green's
    rows of the same keys. Finds inserts and updates; deletes wait for the next full pass."""
    report = TableDiff(target.label, incremental=True)
    keys = sql.SQL(", ").join(sql.Identifier(k) for k in target.key)
    n = len(target.key)
    with blue.cursor(binary=True) as cur:
        have = {tuple(r[:n]): int(r[n]) for r in cur.execute(sql.SQL(
            "SELECT {}, {} FROM {} WHERE {} >= %s").format(
                keys, target.blue.rowhash, target.blue.source, sql.Identifier(column)),
            [since]).fetchall()}
    report.blue_rows = len(have)
    had: dict[Key, int] = {}
    for batch in batches(have, BATCH_ROWS):
        with green.cursor(binary=True) as cur:
            had.update({tuple(r[:n]): int(r[n]) for r in cur.execute(sql.SQL(
                "SELECT {}, {} FROM {} WHERE {}").format(
                    keys, target.green_side.rowhash, target.green_side.source,
                    key_match(target, batch))).fetchall()})
    report.green_rows = len(had)
    inserts = [k for k in have if k not in had]
    updates = [k for k, h in have.items() if k in had and had[k] != h]
    report.inserted, report.updated = len(inserts), len(updates)
    if not dry_run and (inserts or updates):
        Applier(blue, green, target, progress).apply(inserts + updates, [])
    return report


class Watermarks:
    """Per target on green (cutover.diff_watermarks): the watermark column's highest value
    seen, and cycles since the last full pass. Green only: blue needs nothing but SELECT."""

    def __init__(self, green: Conn) -> None:
        self.green = green
        green.execute("CREATE SCHEMA IF NOT EXISTS cutover")
        green.execute("CREATE TABLE IF NOT EXISTS cutover.diff_watermarks (target text PRIMARY KEY, "
                      "watermark text, since_full int NOT NULL)")

    def get(self, target: Target) -> tuple[str | None, int]:
        row = self.green.execute("SELECT watermark, since_full FROM cutover.diff_watermarks "
                                 "WHERE target = %s", [target.label]).fetchone()
        return (None, 0) if row is None else (row[0], int(row[1]))

    def put(self, target: Target, watermark: str | None, since_full: int) -> None:
        self.green.execute("INSERT INTO cutover.diff_watermarks VALUES (%s, %s, %s) ON CONFLICT "
                           "(target) DO UPDATE SET watermark = excluded.watermark, "
                           "since_full = excluded.since_full", [target.label, watermark, since_full])


def _highest(blue: Conn, target: Target, column: str) -> str | None:
    row = blue.execute(sql.SQL("SELECT max({})::text FROM {}").format(
        sql.Identifier(column), target.blue.source)).fetchone()
    return None if row is None or row[0] is None else str(row[0])


def _diff_one(blue: Conn, green: Conn, target: Target, settings: Settings, marks: Watermarks | None,
              dry_run: bool, bucket_rows: int, progress: Progress) -> TableDiff:
    """A full pass, or (a watermark column the target has, a watermark saved, a full pass
    less than full_pass_every cycles ago) an incremental one."""
    column = settings.sync.watermark_column
    if marks is None or column is None or column not in target.columns:
        return diff_target(blue, green, target, dry_run, bucket_rows, progress)
    since, since_full = marks.get(target)
    # Read before comparing, in blue's snapshot: rows written after it wait for the next cycle.
    highest = _highest(blue, target, column)
    if since is not None and since_full + 1 < settings.sync.full_pass_every:
        done = diff_since(blue, green, target, column, since, dry_run, progress)
        if not dry_run:
            marks.put(target, highest or since, since_full + 1)
        return done
    done = diff_target(blue, green, target, dry_run, bucket_rows, progress)
    if not dry_run:
        marks.put(target, highest, 0)
    return done


def _for_pass(settings: Settings, reverse: bool, full: bool) -> Settings:
    """The settings a reverse pass (no transforms: they have no inverse; their targets left
    alone) or a full one (no watermark shortcut) works with."""
    if not (reverse or full):
        return settings
    sync = settings.sync.model_copy(update={
        "transforms": [] if reverse else settings.sync.transforms,
        "exclude_tables": settings.sync.exclude_tables + (
            [t.target for t in settings.sync.transforms] if reverse else []),
        "watermark_column": None})
    return settings.model_copy(update={"sync": sync})


def _tune_for_buckets(conn: Conn) -> None:
    # One bucket per ~100 rows is 50 k groups for 5 M rows. The planner cannot count the
    # groups of an expression (it guesses one per row) and picks a parallel sort; a hash
    # aggregate in 64 MB is what fits: 2.1 s -> 1.25 s per side on pgbench -s 50. No parallel
    # workers: the other side's scan has the other core.
    conn.execute("SET work_mem = '64MB'")
    conn.execute("SET enable_sort = off")
    conn.execute("SET max_parallel_workers_per_gather = 0")


def cycle(settings: Settings, *, dry_run: bool = False, say: Say = lambda _: None,
          bucket_rows: int = BUCKET_ROWS, reverse: bool = False, full: bool = False,
          progress: Progress = lambda _t, _d, _n: None) -> CycleReport:
    """One diff cycle over every table and transform: green equals blue's snapshot after it
    (unless dry_run: nothing is written, the report says what would change).
    reverse: green -> blue instead (after a switch: the way back), same-named tables only, a
    transform has no inverse. full: no watermark shortcut (the switch's final pass)."""
    started = time.monotonic()
    report = CycleReport(dry_run)
    blue_db, green_db = databases(settings)
    settings = _for_pass(settings, reverse, full)
    if reverse:
        blue_db, green_db = green_db, blue_db
    with connect(blue_db, "diff", statement_timeout=0) as blue, \
            connect(green_db, "diff", statement_timeout=0) as green:
        if reverse:  # blue's own excluded tables need not exist on green
            kept = [n for n in settings.sync.exclude_tables
                    if blue.execute("SELECT to_regclass(%s)", [n]).fetchone() not in (None, (None,))]
            settings = settings.model_copy(update={"sync": settings.sync.model_copy(
                update={"exclude_tables": kept})})
        todo = targets(settings, blue, green)
        if not todo:
            raise BadInputError(f"no tables to sync in schemas {settings.sync.schemas}")
        _replica_role(green)
        for conn in (blue, green):
            _tune_for_buckets(conn)
        marks = Watermarks(green) if settings.sync.watermark_column else None
        blue.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            for target in todo:
                try:
                    done = _diff_one(blue, green, target, settings, marks, dry_run, bucket_rows,
                                     progress)
                except psycopg.Error as exc:
                    raise SyncError(f"diff of {target.label} failed: {str(exc).strip()}; the next "
                                    "cycle picks up whatever this one did not apply") from None
                report.tables.append(done)
                verb = "would change" if dry_run else "changed"
                compared = (f"{done.blue_rows:,} rows at or past the watermark" if done.incremental
                            else f"{done.blue_rows:,} rows, {done.buckets_differing:,} of "
                                 f"{done.buckets:,} buckets differ")
                say(f"{target.label}: {compared}; {verb}: +{done.inserted:,} "
                    f"~{done.updated:,} -{done.deleted:,}")
            if not dry_run:
                report.sequences = copy_sequences(blue, green, synced_schemas(blue, settings)).copied
                largeobjects.copy_missing(blue, green)
        finally:
            blue.execute("COMMIT")
    report.seconds = time.monotonic() - started
    return report


def ensure_schema(settings: Settings, say: Say = lambda _: None) -> bool:
    """An empty green gets blue's schema (tables, then indexes and constraints), as for the
    logical sync; a green that has any of the tables is left as it is, unless an earlier
    run was interrupted while copying the schema (the marker says so): that one is
    completed. True if copied."""
    blue_db, green_db = databases(settings)
    name = objects.pg_name(settings.sync)
    with connect(blue_db, "diff-schema") as blue, connect(green_db, "diff-schema") as green:
        tables = list_tables(blue, settings.sync)
        interrupted = objects.schema_copy_interrupted(green, name)
        if not tables or (not interrupted and any(table_by_name(green, t.schema, t.name) for t in tables)):
            return False
        objects.write_phase(green, name, objects.SCHEMA_COPYING, True)
    say(f"green has none of the {len(tables)} table(s): copying blue's schema" if not interrupted
        else "completing blue's schema on green (an earlier run was interrupted copying it)")
    with SchemaDump(settings, tables) as dump:
        dump.restore("pre-data")
        dump.restore("post-data")
    with connect(green_db, "diff-schema") as green:
        objects.write_phase(green, name, objects.SCHEMA_COPIED, True)
    return True


def _replica_role(green: Conn) -> None:
    """Like the apply worker: no user triggers or foreign key checks while green is filled
    table by table (a child may arrive before its parent). Needs a superuser; without it
    the checks stay on and tables are applied in the configured order."""
    try:
        with green.transaction():
            green.execute("SET session_replication_role = replica")
    except psycopg.errors.InsufficientPrivilege:
        pass
