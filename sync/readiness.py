"""Green ready for traffic before it takes any: planner statistics for every table, and every
materialized view populated from green's own data.

A copy writes rows without statistics (the first queries after the switch would plan blind)
and a schema-only restore creates materialized views empty. Both are put right while green
streams, never inside the write pause.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from config.settings import Settings
from sync.callbacks import Say
from sync.catalog import Table, list_tables, quote_name
from sync.connections import Conn, connect, databases


@dataclass(frozen=True)
class Readiness:
    unanalyzed: list[str] = field(default_factory=list)
    """Tables (partitions included) that have never been analyzed."""
    unpopulated: list[str] = field(default_factory=list)
    """Materialized views created WITH NO DATA and never refreshed."""

    @property
    def ready(self) -> bool:
        return not self.unanalyzed and not self.unpopulated

    def items(self) -> list[str]:
        """One line per object, for status."""
        return ([f"{name}: never analyzed" for name in self.unanalyzed]
                + [f"{name}: materialized view not populated" for name in self.unpopulated])

    def describe(self) -> str:
        parts = []
        if self.unanalyzed:
            parts.append(f"{len(self.unanalyzed)} table(s) never analyzed ({_some(self.unanalyzed)})")
        if self.unpopulated:
            parts.append(f"{len(self.unpopulated)} materialized view(s) not populated "
                         f"({_some(self.unpopulated)})")
        return "; ".join(parts) or "every table analyzed, every materialized view populated"


def _some(names: list[str], shown: int = 5) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _schemas(tables: Sequence[Table]) -> list[str]:
    return sorted({t.schema for t in tables})


_UNANALYZED = """
SELECT n.nspname::text, c.relname::text FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
 WHERE n.nspname = ANY(%s) AND c.relkind = 'r'
   AND coalesce(s.last_analyze, s.last_autoanalyze) IS NULL
   -- statistics outlive a reset of the activity counters (a crash, pg_stat_reset)
   AND NOT EXISTS (SELECT FROM pg_statistic st WHERE st.starelid = c.oid)
 ORDER BY 1, 2
"""

_MATVIEWS = """
SELECT n.nspname::text, c.relname::text, c.relispopulated FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = ANY(%s) AND c.relkind = 'm'
 ORDER BY 1, 2
"""

Name = tuple[str, str]


def _ident(name: Name) -> sql.Composable:
    return sql.SQL(".").join([sql.Identifier(name[0]), sql.Identifier(name[1])])


def _label(name: Name) -> str:
    return f"{quote_name(name[0])}.{quote_name(name[1])}"


def _unanalyzed(conn: Conn, schemas: list[str]) -> list[Name]:
    return [(str(r[0]), str(r[1])) for r in conn.execute(_UNANALYZED, [schemas]).fetchall()]


def _matviews(conn: Conn, schemas: list[str]) -> list[tuple[Name, bool]]:
    return [((str(r[0]), str(r[1])), bool(r[2])) for r in conn.execute(_MATVIEWS, [schemas]).fetchall()]


def read(conn: Conn, tables: Sequence[Table]) -> Readiness:
    """What of the synced tables' schemas is not ready on this side."""
    schemas = _schemas(tables)
    return Readiness([_label(n) for n in _unanalyzed(conn, schemas)],
                     [_label(n) for n, populated in _matviews(conn, schemas) if not populated])


def make_ready(conn: Conn, tables: Sequence[Table], say: Say = lambda _: None, *,
               analyze_all: bool = False, refresh_all: bool = False) -> Readiness:
    """ANALYZE the tables (all of them with analyze_all, else those never analyzed), then
    REFRESH the materialized views (all with refresh_all, else the unpopulated ones), in
    rounds until those read by others are done; returns what is still not ready. conn must
    allow long statements (statement_timeout 0)."""
    schemas = _schemas(tables)
    targets = [_ident(n) for n in (_top_level(conn, schemas) if analyze_all else _unanalyzed(conn, schemas))]
    if targets:
        say(f"analyzing {len(targets)} table(s) on {_side(conn)}")
        for target in targets:
            conn.execute(sql.SQL("ANALYZE {}").format(target))
    stale = [n for n, populated in _matviews(conn, schemas) if refresh_all or not populated]
    if stale:
        say(f"refreshing {len(stale)} materialized view(s) from {_side(conn)}'s data")
        _refresh(conn, stale)
    return read(conn, tables)


def _top_level(conn: Conn, schemas: list[str]) -> list[Name]:
    """The tables this side has (a table just created on blue may not be here yet), partitions
    left out: a partitioned table's ANALYZE covers them."""
    return [(str(r[0]), str(r[1])) for r in conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1, 2",
        [schemas]).fetchall()]


def _refresh(conn: Conn, views: list[Name]) -> None:
    """Refresh each view, and ANALYZE it. One that reads another view not populated yet (directly
    or through plain views) fails and is tried again after the others, as long as a round
    makes progress."""
    pending = list(views)
    while pending:
        failed: list[Name] = []
        last: psycopg.Error | None = None
        for name in pending:
            try:
                with conn.transaction():
                    conn.execute(sql.SQL("REFRESH MATERIALIZED VIEW {}").format(_ident(name)))
            except psycopg.errors.ObjectNotInPrerequisiteState as exc:
                failed.append(name)
                last = exc
                continue
            conn.execute(sql.SQL("ANALYZE {}").format(_ident(name)))
        if len(failed) == len(pending):
            assert last is not None
            raise last
        pending = failed


def _side(conn: Conn) -> str:
    return f"{conn.info.host}:{conn.info.port}/{conn.info.dbname}"


def ready_green(settings: Settings, say: Say = lambda _: None, *, fresh: bool = False) -> Readiness:
    """Make green ready (see make_ready): after a fresh copy every table is analyzed and every
    materialized view refreshed; otherwise only what was never analyzed or populated."""
    blue_db, green_db = databases(settings)
    with connect(blue_db, "ready") as blue:
        tables = list_tables(blue, settings.sync)
    with connect(green_db, "ready", statement_timeout=0) as green:
        return make_ready(green, tables, say, analyze_all=fresh, refresh_all=fresh)
