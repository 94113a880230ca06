"""Row counts and checksums per key range, computed server-side with one expression on both
sides; shared by verify and (later) the diff sync.

A chunk's checksum is the sum of a 64-bit hash of each row, so it does not depend on row
order and costs one scan. Rows are compared through the columns both sides have, in blue's
order. The hash is hash_record_extended over the values (PostgreSQL >= 14; the same stable
functions hash partitioning relies on), 2-3x cheaper than hashing the row's text; a column
whose type differs between the sides, has no hash function or hashes differently in another
cluster (an enum hashes its OID) goes in as its text (in UTC, the sessions' TimeZone), and
servers without hash_record_extended hash the whole row's text.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from psycopg import sql

from sync.catalog import Table, column_traits, column_types
from sync.connections import Conn

INTEGER_TYPES = {"smallint", "integer", "bigint"}
MAX_BUCKETS = 10_000
"""Caps the buckets of one table, whatever its key range or row estimate."""
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class KeyRange:
    """[low, high) over the key; None is unbounded."""

    low: tuple[Any, ...] | None
    high: tuple[Any, ...] | None

    def label(self, key: tuple[str, ...], span: KeySpan | None = None) -> str:
        """The range as the key's values; an open end shows the lowest or highest key the
        data has (span), so a range over a whole table still names where its rows are."""
        def show(v: tuple[Any, ...] | None) -> str:
            return "…" if v is None else (repr(v[0]) if len(v) == 1 else repr(v))
        low = self.low if self.low is not None or span is None else span[0]
        high, close = (self.high, ")") if self.high is not None or span is None else (span[1], "]")
        return f"{', '.join(key)} in [{show(low)}, {show(high)}{close}"


KeySpan = tuple[tuple[Any, ...], tuple[Any, ...]]
"""The lowest and the highest key of a table."""


def key_span(conn: Conn, table: Table) -> KeySpan | None:
    """The table's lowest and highest key (two probes of its primary key index); None when
    it is empty or has no key."""
    if not table.key:
        return None
    keys = sql.SQL(", ").join(sql.Identifier(k) for k in table.key)
    ends = []
    for order in ("ASC", "DESC"):
        by = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(k), sql.SQL(order))
                                for k in table.key)
        row = conn.execute(sql.SQL("SELECT {} FROM {} ORDER BY {} LIMIT 1").format(
            keys, table.ident, by)).fetchone()
        if row is None:
            return None
        ends.append(tuple(row))
    return ends[0], ends[1]


def widest(spans: Iterable[KeySpan | None]) -> KeySpan | None:
    """The span covering all of the given ones (blue's and green's)."""
    known = [s for s in spans if s is not None]
    if not known:
        return None
    return min(s[0] for s in known), max(s[1] for s in known)


@dataclass(frozen=True)
class ChunkSum:
    rows: int
    checksum: int


def text_row_hash(columns: tuple[str, ...]) -> sql.Composable:
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    # ROW(...) of one column is still a row, so every table hashes the same way.
    return sql.SQL("hashtextextended(ROW({})::text, 0)").format(cols)


FLOAT_SEND = {"double precision": ("float8send", "float8"), "real": ("float4send", "float4")}
"""Floats go in as their bits: hashfloat8 hashes 0.0 (and -0.0) to the seed, 0, which is what
a NULL contributes, so a value of 0 and NULL would sum alike. Every NaN goes in as the one
that 'NaN' reads as: a NaN a client sent (or a float8 -> real cast made) can carry other
bits, which the text ("NaN") does not, and which a copy does not keep (both found by the
diff's property test)."""
FLOAT_ARRAYS = {"double precision[]", "real[]"}


def _record_hash(by_value: dict[str, bool], types: dict[str, str] | None = None) -> sql.Composable:
    def element(c: str) -> sql.Composable:
        typ = (types or {}).get(c, "")
        if not by_value[c] or typ in FLOAT_ARRAYS:
            return sql.SQL("{}::text").format(sql.Identifier(c))
        if typ in FLOAT_SEND:
            send, cast = FLOAT_SEND[typ]
            col = sql.Identifier(c)
            return sql.SQL("{}(CASE WHEN {} = 'NaN' THEN 'NaN'::{} ELSE {} END)").format(
                sql.SQL(send), col, sql.SQL(cast), col)
        return sql.Identifier(c)
    cols = sql.SQL(", ").join(element(c) for c in by_value)
    return sql.SQL("hash_record_extended(ROW({}), 0)").format(cols)


def row_hash(blue: Conn, green: Conn, blue_table: Table, green_table: Table,
             columns: tuple[str, ...]) -> sql.Composable:
    """The per-row hash expression for this table, the same text for both sides."""
    if min(blue.info.server_version, green.info.server_version) < 140000:
        return text_row_hash(columns)
    blue_types, green_types = column_types(blue, blue_table), column_types(green, green_table)
    same = {c for c in columns if blue_types[c] == green_types.get(c)}
    raw = same & column_traits(blue, blue_table).stable_hash & column_traits(green, green_table).stable_hash
    return _record_hash({c: c in raw for c in columns}, blue_types)


def _key_tuple(key: tuple[str, ...]) -> sql.Composable:
    return sql.SQL("ROW({})").format(sql.SQL(", ").join(sql.Identifier(k) for k in key))


def range_predicate(key: tuple[str, ...], rng: KeyRange) -> tuple[sql.Composable, list[Any]]:
    parts: list[sql.Composable] = []
    params: list[Any] = []
    keyrow = _key_tuple(key)
    marks = sql.SQL("ROW({})").format(sql.SQL(", ").join(sql.Placeholder() for _ in key))
    if rng.low is not None:
        parts.append(sql.SQL("{} >= {}").format(keyrow, marks))
        params += list(rng.low)
    if rng.high is not None:
        parts.append(sql.SQL("{} < {}").format(keyrow, marks))
        params += list(rng.high)
    if not parts:
        return sql.SQL("true"), []
    return sql.SQL(" AND ").join(parts), params


def chunk_sum(conn: Conn, table: Table, rowhash: sql.Composable, rng: KeyRange) -> ChunkSum:
    where, params = range_predicate(table.key, rng) if table.key else (sql.SQL("true"), [])
    row = conn.execute(sql.SQL("SELECT count(*), coalesce(sum({}), 0) FROM {} WHERE {}").format(
        rowhash, table.ident, where), params).fetchone()
    assert row is not None
    return ChunkSum(int(row[0]), int(row[1]))


def key_type(conn: Conn, table: Table) -> str:
    row = conn.execute(
        "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "WHERE a.attrelid = %s AND a.attname = %s", [table.oid, table.key[0]]).fetchone()
    return str(row[0]) if row else ""


@dataclass(frozen=True)
class IntBuckets:
    """Fixed-width buckets over a single integer key: one GROUP BY scan per side. The first
    and last buckets are open-ended, so keys written after planning still land somewhere."""

    low: int
    width: int
    count: int

    def range_of(self, bucket: int) -> KeyRange:
        start = self.low + bucket * self.width
        return KeyRange(None if bucket == 0 else (start,),
                        None if bucket == self.count - 1 else (start + self.width,))

    def bounds(self, bucket: int) -> tuple[int, int]:
        """Inclusive bigint bounds of a bucket (the open ends as bigint's own limits)."""
        lo = BIGINT_MIN if bucket == 0 else self.low + bucket * self.width
        hi = BIGINT_MAX if bucket == self.count - 1 else self.low + (bucket + 1) * self.width - 1
        return lo, hi

    def expr(self, column: str) -> sql.Composable:
        """The bucket of a row, as SQL (its values inline, so it goes anywhere)."""
        return sql.SQL("greatest(0, least({}, ({}::bigint - {}) / {}))").format(
            sql.Literal(self.count - 1), sql.Identifier(column), sql.Literal(self.low),
            sql.Literal(self.width))

    @classmethod
    def plan(cls, low: int, high: int, rows: int, chunk_rows: int,
             cap: int = MAX_BUCKETS) -> IntBuckets:
        chunks = min(cap, max(1, math.ceil(rows / chunk_rows)))
        width = max(1, math.ceil((high - low + 1) / chunks))
        return cls(low, width, max(1, math.ceil((high - low + 1) / width)))


def int_bounds(conn: Conn, source: sql.Composable, column: str) -> tuple[int, int] | None:
    """(min, max) of an integer key (two index probes on a table), or None when empty."""
    k = sql.Identifier(column)
    row = conn.execute(sql.SQL("SELECT min({}), max({}) FROM {}").format(
        k, k, source)).fetchone()
    if row is None or row[0] is None:
        return None
    return int(row[0]), int(row[1])


def bucket_sums(conn: Conn, table: Table, rowhash: sql.Composable,
                buckets: IntBuckets) -> dict[int, ChunkSum]:
    rows = conn.execute(sql.SQL("SELECT {} AS b, count(*), sum({}) FROM {} GROUP BY 1").format(
        buckets.expr(table.key[0]), rowhash, table.ident)).fetchall()
    return {int(b): ChunkSum(int(n), int(h)) for b, n, h in rows}


def boundaries(conn: Conn, table: Table, chunk_rows: int) -> list[tuple[Any, ...]]:
    """Every chunk_rows-th key in key order (one ordered scan of the primary key index)."""
    keys = sql.SQL(", ").join(sql.Identifier(k) for k in table.key)
    # Outside the subquery only our aliases are visible: a key column named rn collides with nothing.
    n = len(table.key)
    ours = sql.SQL(", ").join(sql.Identifier(f"k{i}") for i in range(n))
    rows = conn.execute(sql.SQL(
        "SELECT {} FROM (SELECT {}, row_number() OVER (ORDER BY {}) FROM {}) s({}, rn) "
        "WHERE rn %% %s = 0 ORDER BY rn").format(ours, keys, keys, table.ident, ours),
        [chunk_rows]).fetchall()
    return [tuple(r) for r in rows]


def ranges_between(bounds: list[tuple[Any, ...]]) -> list[KeyRange]:
    edges: list[tuple[Any, ...] | None] = [None, *bounds, None]
    return [KeyRange(a, b) for a, b in pairwise(edges)]
