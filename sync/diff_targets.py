"""What the diff sync compares: each table, or transform, as a target with its key and the
columns both sides share."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from config.replication import TransformSettings
from config.settings import Settings
from sync.catalog import Table, column_types, list_tables, resolve, table_by_name
from sync.checksums import INTEGER_TYPES, row_hash, text_row_hash
from sync.connections import Conn
from sync.errors import BadInputError


@dataclass(frozen=True)
class Side:
    """What a side's rows come from: a table, or a query over blue (a transform)."""

    source: sql.Composable
    """FROM-clause text: a table, or (query) AS src."""
    rowhash: sql.Composable


@dataclass(frozen=True)
class Target:
    """One green table synced from blue: a table of the same name, or a transform."""

    label: str
    green: Table
    blue: Side
    green_side: Side
    key: tuple[str, ...]
    columns: tuple[str, ...]
    """Compared and copied: blue's (or the query's) columns green has too."""
    key_types: tuple[str, ...]
    int_key: bool
    est_rows: int
    """Rows to plan buckets for: the planner's estimate, or a count of a transform's query."""


# -- what to sync ---------------------------------------------------------------------------


def targets(settings: Settings, blue: Conn, green: Conn) -> list[Target]:
    """The synced tables (blue's, found on green) and the transforms; BadInputError naming
    the table for anything that cannot be diffed."""
    sync = settings.sync
    transform_targets = {resolve_green(green, t.target) for t in sync.transforms}
    out: list[Target] = []
    for table in list_tables(blue, sync):
        mine = table_by_name(green, table.schema, table.name)
        if mine is None:
            raise BadInputError(f"{table.qualified} is on blue but not on green; create it on "
                                "green, list it in sync.exclude_tables, or give a [[sync.transforms]] "
                                "that fills green's table from it and exclude it")
        if mine.oid in transform_targets:
            continue
        if not table.key or table.key != mine.key:
            what = "has no primary key" if not table.key else f"is keyed {mine.key} on green"
            raise BadInputError(f"{table.qualified} {what}; the diff sync finds rows by their "
                                "primary key (the same on both sides)")
        columns = tuple(c for c in table.columns if c in mine.columns)
        rowhash = row_hash(blue, green, table, mine, columns)
        out.append(_target(table.qualified, mine, table.key, columns, green, Side(table.ident, rowhash),
                           Side(mine.ident, rowhash), max(table.est_rows, mine.est_rows)))
    out += [_transform(t, blue, green) for t in sync.transforms]
    return out


def resolve_green(green: Conn, name: str) -> int:
    try:
        return resolve(green, name)
    except BadInputError as exc:
        raise BadInputError(str(exc).replace("on blue", "on green").replace(
            "sync.tables", "sync.transforms.target")) from None


def _transform(t: TransformSettings, blue: Conn, green: Conn) -> Target:
    oid = resolve_green(green, t.target)
    row = green.execute("SELECT n.nspname::text, c.relname::text FROM pg_class c "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %s", [oid]).fetchone()
    assert row is not None
    table = table_by_name(green, str(row[0]), str(row[1]))
    assert table is not None
    query = sql.SQL("({}) AS src").format(sql.SQL(t.query))  # the operator's own SQL, over blue
    try:
        with blue.transaction():
            cur = blue.execute(sql.SQL("SELECT * FROM {} LIMIT 0").format(query))
    except psycopg.Error as exc:
        raise BadInputError(f"sync.transforms ({t.target}): the query fails on blue: "
                            f"{str(exc).strip()}") from None
    produced = tuple(d.name for d in cur.description or ())
    missing_key = [k for k in t.key if k not in produced]
    if missing_key:
        raise BadInputError(f"sync.transforms ({t.target}): key column(s) {missing_key} are not "
                            f"among the query's columns {list(produced)}")
    unknown = [c for c in produced if c not in table.columns]
    if unknown:
        raise BadInputError(f"sync.transforms ({t.target}): the query's column(s) {unknown} are "
                            f"not in {table.qualified}")
    if set(t.key) != set(table.key):
        raise BadInputError(f"sync.transforms ({t.target}): key {t.key} is not the primary key "
                            f"{list(table.key)} of {table.qualified}")
    # Types may differ between a query and a table: compared by their text.
    rowhash = text_row_hash(produced)
    # The planner's estimate sizes the buckets: counting would run the query once more.
    plan = blue.execute(sql.SQL("EXPLAIN (FORMAT JSON) SELECT * FROM {}").format(query)).fetchone()
    planned = int(plan[0][0]["Plan"]["Plan Rows"]) if plan else 0
    return _target(f"{table.qualified} (transform)", table, tuple(table.key), produced, green,
                   Side(query, rowhash), Side(table.ident, rowhash), max(planned, table.est_rows))


def _target(label: str, green_table: Table, key: tuple[str, ...], columns: tuple[str, ...],
            green: Conn, blue_side: Side, green_side: Side, est_rows: int) -> Target:
    types = column_types(green, green_table)
    key_types = tuple(types[k] for k in key)
    int_key = len(key) == 1 and key_types[0] in INTEGER_TYPES
    return Target(label, green_table, blue_side, green_side, key, columns, key_types, int_key,
                  est_rows)
