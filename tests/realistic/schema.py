"""Creating the realistic "records service" schema (see schema.sql and the package docstring)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import psycopg

SCHEMA = "records"
SCHEMA_SQL = Path(__file__).with_name("schema.sql")

# The types nothing else in the schema depends on but the tables: created first, in an order
# that depends on the seed. Each entry is (name, DDL, COMMENT or None).
TYPES: tuple[tuple[str, str, str | None], ...] = (
    ("record_status",
     "CREATE TYPE records.record_status AS ENUM ('draft', 'active', 'archived', 'deleted')",
     "Life cycle of a record."),
    ("visibility",
     "CREATE TYPE records.visibility AS ENUM ('private', 'internal', 'public')",
     None),
    ("label",
     "CREATE TYPE records.label AS ENUM ('urgent', 'legal', 'finance', 'hr', 'ops', 'customer')",
     "Labels, stored as an array of this enum."),
    ("address",
     "CREATE TYPE records.address AS (street text, city text, postal_code text, country char(2))",
     "A postal address, used as a column type."),
    ("floatrange",
     "CREATE TYPE records.floatrange AS RANGE (subtype = float8, subtype_diff = float8mi)",
     "A range of double precision values (its multirange is records.floatmultirange)."),
    ("email",
     "CREATE DOMAIN records.email AS text CHECK (VALUE ~ '^[^@[:space:]]+@[^@[:space:]]+$')",
     "An e-mail address: something@somewhere."),
)

ENUM_VALUES: dict[str, tuple[str, ...]] = {
    "record_status": ("draft", "active", "archived", "deleted"),
    "visibility": ("private", "internal", "public"),
    "label": ("urgent", "legal", "finance", "hr", "ops", "customer"),
}


def _type_statements(seed: int) -> list[str]:
    """Seed 0: the types in their canonical order, nothing else. Any other seed: a shuffled
    order, after throwaway types that are dropped again. The throwaway enum has more labels
    than all the real types take OIDs together, so the same types get different OIDs even on
    two servers whose OID counters started equal."""
    types = list(TYPES)
    statements: list[str] = []
    if seed != 0:
        rng = random.Random(seed)
        rng.shuffle(types)
        labels = ", ".join(f"'v{i}'" for i in range(64 + 8 * (seed % 8)))
        statements += [f"CREATE TYPE records.throwaway_enum AS ENUM ({labels})",
                       "CREATE TYPE records.throwaway_pair AS (a int, b text)",
                       "CREATE DOMAIN records.throwaway_domain AS int CHECK (VALUE > 0)",
                       "DROP TYPE records.throwaway_enum",
                       "DROP TYPE records.throwaway_pair",
                       "DROP DOMAIN records.throwaway_domain"]
    for name, ddl, comment in types:
        statements.append(ddl)
        if comment is not None:
            kind = "DOMAIN" if ddl.startswith("CREATE DOMAIN") else "TYPE"
            statements.append(f"COMMENT ON {kind} records.{name} IS '{comment}'")
    return statements


def create_schema(conn: psycopg.Connection[Any], *, type_order_seed: int = 0) -> None:
    """Create the `records` schema with every object in it on an empty database (not
    idempotent), plus the cluster-wide roles records_reader and records_writer if missing
    and the btree_gist extension. `conn` must be in autocommit mode; everything runs in one
    transaction. Different `type_order_seed`s give the independent types different OIDs."""
    if not conn.autocommit:
        raise ValueError("create_schema needs an autocommit connection")
    with conn.transaction():
        conn.execute("CREATE SCHEMA records")
        conn.execute("COMMENT ON SCHEMA records IS 'The records service (v7).'")
        for statement in _type_statements(type_order_seed):
            conn.execute(statement)
        # No parameters: psycopg sends the whole script with the simple query protocol.
        conn.execute(SCHEMA_SQL.read_text())


def type_oids(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """OIDs of the schema's own types, by name (array types and the multirange included)."""
    rows = conn.execute(
        "SELECT t.typname, t.oid::bigint FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
        " WHERE n.nspname = %s AND t.typtype IN ('e', 'c', 'r', 'm', 'd', 'b')"
        " AND (t.typrelid = 0 OR (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c')",
        (SCHEMA,)).fetchall()
    return {str(name): int(oid) for name, oid in rows}
