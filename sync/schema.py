"""Blue's schema onto an empty green: tables before the copy, indexes and constraints after
(building them once over loaded data is much faster than maintaining them row by row)."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from psycopg import sql

from config.settings import Settings
from sync.catalog import Table, list_sequences, partitions
from sync.connections import connect, databases
from sync.errors import SyncError
from sync.pgtools import run_tool


def _pattern(name: str) -> str:
    # Inside double quotes pg_dump matches literally, wildcards included.
    return '"' + name.replace('"', '""') + '"'


def dump_schema(settings: Settings, tables: Sequence[Table], dest: Path) -> None:
    """pg_dump -Fc --schema-only of exactly the synced tables (and what they need)."""
    args = ["--schema-only", "--format=custom", f"--file={dest}", "--no-owner",
            "--no-publications", "--no-subscriptions"]
    names = [(t.schema, t.name) for t in tables]
    with connect(databases(settings)[0], "schema") as blue:
        # pg_dump --table takes a partitioned table without its partitions.
        for t in tables:
            if t.kind == "p":
                names += partitions(blue, t)
        # Free-standing sequences too: --table takes only the tables' own (owned) ones.
        schemas = sorted({t.schema for t in tables} | set(settings.sync.schemas))
        names += [(q.schema, q.name) for q in list_sequences(blue, schemas)]
    args += [f"--table={_pattern(schema)}.{_pattern(name)}" for schema, name in names]
    done = run_tool("pg_dump", args, databases(settings)[0], timeout=600)
    if done.returncode != 0:
        raise SyncError(f"pg_dump of blue's schema failed: {done.stderr.decode(errors='replace')}")


def restore_section(settings: Settings, dump: Path, section: str, jobs: int = 1,
                    tolerate_existing: bool = False, skip_kinds: Sequence[str] = ()) -> None:
    """pg_restore one section into green. With tolerate_existing (resuming an interrupted
    run), objects that already exist are fine; any other error fails. skip_kinds leaves out
    TOC entries of those kinds (e.g. "FK CONSTRAINT")."""
    # Owners and grants come along (preflight's "roles" check makes sure the roles exist):
    # the app must be allowed to use its tables on green after the switch.
    args = [f"--section={section}", f"--jobs={jobs}"]
    if skip_kinds:
        args.append(f"--use-list={_toc_without(settings, dump, skip_kinds)}")
    if not tolerate_existing:
        args.append("--exit-on-error")
    done = run_tool("pg_restore", [*args, str(dump)], databases(settings)[1], timeout=None)
    if done.returncode == 0:
        return
    errors = [line for line in done.stderr.decode(errors="replace").splitlines()
              if "error:" in line and "already exists" not in line
              and "errors ignored on restore" not in line and "from TOC entry" not in line]
    if not tolerate_existing or errors:
        raise SyncError(f"pg_restore --section={section} into green failed: "
                        + "\n".join(errors or [done.stderr.decode(errors="replace")]))


def _toc_without(settings: Settings, dump: Path, kinds: Sequence[str]) -> Path:
    """The dump's table of contents minus entries of the given kinds, as a pg_restore -L file."""
    listed = run_tool("pg_restore", ["--list", str(dump)], databases(settings)[1], timeout=60)
    if listed.returncode != 0:
        raise SyncError(f"pg_restore --list failed: {listed.stderr.decode(errors='replace')}")
    # Entries read "<id>; <oid> <oid> <KIND> <schema> <name> <owner>"; comments start with ';'.
    keep = [line for line in listed.stdout.decode().splitlines()
            if not any(f" {kind} " in line.split(";", 1)[-1] for kind in kinds)
            or line.startswith(";")]
    path = dump.with_suffix(".list")
    path.write_text("\n".join(keep) + "\n")
    return path


def create_schemas_on_green(settings: Settings, tables: Sequence[Table]) -> None:
    """Schemas pg_dump --table leaves out (it dumps tables, not their namespaces)."""
    with connect(databases(settings)[1], "schema") as green:
        for schema in sorted({t.schema for t in tables}):
            green.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))


class SchemaDump:
    """Blue's schema for the synced tables, dumped once per run (on first use) into a private
    temp dir, and restored into green a section at a time."""

    def __init__(self, settings: Settings, tables: Sequence[Table]) -> None:
        self.settings, self.tables = settings, tables
        self._dir = tempfile.TemporaryDirectory(prefix="cutover-schema-")
        self._path: Path | None = None

    def __enter__(self) -> SchemaDump:
        return self

    def __exit__(self, *exc: object) -> None:
        self._dir.cleanup()

    def restore(self, section: str, jobs: int = 1, tolerate_existing: bool = False,
                skip_kinds: Sequence[str] = ()) -> None:
        if self._path is None:
            self._path = Path(self._dir.name) / "schema.dump"
            dump_schema(self.settings, self.tables, self._path)
        restore_section(self.settings, self._path, section, jobs, tolerate_existing, skip_kinds)
