"""A pair's databases behind the lab's real PgBouncer, for switch tests and benchmarks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import psycopg
import pytest

from config.settings import Settings
from controller.lab.lab import Lab
from controller.lab.pgbouncer import DATABASES_FILE
from sync.endpoint import PgBouncerEndpoint
from sync.pgtools import pg_bindir
from tests.syncfixtures import DbPair


class Routed:
    """The pair's database behind the lab's PgBouncer, as an entry of its own."""

    def __init__(self, lab: Lab, pair: DbPair) -> None:
        self.lab, self.pair = lab, pair
        self.file = lab.root / DATABASES_FILE
        self.settings = Settings.model_validate({
            **pair.settings().model_dump(mode="json", exclude={"switchover", "traffic"}),
            "blue": {"database": {"dsn": pair.dsn("blue")}},
            "green": {"database": {"dsn": pair.dsn("green")}},
            "switchover": {"method": "pgbouncer", "fence_timeout": "2s", "timeout": "20s",
                           "pgbouncer": {"admin_dsn": lab.state.pgbouncer_admin_dsn,
                                         "databases": [pair.name],
                                         "databases_file": str(self.file)}}})
        assert self.settings.switchover is not None
        assert self.settings.switchover.pgbouncer is not None
        assert self.settings.blue.database is not None
        self.endpoint = PgBouncerEndpoint(self.settings.switchover.pgbouncer)
        self.endpoint.repoint(self.settings.blue.database)

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.lab.state.port('pgbouncer')} dbname={self.pair.name} user=postgres"

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn, autocommit=True, prepare_threshold=None)

    def primary(self) -> str:
        with self.connect() as conn:
            row = conn.execute("SELECT inet_server_port()").fetchone()
        assert row is not None
        return "blue" if row[0] == self.lab.state.port("blue_pg") else "green"

    def remove(self) -> None:
        self.endpoint.resume()
        kept = [line for line in self.file.read_text().splitlines(keepends=True)
                if line.partition("=")[0].strip() != self.pair.name]
        self.file.write_text("".join(kept))
        self.endpoint._run("RELOAD")


class BackgroundWriter:
    """A client writing through PgBouncer in a thread until stopped, one acknowledged write
    at a time, reconnecting after errors (a pause, a repoint, a server restart)."""

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]]) -> None:
        self.connect = connect
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def write_once(self, conn: psycopg.Connection[Any]) -> None:
        raise NotImplementedError

    def _write(self) -> None:
        while not self._stop.is_set():
            try:
                with self.connect() as conn:
                    while not self._stop.is_set():
                        self.write_once(conn)
                        time.sleep(0.005)
            except psycopg.Error:
                time.sleep(0.05)


class AckedWriter(BackgroundWriter):
    """Inserts numbered pgbench_history rows; `written` holds every number the server
    acknowledged."""

    def __init__(self, routed: Routed) -> None:
        super().__init__(routed.connect)
        self.written: list[int] = []

    def write_once(self, conn: psycopg.Connection[Any]) -> None:
        n = len(self.written)
        conn.execute("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
                     "VALUES (1, 1, 1, %s, now())", [n])
        self.written.append(n)

    def missing_on(self, conn: psycopg.Connection[Any]) -> set[int]:
        rows = {int(r[0]) for r in conn.execute("SELECT delta FROM pgbench_history").fetchall()}
        return set(self.written) - rows


def user_commands(admin: str, db: str, file: Path, scripts: Path) -> dict[str, Any]:
    """A command endpoint as a user would write one for PgBouncer: psql against the admin
    console, a repoint script that writes the databases file the way PgBouncer's own repoint
    does (a new file beside it, then renamed: an unwritable directory fails it) and RELOADs,
    and a resume that is idempotent, as the README asks (not paused is fine)."""
    psql = str(pg_bindir() / "psql")
    repoint, resume = scripts / "repoint.sh", scripts / "resume.sh"
    repoint.write_text(f"""#!/bin/bash
set -euo pipefail
f={file}
tmp={file.with_name(f".{file.name}.cutover")}
grep -v "^{db} " "$f" > "$tmp" || true
echo "{db} = host=$1 port=$2 dbname=$3" >> "$tmp"
mv "$tmp" "$f"
{psql} -X -q "{admin}" -c RELOAD
""")
    resume.write_text(f"""#!/bin/bash
out=$({psql} -X -q "{admin}" -c "RESUME {db}" 2>&1) && exit 0
grep -q "is not paused" <<< "$out" && exit 0
echo "$out" >&2
exit 1
""")
    for script in (repoint, resume):
        script.chmod(0o755)
    return {"pause": [psql, "-X", "-q", admin, "-c", f"PAUSE {db}"],
            "repoint": [str(repoint), "{host}", "{port}", "{dbname}"],
            "resume": [str(resume)], "timeout": "10s"}


@contextmanager
def routed_pair(lab: Lab, pair: DbPair) -> Iterator[Routed]:
    """The pair behind the lab's PgBouncer for the block; its entry removed afterwards."""
    r = Routed(lab, pair)
    try:
        yield r
    finally:
        r.remove()


@pytest.fixture
def routed(lab: Lab, pair: DbPair) -> Iterator[Routed]:
    with routed_pair(lab, pair) as r:
        yield r
