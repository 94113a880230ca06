"""Large objects (lo_* / pg_largeobject): neither logical replication nor a schema dump carries
them, so the initial copy copies each one green lacks under its own OID (the tables' oid
columns keep pointing at it). One created or changed on blue later is not followed: preflight
says so, with the fix (bytea columns)."""

from __future__ import annotations

from psycopg import sql

from sync.connections import Conn


def summary(conn: Conn) -> tuple[int, int]:
    """How many large objects, and their bytes."""
    row = conn.execute("SELECT (SELECT count(*) FROM pg_largeobject_metadata), "
                       "coalesce((SELECT sum(octet_length(data)) FROM pg_largeobject), 0)").fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def copy_missing(blue: Conn, green: Conn) -> int:
    """Copy every large object blue has and green lacks, with its OID and owner; returns how
    many. Each is read whole (lo_get), so one object must fit in memory (at most 1 GB)."""
    theirs = {int(r[0]) for r in green.execute("SELECT oid::bigint FROM pg_largeobject_metadata").fetchall()}
    ours = blue.execute("SELECT m.oid::bigint, pg_get_userbyid(m.lomowner)::text "
                        "FROM pg_largeobject_metadata m ORDER BY 1").fetchall()
    copied = 0
    for oid, owner in ours:
        if int(oid) in theirs:
            continue
        data = blue.execute("SELECT lo_get(%s::oid)", [oid]).fetchone()
        with green.transaction():
            green.execute("SELECT lo_from_bytea(%s::oid, %s)", [oid, data[0] if data else b""])
            if green.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [owner]).fetchone():
                green.execute(sql.SQL("ALTER LARGE OBJECT {} OWNER TO {}").format(
                    sql.Literal(int(oid)), sql.Identifier(str(owner))))
        copied += 1
    return copied
