"""Native logical replication, started the fast and consistent way.

1. publication on blue (the tables + Cutover's heartbeat);
2. blue's schema onto an empty green (tables only; indexes come later);
3. the slot, created first with an exported snapshot; parallel COPY under that snapshot;
4. indexes and constraints on green, built once over the loaded data (foreign keys NOT VALID:
   sync.foreign_keys validates them once green streams);
5. the subscription, starting from the slot with copy_data = false.

A marker on green records the phase, so a re-run after any interruption neither duplicates
rows nor trips over "slot already exists": an interrupted copy is redone from a fresh slot
(green's partial rows are truncated first); an interrupted index build resumes, because the
slot still holds its consistent point and the copied data matches it exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from psycopg import sql

from config.settings import Settings
from sync import foreign_keys, largeobjects, objects, readiness, status
from sync.callbacks import Say
from sync.catalog import Table, list_tables, table_by_name
from sync.chunks import plan_chunks
from sync.connections import Conn, connect, databases
from sync.copy import CopyProgress, ParallelCopy
from sync.errors import BadInputError, SyncError
from sync.schema import SchemaDump


class Phase(StrEnum):
    SCHEMA = objects.SCHEMA_COPYING
    COPYING = "copying"
    INDEXING = "indexing"
    STREAMING = "streaming"


@dataclass(frozen=True)
class StartResult:
    tables: int
    rows_copied: int
    resumed_from: str | None
    """None for a fresh start, else the phase an earlier run was interrupted in."""
    already_streaming: bool
    tables_added: list[str] = field(default_factory=list)
    """Tables created on blue after the sync started, added to a running sync by a re-run."""




def start(settings: Settings, say: Say = lambda _: None,
          progress: Callable[[CopyProgress], None] = lambda _: None) -> StartResult:
    """Bring green to streaming from blue, or leave it streaming if it already is."""
    blue_db, green_db = databases(settings)
    name = objects.pg_name(settings.sync)
    with connect(blue_db, "sync") as blue, connect(green_db, "sync") as green:
        tables = list_tables(blue, settings.sync)
        if not tables:
            raise BadInputError(f"no tables to sync in schemas {settings.sync.schemas}")
        if objects.subscription_exists(green, name):
            joined = _add_new_tables(settings, blue, green, tables, name, say)
            if not joined:
                say(f"subscription {name!r} exists: green is already streaming from blue")
            return StartResult(len(tables), 0, None, already_streaming=True, tables_added=joined)
        previous = objects.read_phase(green, name)
        if previous is not None and previous[0] == objects.SCHEMA_COPIED:
            # The diff sync's marker: green's rows are live data, not a partial copy of ours.
            previous = None
        objects.ensure_heartbeat(blue, green)
        ensure_publication(blue, name, tables)
        rows = 0
        with SchemaDump(settings, tables) as schema:
            if previous and previous[0] == Phase.INDEXING and objects.slot_exists(blue, name):
                say("resuming: the copy finished earlier; building indexes, then subscribing")
                schema_from_blue = previous[1]
            else:
                if previous and previous[0] == Phase.SCHEMA:
                    say("an earlier run stopped while copying blue's schema: completing it, "
                        "then the copy")
                elif previous:
                    say(f"an earlier run stopped while {previous[0]}: redoing the copy from a "
                        "new slot")
                schema_from_blue = _prepare_green(blue, green, tables, name, previous, schema, say)
                rows = _copy(settings, blue, green, tables, name, schema_from_blue, say, progress)
            if schema_from_blue:
                say("building indexes and constraints on green")
                schema.restore("post-data", jobs=settings.sync.copy_jobs, skip_kinds=["FK CONSTRAINT"])
                added = foreign_keys.add_not_valid(green, foreign_keys.on_blue(blue, tables))
                if added:
                    say(f"{added} foreign key(s) added NOT VALID; validated once green streams")
        # green's server connects to blue itself, with blue's DSN and password.
        if not objects.create_subscription(green, name, blue_db):
            say(objects.subscription_logged("green", "blue"))
        objects.write_phase(green, name, Phase.STREAMING, schema_from_blue)
        say(f"subscription {name!r} created: green now streams from blue")
        return StartResult(len(tables), rows, previous[0] if previous else None, False)


def settle(settings: Settings, started: StartResult | None, say: Say = lambda _: None) -> None:
    """What follows a start (None: the sync streamed already), off the copy's critical path
    while green streams: foreign keys validated, planner statistics gathered, materialized
    views populated (all of them after a copy, else what never was)."""
    foreign_keys.validate_pending(settings, say=say)
    fresh = started is not None and started.rows_copied > 0  # joined tables: never analyzed
    readiness.ready_green(settings, say, fresh=fresh)


def is_streaming(settings: Settings) -> bool:
    """Whether the subscription exists already (the copy is behind us)."""
    _, green_db = databases(settings)
    with connect(green_db, "probe") as green:
        return objects.subscription_exists(green, objects.pg_name(settings.sync))


def ensure_publication(blue: Conn, name: str, tables: list[Table],
                       columns: dict[int, tuple[str, ...]] | None = None) -> None:
    """The publication of these tables (and the heartbeat) on the primary; columns (by table
    OID) limits a table to the columns its subscriber has: the reverse publication carries
    only blue's columns, so a column green added cannot stop blue's apply worker."""
    def entry(t: Table) -> sql.Composable:
        cols = (columns or {}).get(t.oid)
        if cols is None:
            return t.ident
        return sql.SQL("{} ({})").format(t.ident, sql.SQL(", ").join(sql.Identifier(c) for c in cols))
    listed = sql.SQL(", ").join([*(entry(t) for t in tables), sql.SQL("cutover.heartbeat")])
    exists = blue.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", [name]).fetchone()
    if exists:
        blue.execute(sql.SQL("ALTER PUBLICATION {} SET TABLE {}").format(objects.ident(name), listed))
    else:
        blue.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {} "
                             "WITH (publish_via_partition_root = true)").format(
                                 objects.ident(name), listed))


def _prepare_green(blue: Conn, green: Conn, tables: list[Table], name: str,
                   previous: tuple[str, bool] | None, schema: SchemaDump, say: Say) -> bool:
    """Green ready for the copy: blue's schema restored (what green still lacks of it) unless
    green has a schema of its own, leftovers of an interrupted copy removed. Returns whether
    the schema came from blue (so indexes must follow)."""
    if objects.slot_exists(blue, name):
        objects.drop_slot(blue, name)
    present = [t for t in tables if table_by_name(green, t.schema, t.name) is not None]
    if previous is None and present:  # green's own schema, made by its owner
        if len(present) != len(tables):
            missing = [t.qualified for t in tables if t not in present]
            raise BadInputError(f"green has some of the tables but not {', '.join(missing)}; "
                                "create them on green, or start from an empty green database")
        nonempty = [t.qualified for t in present if _has_rows(green, t)]
        if nonempty:
            raise BadInputError(
                f"green's {', '.join(nonempty)} already hold rows and no earlier Cutover run "
                "put them there; the initial copy would mix them with blue's. Empty them "
                "(TRUNCATE) or point green.database at an empty database")
        return False
    if present:  # an earlier run's partial copy
        green.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(t.ident for t in present)))
    if previous is not None and not previous[1] and len(present) == len(tables):
        return False
    # Marked before the first object lands: a run killed from here on is known to own
    # green's schema, and the next one completes it instead of taking it for green's own.
    objects.write_phase(green, name, Phase.SCHEMA, True)
    say("copying blue's schema (types, functions, tables, views, sequences) to green")
    schema.restore("pre-data")
    return True


def _has_rows(conn: Conn, table: Table) -> bool:
    return conn.execute(sql.SQL("SELECT EXISTS (SELECT FROM {})").format(table.ident)).fetchone() \
        == (True,)


def _copy(settings: Settings, blue: Conn, green: Conn, tables: list[Table], name: str,
          schema_from_blue: bool, say: Say, progress: Callable[[CopyProgress], None]) -> int:
    objects.write_phase(green, name, Phase.COPYING, schema_from_blue)
    # The slot first, with an exported snapshot: the copy reads exactly the state the
    # slot's changes start from. The snapshot lives while this connection stays idle.
    with connect(databases(settings)[0], "slot", replication=True) as repl:
        row = repl.execute(sql.SQL("CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT 'export')")
                           .format(objects.ident(name))).fetchone()
        assert row is not None
        lsn, snapshot = str(row[1]), str(row[2])
        say(f"slot {name!r} created at {lsn}; copying {len(tables)} table(s) with "
            f"{settings.sync.copy_jobs} worker(s)")
        chunks = plan_chunks(tables, settings.sync.copy_jobs, settings.sync.split_rows)
        done = ParallelCopy(settings, snapshot, progress, freeze=schema_from_blue).run(chunks)
    if copied := largeobjects.copy_missing(blue, green):
        say(f"{copied} large object(s) copied (replication does not carry them)")
    objects.write_phase(green, name, Phase.INDEXING, schema_from_blue, lsn)
    return done.rows


def join_new_tables(settings: Settings, say: Say = lambda _: None, *, wait: bool = True,
                    partial: bool = False) -> list[str]:
    """For a sync that streams already: see _add_new_tables."""
    blue_db, green_db = databases(settings)
    with connect(blue_db, "sync") as blue, connect(green_db, "sync") as green:
        return _add_new_tables(settings, blue, green, list_tables(blue, settings.sync),
                               objects.pg_name(settings.sync), say, wait=wait, partial=partial)


def _add_new_tables(settings: Settings, blue: Conn, green: Conn, tables: list[Table], name: str,
                    say: Say, *, wait: bool = True, partial: bool = False) -> list[str]:
    """Tables created on blue since the sync started join it: their schema on green (when
    green's came from blue), the publication, and the subscription's own consistent copy of
    just them (REFRESH PUBLICATION, copy_data = true); with wait, returns once green has them
    all (without, the drift shows them as being copied until then). A table that cannot join
    refuses them all (BadInputError, nothing changed), or with partial, the others join
    first."""
    published = objects.published_tables(blue, name)
    new = [t for t in tables if (t.schema, t.name) not in published]
    if not new:
        return []
    problems: list[str] = []
    # Publishing a table without a replica identity would make blue refuse its UPDATEs.
    keyless = [t for t in new if not t.replicable]
    unlogged = [t for t in new if t.persistence == "u"]
    if keyless or unlogged:
        fixes = [f"ALTER TABLE {t.qualified} REPLICA IDENTITY FULL" for t in keyless]
        fixes += [f"ALTER TABLE {t.qualified} SET LOGGED" for t in unlogged]
        problems.append(f"new table(s) on blue cannot be replicated: "
                        f"{', '.join(t.qualified for t in keyless + unlogged)}. Fix on blue: "
                        f"{'; '.join(fixes)} (or add a primary key, or list them in "
                        "sync.exclude_tables)")
    previous = objects.read_phase(green, name)
    own_schema = not (previous and previous[1])
    absent = [t for t in new if own_schema and table_by_name(green, t.schema, t.name) is None]
    if absent:
        problems.append(f"new table(s) on blue missing on green, whose schema is its own: "
                        f"{', '.join(t.qualified for t in absent)}; create them on green")
    if problems and not partial:
        raise BadInputError("; ".join(problems) + "; nothing was changed. Then re-run `cutover sync`")
    held = set(keyless + unlogged + absent)
    new = [t for t in new if t not in held]
    if new:
        _join(settings, blue, green, [t for t in tables if t not in held], new, name, say, wait,
              from_blue=not own_schema)
    if problems:
        raise BadInputError("; ".join(problems))  # the same words each time: said once
    return [t.qualified for t in new]


def _join(settings: Settings, blue: Conn, green: Conn, tables: list[Table], new: list[Table],
          name: str, say: Say, wait: bool, *, from_blue: bool) -> None:
    if from_blue:  # whatever of blue's schema green still lacks, also what a killed join left
        missing = [t for t in new if table_by_name(green, t.schema, t.name) is None]
        if missing:
            say(f"creating {len(missing)} new table(s) on green from blue's schema")
        with SchemaDump(settings, tables) as schema:
            schema.restore("pre-data")
            schema.restore("post-data")
    ensure_publication(blue, name, tables)
    green.execute(sql.SQL("ALTER SUBSCRIPTION {} REFRESH PUBLICATION WITH (copy_data = true)")
                  .format(objects.ident(name)))
    say(f"added {len(new)} table(s) created on blue since the sync started: "
        f"{', '.join(t.qualified for t in new)}; green copies them now")
    if wait:
        _wait_tables_ready(green, name, say)


def _wait_tables_ready(green: Conn, name: str, say: Say) -> None:
    """Until the subscription's table copies are done (every table 'r'eady); a copy that
    fails keeps being retried by PostgreSQL, so its errors end the wait with the fix."""
    def errors() -> int:
        row = green.execute("SELECT coalesce(sum(sync_error_count), 0) FROM pg_stat_subscription_stats "
                            "WHERE subname = %s", [name]).fetchone()
        return int(row[0]) if row else 0
    before, reported = errors(), time.monotonic()
    while True:
        left = len(objects.tables_being_copied(green, name))
        if left == 0:
            return
        if errors() > before:
            raise SyncError("green failed to copy a new table (see green's server log); fix it "
                            "and PostgreSQL retries, or `cutover sync --drop` to start over")
        if time.monotonic() - reported >= 5:
            say(f"green is still copying {left} new table(s)")
            reported = time.monotonic()
        time.sleep(0.1)





def settle_follower(settings: Settings, timeout: float, say: Say = lambda _: None) -> bool:
    """Wait until the follower (blue after a switch, green before it) has applied every
    commit its source made so far; False past timeout or when nothing streams. Finalize
    calls it, so the blue it leaves behind holds every write acknowledged before."""
    blue_db, green_db = databases(settings)
    with connect(blue_db, "settle") as blue, connect(green_db, "settle") as green:
        stream = status.running_stream(blue, green, settings.sync)
        if stream is None:
            return False
        source, follower = (blue, green) if stream.source == "blue" else (green, blue)
        started = time.monotonic()
        if status.wait_applied(source, follower, timeout):
            say(f"{stream.follower} has applied every write {stream.source} took "
                f"({time.monotonic() - started:.1f}s)")
            return True
    say(f"{stream.follower} did not catch up with {stream.source} within {timeout:g}s")
    return False


def drop(settings: Settings, say: Say = lambda _: None) -> None:
    """Remove the subscriptions, slots and publications of both directions (blue -> green, and
    the reverse one a switch creates), the heartbeat and the marker; safe to repeat, and works
    after a crash in any phase."""
    blue_db, green_db = databases(settings)
    name, reverse = objects.pg_name(settings.sync), objects.reverse_name(settings.sync)
    with connect(blue_db, "drop") as blue, connect(green_db, "drop") as green:
        for sub_side, slot_side, sub_name, where in ((green, blue, name, "green"),
                                                     (blue, green, reverse, "blue")):
            if objects.subscription_exists(sub_side, sub_name):
                drop_subscription(sub_side, sub_name)
                say(f"dropped subscription {sub_name!r} on {where}")
            if objects.slot_exists(slot_side, sub_name):
                objects.drop_slot(slot_side, sub_name)
                say(f"dropped replication slot {sub_name!r}")
            slot_side.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(objects.ident(sub_name)))
        for conn in (blue, green):
            conn.execute("DROP SCHEMA IF EXISTS cutover CASCADE")
        say("dropped the publications, heartbeat and sync marker")


def drop_subscription(conn: Conn, name: str) -> None:
    """Drop a subscription but not its slot (the publisher's side drops that)."""
    sub = objects.ident(name)
    conn.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(sub))
    conn.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(sub))
    conn.execute(sql.SQL("DROP SUBSCRIPTION {}").format(sub))
