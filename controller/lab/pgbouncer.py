"""The lab's PgBouncer: transaction pooling in front of blue, repointable by the switch."""

from __future__ import annotations

from pathlib import Path

from controller.lab.postgres import APP_DB, APP_USER, SUPERUSER
from controller.lab.processes import Proc, RunAs, find_binary, spawn

ADMIN_USER = "pgbouncer"
DATABASES_FILE = "pgbouncer-databases.ini"


def database_line(name: str, port: int, dbname: str = APP_DB) -> str:
    return f"{name} = host=127.0.0.1 port={port} dbname={dbname}\n"


def write_config(root: Path, listen_port: int, target_port: int, run_as: RunAs | None) -> Path:
    """pgbouncer.ini including a [databases] file that the switch rewrites."""
    databases = root / DATABASES_FILE
    if not databases.exists():  # never undo a repoint the switch made
        databases.write_text(database_line(APP_DB, target_port))
    users = root / "pgbouncer-users.txt"
    users.write_text("".join(f'"{u}" ""\n' for u in (APP_USER, SUPERUSER, ADMIN_USER)))
    ini = root / "pgbouncer.ini"
    ini.write_text(f"""; written by cutover lab
[databases]
%include {databases}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen_port}
unix_socket_dir =
auth_type = trust
auth_file = {users}
admin_users = {ADMIN_USER}
pool_mode = transaction
max_client_conn = 1000
default_pool_size = 20
reserve_pool_size = 5
server_reset_query =
ignore_startup_parameters = extra_float_digits,options,application_name
server_login_retry = 1
logfile =
pidfile =
""")
    if run_as:
        for f in (databases, users, ini):
            run_as.chown(f)
    return ini


def start(root: Path, log: Path, run_as: RunAs | None) -> Proc:
    return spawn([find_binary("pgbouncer"), str(root / "pgbouncer.ini")], log, run_as, cwd=root)


def admin_dsn(port: int) -> str:
    return f"host=127.0.0.1 port={port} dbname=pgbouncer user={ADMIN_USER}"
