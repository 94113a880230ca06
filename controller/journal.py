"""The journal: every decision with its inputs and every action with its result, in SQLite
(the state file). Append-only; the schema carries its version (PRAGMA user_version)."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,            -- wall clock (seconds since the epoch), for humans and reports
    kind TEXT NOT NULL,          -- breach, rollback, shift, ...
    data TEXT NOT NULL           -- JSON: the verdict, values, baseline, threshold, result
);
"""


@dataclass(frozen=True)
class Event:
    id: int
    at: float
    kind: str
    data: dict[str, Any]


class Journal:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=10, isolation_level=None)
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{path} was written by a newer Cutover (journal schema {version}, "
                               f"this one knows {SCHEMA_VERSION}); upgrade Cutover")
        self.db.executescript(SCHEMA)
        self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self.db.execute("PRAGMA journal_mode = WAL")

    def record(self, kind: str, data: dict[str, Any]) -> Event:
        at = time.time()
        cur = self.db.execute("INSERT INTO events (at, kind, data) VALUES (?, ?, ?)",
                              (at, kind, json.dumps(data, default=str)))
        return Event(int(cur.lastrowid or 0), at, kind, data)

    def events(self, kind: str | None = None) -> list[Event]:
        rows = self.db.execute("SELECT id, at, kind, data FROM events WHERE ? IS NULL OR kind = ? "
                               "ORDER BY id", (kind, kind)).fetchall()
        return [Event(int(r[0]), float(r[1]), str(r[2]), json.loads(r[3])) for r in rows]

    def close(self) -> None:
        self.db.close()
