"""Foreign keys on a green that got blue's schema: created NOT VALID after the copy (no scan),
then validated once green streams.

Validating `ADD FOREIGN KEY` scans the whole referencing table, seconds for millions of rows,
on the copy's critical path. The rows came from blue, where the key holds, and the apply
worker never fires FK triggers anyway (session_replication_role = replica, like native
replication's own copy). So the scan moves after the subscription starts: VALIDATE CONSTRAINT
takes only a SHARE UPDATE EXCLUSIVE lock, which the apply worker's writes do not conflict with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from psycopg import sql

from config.settings import Settings
from sync.catalog import Table, list_tables
from sync.connections import Conn, connect, databases


@dataclass(frozen=True)
class ForeignKey:
    schema: str
    table: str
    name: str
    definition: str
    """pg_get_constraintdef with every name schema-qualified."""
    comment: str | None = None

    @property
    def target(self) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(self.table))


def on_blue(blue: Conn, tables: Sequence[Table], validated_only: bool = False) -> list[ForeignKey]:
    """The synced tables' top-level foreign keys on blue; validated_only: those blue has
    validated (a key blue holds NOT VALID may have violating rows: green keeps it so too)."""
    with blue.transaction():
        blue.execute("SET LOCAL search_path = ''")  # so constraint definitions name schemas
        rows = blue.execute(
            "SELECT n.nspname, c.relname, con.conname, pg_get_constraintdef(con.oid), "
            "obj_description(con.oid, 'pg_constraint') "
            "FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE con.contype = 'f' AND (con.convalidated OR NOT %s) AND con.conparentid = 0 "
            "AND con.conrelid = ANY(%s) ORDER BY 1, 2, 3",
            [validated_only, [t.oid for t in tables]]).fetchall()
    return [ForeignKey(str(r[0]), str(r[1]), str(r[2]), str(r[3]), None if r[4] is None else str(r[4]))
            for r in rows]


def _on_green(green: Conn, fk: ForeignKey) -> bool | None:
    """None: green lacks it; else whether green has validated it."""
    row = green.execute(
        "SELECT con.convalidated FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND con.conname = %s",
        [fk.schema, fk.table, fk.name]).fetchone()
    return None if row is None else bool(row[0])


def add_not_valid(green: Conn, fks: Sequence[ForeignKey]) -> int:
    """Create the keys green lacks, NOT VALID (instant) where PostgreSQL allows it; safe to
    repeat after an interruption. A partitioned table takes no NOT VALID foreign key: its key
    is added validated, which scans it now."""
    added = 0
    for fk in fks:
        if _on_green(green, fk) is None:
            row = green.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass",
                                [fk.target.as_string(green)]).fetchone()
            later = sql.SQL("" if row is not None and row[0] == "p" else " NOT VALID")
            green.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}{}").format(
                fk.target, sql.Identifier(fk.name), sql.SQL(fk.definition), later))
            if fk.comment is not None:
                green.execute(sql.SQL("COMMENT ON CONSTRAINT {} ON {} IS {}").format(
                    sql.Identifier(fk.name), fk.target, sql.Literal(fk.comment)))
            added += 1
    return added


def validate_pending(settings: Settings, say: Callable[[str], None] = lambda _: None) -> int:
    """Validate every foreign key blue has validated that green still holds NOT VALID;
    returns how many. Run once green streams (`cutover sync` does)."""
    blue_db, green_db = databases(settings)
    with connect(blue_db, "fk") as blue, connect(green_db, "fk", statement_timeout=0) as green:
        pending = [fk for fk in on_blue(blue, list_tables(blue, settings.sync), validated_only=True)
                   if _on_green(green, fk) is False]
        for fk in pending:
            say(f"validating foreign key {fk.name} on {fk.schema}.{fk.table} (green streams meanwhile)")
            green.execute(sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(
                fk.target, sql.Identifier(fk.name)))
    return len(pending)
