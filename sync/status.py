"""Streaming health: lag in bytes (slot) and in time (heartbeat), slot WAL status and
retained WAL, the subscription's state, and schema drift (DDL on blue not on green)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from config.replication import SyncSettings
from sync import objects, readiness
from sync.catalog import column_types, list_tables, table_by_name
from sync.connections import Conn
from sync.errors import SyncError


@dataclass(frozen=True)
class SyncStatus:
    phase: str
    """none, copying, indexing or streaming (from the marker on green)."""
    slot_exists: bool
    slot_active: bool
    wal_status: str | None
    """reserved, extended, unreserved or lost (PostgreSQL's pg_replication_slots.wal_status)."""
    lag_bytes: int | None
    """pg_current_wal_lsn() - confirmed_flush_lsn on blue."""
    retained_wal_bytes: int | None
    subscription_enabled: bool | None
    subscription_worker: bool
    """Whether green's apply worker runs."""
    heartbeat_seq: int | None
    heartbeat_lag_seconds: float | None
    """Apply time minus write time of the newest heartbeat green has applied."""
    heartbeat_age_seconds: float | None
    """How long ago green applied a heartbeat (grows when replication stalls)."""
    drift: list[str] = field(default_factory=list)
    """Schema differences between blue and green for the synced tables."""
    blocking_drift: list[str] = field(default_factory=list)
    """The part of drift that keeps green from taking writes (a table or column it lacks)."""
    new_tables: list[str] = field(default_factory=list)
    """Tables on blue the sync does not carry yet: created after it started."""
    not_ready: list[str] = field(default_factory=list)
    """What keeps green from being ready for traffic: tables never analyzed, materialized
    views not populated (sync.readiness; `cutover sync` puts them right)."""
    heartbeat_written_seq: int | None = None
    """The newest heartbeat written on blue (heartbeat_seq is the newest green applied)."""
    apply_errors: int | None = None
    """Errors green's apply and table-sync workers hit since the subscription was made
    (pg_stat_subscription_stats; None before PostgreSQL 15)."""
    broken: str | None = None
    """Why the replication does not work, seen across reads (sync.apply_watch): never
    "streaming" while set."""

    @property
    def streaming(self) -> bool:
        return (self.phase == "streaming" and self.slot_active and bool(self.subscription_worker)
                and self.broken is None)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "streaming": self.streaming}


def beat(blue: Conn) -> int:
    """Write the next heartbeat on blue (replicated to green through the publication);
    returns its sequence number."""
    row = blue.execute("UPDATE cutover.heartbeat SET seq = seq + 1, beat_at = clock_timestamp() "
                       "WHERE id = 1 RETURNING seq").fetchone()
    if row is None:
        raise SyncError("Cutover's heartbeat row is missing on blue; re-run `cutover sync`")
    return int(row[0])


def wait_applied(blue: Conn, green: Conn, timeout: float) -> bool:
    """Write a heartbeat on blue and wait until green has applied it: then green holds every
    commit blue made before it (the apply worker keeps commit order). False past timeout."""
    seq = beat(blue)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = green.execute("SELECT seq FROM cutover.heartbeat WHERE id = 1").fetchone()
        if row is not None and int(row[0]) >= seq:
            return True
        time.sleep(0.02)
    return False


@dataclass(frozen=True)
class Stream:
    """The replication that runs now, by the subscription that carries it."""
    source: str
    """"blue" (the sync, before the switch) or "green" (the way back, after it)."""
    follower: str
    name: str


def running_stream(blue: Conn, green: Conn, settings: SyncSettings) -> Stream | None:
    """blue -> green while green follows, green -> blue once the switch made blue follow:
    the direction whose subscription is enabled, else one that exists (its apply stopped: a
    stall to measure, not a direction gone); None where there is no subscription at all."""
    found: list[tuple[bool, Stream]] = []
    for source, follower, conn, name in (("blue", "green", green, objects.pg_name(settings)),
                                         ("green", "blue", blue, objects.reverse_name(settings))):
        row = conn.execute("SELECT subenabled FROM pg_subscription WHERE subname = %s",
                           [name]).fetchone()
        if row is not None:
            found.append((bool(row[0]), Stream(source, follower, name)))
    found.sort(key=lambda f: not f[0])  # enabled first; stable otherwise
    return found[0][1] if found else None


@dataclass(frozen=True)
class Heartbeat:
    seq: int
    lag_seconds: float | None
    """Apply time minus write time of the newest heartbeat the follower applied."""
    age_seconds: float | None
    """How long ago the follower applied one (grows when its apply stalls)."""


def heartbeat(follower: Conn) -> Heartbeat | None:
    """The newest heartbeat the follower applied, or None where there is no heartbeat table."""
    if follower.execute("SELECT to_regclass('cutover.heartbeat')").fetchone() == (None,):
        return None
    row = follower.execute(
        "SELECT seq, extract(epoch FROM applied_at - beat_at)::float8, "
        "extract(epoch FROM clock_timestamp() - applied_at)::float8 "
        "FROM cutover.heartbeat WHERE id = 1").fetchone()
    if row is None:
        return None
    return Heartbeat(int(row[0]), None if row[1] is None else float(row[1]),
                     None if row[2] is None else float(row[2]))


def read_status(blue: Conn, green: Conn, settings: SyncSettings, with_drift: bool = True) -> SyncStatus:
    name = objects.pg_name(settings)
    marker = objects.read_phase(green, name)
    slot = blue.execute(
        "SELECT active, wal_status, (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint, "
        "(pg_current_wal_lsn() - restart_lsn)::bigint FROM pg_replication_slots "
        "WHERE slot_name = %s", [name]).fetchone()
    sub = green.execute(
        "SELECT s.subenabled, EXISTS (SELECT FROM pg_stat_subscription st "
        "WHERE st.subid = s.oid AND st.pid IS NOT NULL AND st.relid IS NULL) "
        "FROM pg_subscription s WHERE s.subname = %s", [name]).fetchone()
    hb = heartbeat(green)
    written = heartbeat(blue)
    errors = None
    if green.info.server_version >= 150000:  # pg_stat_subscription_stats came with 15
        row = green.execute("SELECT apply_error_count + sync_error_count FROM pg_stat_subscription_stats "
                            "WHERE subname = %s", [name]).fetchone()
        errors = int(row[0]) if row and row[0] is not None else None
    drift = schema_drift(blue, green, settings) if with_drift else []
    unready = readiness.read(green, list_tables(blue, settings)) if with_drift else readiness.Readiness()
    return SyncStatus(
        phase=marker[0] if marker else "none",
        slot_exists=slot is not None,
        slot_active=bool(slot and slot[0]),
        wal_status=str(slot[1]) if slot and slot[1] is not None else None,
        lag_bytes=int(slot[2]) if slot and slot[2] is not None else None,
        retained_wal_bytes=int(slot[3]) if slot and slot[3] is not None else None,
        subscription_enabled=bool(sub[0]) if sub else None,
        subscription_worker=bool(sub and sub[1]),
        heartbeat_seq=hb.seq if hb else None,
        heartbeat_lag_seconds=hb.lag_seconds if hb else None,
        heartbeat_age_seconds=hb.age_seconds if hb else None,
        drift=[str(d) for d in drift],
        blocking_drift=[str(d) for d in drift if d.blocks_writes],
        new_tables=[d.table for d in drift if d.unreplicated],
        not_ready=unready.items(),
        heartbeat_written_seq=written.seq if written else None,
        apply_errors=errors,
    )


@dataclass(frozen=True)
class Drift:
    table: str
    text: str
    blocks_writes: bool
    """The follower cannot take writes as it is: a table or a column it lacks (a type that
    differs may be an expanded schema's widening, so it only warns)."""
    unreplicated: bool = False
    """A table the publication lacks: created after the sync started."""

    def __str__(self) -> str:
        return self.text


def schema_drift(src: Conn, dst: Conn, settings: SyncSettings, *, publication: str | None = None,
                 names: tuple[str, str] = ("blue", "green")) -> list[Drift]:
    """Tables and columns the source (blue, or green after the switch) has that its follower
    lacks: DDL run on one side only breaks the apply worker (a missing column) or silently
    leaves a new table unsynced."""
    drift: list[Drift] = []
    ours, theirs = names
    # The publication and the subscription that carries it share one name.
    name = publication or objects.pg_name(settings)
    published, copying = objects.published_tables(src, name), objects.tables_being_copied(dst, name)
    sent = objects.published_columns(src, name)
    for t in list_tables(src, settings):
        if (t.schema, t.name) in copying:
            drift.append(Drift(t.qualified, f"{t.qualified} is still being copied to {theirs}", True))
            continue
        if ours == "green" and published and (t.schema, t.name) not in published \
                and table_by_name(dst, t.schema, t.name) is None:
            # An expanded schema's own table: the way back has no place for its rows.
            drift.append(Drift(t.qualified, f"{t.qualified} exists on green only: its rows are not "
                               "replicated back to blue", False))
            continue
        if published and (t.schema, t.name) not in published:
            fix = " (`cutover sync` adds it)" if ours == "blue" else ""
            drift.append(Drift(t.qualified, f"{t.qualified} is on {ours} but not replicated: it "
                               f"was created after the sync started{fix}", True, unreplicated=True))
            continue
        g = table_by_name(dst, t.schema, t.name)
        if g is None:
            drift.append(Drift(t.qualified, f"{t.qualified} is missing on {theirs}", True))
            continue
        # Columns the publication leaves out (the reverse one sends only blue's) need no place.
        carried = sent.get((t.schema, t.name), set(t.columns))
        missing = [c for c in t.columns if c not in g.columns and c in carried]
        if missing:
            drift.append(Drift(t.qualified, f"{t.qualified}: column(s) {', '.join(missing)} exist "
                               f"on {ours} only; add them on {theirs} or replication stops", True))
        src_types, dst_types = column_types(src, t), column_types(dst, g)
        for col in t.columns:
            if col in dst_types and dst_types[col] != src_types[col]:
                drift.append(Drift(t.qualified, f"{t.qualified}.{col} is {src_types[col]} on {ours} but "
                                   f"{dst_types[col]} on {theirs}; alter it on {theirs} the same "
                                   "way, or values may fail to apply", False))
    return drift


_NO_IDENTITY = """
SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN unnest(%s::text[], %s::text[]) AS w(s, t) ON w.s = n.nspname AND w.t = c.relname
WHERE c.relkind = 'r' AND (c.relreplident = 'n'
    OR (c.relreplident = 'd' AND NOT EXISTS (
        SELECT FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
    OR (c.relreplident = 'i' AND NOT EXISTS (
        SELECT FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)))
"""


def apply_blockers(blue: Conn, green: Conn, settings: SyncSettings) -> list[str]:
    """What green lacks that makes its apply fail, found by the catalogs: a table blue
    identifies rows of (a key, or REPLICA IDENTITY FULL) that green cannot (no primary key
    or replica identity index: every UPDATE and DELETE fails there), and the columns green
    lacks (schema_drift)."""
    tables = list_tables(blue, settings)
    names = [[t.schema for t in tables], [t.name for t in tables]]
    on_green = {str(r[0]) for r in green.execute(_NO_IDENTITY, names).fetchall()}
    on_blue = {str(r[0]) for r in blue.execute(_NO_IDENTITY, names).fetchall()}
    found = [f"{t} has no primary key or replica identity index on green (blue's has): every UPDATE "
             "and DELETE of it fails there; add it on green" for t in sorted(on_green - on_blue)]
    return found + [str(d) for d in schema_drift(blue, green, settings) if d.blocks_writes]

