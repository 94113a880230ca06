"""A lab PostgreSQL cluster: initdb, logical-replication settings, start, roles."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psycopg

from controller.lab.pginstall import ServerInstall
from controller.lab.processes import LabError, Proc, RunAs, is_running, run, spawn, stop, tail

SUPERUSER = "postgres"
APP_USER = "app"
APP_DB = "app"

SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "wal_level": "logical",
    "max_wal_senders": "20",
    "max_replication_slots": "20",
    "max_logical_replication_workers": "8",
    "max_sync_workers_per_subscription": "4",
    "max_worker_processes": "20",
    "max_connections": "200",
    "shared_buffers": "256MB",
    "logging_collector": "off",
    "log_min_messages": "warning",
}


SETTINGS_FROM: dict[int, dict[str, str]] = {
    # 18 counts a subscriber's replication origins apart from its slots (default 10).
    18: {"max_active_replication_origins": "20"},
}
"""Settings of a major and the ones after it, on top of SETTINGS."""


def settings_for(major: int) -> dict[str, str]:
    extra = {k: v for since, more in sorted(SETTINGS_FROM.items()) if major >= since
             for k, v in more.items()}
    return {**SETTINGS, **extra}


def cluster_major(datadir: Path) -> int | None:
    """The major version a data directory was created by, or None before initdb."""
    try:
        return int((datadir / "PG_VERSION").read_text().strip())
    except (OSError, ValueError):
        return None


def init_cluster(datadir: Path, port: int, run_as: RunAs | None, install: ServerInstall) -> None:
    """initdb once (trust on loopback: a lab), then write the lab's settings."""
    existing = cluster_major(datadir)
    if existing is not None and existing != install.major:
        raise LabError(f"{datadir} holds a PostgreSQL {existing} cluster, not {install.major}; "
                       f"start it with that version (`cutover lab up --{datadir.name}-version "
                       f"{existing}`) or remove the lab's data first (`cutover lab down --purge --dir "
                       f"{datadir.parent}`)")
    if existing is None:
        # cwd: the lab's user may not be able to enter the caller's working directory.
        run([str(install.bindir / "initdb"), "-D", str(datadir), "-U", SUPERUSER, "--auth=trust",
             "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"], run_as, cwd=datadir.parent)
    _write_settings(datadir, port, run_as, install.major)


def _write_settings(datadir: Path, port: int, run_as: RunAs | None, major: int) -> None:
    lines = [f"{k} = {v}" for k, v in {**settings_for(major), "port": str(port),
                                        "unix_socket_directories": f"'{datadir}'"}.items()]
    conf = datadir / "lab.conf"
    conf.write_text("# written by cutover lab\n" + "\n".join(lines) + "\n")
    main = datadir / "postgresql.conf"
    text = main.read_text()
    if "include_if_exists = 'lab.conf'" not in text:
        main.write_text(text + "\ninclude_if_exists = 'lab.conf'\n")
    if run_as:
        run_as.chown(conf)


def start(datadir: Path, log: Path, run_as: RunAs | None, install: ServerInstall) -> Proc:
    return spawn([str(install.bindir / "postgres"), "-D", str(datadir)], log, run_as, cwd=datadir)


def stop_cluster(proc: Proc | None) -> None:
    # SIGINT is PostgreSQL's "fast" shutdown: sessions end, a checkpoint is written.
    stop(proc, signal.SIGINT, timeout=60)


def dsn(port: int, dbname: str = APP_DB, user: str = SUPERUSER) -> str:
    return f"host=127.0.0.1 port={port} dbname={dbname} user={user}"


def wait_ready(port: int, proc: Proc, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not is_running(proc):
            raise LabError(f"PostgreSQL on port {port} exited while starting; {log}:\n{tail(log)}")
        try:
            with psycopg.connect(dsn(port, "postgres"), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
                return
        except psycopg.OperationalError as exc:
            last = str(exc)
            time.sleep(0.1)
    raise LabError(f"PostgreSQL on port {port} not ready within {timeout:.0f}s: {last}")


def create_app_database(port: int) -> None:
    """The app's role and database, idempotently."""
    with psycopg.connect(dsn(port, "postgres"), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [APP_USER]).fetchone():
            conn.execute(f"CREATE ROLE {APP_USER} LOGIN REPLICATION")
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [APP_DB]).fetchone():
            conn.execute(f"CREATE DATABASE {APP_DB} OWNER {APP_USER}")


APP_SCHEMA = """
CREATE TABLE IF NOT EXISTS lab_items (
    id bigserial PRIMARY KEY,
    env text NOT NULL,
    payload text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE lab_items OWNER TO app;
"""


def create_app_schema(port: int) -> None:
    with psycopg.connect(dsn(port), autocommit=True) as conn:
        conn.execute(APP_SCHEMA)
