"""Cutover's own objects in the two databases: names, the heartbeat table (published, so its
rows measure lag in time), and the progress marker that makes a re-run resume correctly."""

from __future__ import annotations

import re

import psycopg
from psycopg import sql
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from config.environments import DatabaseSettings
from config.replication import SyncSettings
from sync.connections import Conn
from sync.errors import SyncError

HEARTBEAT_DDL = """
CREATE SCHEMA IF NOT EXISTS cutover;
CREATE TABLE IF NOT EXISTS cutover.heartbeat (
    id int PRIMARY KEY,
    seq bigint NOT NULL,
    beat_at timestamptz NOT NULL,
    applied_at timestamptz
);
"""

# On green, stamp each heartbeat as it is applied; ALWAYS so it fires in the apply worker.
GREEN_HEARTBEAT_TRIGGER = """
CREATE OR REPLACE FUNCTION cutover.stamp_heartbeat() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN NEW.applied_at := clock_timestamp(); RETURN NEW; END $$;
DROP TRIGGER IF EXISTS stamp_heartbeat ON cutover.heartbeat;
CREATE TRIGGER stamp_heartbeat BEFORE INSERT OR UPDATE ON cutover.heartbeat
    FOR EACH ROW EXECUTE FUNCTION cutover.stamp_heartbeat();
ALTER TABLE cutover.heartbeat ENABLE ALWAYS TRIGGER stamp_heartbeat;
"""

STATE_DDL = """
CREATE SCHEMA IF NOT EXISTS cutover;
CREATE TABLE IF NOT EXISTS cutover.sync_state (
    name text PRIMARY KEY,
    phase text NOT NULL,
    schema_from_blue boolean NOT NULL DEFAULT false,
    slot_lsn pg_lsn,
    updated_at timestamptz NOT NULL DEFAULT now()
);
"""


SCHEMA_COPYING = "schema"
"""The marker's phase while blue's schema is being restored into green: set before the first
object lands, so a run killed midway is known to own green's partial schema."""
SCHEMA_COPIED = "schema copied"
"""The diff sync's marker once the schema is complete (the logical sync moves on to copying)."""


def pg_name(settings: SyncSettings) -> str:
    """Slot, publication and subscription name: slots allow only [a-z0-9_]."""
    return re.sub(r"[^a-z0-9_]", "_", settings.name.lower())


def reverse_name(settings: SyncSettings) -> str:
    """Green -> blue's slot, publication and subscription, which a switch to green creates."""
    return f"{pg_name(settings)}_reverse"


def ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


def ensure_heartbeat(blue: Conn, green: Conn) -> None:
    green.execute(HEARTBEAT_DDL)
    green.execute(GREEN_HEARTBEAT_TRIGGER)
    # The row exists on both sides: green's must be there for the replicated UPDATEs to find.
    for conn in (blue, green):
        conn.execute(HEARTBEAT_DDL)
        conn.execute("INSERT INTO cutover.heartbeat VALUES (1, 0, clock_timestamp(), NULL) "
                     "ON CONFLICT (id) DO NOTHING")


def read_phase(green: Conn, name: str) -> tuple[str, bool] | None:
    """(phase, schema_from_blue) of the last run, or None if there was none."""
    exists = green.execute("SELECT to_regclass('cutover.sync_state')").fetchone()
    if exists is None or exists[0] is None:
        return None
    row = green.execute("SELECT phase, schema_from_blue FROM cutover.sync_state WHERE name = %s",
                        [name]).fetchone()
    return (str(row[0]), bool(row[1])) if row else None


def schema_copy_interrupted(green: Conn, name: str) -> bool:
    """An earlier run started putting blue's schema on green and did not finish: whatever part
    green has is ours, and a re-run completes it."""
    previous = read_phase(green, name)
    return previous is not None and previous[0] == SCHEMA_COPYING


def write_phase(green: Conn, name: str, phase: str, schema_from_blue: bool,
                slot_lsn: str | None = None) -> None:
    green.execute(STATE_DDL)
    green.execute(
        "INSERT INTO cutover.sync_state (name, phase, schema_from_blue, slot_lsn) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET phase = EXCLUDED.phase, "
        "schema_from_blue = EXCLUDED.schema_from_blue, "
        "slot_lsn = coalesce(EXCLUDED.slot_lsn, cutover.sync_state.slot_lsn), updated_at = now()",
        [name, phase, schema_from_blue, slot_lsn])


def fence(conn: Conn) -> None:
    """The database read-only for every new session (Cutover's own sessions opt out)."""
    conn.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(
        sql.Identifier(str(conn.info.dbname))))


def unfence(conn: Conn) -> None:
    conn.execute(sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only").format(
        sql.Identifier(str(conn.info.dbname))))


def fenced(conn: Conn) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
        "WHERE d.datname = current_database() AND s.setrole = 0 "
        "AND 'default_transaction_read_only=on' = ANY(s.setconfig))").fetchone()
    return bool(row and row[0])


SWITCH_MARK_DDL = """
CREATE SCHEMA IF NOT EXISTS cutover;
CREATE TABLE IF NOT EXISTS cutover.switch_mark (
    name text PRIMARY KEY,
    to_side text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
"""
"""On the new primary, a switch's point of no return: written in the pause after the repoint,
just before the resume, and kept: it records where the writes went, which a command endpoint
cannot be asked. While it is there and the old primary is still fenced, the switch can only
go forward: whoever finds it (the next run, the fence guardian) points the endpoint at this
side, never lifts the old one's fence. An undo removes it; the next switch the other way
removes it when it passes its own point of no return."""


def mark_switch(conn: Conn, name: str, to: str) -> None:
    conn.execute("INSERT INTO cutover.switch_mark (name, to_side) VALUES (%s, %s) "
                 "ON CONFLICT (name) DO UPDATE SET to_side = EXCLUDED.to_side, at = now()", [name, to])


def switch_marked(conn: Conn, name: str, to: str) -> bool:
    if conn.execute("SELECT to_regclass('cutover.switch_mark')").fetchone() == (None,):
        return False
    return conn.execute("SELECT 1 FROM cutover.switch_mark WHERE name = %s AND to_side = %s",
                        [name, to]).fetchone() is not None


def clear_switch_mark(conn: Conn, name: str) -> None:
    if conn.execute("SELECT to_regclass('cutover.switch_mark')").fetchone() != (None,):
        conn.execute("DELETE FROM cutover.switch_mark WHERE name = %s", [name])


def slot_exists(blue: Conn, name: str) -> bool:
    return blue.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s",
                        [name]).fetchone() is not None


_QUIET = {"log_statement": "none", "log_min_duration_statement": "-1",
          "log_min_error_statement": "panic", "pg_stat_statements.track_utility": "off"}
"""What would copy the subscription's statement, password included, into the server's log
or pg_stat_statements; turned off around it (superuser settings)."""


SLOT_IN_USE_FOR = 5.0
"""Seconds a slot's consumer gets to go away once it is told to (pg_terminate_backend)."""


def drop_slot(conn: Conn, name: str, within: float = SLOT_IN_USE_FOR) -> None:
    """Drop replication slot `name` on conn's server if it is there, ending the walsender that
    uses it first (a subscription's worker reconnects, and takes it again, at once): retried
    until `within` seconds; SyncError if it stays in use."""
    retrying = Retrying(stop=stop_after_delay(within), wait=wait_fixed(0.05), reraise=True,
                        retry=retry_if_exception_type(psycopg.errors.ObjectInUse))
    try:
        for attempt in retrying:
            with attempt:
                conn.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                             "WHERE slot_name = %s AND active_pid IS NOT NULL", [name])
                conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                             "WHERE slot_name = %s", [name])
    except psycopg.errors.ObjectInUse:
        raise SyncError(f"replication slot {name!r} stays in use after {within:g}s; stop its "
                        "consumer (pg_stat_replication shows it)") from None


def create_subscription(conn: Conn, name: str, source: DatabaseSettings) -> bool:
    """`CREATE SUBSCRIPTION name` on conn's server, streaming publication `name` from the
    existing slot `name` on source (with source's password: the server connects itself).
    False when the statement could not be kept out of the server's log and statistics (not a
    superuser, and source has a password): with log_statement = 'ddl' or 'all' the password
    is then in that server's log."""
    changed: dict[str, str | None] = {}
    for setting, value in _QUIET.items():
        try:
            row = conn.execute("SELECT current_setting(%s, true)", [setting]).fetchone()
            conn.execute("SELECT set_config(%s, %s, false)", [setting, value])
            changed[setting] = None if row is None else row[0]
        except psycopg.errors.InsufficientPrivilege:
            pass
    try:
        conn.execute(sql.SQL(
            "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH (copy_data = false, "
            "create_slot = false, slot_name = {}, enabled = true)").format(
                ident(name), sql.Literal(source.conninfo()), ident(name), sql.Literal(name)))
    finally:
        for setting, before in changed.items():
            if before is not None:
                conn.execute("SELECT set_config(%s, %s, false)", [setting, before])
    return len(changed) == len(_QUIET) or source.password is None


def subscription_logged(server: str, source: str) -> str:
    """The warning for create_subscription's False."""
    return (f"warning: statement logging could not be turned off for CREATE SUBSCRIPTION (not a "
            f"superuser on {server}): if {server}'s log_statement is 'ddl' or 'all', {source}'s "
            f"password is in {server}'s server log; see docs/security.md")


def subscription_exists(green: Conn, name: str) -> bool:
    return green.execute("SELECT 1 FROM pg_subscription WHERE subname = %s",
                         [name]).fetchone() is not None


def published_tables(conn: Conn, publication: str) -> set[tuple[str, str]]:
    """(schema, table) of every table the publication carries."""
    return {(str(r[0]), str(r[1])) for r in conn.execute(
        "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s",
        [publication]).fetchall()}


def published_columns(conn: Conn, publication: str) -> dict[tuple[str, str], set[str]]:
    """(schema, table) -> the columns the publication sends of it (PostgreSQL 15+ lists them;
    all of the table's when it has no column list)."""
    if conn.info.server_version < 150000:
        return {}
    return {(str(r[0]), str(r[1])): set(r[2] or []) for r in conn.execute(
        "SELECT schemaname, tablename, attnames::text[] FROM pg_publication_tables WHERE pubname = %s",
        [publication]).fetchall()}


def tables_being_copied(conn: Conn, subscription: str) -> set[tuple[str, str]]:
    """(schema, table) the subscription is still copying: not yet 'r'eady."""
    return {(str(r[0]), str(r[1])) for r in conn.execute(
        "SELECT n.nspname, c.relname FROM pg_subscription_rel r "
        "JOIN pg_subscription s ON s.oid = r.srsubid JOIN pg_class c ON c.oid = r.srrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE s.subname = %s AND r.srsubstate <> 'r'",
        [subscription]).fetchall()}
