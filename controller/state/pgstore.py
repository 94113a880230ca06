"""The state store on PostgreSQL, for two daemons of one service in HA: the same journal,
state and intents as the SQLite store, one row set per service, and the leader election.

Leadership is a session advisory lock held on a connection of its own: the daemon holding it
acts, the other waits. Each new leader bumps the service's epoch, and every write the leader
makes is conditional on that epoch still being current, so a deposed daemon (its lock session
lost, the process still running) cannot write a decision: its next write raises Deposed, and
it stops. The schema carries its version in cutover_store.meta and is migrated on open.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from config.operations import StateSettings
from controller.state.journal import Event, EventKind, StoreError, StoreMissing

SCHEMA = "cutover_store"
SCHEMA_VERSION = 1
MIGRATIONS = {
    1: """
CREATE TABLE cutover_store.events (
    id bigserial PRIMARY KEY,
    service text NOT NULL,
    at double precision NOT NULL,
    kind text NOT NULL,
    data jsonb NOT NULL
);
CREATE INDEX events_service_kind ON cutover_store.events (service, kind, id);
CREATE TABLE cutover_store.state (
    service text PRIMARY KEY,
    at double precision NOT NULL,
    data jsonb NOT NULL
);
CREATE TABLE cutover_store.intents (
    id bigserial PRIMARY KEY,
    service text NOT NULL,
    at double precision NOT NULL,
    kind text NOT NULL,
    taken double precision
);
CREATE TABLE cutover_store.leader (
    service text PRIMARY KEY,
    epoch bigint NOT NULL,
    holder text NOT NULL,
    since double precision NOT NULL
);
""",
}


class Deposed(StoreError):
    """Another daemon leads now (a newer epoch): this one must stop acting."""


def _connect(settings: StateSettings, purpose: str) -> psycopg.Connection[Any]:
    assert settings.dsn is not None
    extra: dict[str, Any] = {"application_name": f"cutover-store-{purpose}", "connect_timeout": 5,
                             "options": "-c default_transaction_read_only=off"}
    if settings.password is not None:
        extra["password"] = settings.password.get_secret_value()
    try:
        return psycopg.connect(psycopg.conninfo.make_conninfo(settings.dsn, **extra), autocommit=True)
    except psycopg.OperationalError as exc:
        raise StoreError(f"state.dsn: cannot reach the state store: {str(exc).strip()}") from None


def _version(conn: psycopg.Connection[Any]) -> int | None:
    """The store schema's version, or None where there is no store."""
    if conn.execute("SELECT to_regclass('cutover_store.meta')").fetchone() in (None, (None,)):
        return None
    row = conn.execute("SELECT version FROM cutover_store.meta").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: psycopg.Connection[Any]) -> None:
    """Create or upgrade the store's schema, once, whoever runs first (under a lock)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('cutover_store schema'))")
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
        conn.execute("CREATE TABLE IF NOT EXISTS cutover_store.meta "
                     "(id int PRIMARY KEY CHECK (id = 1), version int NOT NULL)")
        row = conn.execute("SELECT version FROM cutover_store.meta").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StoreError(f"the state store was written by a newer Cutover (schema {version}, "
                             f"this one knows {SCHEMA_VERSION}); upgrade Cutover")
        for step in range(version + 1, SCHEMA_VERSION + 1):
            conn.execute(MIGRATIONS[step])
        conn.execute("INSERT INTO cutover_store.meta VALUES (1, %s) ON CONFLICT (id) "
                     "DO UPDATE SET version = excluded.version", [SCHEMA_VERSION])


class PgStore:
    """The StateStore of controller.state.journal, on PostgreSQL. With an epoch (a leader's store),
    writes succeed only while that epoch is the service's current one."""

    def __init__(self, settings: StateSettings, service: str, epoch: int | None = None, *,
                 existing: bool = False) -> None:
        self.service, self.epoch = service, epoch
        self.db = _connect(settings, "journal")
        if existing:  # a reader: use what is there, create nothing
            if _version(self.db) is None:
                self.db.close()
                raise StoreMissing(f"no state store in {settings.dsn} (schema {SCHEMA}): "
                                   "`cutover run` has not started with this config")
            return
        migrate(self.db)

    def _fenced(self) -> sql.Composable:
        if self.epoch is None:
            return sql.SQL("true")
        return sql.SQL("EXISTS (SELECT FROM cutover_store.leader WHERE service = {} AND epoch = {})"
                       ).format(sql.Literal(self.service), sql.Literal(self.epoch))

    def _check(self, cur: psycopg.Cursor[Any]) -> None:
        if self.epoch is not None and cur.rowcount == 0:
            raise Deposed(f"another daemon leads {self.service!r} now (this one had epoch "
                          f"{self.epoch}); stopping")

    def record(self, kind: EventKind, data: dict[str, Any]) -> Event:
        at = time.time()
        payload = json.loads(json.dumps(data, default=str))
        cur = self.db.execute(sql.SQL(
            "INSERT INTO cutover_store.events (service, at, kind, data) SELECT %s, %s, %s, %s "
            "WHERE {} RETURNING id").format(self._fenced()), [self.service, at, kind, Jsonb(payload)])
        self._check(cur)
        row = cur.fetchone()
        return Event(int(row[0]) if row else 0, at, kind, payload)

    def events(self, kind: str | None = None, after: int = 0, limit: int | None = None) -> list[Event]:
        rows = self.db.execute(
            "SELECT id, at, kind, data FROM cutover_store.events WHERE service = %s "
            "AND (%s::text IS NULL OR kind = %s) AND id > %s ORDER BY id LIMIT %s",
            [self.service, kind, kind, after, limit]).fetchall()
        return [Event(int(r[0]), float(r[1]), str(r[2]), dict(r[3])) for r in rows]

    def last_events(self, limit: int, kinds: tuple[str, ...] = ()) -> list[Event]:
        rows = self.db.execute(
            "SELECT id, at, kind, data FROM cutover_store.events WHERE service = %s "
            "AND (cardinality(%s::text[]) = 0 OR kind = ANY(%s)) ORDER BY id DESC LIMIT %s",
            [self.service, list(kinds), list(kinds), limit]).fetchall()
        return [Event(int(r[0]), float(r[1]), str(r[2]), dict(r[3])) for r in reversed(rows)]

    def load_state(self) -> dict[str, Any] | None:
        row = self.db.execute("SELECT data FROM cutover_store.state WHERE service = %s",
                              [self.service]).fetchone()
        return None if row is None else dict(row[0])

    def save_state(self, data: dict[str, Any]) -> None:
        payload = Jsonb(json.loads(json.dumps(data, default=str)))
        cur = self.db.execute(sql.SQL(
            "INSERT INTO cutover_store.state (service, at, data) SELECT %s, %s, %s WHERE {} "
            "ON CONFLICT (service) DO UPDATE SET at = excluded.at, data = excluded.data"
        ).format(self._fenced()), [self.service, time.time(), payload])
        self._check(cur)

    def state_age(self) -> float | None:
        row = self.db.execute("SELECT at FROM cutover_store.state WHERE service = %s",
                              [self.service]).fetchone()
        return None if row is None else time.time() - float(row[0])

    def add_intent(self, kind: str) -> int:
        row = self.db.execute("INSERT INTO cutover_store.intents (service, at, kind) "
                              "VALUES (%s, %s, %s) RETURNING id", [self.service, time.time(), kind]
                              ).fetchone()
        return int(row[0]) if row else 0

    def take_intents(self) -> list[str]:
        with self.db.transaction():
            rows = self.db.execute(sql.SQL(
                "UPDATE cutover_store.intents SET taken = %s WHERE service = %s AND taken IS NULL "
                "AND {} RETURNING id, kind").format(self._fenced()),
                [time.time(), self.service]).fetchall()
        return [str(r[1]) for r in sorted(rows)]

    def pending_intents(self) -> list[str]:
        return [str(r[0]) for r in self.db.execute(
            "SELECT kind FROM cutover_store.intents WHERE service = %s AND taken IS NULL "
            "ORDER BY id", [self.service]).fetchall()]

    def close(self) -> None:
        self.db.close()


class Leadership:
    """The service's leader lock: a session advisory lock on a connection of its own."""

    def __init__(self, settings: StateSettings, service: str) -> None:
        self.settings, self.service = settings, service
        self.conn: psycopg.Connection[Any] | None = None
        self.epoch: int | None = None

    def try_acquire(self) -> int | None:
        """The new epoch if this daemon leads now, else None (another one does)."""
        if self.conn is None or self.conn.closed:
            self.conn = _connect(self.settings, "leader")
            migrate(self.conn)
        row = self.conn.execute("SELECT pg_try_advisory_lock(hashtext('cutover leader'), "
                                "hashtext(%s))", [self.service]).fetchone()
        if not (row and row[0]):
            return None
        holder = f"{socket.gethostname()}:{self.conn.info.backend_pid}"
        bumped = self.conn.execute(
            "INSERT INTO cutover_store.leader (service, epoch, holder, since) VALUES (%s, 1, %s, %s) "
            "ON CONFLICT (service) DO UPDATE SET epoch = cutover_store.leader.epoch + 1, "
            "holder = excluded.holder, since = excluded.since RETURNING epoch",
            [self.service, holder, time.time()]).fetchone()
        assert bumped is not None
        self.epoch = int(bumped[0])
        return self.epoch

    def held(self) -> bool:
        """Whether the lock session is alive (a lost session released the lock)."""
        if self.conn is None or self.conn.closed or self.epoch is None:
            return False
        try:
            row = self.conn.execute("SELECT epoch FROM cutover_store.leader WHERE service = %s",
                                    [self.service]).fetchone()
        except psycopg.Error:
            return False
        return row is not None and int(row[0]) == self.epoch

    def release(self) -> None:
        if self.conn is not None and not self.conn.closed:
            self.conn.close()
        self.conn = None
        self.epoch = None
