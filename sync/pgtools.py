"""PostgreSQL's own client programs (pg_dump, pg_restore), run with the password in the
environment (PGPASSWORD), never on the command line where `ps` would show it."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from psycopg.conninfo import make_conninfo

from config.environments import DatabaseSettings
from sync.errors import SyncError


def pg_bindir() -> Path:
    """CUTOVER_PG_BINDIR, else the newest /usr/lib/postgresql/*/bin holding pg_dump."""
    if os.environ.get("CUTOVER_PG_BINDIR"):
        return Path(os.environ["CUTOVER_PG_BINDIR"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_dump"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if not found:
        raise SyncError("PostgreSQL client programs not found under /usr/lib/postgresql; "
                        "install postgresql-client or set CUTOVER_PG_BINDIR")
    return found[-1].parent


def tool_env(db: DatabaseSettings) -> dict[str, str]:
    env = dict(os.environ)
    if db.password is not None:
        env["PGPASSWORD"] = db.password.get_secret_value()
    env["PGCONNECT_TIMEOUT"] = str(max(1, int(db.connect_timeout)))
    return env


def run_tool(name: str, args: Sequence[str], db: DatabaseSettings, *,
             timeout: float | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run a PostgreSQL program against db; the conninfo carries no password."""
    argv = [str(pg_bindir() / name), *args, f"--dbname={make_conninfo(db.dsn)}"]
    try:
        return subprocess.run(argv, env=tool_env(db), capture_output=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        raise SyncError(f"{name} against {db.describe()} did not finish within "
                        f"{timeout:.0f}s") from None


OUTPUT_BUFFER = "1M"
"""stdio buffer of a streaming tool's stdout. psql fwrite()s COPY output row by row into a
4 KiB pipe buffer, one write(2) per 4 KiB; 1 MiB blocks took the relay's CPU (psql and us)
from 1.2 s to 0.75 s for pgbench -s 50, and the copy 0.3 s (7 %) faster."""


def start_tool(name: str, args: Sequence[str], db: DatabaseSettings, *,
               application_name: str, statement_timeout: float | None = None) -> subprocess.Popen[bytes]:
    """Start a PostgreSQL program against db with its stdout piped to us, block-buffered
    by coreutils' stdbuf where there is one (a pipe only costs more syscalls without)."""
    timeout = db.statement_timeout if statement_timeout is None else statement_timeout
    conninfo = make_conninfo(db.dsn, application_name=application_name,
                             options=f"-c statement_timeout={int(timeout * 1000)} -c TimeZone=UTC")
    stdbuf = shutil.which("stdbuf")
    buffered = [stdbuf, f"--output={OUTPUT_BUFFER}"] if stdbuf else []
    return subprocess.Popen([*buffered, str(pg_bindir() / name), *args, f"--dbname={conninfo}"],
                            env=tool_env(db), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
