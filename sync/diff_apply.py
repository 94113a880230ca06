"""The diff sync's step 3: blue's rows for the keys that differ go to green as COPY text, in
batches of one transaction each (upsert on the key, delete by key)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import Any

from psycopg import sql

from sync.connections import Conn
from sync.diff_targets import Target

BATCH_ROWS = 5_000
"""Rows per apply transaction."""

Key = tuple[Any, ...]
Progress = Callable[[str, int, int], None]
"""(target, rows written so far, rows to write in all), after each applied batch."""


# -- step 3: apply --------------------------------------------------------------------------


def key_match(target: Target, keys: Sequence[Key]) -> sql.Composable:
    """`(k1, k2) IN (SELECT * FROM unnest(ARRAY[..]::t1[], ...))` with the keys as literals
    (COPY takes no parameters)."""
    cols = [[k[i] for k in keys] for i in range(len(target.key))]
    arrays = sql.SQL(", ").join(
        sql.SQL("{}::{}[]").format(sql.Literal(values), sql.SQL(typ))
        for values, typ in zip(cols, target.key_types, strict=True))
    keyrow = sql.SQL(", ").join(sql.Identifier(k) for k in target.key)
    return sql.SQL("({}) IN (SELECT * FROM unnest({}))").format(keyrow, arrays)


def batches(keys: Iterable[Key], size: int) -> Iterator[list[Key]]:
    it = iter(keys)
    while batch := list(islice(it, size)):
        yield batch


class Applier:
    """Writes one target's differences to green, a batch per transaction."""

    def __init__(self, blue: Conn, green: Conn, target: Target,
                 progress: Progress = lambda _t, _d, _n: None) -> None:
        self.blue, self.green, self.t, self.progress = blue, green, target, progress
        self.cols = sql.SQL(", ").join(sql.Identifier(c) for c in target.columns)
        self.stage = sql.Identifier(f"cutover_diff_stage_{target.green.oid}")
        # GENERATED ALWAYS identity columns take a value on INSERT (OVERRIDING SYSTEM VALUE)
        # but no UPDATE may set them: a row whose value changed (re-created on blue) is
        # deleted and inserted again instead.
        always = {str(r[0]) for r in green.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attidentity = 'a'",
            [target.green.oid]).fetchall()}
        self.always = [c for c in target.columns if c in always]
        self.settable = [c for c in target.columns if c not in target.key and c not in always]

    def apply(self, upserts: list[Key], deletes: list[Key]) -> None:
        self.green.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} AS SELECT {} FROM {} "
                                   "WITH NO DATA").format(self.stage, self.cols, self.t.green.ident))
        total, done = len(upserts) + len(deletes), 0
        for batch in batches(deletes, BATCH_ROWS):
            with self.green.transaction():
                self.green.execute(sql.SQL("DELETE FROM {} WHERE {}").format(
                    self.t.green.ident, key_match(self.t, batch)))
            done += len(batch)
            self.progress(self.t.label, done, total)
        for batch in batches(upserts, BATCH_ROWS):
            with self.green.transaction():
                self._upsert(batch)
            done += len(batch)
            self.progress(self.t.label, done, total)
        self.green.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.stage))

    def _upsert(self, batch: list[Key]) -> None:
        t = self.t
        read = sql.SQL("COPY (SELECT {} FROM {} WHERE {}) TO STDOUT").format(
            self.cols, t.blue.source, key_match(t, batch))
        with self.blue.cursor() as src, self.green.cursor() as dst:
            dst.execute(sql.SQL("TRUNCATE {}").format(self.stage))
            with src.copy(read) as out, dst.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(
                    self.stage, self.cols)) as inp:
                for block in out:
                    inp.write(block)
            keys = sql.SQL(", ").join(sql.Identifier(k) for k in t.key)
            if self.always:
                dst.execute(sql.SQL("DELETE FROM {} t USING {} s WHERE {} AND ({})").format(
                    t.green.ident, self.stage,
                    sql.SQL(" AND ").join(sql.SQL("t.{} = s.{}").format(sql.Identifier(k), sql.Identifier(k))
                                          for k in t.key),
                    sql.SQL(" OR ").join(sql.SQL("t.{} IS DISTINCT FROM s.{}").format(
                        sql.Identifier(c), sql.Identifier(c)) for c in self.always)))
            action = sql.SQL("DO NOTHING") if not self.settable else sql.SQL("DO UPDATE SET {}").format(
                sql.SQL(", ").join(sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c))
                                   for c in self.settable))
            dst.execute(sql.SQL("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {} "
                                "ON CONFLICT ({}) {}").format(
                                    t.green.ident, self.cols, self.cols, self.stage, keys, action))
