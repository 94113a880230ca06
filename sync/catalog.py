"""What a database holds: the tables to sync with their keys, sequences, extensions.

Table names from the config are resolved by PostgreSQL itself (to_regclass), so quoting,
capitals and hostile identifiers are parsed exactly as the server does and never spliced
into SQL text; everything we build later quotes through psycopg.sql.Identifier.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import sql
from psycopg.rows import kwargs_row

from config.replication import SyncSettings
from sync.connections import Conn
from sync.errors import BadInputError


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    oid: int
    kind: str
    """'r' ordinary, 'p' partitioned."""
    persistence: str
    """'p' permanent, 'u' unlogged, 't' temporary."""
    replica_identity: str
    """'d' default (primary key), 'f' full, 'i' index, 'n' nothing."""
    key: tuple[str, ...]
    """Primary key columns, in key order; empty when there is none."""
    columns: tuple[str, ...]
    est_rows: int
    pages: int
    """Heap pages now (not the planner's estimate): what ctid-range chunks are cut from."""
    bytes: int

    @property
    def ident(self) -> sql.Composed:
        return sql.SQL(".").join([sql.Identifier(self.schema), sql.Identifier(self.name)])

    @property
    def qualified(self) -> str:
        """For messages and journals: the name as PostgreSQL would quote it."""
        return f"{_quote(self.schema)}.{_quote(self.name)}"

    @property
    def replicable(self) -> bool:
        """UPDATE and DELETE can be replicated: a key, or REPLICA IDENTITY FULL/INDEX."""
        return bool(self.key) if self.replica_identity == "d" else self.replica_identity in "fi"


def _quote(name: str) -> str:
    simple = name.isidentifier() and name == name.lower() and name.isascii()
    return name if simple else '"' + name.replace('"', '""') + '"'


def column_types(conn: Conn, table: Table) -> dict[str, str]:
    """Column name -> type as format_type spells it (typmod included: numeric(12,2))."""
    rows = conn.execute(
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped",
        [table.schema, table.name]).fetchall()
    return {str(r[0]): str(r[1]) for r in rows}


_TABLES = """
SELECT c.oid::bigint AS oid, n.nspname::text AS schema, c.relname::text AS name,
       c.relkind::text AS kind, c.relpersistence::text AS persistence,
       c.relreplident::text AS replica_identity, greatest(c.reltuples, 0)::bigint AS est_rows,
       (pg_relation_size(c.oid) / current_setting('block_size')::int)::bigint
         AS pages, pg_total_relation_size(c.oid) AS bytes,
       coalesce((SELECT array_agg(a.attname::text ORDER BY k.ord)
                   FROM pg_index i
                   CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                  WHERE i.indrelid = c.oid AND i.indisprimary), ARRAY[]::text[]) AS key,
       coalesce((SELECT array_agg(a.attname::text ORDER BY a.attnum)
                   FROM pg_attribute a
                  WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                    AND a.attgenerated = ''), ARRAY[]::text[]) AS columns
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
   AND {where}
 ORDER BY n.nspname, c.relname
"""


def _table(**row: Any) -> Table:
    return Table(**{**row, "key": tuple(row["key"]), "columns": tuple(row["columns"])})


def _tables(conn: Conn, where: sql.Composable, params: list[object]) -> list[Table]:
    with conn.cursor(row_factory=kwargs_row(_table)) as cur:
        return cur.execute(sql.SQL(_TABLES).format(where=where), params).fetchall()


def list_tables(conn: Conn, settings: SyncSettings) -> list[Table]:
    """The tables to sync: `tables` if given (each must exist), else every table of `schemas`,
    minus `exclude_tables`. Cutover's own schema is never synced as user data."""
    if settings.tables:
        oids = [resolve(conn, name) for name in settings.tables]
        where = sql.SQL("c.oid = ANY(%s)")
        params: list[object] = [oids]
    else:
        where = sql.SQL("n.nspname = ANY(%s)")
        params = [list(settings.schemas)]
    tables = _tables(conn, where, params)
    excluded = {resolve(conn, name) for name in settings.exclude_tables}
    return [t for t in tables if t.oid not in excluded and t.schema != "cutover"]


def resolve(conn: Conn, name: str) -> int:
    """The OID of a table named as in SQL (schema.table, quoted or not), or BadInputError."""
    try:
        row = conn.execute("SELECT to_regclass(%s)::oid", [name]).fetchone()
    except Exception as exc:  # a syntax error in the name, e.g. unbalanced quotes
        raise BadInputError(f"sync.tables: {name!r} is not a valid table name: {exc}") from None
    if row is None or row[0] is None:
        raise BadInputError(f"sync.tables: table {name!r} does not exist on blue "
                            "(names are case-sensitive when quoted: \"MyTable\")")
    return int(row[0])


def table_by_name(conn: Conn, schema: str, name: str) -> Table | None:
    """The same table (by schema and name) in another database, e.g. green."""
    found = _tables(conn, sql.SQL("n.nspname = %s AND c.relname = %s"), [schema, name])
    return found[0] if found else None


def partitions(conn: Conn, table: Table) -> list[tuple[str, str]]:
    """Every partition below a partitioned table (schema, name), at any depth."""
    rows = conn.execute(
        "SELECT n.nspname::text, c.relname::text FROM pg_partition_tree(%s) p "
        "JOIN pg_class c ON c.oid = p.relid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE p.relid <> %s::regclass", [table.oid, table.oid]).fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


@dataclass(frozen=True)
class Sequence:
    schema: str
    name: str
    last_value: int | None
    is_called: bool

    @property
    def ident(self) -> sql.Composed:
        return sql.SQL(".").join([sql.Identifier(self.schema), sql.Identifier(self.name)])


def list_sequences(conn: Conn, schemas: list[str]) -> list[Sequence]:
    """Every sequence in the schemas: owned (serial), identity and free-standing ones."""
    rows = conn.execute(
        "SELECT schemaname, sequencename, last_value FROM pg_sequences "
        "WHERE schemaname = ANY(%s) ORDER BY 1, 2", [schemas]).fetchall()
    return [Sequence(str(r[0]), str(r[1]), None if r[2] is None else int(r[2]), r[2] is not None)
            for r in rows]


def extensions(conn: Conn) -> dict[str, str]:
    return {str(r[0]): str(r[1]) for r in
            conn.execute("SELECT extname, extversion FROM pg_extension ORDER BY 1").fetchall()}
