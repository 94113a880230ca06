"""Preflight: every condition logical replication needs, checked before anything changes.

Each check is pass, warn or fail, with what was found and the fix to apply. `cutover sync`
refuses to start while any check fails, so a sync never half-starts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from config.replication import SyncMode
from config.settings import Settings
from sync import diff_targets, largeobjects, objects
from sync.catalog import Table, columns_of, extensions, list_sequences, list_tables, table_by_name
from sync.compat import column_problems
from sync.connections import Conn, connect, databases
from sync.errors import BadInputError, SyncError
from sync.pgtools import version_check
from sync.schema import schemas_to_copy


class Status(StrEnum):
    PASS = "pass"  # noqa: S105 - a check status, not a password
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status is not Status.FAIL for c in self.checks)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status is Status.FAIL]


LONG_XACT_SECONDS = 300


def _connect_both(settings: Settings, report: Report) -> tuple[Conn, Conn] | None:
    """Both databases, or None with the one that cannot be reached as a failed check."""
    conns: list[Conn] = []
    for env, db in zip(("blue", "green"), databases(settings), strict=True):
        try:
            conns.append(connect(db, "preflight"))
        except SyncError as exc:
            for c in conns:
                c.close()
            report.checks.append(Check(f"connect_{env}", Status.FAIL, str(exc),
                                       f"check {env}.database.dsn and the password"))
            return None
    return conns[0], conns[1]


def run_preflight(settings: Settings) -> Report:
    """All checks; a database that cannot be reached is itself a failed check."""
    report = Report()
    both = _connect_both(settings, report)
    if both is None:
        return report
    blue, green = both
    with blue, green:
        tables = list_tables(blue, settings.sync)
        if settings.sync.mode == SyncMode.DIFF:  # SELECT on blue, writes on green: no replication
            diff_checks: list[Callable[[], Check]] = [
                lambda: _versions(blue, green),
                lambda: _tables_found(tables, settings),
                lambda: _diff_targets(settings, tables, blue, green),
                lambda: _extensions(blue, green),
                lambda: _roles(blue, green, settings, tables),
                lambda: _database_settings(blue, green),
                lambda: _large_objects(blue),
                lambda: _sequences(blue, settings.sync.schemas),
                lambda: _long_transactions(blue)]
            report.checks += [check() for check in diff_checks]
            return report
        checks: list[Callable[[], Check]] = [
            lambda: _versions(blue, green),
            lambda: _wal_level(blue),
            lambda: _replication_privilege(blue),
            lambda: _subscription_privilege(green),
            lambda: _slots(blue, settings.sync.name),
            lambda: _tables_found(tables, settings),
            lambda: _keys(tables),
            lambda: _unlogged(tables),
            lambda: _large_objects(blue),
            lambda: _sequences(blue, settings.sync.schemas),
            lambda: _extensions(blue, green),
            lambda: _roles(blue, green, settings, tables),
            lambda: _schema(blue, green, tables, settings),
            lambda: _database_settings(blue, green),
            lambda: _long_transactions(blue),
            lambda: _wal_headroom(blue),
        ]
        report.checks += [check() for check in checks]
    return report


def _diff_targets(settings: Settings, tables: list[Table], blue: Conn, green: Conn) -> Check:
    if not any(table_by_name(green, t.schema, t.name) for t in tables) \
            or _schema_being_copied(green, settings):
        keyless = [t.qualified for t in tables if not t.key]
        if keyless:
            return Check("diff_tables", Status.FAIL, f"no primary key: {', '.join(keyless)}; the "
                         "diff sync finds rows by their key", "add a primary key, or exclude the table")
        return Check("diff_tables", Status.PASS, "green has none of the tables: blue's schema "
                     "will be copied to it, then the rows by a diff")
    try:
        found = diff_targets.targets(settings, blue, green)
    except BadInputError as exc:
        return Check("diff_tables", Status.FAIL, str(exc),
                     "give green the table with the same primary key, exclude it, or add a transform")
    return Check("diff_tables", Status.PASS, f"{len(found)} table(s) and transform(s), each keyed "
                 "the same on blue and green")


def _versions(blue: Conn, green: Conn) -> Check:
    """Both servers' versions and the client programs (pg_dump, pg_restore, psql) that fit them."""
    found = version_check(blue.info.server_version, green.info.server_version)
    return Check(found.name, Status(found.status), found.detail, found.fix)


def _setting(conn: Conn, name: str) -> str:
    row = conn.execute("SELECT current_setting(%s)", [name]).fetchone()
    return str(row[0]) if row else ""


def _wal_level(blue: Conn) -> Check:
    level = _setting(blue, "wal_level")
    if level == "logical":
        return Check("wal_level", Status.PASS, "blue has wal_level = logical")
    return Check("wal_level", Status.FAIL, f"blue has wal_level = {level}",
                 "ALTER SYSTEM SET wal_level = logical; then restart blue's PostgreSQL "
                 "(or use sync.mode = \"diff\", which needs no replication)")


def _role(conn: Conn) -> tuple[str, bool, bool]:
    row = conn.execute("SELECT rolname::text, rolsuper, rolreplication FROM pg_roles "
                       "WHERE rolname = current_user").fetchone()
    assert row is not None
    return str(row[0]), bool(row[1]), bool(row[2])


def _replication_privilege(blue: Conn) -> Check:
    user, superuser, replication = _role(blue)
    if superuser or replication:
        return Check("replication_privilege", Status.PASS, f"blue role {user} may replicate")
    return Check("replication_privilege", Status.FAIL, f"blue role {user} lacks REPLICATION",
                 f'ALTER ROLE "{user}" REPLICATION; (and let it own or be granted the tables)')


def _subscription_privilege(green: Conn) -> Check:
    user, superuser, _ = _role(green)
    if superuser:
        return Check("subscription_privilege", Status.PASS, f"green role {user} may subscribe")
    return Check("subscription_privilege", Status.FAIL,
                 f"green role {user} is not a superuser (PostgreSQL 15 needs one for "
                 "CREATE SUBSCRIPTION)", f'ALTER ROLE "{user}" SUPERUSER; or connect as one')


def _slots(blue: Conn, name: str) -> Check:
    row = blue.execute(
        "SELECT current_setting('max_replication_slots')::int - "
        "(SELECT count(*) FROM pg_replication_slots), "
        "current_setting('max_wal_senders')::int - (SELECT count(*) FROM pg_stat_replication), "
        "(SELECT active FROM pg_replication_slots WHERE slot_name = %s)", [name]).fetchone()
    assert row is not None
    free_slots, free_senders, ours_active = int(row[0]), int(row[1]), row[2]
    if ours_active is not None:
        state = "in use" if ours_active else "idle"
        return Check("replication_slots", Status.PASS,
                     f"slot {name!r} exists ({state}) from an earlier run; sync continues with it")
    if free_slots < 1 or free_senders < 1:
        return Check("replication_slots", Status.FAIL,
                     f"blue has {free_slots} free replication slot(s) and {free_senders} free "
                     "WAL sender(s); one of each is needed (two for reverse replication)",
                     "raise max_replication_slots and max_wal_senders on blue, or drop unused "
                     "slots (SELECT * FROM pg_replication_slots)")
    return Check("replication_slots", Status.PASS,
                 f"{free_slots} free replication slot(s), {free_senders} free WAL sender(s)")


def _tables_found(tables: list[Table], settings: Settings) -> Check:
    if not tables:
        return Check("tables", Status.FAIL,
                     f"no tables to sync in schemas {settings.sync.schemas}",
                     "set sync.tables or sync.schemas to where the data lives")
    rows = sum(t.est_rows for t in tables)
    size = sum(t.bytes for t in tables)
    return Check("tables", Status.PASS,
                 f"{len(tables)} table(s), ~{rows:,} rows, {size / 1e6:,.1f} MB")


def _keys(tables: list[Table]) -> Check:
    bad = [t.qualified for t in tables if not t.replicable]
    if not bad:
        return Check("primary_keys", Status.PASS, "every table has a primary key or replica identity")
    return Check("primary_keys", Status.FAIL,
                 f"{len(bad)} table(s) without a primary key or replica identity: {', '.join(bad)}; "
                 "their UPDATEs and DELETEs cannot be replicated",
                 "; ".join(f"ALTER TABLE {t} REPLICA IDENTITY FULL" for t in bad)
                 + " (or add a primary key)")


def _unlogged(tables: list[Table]) -> Check:
    bad = [t.qualified for t in tables if t.persistence == "u"]
    if not bad:
        return Check("unlogged_tables", Status.PASS, "no unlogged tables")
    return Check("unlogged_tables", Status.FAIL,
                 f"unlogged tables are not replicated: {', '.join(bad)}",
                 "; ".join(f"ALTER TABLE {t} SET LOGGED" for t in bad)
                 + " (or list them in sync.exclude_tables)")


def _large_objects(blue: Conn) -> Check:
    count, size = largeobjects.summary(blue)
    if count == 0:
        return Check("large_objects", Status.PASS, "no large objects")
    return Check("large_objects", Status.WARN,
                 f"{count} large object(s), {size / 1e6:,.1f} MB: the initial copy copies them "
                 "once (same OIDs); replication does not carry them, so one created or changed "
                 "on blue later does not reach green",
                 "move them into bytea columns, or stop writing them before the copy")


def _sequences(blue: Conn, schemas: list[str]) -> Check:
    seqs = list_sequences(blue, schemas)
    return Check("sequences", Status.PASS,
                 f"{len(seqs)} sequence(s); replication does not carry them: they are copied "
                 "at the switch (or now with `cutover sync --sequences`)")


_ROLES_NEEDED = """
SELECT DISTINCT r.rolname::text FROM pg_roles r WHERE r.oid IN (
    SELECT n.nspowner FROM pg_namespace n WHERE n.nspname = ANY(%(s)s)
    UNION SELECT (aclexplode(n.nspacl)).grantee FROM pg_namespace n WHERE n.nspname = ANY(%(s)s)
    UNION SELECT c.relowner FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = ANY(%(s)s)
    UNION SELECT (aclexplode(c.relacl)).grantee FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ANY(%(s)s)
    UNION SELECT t.typowner FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
           WHERE n.nspname = ANY(%(s)s)
    UNION SELECT p.proowner FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname = ANY(%(s)s)
    UNION SELECT (aclexplode(p.proacl)).grantee FROM pg_proc p
            JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = ANY(%(s)s)
    UNION SELECT unnest(pol.polroles) FROM pg_policy pol JOIN pg_class c ON c.oid = pol.polrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ANY(%(s)s)
    UNION SELECT d.defaclrole FROM pg_default_acl d
            JOIN pg_namespace n ON n.oid = d.defaclnamespace WHERE n.nspname = ANY(%(s)s))
"""


def _roles(blue: Conn, green: Conn, settings: Settings, tables: list[Table]) -> Check:
    """Green gets blue's owners, grants and policies with the schema: every role they name must
    exist there, or the schema copy fails midway (and after the switch the app finds objects
    it may not touch)."""
    schemas = schemas_to_copy(blue, settings, tables)
    needed = {str(r[0]) for r in blue.execute(_ROLES_NEEDED, {"s": schemas}).fetchall()}
    present = {str(r[0]) for r in green.execute("SELECT rolname FROM pg_roles").fetchall()}
    missing = sorted(needed - present)
    if missing:
        return Check("roles", Status.FAIL,
                     f"role(s) owning, granted or named by policies in the synced schemas on blue "
                     f"are missing on green: {', '.join(missing)}",
                     "create them on green first, e.g. pg_dumpall --roles-only on blue, edited, "
                     "into green")
    return Check("roles", Status.PASS, f"{len(needed)} owner/grantee role(s) exist on green")


def _extensions(blue: Conn, green: Conn) -> Check:
    have = extensions(blue)
    available = {str(r[0]) for r in green.execute(
        "SELECT name FROM pg_available_extensions").fetchall()}
    missing = sorted(set(have) - available)
    if missing:
        return Check("extensions", Status.FAIL,
                     f"green's server lacks extension(s) blue uses: {', '.join(missing)}",
                     "install the extension packages on green's server")
    on_green = extensions(green)
    differ = sorted(n for n in have if n in on_green and on_green[n] != have[n])
    if differ:
        return Check("extensions", Status.WARN,
                     "extension versions differ: " + ", ".join(
                         f"{n} {have[n]} (blue) vs {on_green[n]} (green)" for n in differ))
    return Check("extensions", Status.PASS, f"{len(have)} extension(s) available on green")


def _schema_being_copied(green: Conn, settings: Settings) -> bool:
    """A partial schema a re-run completes is no reason to refuse."""
    return objects.schema_copy_interrupted(green, objects.pg_name(settings.sync))


def _schema(blue: Conn, green: Conn, tables: list[Table], settings: Settings) -> Check:
    present = {t.oid: table_by_name(green, t.schema, t.name) for t in tables}
    found = [g for g in present.values() if g is not None]
    if not found:
        return Check("schema", Status.PASS,
                     "green has none of the tables: blue's schema will be copied to it")
    if _schema_being_copied(green, settings):
        return Check("schema", Status.PASS, "an earlier run was interrupted copying blue's schema "
                     "to green: this run completes it")
    missing = [t.qualified for t in tables if present[t.oid] is None]
    found_problems = [p for t in tables if (g := present[t.oid]) is not None
                      for p in column_problems(t.qualified, columns_of(blue, t), columns_of(green, g))]
    blocking = [p for p in found_problems if p.blocks]
    if missing or blocking:
        detail = "; ".join([f"{name} missing on green" for name in missing]
                           + [p.detail for p in blocking])
        fixes = [f"create {', '.join(missing)} on green"] if missing else []
        return Check("schema", Status.FAIL, "green's schema cannot take blue's rows: " + detail,
                     "; ".join(fixes + [p.fix for p in blocking])
                     + " (or start from an empty green database and let sync copy the schema)")
    extra = sum(len(set(g.columns) - set(t.columns)) for t in tables
                if (g := present[t.oid]) is not None)
    note = f" ({extra} green-only column(s) keep their defaults)" if extra else ""
    warnings = [p.detail for p in found_problems]
    if warnings:
        return Check("schema", Status.WARN, f"green has every table with every column{note}; "
                     + "; ".join(warnings))
    return Check("schema", Status.PASS, f"green has every table with every column{note}")


_DB_SETTINGS = """
SELECT coalesce(r.rolname, '')::text, unnest(s.setconfig)::text FROM pg_db_role_setting s
  LEFT JOIN pg_roles r ON r.oid = s.setrole
 WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def _database_settings(blue: Conn, green: Conn) -> Check:
    """ALTER DATABASE ... SET (and ALTER ROLE ... IN DATABASE ... SET) live outside any schema:
    no copy carries them, and an application that relies on one (a search_path) breaks on
    green after the switch. The switch's own fence setting is not one of them."""
    def settings(conn: Conn) -> set[tuple[str, str]]:
        return {(str(r[0]), str(r[1])) for r in conn.execute(_DB_SETTINGS).fetchall()
                if not str(r[1]).startswith("default_transaction_read_only=")}
    missing = sorted(settings(blue) - settings(green))
    if not missing:
        return Check("database_settings", Status.PASS, "green's database has blue's settings")
    listed = "; ".join(f"{setting}{f' (for role {role})' if role else ''}" for role, setting in missing)
    return Check("database_settings", Status.WARN,
                 f"blue's database has settings green's lacks: {listed}; they are not copied",
                 "set them on green: ALTER DATABASE <green's database> SET <name> = <value> "
                 "(ALTER ROLE <role> IN DATABASE ... for a role's)")


def _long_transactions(blue: Conn) -> Check:
    rows = blue.execute(
        "SELECT pid, extract(epoch FROM now() - xact_start)::int, usename::text "
        "FROM pg_stat_activity WHERE xact_start < now() - make_interval(secs => %s) "
        "AND pid <> pg_backend_pid() ORDER BY xact_start", [LONG_XACT_SECONDS]).fetchall()
    if not rows:
        return Check("long_transactions", Status.PASS, "no transaction older than 5 minutes")
    listed = ", ".join(f"pid {r[0]} ({r[2]}, {r[1]}s)" for r in rows[:5])
    return Check("long_transactions", Status.WARN,
                 f"{len(rows)} transaction(s) open for over 5 minutes: {listed}; creating the "
                 "replication slot waits for them to end",
                 "end them, or SELECT pg_terminate_backend(pid) if they are abandoned")


def _wal_headroom(blue: Conn) -> Check:
    keep = _setting(blue, "max_slot_wal_keep_size")
    if keep == "-1":
        return Check("wal_headroom", Status.WARN,
                     "max_slot_wal_keep_size is unlimited: a stalled subscription makes blue "
                     "keep WAL until its disk fills",
                     "ALTER SYSTEM SET max_slot_wal_keep_size = '<a size your disk can spare>'; "
                     "SELECT pg_reload_conf();")
    return Check("wal_headroom", Status.PASS, f"a slot retains at most {keep} of WAL")
