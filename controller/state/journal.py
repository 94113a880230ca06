"""The state store, SQLite: the journal (every decision with its inputs and every action with
its result, append-only), the daemon's persisted state, and the operator's intents. The
schema carries its version (PRAGMA user_version) and is migrated forward on open."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2
MIGRATIONS = {
    1: """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,            -- wall clock (seconds since the epoch), for humans and reports
    kind TEXT NOT NULL,          -- breach, rollback, shift, ...
    data TEXT NOT NULL           -- JSON: the verdict, values, baseline, threshold, result
);
""",
    2: """
CREATE TABLE IF NOT EXISTS state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at REAL NOT NULL,
    data TEXT NOT NULL           -- JSON: the daemon's State
);
CREATE TABLE IF NOT EXISTS intents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    kind TEXT NOT NULL,          -- promote, pause, resume, abort, retry
    taken REAL                   -- when the daemon took it; NULL while pending
);
CREATE INDEX IF NOT EXISTS events_kind ON events (kind, id);
""",
}


class EventKind(StrEnum):
    """Every kind of journal event, in one place: the writers, `cutover history` and the report
    read the same names."""
    START = "start"
    STOP = "stop"
    LEADER = "leader"
    RELOAD = "reload"
    PHASE = "phase"
    DECISION = "decision"
    JOB = "job"
    SAMPLE = "sample"
    INTENT = "intent"
    HOOK = "hook"
    SHIFT = "shift"
    SWITCH = "switch"
    """A step of a switch either way ({"to": "green" | "blue", "step": ...})."""
    BREACH = "breach"
    PAUSED = "paused"
    """A breach with rollback.on_breach = "pause": traffic left as it is."""
    ROLLBACK = "rollback"
    """Traffic moved back to blue (the first thing a rollback does)."""
    REVERTED = "reverted"
    """rollback.database = "revert": writes back on blue too."""
    REVERT_FAILED = "revert failed"


class StoreError(Exception):
    """The store cannot be reached or used."""


class StoreMissing(StoreError):
    """A reader asked for a store no daemon has created yet."""


@dataclass(frozen=True)
class Event:
    id: int
    at: float
    kind: str
    data: dict[str, Any]


class Journal:
    def __init__(self, path: Path) -> None:
        """Opens the journal at path, creating it if it is not there; StoreError, naming the
        path, when that cannot be done (a directory, not a database, no permission)."""
        try:
            self.db = self._open(path)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the journal {path} ([state] path): {exc}") from None

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists()
        db = sqlite3.connect(path, timeout=10, isolation_level=None)
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if new:
                # Owner-only whatever the umask: the journal holds the cutover's whole story,
                # and SQLite gives the -wal and -shm files the database's mode. chmod, not a
                # second open: closing another descriptor would drop SQLite's POSIX locks.
                path.chmod(0o600)
            if version > SCHEMA_VERSION:
                raise StoreError(f"{path} was written by a newer Cutover (journal schema {version}, "
                                 f"this one knows {SCHEMA_VERSION}); upgrade Cutover")
            db.execute("PRAGMA journal_mode = WAL")
            for step in range(version + 1, SCHEMA_VERSION + 1):
                db.executescript(f"BEGIN; {MIGRATIONS[step]} PRAGMA user_version = {step}; COMMIT;")
        except BaseException:
            db.close()  # a file that is no journal is not left open
            raise
        return db

    def record(self, kind: EventKind, data: dict[str, Any]) -> Event:
        at = time.time()
        cur = self.db.execute("INSERT INTO events (at, kind, data) VALUES (?, ?, ?)",
                              (at, kind, json.dumps(data, default=str)))
        return Event(int(cur.lastrowid or 0), at, kind, data)

    def events(self, kind: str | None = None, after: int = 0, limit: int | None = None) -> list[Event]:
        rows = self.db.execute("SELECT id, at, kind, data FROM events WHERE (? IS NULL OR kind = ?) "
                               "AND id > ? ORDER BY id LIMIT ?",
                               (kind, kind, after, -1 if limit is None else limit)).fetchall()
        return [Event(int(r[0]), float(r[1]), str(r[2]), json.loads(r[3])) for r in rows]

    def last_events(self, limit: int, kinds: tuple[str, ...] = ()) -> list[Event]:
        """The newest `limit` events (of these kinds, if given), oldest first."""
        wanted = "," + ",".join(kinds) + "," if kinds else ""
        rows = self.db.execute("SELECT id, at, kind, data FROM events WHERE ? = '' OR "
                               "instr(?, ',' || kind || ',') > 0 ORDER BY id DESC LIMIT ?",
                               (wanted, wanted, limit)).fetchall()
        return [Event(int(r[0]), float(r[1]), str(r[2]), json.loads(r[3])) for r in reversed(rows)]

    # -- the daemon's state ----------------------------------------------------------------

    def load_state(self) -> dict[str, Any] | None:
        row = self.db.execute("SELECT data FROM state WHERE id = 1").fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def save_state(self, data: dict[str, Any]) -> None:
        self.db.execute("INSERT INTO state (id, at, data) VALUES (1, ?, ?) ON CONFLICT (id) "
                        "DO UPDATE SET at = excluded.at, data = excluded.data",
                        (time.time(), json.dumps(data, default=str)))

    def state_age(self) -> float | None:
        """Seconds since the daemon last saved its state (it saves every tick)."""
        row = self.db.execute("SELECT at FROM state WHERE id = 1").fetchone()
        return None if row is None else time.time() - float(row[0])

    # -- operator intents ------------------------------------------------------------------

    def add_intent(self, kind: str) -> int:
        cur = self.db.execute("INSERT INTO intents (at, kind) VALUES (?, ?)", (time.time(), kind))
        return int(cur.lastrowid or 0)

    def take_intents(self) -> list[str]:
        """Pending intents, oldest first, marked taken in the same transaction."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            rows = self.db.execute("SELECT id, kind FROM intents WHERE taken IS NULL ORDER BY id").fetchall()
            self.db.execute("UPDATE intents SET taken = ? WHERE taken IS NULL", (time.time(),))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return [str(r[1]) for r in rows]

    def pending_intents(self) -> list[str]:
        return [str(r[0]) for r in self.db.execute(
            "SELECT kind FROM intents WHERE taken IS NULL ORDER BY id").fetchall()]

    def close(self) -> None:
        self.db.close()
