"""A pair's databases behind the lab's real PgBouncer, for switch tests and benchmarks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from config.settings import Settings
from controller.lab.lab import Lab
from controller.lab.pgbouncer import DATABASES_FILE
from sync.endpoint import PgBouncerEndpoint
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


@pytest.fixture
def routed(lab: Lab, pair: DbPair) -> Iterator[Routed]:
    r = Routed(lab, pair)
    try:
        yield r
    finally:
        r.remove()
