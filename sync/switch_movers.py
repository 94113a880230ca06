"""How a switch moves the last writes and sets up the way back, one mover per sync mode.

The switch (sync.switch) runs the same steps whatever the mode; what a step does to the data
differs: with logical replication the new primary follows the old one and the way back is
replication the other way, with the diff sync a final full diff under the fence makes the
new primary equal and the way back is the same diff reversed."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from psycopg import sql

from config.replication import SwitchoverSettings, SyncMode
from config.settings import Settings, need_switchover
from sync import diff, objects
from sync.callbacks import Say
from sync.catalog import Table, list_tables, table_by_name
from sync.connections import Conn, connect
from sync.errors import SyncError
from sync.logical import drop_subscription, ensure_publication
from sync.status import wait_applied
from sync.switch_report import Direction, SwitchReport
from sync.switch_schema import columns_the_old_side_has, precheck_schema


@dataclass(frozen=True)
class Sides:
    """What every part of one switch shares: the settings, the direction, a connection to
    the old primary (src, d.src_db) and to the new one (dst, d.dst_db)."""

    settings: Settings
    d: Direction
    src: Conn
    dst: Conn
    say: Say

    @property
    def sw(self) -> SwitchoverSettings:
        return need_switchover(self.settings, "the switch")


def subscription_state(conn: Conn, name: str) -> bool | None:
    """Whether the subscription is enabled; None: there is none."""
    row = conn.execute("SELECT subenabled FROM pg_subscription WHERE subname = %s", [name]).fetchone()
    return None if row is None else bool(row[0])


class Mover(Protocol):
    """The switch's steps that depend on the sync mode."""

    fence_snapshot: str | None
    """The new primary exactly at the fence, exported by its reverse slot (or None)."""

    def precheck(self) -> None: ...
    def lag_bytes(self) -> int | None: ...
    def catch_up(self) -> None: ...
    def drain(self, report: SwitchReport) -> None: ...
    def tables_back(self) -> list[Table] | None: ...
    def prepare_back(self) -> None: ...
    def stop_and_slot(self) -> None: ...
    def subscribe_back(self) -> None: ...
    def drop_old(self) -> None: ...
    def undo(self) -> None: ...
    def left_over(self) -> bool: ...
    def uncompared(self) -> bool: ...
    def close(self) -> None: ...


class ReplicationMover:
    """Logical replication: the new primary follows the old one, and the way back is a
    publication and slot on the new primary the old one subscribes to."""

    def __init__(self, sides: Sides, *, export_snapshot: bool) -> None:
        """export_snapshot: the reverse slot exports the new primary as it stood at the
        fence, for a comparison after the resume."""
        self.s, self.export_snapshot = sides, export_snapshot
        self.slot_conn: Conn | None = None
        """A replication connection to the new primary; its slot's snapshot lives while it idles."""
        self.fence_snapshot: str | None = None

    def precheck(self) -> None:
        s, d = self.s, self.s.d
        state = subscription_state(s.dst, d.old)
        if state is None:
            raise SyncError(f"no subscription {d.old!r} on {d.dst_db.describe()}: {d.to} is not "
                            "streaming from the current primary; run `cutover sync` first")
        if not state:
            raise SyncError(f"subscription {d.old!r} on {d.dst_db.describe()} is disabled")
        if self.lag_bytes() is None:
            raise SyncError(f"no replication slot {d.old!r} on {d.src_db.describe()}: {d.to} does "
                            "not follow the current primary; run `cutover sync` first")
        precheck_schema(s.settings, s.src, s.dst, d)

    def lag_bytes(self) -> int | None:
        row = self.s.src.execute(
            "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint FROM pg_replication_slots "
            "WHERE slot_name = %s", [self.s.d.old]).fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def catch_up(self) -> None:
        """Before the pause, with writes flowing: wait until the new primary has applied all
        but a bounded tail (a heartbeat gets through within catch_up_tail, the lag is under
        sync.max_lag_bytes), so the drain in the pause never waits on a backlog, such as a
        big transaction still being applied."""
        s, sw, limit = self.s, self.s.sw, self.s.settings.sync.max_lag_bytes
        deadline = time.monotonic() + sw.catch_up_timeout
        said = False
        while True:
            lag = self.lag_bytes() or 0
            started = time.monotonic()
            if not wait_applied(s.src, s.dst, max(0.0, deadline - started)):
                raise SyncError(f"{s.d.to} did not catch up within switchover.catch_up_timeout "
                                f"({sw.catch_up_timeout:g}s; {lag:,} bytes behind); writes were "
                                "never paused")
            took = time.monotonic() - started
            if took <= sw.catch_up_tail and lag <= limit:
                return
            if not said:
                said = True
                s.say(f"waiting for {s.d.to} to catch up before pausing writes ({lag:,} bytes "
                      f"behind; a heartbeat took {took:.1f}s to apply); writes flow meanwhile")

    def drain(self, report: SwitchReport) -> None:
        s = self.s
        if not wait_applied(s.src, s.dst, s.sw.timeout):
            raise SyncError(f"{s.d.to} did not apply the last writes in time")
        row = s.src.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        report.lsn = str(row[0]) if row else None

    def tables_back(self) -> list[Table] | None:
        """The new primary's tables the reverse replication carries (None: there is none)."""
        s = self.s
        if not s.sw.reverse_replication:
            return None
        tables = list_tables(s.dst, s.settings.sync)
        # A table only the new primary has (an expanded schema) has nowhere to go back to.
        own = [t for t in tables if table_by_name(s.src, t.schema, t.name) is None]
        if own:
            s.say(f"not replicated back (only {s.d.to} has them): "
                  f"{', '.join(t.qualified for t in own)}")
        return [t for t in tables if t not in own]

    def prepare_back(self) -> None:
        """Before the pause (captures nothing yet): the reverse publication on the new
        primary, the heartbeat stamp on the old one."""
        s = self.s
        tables = self.tables_back()
        if tables is None:
            return
        ensure_publication(s.dst, s.d.new, tables, columns_the_old_side_has(s.src, s.dst, tables))
        s.src.execute(objects.HEARTBEAT_DDL)
        s.src.execute(objects.GREEN_HEARTBEAT_TRIGGER)
        if self.export_snapshot:  # connected now, so the pause does not wait for it
            self.slot_conn = connect(s.d.dst_db, "reverse-slot", replication=True)

    def stop_and_slot(self) -> None:
        """Under the fence: old -> new stops, and the reverse slot starts exactly here, before
        the new primary takes its first write."""
        s, d = self.s, self.s.d
        s.dst.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(objects.ident(d.old)))
        if not s.sw.reverse_replication or objects.slot_exists(s.dst, d.new):
            return
        if self.slot_conn is None:
            s.dst.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [d.new])
            return
        # The exported snapshot is the new primary exactly at the fence, before its first write.
        row = self.slot_conn.execute(sql.SQL(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT 'export')").format(
                objects.ident(d.new))).fetchone()
        assert row is not None
        self.fence_snapshot = str(row[2])

    def subscribe_back(self) -> None:
        """After the resume: the old primary follows the slot, which kept every change since."""
        s, d = self.s, self.s.d
        if (s.sw.reverse_replication and subscription_state(s.src, d.new) is None
                and objects.slot_exists(s.dst, d.new)
                and not objects.create_subscription(s.src, d.new, d.dst_db)):
            s.say(objects.subscription_logged("blue" if d.to == "green" else "green", d.to))

    def drop_old(self) -> None:
        s, d = self.s, self.s.d
        if subscription_state(s.dst, d.old) is not None:
            drop_subscription(s.dst, d.old)
        objects.drop_slot(s.src, d.old)

    def undo(self) -> None:
        """The way back's objects gone, old -> new replication enabled again."""
        s, d = self.s, self.s.d
        if subscription_state(s.src, d.new) is not None:
            drop_subscription(s.src, d.new)
        objects.drop_slot(s.dst, d.new)
        if subscription_state(s.dst, d.old) is False:
            s.dst.execute(sql.SQL("ALTER SUBSCRIPTION {} ENABLE").format(objects.ident(d.old)))

    def left_over(self) -> bool:
        """Replication objects of a switch that stopped before its point of no return."""
        s, d = self.s, self.s.d
        return objects.slot_exists(s.dst, d.new) or subscription_state(s.dst, d.old) is False

    def uncompared(self) -> bool:
        """A run that repointed but did not finish: the reverse slot exists and the old
        replication is still there (it goes only after the comparison after the resume)."""
        s, d = self.s, self.s.d
        return (self.export_snapshot and objects.slot_exists(s.dst, d.new)
                and (objects.slot_exists(s.src, d.old) or subscription_state(s.dst, d.old) is not None))

    def close(self) -> None:
        """The fence snapshot's connection holds the slot the old primary subscribes to."""
        if self.slot_conn is not None:
            self.slot_conn.close()
            self.slot_conn = None


class DiffMover:
    """The diff sync: no replication either way; a final full diff under the fence makes the
    new primary equal to the old one (it compares every row: no separate comparison), and
    the way back is the same diff reversed."""

    fence_snapshot: str | None = None

    def __init__(self, sides: Sides) -> None:
        self.s = sides

    def drain(self, report: SwitchReport) -> None:
        del report  # a diff has no LSN to report
        diffed = diff.cycle(self.s.settings, reverse=self.s.d.to == "blue", full=True)
        self.s.say(f"final diff under the fence: {diffed.total('blue_rows'):,} rows compared, "
                   f"+{diffed.total('inserted')} ~{diffed.total('updated')} "
                   f"-{diffed.total('deleted')} applied")

    def tables_back(self) -> list[Table] | None:
        return None

    def lag_bytes(self) -> int | None:
        return None

    def left_over(self) -> bool:
        return False

    def uncompared(self) -> bool:
        return False

    def precheck(self) -> None: ...
    def catch_up(self) -> None: ...
    def prepare_back(self) -> None: ...
    def stop_and_slot(self) -> None: ...
    def subscribe_back(self) -> None: ...
    def drop_old(self) -> None: ...
    def undo(self) -> None: ...
    def close(self) -> None: ...


def mover_for(sides: Sides, *, export_snapshot: bool) -> Mover:
    if sides.settings.sync.mode == SyncMode.DIFF:
        return DiffMover(sides)
    return ReplicationMover(sides, export_snapshot=export_snapshot)
