"""The one endpoint every writer goes through, which the switch pauses, repoints and resumes:
PgBouncer's admin console (the default), or the user's own commands (DNS, a proxy, secrets).

PgBouncer facts this relies on (1.18, measured): the admin console needs
autocommit; a connection blocked in PAUSE cannot be closed from another thread, so PAUSE runs
in a thread with a deadline and a second admin connection RESUMEs it; after RELOAD with a
changed database line old server connections close only when released, so never repoint
without PAUSE; the pause state outlives the admin connection that set it.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from config.environments import DatabaseSettings
from config.replication import CommandEndpointSettings, PgBouncerSettings, SwitchMethod, SwitchoverSettings
from sync import pgbouncer_ini
from sync.children import run_command
from sync.errors import BadInputError, SyncError


class WriteEndpoint(Protocol):
    def pause(self, timeout: float) -> None:
        """Hold new writes; returns once no write is in flight, or raises SyncError (resumed)."""
        ...

    def repoint(self, target: DatabaseSettings) -> None: ...

    def resume(self) -> None:
        """Let writes flow again; a no-op when nothing is paused."""
        ...

    def points_at(self) -> tuple[str, int, str] | None:
        """(host, port, dbname) writers reach now, where it can be read back."""
        ...


def _target(db: DatabaseSettings) -> tuple[str, int, str]:
    info = conninfo_to_dict(db.dsn)
    return (str(info.get("host") or "localhost"), int(info.get("port") or 5432),
            str(info.get("dbname") or ""))


class PgBouncerEndpoint:
    def __init__(self, settings: PgBouncerSettings) -> None:
        self.settings = settings
        for name in settings.databases:
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
                raise BadInputError(f"switchover.pgbouncer.databases: {name!r} is not a usable "
                                    "PgBouncer database name")

    def _admin(self) -> psycopg.Connection[Any]:
        extra: dict[str, Any] = {"connect_timeout": 5}
        if self.settings.admin_password is not None:
            extra["password"] = self.settings.admin_password.get_secret_value()
        try:
            # The console speaks the simple protocol only, without transactions.
            return psycopg.connect(make_conninfo(self.settings.admin_dsn, **extra), autocommit=True,
                                   prepare_threshold=None)
        except psycopg.OperationalError as exc:
            raise SyncError(f"cannot reach PgBouncer's admin console: {str(exc).strip()}") from None

    def _run(self, command: str) -> None:
        with self._admin() as conn:
            conn.execute(command)

    def pause(self, timeout: float) -> None:
        failures: list[BaseException] = []

        def pause_all() -> None:
            try:
                with self._admin() as conn:
                    for db in self.settings.databases:
                        conn.execute(f"PAUSE {db}")
            except BaseException as exc:  # handed to the caller's thread
                failures.append(exc)

        worker = threading.Thread(target=pause_all, daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            self.resume()  # releases the blocked PAUSE, from a second connection
            worker.join(5)
            raise SyncError(f"PgBouncer could not pause {', '.join(self.settings.databases)} within "
                            f"{timeout:g}s (a transaction held it; switchover.fence_timeout); "
                            "writes resumed on the current database")
        if failures:
            self.resume()
            raise SyncError(f"PgBouncer PAUSE failed: {str(failures[0]).strip()}")

    def resume(self) -> None:
        with self._admin() as conn:
            for db in self.settings.databases:
                try:
                    conn.execute(f"RESUME {db}")
                except psycopg.Error as exc:
                    if "not paused" not in str(exc):
                        raise SyncError(f"PgBouncer RESUME {db} failed: {str(exc).strip()}") from None

    def repoint(self, target: DatabaseSettings) -> None:
        host, port, dbname = _target(target)
        path: Path = self.settings.databases_file
        try:
            lines = path.read_text().splitlines(keepends=True)
        except FileNotFoundError:
            lines = []
        # Our entries change host, port and dbname only (pool_size, user, auth_user, ... stay
        # in place); every other line, comments included, is kept as it is.
        todo = list(self.settings.databases)
        out = []
        for line in lines:
            entry = pgbouncer_ini.parse(line)
            if entry is not None and entry.name in todo:
                todo.remove(entry.name)
                out.append(pgbouncer_ini.retarget(entry, entry.name, host, port, dbname))
            elif not (entry is not None and entry.name in self.settings.databases):  # a duplicate
                out.append(line if line.endswith("\n") else line + "\n")
        out += [pgbouncer_ini.retarget(None, db, host, port, dbname) for db in todo]
        tmp = path.with_name(f".{path.name}.cutover")
        tmp.write_text("".join(out))
        try:  # keep the owner: PgBouncer (not root) must still read it
            st = path.stat()
            os.chown(tmp, st.st_uid, st.st_gid)
        except (FileNotFoundError, PermissionError):
            pass
        tmp.replace(path)
        self._run("RELOAD")

    def serving(self) -> tuple[str, int, str] | None:
        """(host, port, dbname) PgBouncer itself uses for the first entry now (SHOW DATABASES:
        what it loaded, whatever the file says)."""
        with self._admin() as conn:
            cur = conn.execute("SHOW DATABASES")
            names = [d.name for d in cur.description or ()]
            for row in cur.fetchall():
                entry = dict(zip(names, row, strict=True))
                if entry.get("name") == self.settings.databases[0]:
                    return str(entry.get("host") or ""), int(entry.get("port") or 5432), \
                        str(entry.get("database") or "")
        return None

    def points_at(self) -> tuple[str, int, str] | None:
        try:
            text = self.settings.databases_file.read_text()
        except FileNotFoundError:
            return None
        first = self.settings.databases[0]
        for line in text.splitlines():
            entry = pgbouncer_ini.parse(line)
            if entry is not None and entry.name == first:
                return (entry.value("host") or "", int(entry.value("port") or "5432"),
                        entry.value("dbname") or first)
        return None


class CommandEndpoint:
    def __init__(self, settings: CommandEndpointSettings) -> None:
        self.settings = settings
        self._pointed: tuple[str, int, str] | None = None

    def _run(self, argv: Sequence[str], what: str, timeout: float | None = None) -> None:
        try:
            done = run_command(argv, timeout or self.settings.timeout)
        except FileNotFoundError:
            raise BadInputError(f"switchover.command.{what}: {argv[0]!r} not found") from None
        except subprocess.TimeoutExpired:
            raise SyncError(f"switchover.command.{what} did not finish in time") from None
        if done.returncode != 0:
            raise SyncError(f"switchover.command.{what} exited {done.returncode}: "
                            f"{(done.stderr or done.stdout).strip()[-300:]}")

    def pause(self, timeout: float) -> None:
        self._run(self.settings.pause, "pause", timeout)

    def repoint(self, target: DatabaseSettings) -> None:
        host, port, dbname = _target(target)
        values = {"host": host, "port": str(port), "dbname": dbname, "target": f"{host}:{port}/{dbname}"}
        self._run([a.format_map(values) for a in self.settings.repoint], "repoint")
        self._pointed = (host, port, dbname)

    def resume(self) -> None:
        self._run(self.settings.resume, "resume")

    def points_at(self) -> tuple[str, int, str] | None:
        return self._pointed


def target_of(db: DatabaseSettings) -> tuple[str, int, str]:
    return _target(db)


def endpoint_from(sw: SwitchoverSettings) -> WriteEndpoint:
    if sw.method is SwitchMethod.PGBOUNCER:
        assert sw.pgbouncer is not None
        return PgBouncerEndpoint(sw.pgbouncer)
    if sw.method is SwitchMethod.COMMAND:
        assert sw.command is not None
        return CommandEndpoint(sw.command)
    raise BadInputError("switchover.method is 'none' (blue and green share one database): "
                        "there are no writes to switch")

