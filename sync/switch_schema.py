"""What the new primary must have before it takes the writes: every table and column the old
one's writes need, and a way back for every table (the reverse replication's column lists)."""

from __future__ import annotations

from config.settings import Settings, need_switchover
from sync.catalog import Table, list_tables, table_by_name
from sync.connections import Conn
from sync.errors import SyncError
from sync.status import schema_drift
from sync.switch_report import Direction


def precheck_schema(settings: Settings, src: Conn, dst: Conn, d: Direction) -> None:
    """A table or column the new primary lacks, or one it never received, would lose its
    writes' data with the switch: refused until the sync carries it."""
    old = "blue" if d.to == "green" else "green"
    blocking = [str(x) for x in schema_drift(src, dst, settings.sync,
                                              publication=d.old, names=(old, d.to))
                if x.blocks_writes]
    if blocking:
        raise SyncError(f"{d.to} cannot take the writes yet: {'; '.join(blocking[:5])}"
                        f"{f' (and {len(blocking) - 5} more)' if len(blocking) > 5 else ''}; "
                        f"re-run `cutover sync` to add tables created on {old} since the sync "
                        f"started, add missing columns on {d.to}, then switch")
    if need_switchover(settings, "the switch").reverse_replication:
        _precheck_way_back(settings, src, dst, d)


def _precheck_way_back(settings: Settings, src: Conn, dst: Conn, d: Direction) -> None:
    """The reverse replication leaves out the columns only the new primary has (a column
    list), which PostgreSQL allows only when the list covers the replica identity: a
    table identified otherwise would stop the old primary's apply at its first change."""
    tables = list_tables(dst, settings.sync)
    listed = columns_the_old_side_has(src, dst, tables)
    stuck = []
    for t in tables:
        theirs = table_by_name(src, t.schema, t.name)
        extra = sorted(set(t.columns) - set(theirs.columns)) if theirs is not None else []
        if extra and t.oid not in listed:
            stuck.append(f"{t.qualified} (only {d.to} has {', '.join(extra)})")
    if stuck:
        raise SyncError(f"the way back could not replicate {'; '.join(stuck[:5])}: a table whose "
                        "replica identity is not its primary key cannot leave those columns "
                        f"out. Add the columns on the old primary too, or give the table a "
                        "primary key (REPLICA IDENTITY DEFAULT), then switch")


def columns_the_old_side_has(src: Conn, dst: Conn, tables: list[Table]) -> dict[int, tuple[str, ...]]:
    """Per table of the new primary with columns the old one lacks (an expanded schema):
    the columns both have. Column lists need a publisher of PostgreSQL 15 or later."""
    if dst.info.server_version < 150000:
        return {}
    out = {}
    for t in tables:
        theirs = table_by_name(src, t.schema, t.name)
        if theirs is None or not set(t.columns) - set(theirs.columns):
            continue
        common = tuple(c for c in t.columns if c in theirs.columns)
        # A column list must cover the replica identity, or the publisher refuses every
        # UPDATE and DELETE of the table (green's own forward apply included): only a
        # table identified by its primary key, all of it in the list, gets one. Any other
        # keeps all its columns, and the switch's drift check says what blue lacks.
        if t.replica_identity == "d" and t.key and set(t.key) <= set(common):
            out[t.oid] = common
    return out
