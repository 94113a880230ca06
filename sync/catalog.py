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
        return f"{quote_name(self.schema)}.{quote_name(self.name)}"

    @property
    def replicable(self) -> bool:
        """UPDATE and DELETE can be replicated: a key, or REPLICA IDENTITY FULL/INDEX."""
        return bool(self.key) if self.replica_identity == "d" else self.replica_identity in "fi"


def quote_name(name: str) -> str:
    """A name as PostgreSQL would quote it in a message or a fix to paste."""
    simple = name.isidentifier() and name == name.lower() and name.isascii()
    return name if simple else '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    """As format_type spells it (typmod included: numeric(12,2))."""
    not_null: bool
    has_default: bool
    """A default, an identity or a generated expression: an INSERT without it still works."""
    generated: bool
    """GENERATED ALWAYS AS (...) STORED: computed on each side, never replicated."""


def columns_of(conn: Conn, table: Table) -> dict[str, Column]:
    """The table's columns (by schema and name, so another database's table of that name)."""
    rows = conn.execute(
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
        "a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '', a.attgenerated <> '' "
        "FROM pg_attribute a "
        "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY a.attnum", [table.schema, table.name]).fetchall()
    return {str(r[0]): Column(str(r[0]), str(r[1]), bool(r[2]), bool(r[3]), bool(r[4])) for r in rows}


def column_types(conn: Conn, table: Table) -> dict[str, str]:
    """Column name -> type as format_type spells it (typmod included: numeric(12,2))."""
    return {name: col.type for name, col in columns_of(conn, table).items()}


_TRAITS = """
WITH RECURSIVE walk(col, typ, depth, in_array, deterministic) AS (
    SELECT a.attname::text, a.atttypid, 0, false,
           coalesce((SELECT co.collisdeterministic FROM pg_collation co WHERE co.oid = a.attcollation), true)
      FROM pg_attribute a
      JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL  -- through domains to their base type, through arrays to their element type
    SELECT w.col, CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.typelem END, w.depth + 1,
           w.in_array OR t.typtype <> 'd', w.deterministic
      FROM walk w JOIN pg_type t ON t.oid = w.typ
     WHERE w.depth < 20 AND (t.typtype = 'd'
           OR (t.typelem <> 0 AND t.typcategory = 'A'))
), typed AS (
    SELECT w.col, t.typtype = 'd' OR t.typelem <> 0 AND t.typcategory = 'A' AS wrapper,
           -- an array's binary form carries its element type's OID: a domain's differs
           t.typtype = 'd' AND w.in_array AS domain_in_array,
           -- reg* values are OIDs: as text they are names, which the other cluster resolves
           t.oid < 16384 AND t.typtype IN ('b', 'r', 'm') AND t.typname !~ '^reg' AS builtin,
           -- a nondeterministic collation hashes through ICU sort keys, which vary by version
           w.deterministic AND EXISTS (
               SELECT FROM pg_opclass oc
                 JOIN pg_am am ON am.oid = oc.opcmethod AND am.amname = 'hash'
                 JOIN pg_amproc p ON p.amprocfamily = oc.opcfamily AND p.amprocnum = 2
                WHERE oc.opcdefault AND (oc.opcintype = t.oid OR EXISTS (
                      SELECT FROM pg_cast c WHERE c.castsource = t.oid
                         AND c.casttarget = oc.opcintype AND c.castmethod = 'b'
                         AND c.castcontext = 'i'))) AS hashes
      FROM walk w JOIN pg_type t ON t.oid = w.typ
)
SELECT col, bool_and((wrapper OR builtin) AND NOT domain_in_array), bool_and(wrapper OR builtin AND hashes)
  FROM typed GROUP BY col
"""


@dataclass(frozen=True)
class ColumnTraits:
    """What a table's column types allow between two clusters, whose user-defined types have
    different OIDs. Asked of the catalog: probing would leave an error in the server's log."""

    portable_binary: set[str]
    """Columns of built-in types (through domains and arrays): binary COPY carries them. An
    array or a composite of a user type embeds that type's OID, which the other side rejects,
    and a reg* value is an OID of this cluster."""
    stable_hash: set[str]
    """Columns whose values hash the same in any cluster: built-in base types with an extended
    hash function. Enums hash their OID, composites and ranges hash
    their fields by their types' functions, and an extension's hashing is unknown: those are
    hashed as text."""


def column_traits(conn: Conn, table: Table) -> ColumnTraits:
    """By schema and name, like columns_of: the table may be the other side's."""
    rows = conn.execute(_TRAITS, [table.schema, table.name]).fetchall()
    return ColumnTraits({str(r[0]) for r in rows if r[1]}, {str(r[0]) for r in rows if r[2]})


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
