"""Blue's schema onto green: every object of the synced schemas and what the synced tables
depend on elsewhere (types, domains, functions, extensions), tables before the copy, indexes
and constraints after it (building them once over loaded data is much faster than
maintaining them row by row).

Every restore is filtered to what green does not have yet, so it can be repeated: a run
interrupted anywhere in the schema copy finishes it, and tables created on blue later join
with exactly their new objects. Existence is asked by each object's address
(pg_identify_object_as_address on blue, pg_get_object_address on green), never by parsing
error messages.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from psycopg import sql

from config.settings import Settings
from sync.catalog import Table, list_tables
from sync.connections import Conn, connect, databases
from sync.errors import BadInputError, SyncError
from sync.pgtools import run_tool

_OWN_SCHEMA = "cutover"
_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast", _OWN_SCHEMA)

_DEPENDENCY_SCHEMAS = """
WITH parts AS (  -- the tables and what belongs to them: defaults, constraints, triggers
    SELECT 'pg_class'::regclass::oid AS classid, t AS objid FROM unnest(%(tables)s::oid[]) t
    UNION
    SELECT d.classid, d.objid FROM pg_depend d
     WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = ANY(%(tables)s) AND d.deptype IN ('a', 'n')
), used AS (  -- types, functions, sequences (nextval defaults) and referenced tables
    SELECT d.refclassid, d.refobjid FROM pg_depend d
      JOIN parts p ON p.classid = d.classid AND p.objid = d.objid
     WHERE d.deptype = 'n'
       AND d.refclassid IN ('pg_type'::regclass, 'pg_proc'::regclass, 'pg_class'::regclass)
       AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = d.refclassid
                          AND e.objid = d.refobjid AND e.deptype = 'e')
)
SELECT DISTINCT n.nspname::text FROM used u
  LEFT JOIN pg_type ty ON u.refclassid = 'pg_type'::regclass AND ty.oid = u.refobjid
  LEFT JOIN pg_proc pr ON u.refclassid = 'pg_proc'::regclass AND pr.oid = u.refobjid
  LEFT JOIN pg_class cl ON u.refclassid = 'pg_class'::regclass AND cl.oid = u.refobjid
  JOIN pg_namespace n ON n.oid = coalesce(ty.typnamespace, pr.pronamespace, cl.relnamespace)
UNION
SELECT DISTINCT n.nspname::text FROM unnest(%(tables)s::oid[]) t
 CROSS JOIN LATERAL pg_partition_tree(t) p
  JOIN pg_class c ON c.oid = p.relid JOIN pg_namespace n ON n.oid = c.relnamespace
"""


def schemas_to_copy(blue: Conn, settings: Settings, tables: Sequence[Table]) -> list[str]:
    """The synced schemas, and every schema holding a type, function or partition that the
    synced tables use (a table in public typed by a domain in schema `shared`)."""
    found = {str(r[0]) for r in blue.execute(_DEPENDENCY_SCHEMAS,
                                             {"tables": [t.oid for t in tables]}).fetchall()}
    wanted = found | {t.schema for t in tables} | set(settings.sync.schemas)
    return sorted(s for s in wanted if s not in _SYSTEM_SCHEMAS)


def synced_schemas(conn: Conn, settings: Settings) -> list[str]:
    """The schemas the sync carries, as this side has them (blue, or green on the way back):
    where sequences are copied from, the same set the schema copy takes."""
    try:
        tables = list_tables(conn, settings.sync)
    except BadInputError:  # a configured name this side lacks (green's own schema): the schemas
        return sorted(set(settings.sync.schemas))
    return schemas_to_copy(conn, settings, tables)


def _pattern(name: str) -> str:
    # Inside double quotes pg_dump matches literally, wildcards included.
    return '"' + name.replace('"', '""') + '"'


def dump_schema(settings: Settings, tables: Sequence[Table], dest: Path) -> list[str]:
    """pg_dump -Fc --schema-only of the schemas to copy, with the extensions blue has; returns
    the schemas those extensions live in that the dump does not create (an `extensions`
    schema, say): green needs them before the extensions."""
    args = ["--schema-only", "--format=custom", f"--file={dest}", "--no-publications",
            "--no-subscriptions"]
    with connect(databases(settings)[0], "schema") as blue:
        schemas = schemas_to_copy(blue, settings, tables)
        found = blue.execute(
            "SELECT e.extname::text, n.nspname::text FROM pg_extension e "
            "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname <> 'plpgsql' ORDER BY 1"
        ).fetchall()
    extensions = [str(r[0]) for r in found]
    args += [f"--schema={_pattern(s)}" for s in schemas]
    # With --schema, pg_dump leaves extensions out unless named (CREATE EXTENSION IF NOT EXISTS).
    args += [f"--extension={_pattern(e)}" for e in extensions]
    done = run_tool("pg_dump", args, databases(settings)[0], timeout=600, pair=databases(settings))
    if done.returncode != 0:
        raise SyncError(f"pg_dump of blue's schema failed: {done.stderr.decode(errors='replace')}")
    return sorted({str(r[1]) for r in found} - set(schemas))


@dataclass(frozen=True)
class TocEntry:
    line: str
    classid: int
    objid: int
    kind: str
    """What follows the OIDs: "<KIND> <schema> <name> <owner>" (names may hold spaces)."""


_ENTRY = re.compile(r"^(\d+); (\d+) (\d+) (.*)$")


def parse_toc(listing: str) -> list[TocEntry]:
    """pg_restore --list output, comments left out."""
    out = []
    for line in listing.splitlines():
        m = _ENTRY.match(line)
        if m:
            out.append(TocEntry(line, int(m.group(2)), int(m.group(3)), m.group(4)))
    return out


def _kind_is(entry: TocEntry, kind: str) -> bool:
    return entry.kind.startswith(kind + " ")


_EXISTS_FN = """
CREATE FUNCTION pg_temp.cutover_object_exists(t text, n text[], a text[]) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_get_object_address(t, n, a);
    RETURN true;
EXCEPTION WHEN others THEN
    RETURN false;
END $$
"""


def _present_on_green(blue: Conn, green: Conn, entries: Sequence[TocEntry]) -> set[tuple[int, int]]:
    """(classid, objid) of blue's objects that green has already, found by their address."""
    keyed = [e for e in entries if e.classid]
    if not keyed:
        return set()
    addresses = blue.execute(
        "SELECT x.c, x.o, a.type, a.object_names, a.object_args "
        "FROM unnest(%s::oid[], %s::oid[]) AS x(c, o) "
        "CROSS JOIN LATERAL pg_identify_object_as_address(x.c, x.o, 0) a WHERE a.type IS NOT NULL",
        [[e.classid for e in keyed], [e.objid for e in keyed]]).fetchall()
    # A view that pg_dump splits (for a circular dependency) is a placeholder in pre-data and
    # its real definition a CREATE OR REPLACE VIEW, as the _RETURN rule, in post-data: the
    # placeholder's own rule must not pass for it.
    addresses = [r for r in addresses if not (r[2] == "rule" and r[3] and r[3][-1] == "_RETURN")]
    if not addresses:
        return set()
    green.execute(_EXISTS_FN)
    try:
        rows = green.execute(
            "SELECT x.c, x.o FROM unnest(%s::oid[], %s::oid[], %s::text[], %s::text[], %s::text[]) "
            "AS x(c, o, t, n, a) WHERE pg_temp.cutover_object_exists(x.t, x.n::text[], x.a::text[])",
            [[int(r[0]) for r in addresses], [int(r[1]) for r in addresses],
             [str(r[2]) for r in addresses], [_array_text(r[3]) for r in addresses],
             [_array_text(r[4]) for r in addresses]]).fetchall()
    finally:
        green.execute("DROP FUNCTION pg_temp.cutover_object_exists(text, text[], text[])")
    return {(int(r[0]), int(r[1])) for r in rows}


def _array_text(values: Sequence[str] | None) -> str:
    """A text[] literal (arrays of different lengths cannot share one 2-D parameter)."""
    quoted = ['"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values or []]
    return "{" + ",".join(quoted) + "}"


def _listed_where_green_has(blue: Conn, green: Conn, of_blue: str, on_green: str, kind: str) -> set[str]:
    """TOC texts "<kind> <schema> <name> <owner>" of blue's objects (of_blue: schema, name,
    owner) that green has by schema and name (on_green: schema, name): for the entries that
    carry no OID to ask by."""
    have = {(str(r[0]), str(r[1])) for r in green.execute(on_green).fetchall()}
    return {f"{kind} {r[0]} {r[1]} {r[2]}" for r in blue.execute(of_blue).fetchall()
            if (str(r[0]), str(r[1])) in have}


def _attached_on_green(blue: Conn, green: Conn) -> set[str]:
    """TABLE ATTACH entries whose partition green has attached already."""
    partitions = ("SELECT n.nspname::text, c.relname::text, {} FROM pg_class c "
                  "JOIN pg_namespace n ON n.oid = c.relnamespace "
                  "WHERE c.relispartition AND c.relkind IN ('r', 'p', 'f')")
    return _listed_where_green_has(blue, green, partitions.format("pg_get_userbyid(c.relowner)::text"),
                                   partitions.format("''"), "TABLE ATTACH")


def _shells_on_green(blue: Conn, green: Conn) -> set[str]:
    """SHELL TYPE entries (a base or range type declared before its functions) whose type green
    has."""
    types = ("SELECT n.nspname::text, t.typname::text, {} FROM pg_type t "
             "JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.typtype IN ('b', 'r') "
             "AND n.nspname NOT IN ('pg_catalog', 'information_schema')")
    return _listed_where_green_has(blue, green, types.format("pg_get_userbyid(t.typowner)::text"),
                                   types.format("''"), "SHELL TYPE")


def _fk_comments(blue: Conn) -> set[str]:
    """The COMMENT entries of foreign keys, as pg_restore lists them: they follow their key,
    which sync.foreign_keys adds (with its comment) after the copy, not pg_restore."""
    rows = blue.execute(
        "SELECT n.nspname::text, con.conname::text, c.relname::text, pg_get_userbyid(c.relowner)::text "
        "FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE con.contype = 'f'").fetchall()
    return {f"COMMENT {r[0]} CONSTRAINT {r[1]} ON {r[2]} {r[3]}" for r in rows}


def missing_entries(blue: Conn, green: Conn, entries: Sequence[TocEntry],
                    skip_kinds: Sequence[str] = ()) -> list[TocEntry]:
    """The entries still to restore: not of a skipped kind, and not an object green has.
    Entries without an OID (comments, grants, OWNED BY, index attachments) are idempotent
    and stay, except a partition's attachment and a shell type, which cannot be repeated."""
    present = _present_on_green(blue, green, entries)
    attached = _attached_on_green(blue, green) if any(_kind_is(e, "TABLE ATTACH") for e in entries) \
        else set()
    shells = _shells_on_green(blue, green) if any(_kind_is(e, "SHELL TYPE") for e in entries) else set()
    skipped = _fk_comments(blue) if "FK CONSTRAINT" in skip_kinds else set()
    return [e for e in entries
            if not any(_kind_is(e, k) for k in skip_kinds)
            and (e.classid, e.objid) not in present
            and e.kind not in skipped
            and e.kind not in attached and e.kind not in shells]


def restore_section(settings: Settings, dump: Path, section: str, jobs: int = 1,
                    skip_kinds: Sequence[str] = ()) -> int:
    """pg_restore one section into green, only what green lacks (so a repeat is safe); any
    error fails. skip_kinds leaves out entries of those kinds (e.g. "FK CONSTRAINT").
    Returns how many entries were restored."""
    # Owners and grants come along (preflight's "roles" check makes sure the roles exist):
    # the app must be allowed to use its tables on green after the switch.
    blue_db, green_db = databases(settings)
    listed = run_tool("pg_restore", ["--list", f"--section={section}", str(dump)], green_db, timeout=60,
                      pair=(blue_db, green_db))
    if listed.returncode != 0:
        raise SyncError(f"pg_restore --list failed: {listed.stderr.decode(errors='replace')}")
    with connect(blue_db, "schema") as blue, connect(green_db, "schema") as green:
        todo = missing_entries(blue, green, parse_toc(listed.stdout.decode()), skip_kinds)
    if not todo:
        return 0
    toc = dump.with_suffix(f".{section}.list")
    toc.write_text("".join(e.line + "\n" for e in todo))
    # The list is the section already; --section again would drop the comments and grants of
    # objects green has (they belong to no section but their object's, which is not listed).
    args = [f"--jobs={jobs}", f"--use-list={toc}", "--exit-on-error"]
    done = run_tool("pg_restore", [*args, str(dump)], green_db, timeout=None, pair=(blue_db, green_db))
    if done.returncode != 0:
        errors = [line for line in done.stderr.decode(errors="replace").splitlines()
                  if "error:" in line or "ERROR:" in line or "Command was" in line]
        raise SyncError(f"pg_restore --section={section} into green failed: "
                        + "\n".join(errors or [done.stderr.decode(errors="replace")])
                        + "\n(re-run `cutover sync`: it restores only what green still lacks)")
    return len(todo)


class SchemaDump:
    """Blue's schema, dumped once per run (on first use) into a private temp dir, and restored
    into green a section at a time."""

    def __init__(self, settings: Settings, tables: Sequence[Table]) -> None:
        self.settings, self.tables = settings, tables
        self._dir = tempfile.TemporaryDirectory(prefix="cutover-schema-")
        self._path: Path | None = None
        self._extension_schemas: list[str] = []

    def __enter__(self) -> SchemaDump:
        return self

    def __exit__(self, *exc: object) -> None:
        self._dir.cleanup()

    def restore(self, section: str, jobs: int = 1, skip_kinds: Sequence[str] = ()) -> int:
        if self._path is None:
            self._path = Path(self._dir.name) / "schema.dump"
            self._extension_schemas = dump_schema(self.settings, self.tables, self._path)
        if section == "pre-data" and self._extension_schemas:
            with connect(databases(self.settings)[1], "schema") as green:
                for name in self._extension_schemas:
                    green.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(name)))
        return restore_section(self.settings, self._path, section, jobs, skip_kinds)
