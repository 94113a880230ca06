"""A realistic application schema, the "records service" (v7), for tests and benchmarks that
must prove a whole cutover works on what real applications have: enums, a composite, a range
type of its own, a domain, enum arrays, triggers (a revision counter that must not fire again
for replicated rows, an audit log), views and materialized views, a partitioned table with a
DEFAULT partition, generated and identity columns, self-referencing and deferred foreign keys,
an exclusion constraint, row level security, grants to application roles, TOASTed jsonb,
bytea, a large object, free-standing sequences and columns named like a sync tool's own.

    create_schema(conn, type_order_seed=0)   # on an empty database, autocommit connection
    populate(conn, rows=2000, seed=0)        # deterministic rows in every table
    write_some(conn, n, seed) -> list[Write] # an application write mix, every write committed
    refresh(conn)                            # REFRESH MATERIALIZED VIEW of both matviews
    normalized_schema(dump_text) -> str      # pg_dump output, comparable across servers
"""

from tests.realistic.data import Write, populate, refresh, write_some
from tests.realistic.dump import PG_DUMP_FLAGS, normalized_schema
from tests.realistic.schema import SCHEMA, create_schema, type_oids

__all__ = ["PG_DUMP_FLAGS", "SCHEMA", "Write", "create_schema", "normalized_schema", "populate", "refresh",
           "type_oids", "write_some"]
