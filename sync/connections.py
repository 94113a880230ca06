"""One named connection per purpose: application_name says who we are in pg_stat_activity,
statement_timeout bounds every statement, and failures become SyncError naming the database."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import TupleRow

from config.environments import DatabaseSettings
from config.settings import Settings
from sync.errors import BadInputError, SyncError

Conn = psycopg.Connection[TupleRow]


def connect(db: DatabaseSettings, purpose: str, *, autocommit: bool = True,
            replication: bool = False, statement_timeout: float | None = None,
            **options: Any) -> Conn:
    """A connection for one purpose (e.g. "copy-3", "verify"), UTC, with timeouts.
    statement_timeout overrides the configured one (0: none, for scans of whole tables)."""
    timeout = db.statement_timeout if statement_timeout is None else statement_timeout
    timeout_ms = int(timeout * 1000)
    # The switch fences the old primary with default_transaction_read_only; Cutover's own
    # sessions (reverse replication, heartbeats, cleanup) must still write there.
    extra: dict[str, Any] = {"application_name": f"cutover-{purpose}",
                             "options": f"-c statement_timeout={timeout_ms} -c TimeZone=UTC "
                                        "-c default_transaction_read_only=off"}
    if replication:
        extra["replication"] = "database"
    try:
        return psycopg.connect(db.conninfo(**extra), autocommit=autocommit, **options)
    except psycopg.OperationalError as exc:
        raise SyncError(f"cannot connect to {db.describe()} for {purpose}: "
                        f"{str(exc).strip()}") from None


def databases(settings: Settings) -> tuple[DatabaseSettings, DatabaseSettings]:
    """Blue's and green's database settings; both are needed to sync."""
    blue, green = settings.blue.database, settings.green.database
    if blue is None or green is None:
        missing = [env for env, db in (("blue", blue), ("green", green)) if db is None]
        fields = " and ".join(f"{env}.database.dsn" for env in missing)
        sections = ", ".join(f'[{env}.database] dsn = "postgresql://..."' for env in missing)
        raise BadInputError(f"{fields}: not set; this needs both databases (add {sections})")
    return blue, green
