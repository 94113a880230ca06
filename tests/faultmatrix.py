"""The switch under injected faults, cell by cell: a fault of one kind at the start of one
step, a client writing through PgBouncer the whole time, then the measure of what users feel
(the longest wait between two acknowledged writes), the next `cutover switch` reconciling, and
both sides compared by checksum.

Green and PgBouncer's admin console are reached through TCP proxies the harness can cut, so
"green unreachable" and "the admin connection lost" are real network faults, seen by the
controller, its fence guardian and the writers alike.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import psycopg

from config.replication import PgBouncerSettings
from config.settings import Settings
from controller.lab import postgres
from controller.lab.lab import Lab
from controller.lab.pgbouncer import DATABASES_FILE
from sync import diff, logical
from sync.endpoint import PgBouncerEndpoint
from sync.status import wait_applied
from sync.switch import switch
from tests.switchfixtures import BackgroundWriter, user_commands
from tests.syncfixtures import DbPair, assert_same_data
from tests.tcpproxy import TcpProxy

FENCE_TIMEOUT = 2.0
OUTAGE = 1.0
"""How long a cut proxy refuses connections (a restart, a network blip)."""
FAULTS = ("exception", "sigkill", "file", "admin", "green")
REPO = Path(__file__).resolve().parent.parent

SCHEMA = """
CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
INSERT INTO accounts SELECT i, 0 FROM generate_series(1, 20000) i;
CREATE TABLE orders (id bigserial PRIMARY KEY, n bigint NOT NULL UNIQUE,
                     at timestamptz NOT NULL DEFAULT now());
"""


class Injected(Exception):
    """An error of a type the switch does not know: a bug, a library's surprise."""


class Writer(BackgroundWriter):
    """A client inserting numbered orders through PgBouncer (ids from the sequence), one
    acknowledged write at a time, reconnecting after any error; `acked` holds (n, time)."""

    def __init__(self, dsn: str, first: int) -> None:
        def connect() -> psycopg.Connection[Any]:
            conn = psycopg.connect(dsn, autocommit=True, prepare_threshold=None, connect_timeout=3)
            conn.execute("SET statement_timeout = '20s'")
            return conn
        super().__init__(connect)
        self.acked: list[tuple[int, float]] = []
        self._next = first

    def write_once(self, conn: psycopg.Connection[Any]) -> None:
        n, self._next = self._next, self._next + 1  # a write that errs may still have committed:
        conn.execute("INSERT INTO orders (n) VALUES (%s)", [n])  # its number is never reused
        self.acked.append((n, time.monotonic()))

    @property
    def next_n(self) -> int:
        return self._next

    def wait_for_write_after(self, t: float, timeout: float) -> float | None:
        """When the first write acknowledged after t was acknowledged (None: none in time)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            later = [at for _, at in self.acked[-50:] if at > t]
            if later:
                return later[0]
            time.sleep(0.01)
        return None

    def worst_gap(self, since: float, until: float) -> float:
        """The longest wait between two acknowledged writes in [since, until]: the stall a
        user of the application felt."""
        times = [since] + [at for _, at in self.acked if since < at <= until] + [until]
        return max(b - a for a, b in itertools.pairwise(times))

    def missing_on(self, conn: psycopg.Connection[Any]) -> list[int]:
        have = {int(r[0]) for r in conn.execute("SELECT n FROM orders").fetchall()}
        return [n for n, _ in self.acked if n not in have]


@dataclass
class Cell:
    fault: str
    step: str
    stall: float | None = None
    """Seconds of the worst stall; None: writes never flowed again."""
    outcome: str = ""
    problems: list[str] = field(default_factory=list)


class Rig:
    """One pair in the lab, routed through PgBouncer, green and the admin console behind proxies."""

    def __init__(self, lab: Lab, pair: DbPair, tmp: Path, mode: str, endpoint: str) -> None:
        self.lab, self.pair, self.tmp, self.mode, self.endpoint_kind = lab, pair, tmp, mode, endpoint
        self.green_proxy = TcpProxy(lab.state.port("green_pg"))
        self.admin_proxy = TcpProxy(lab.state.port("pgbouncer"))
        self.file = lab.root / DATABASES_FILE
        self.primary = "blue"
        self.settings: Settings
        self.next_n = 1
        """Order numbers are unique across cells: each writer goes on from the last one's."""

    @property
    def blocker(self) -> Path:
        """Where the repoint writes its new file first: a directory there makes it fail."""
        return self.file.with_name(f".{self.file.name}.cutover")

    @property
    def client_dsn(self) -> str:
        return f"host=127.0.0.1 port={self.lab.state.port('pgbouncer')} dbname={self.pair.name} user=postgres"

    def __enter__(self) -> Self:
        self.green_proxy.__enter__()
        self.admin_proxy.__enter__()
        admin = f"host=127.0.0.1 port={self.admin_proxy.port} dbname=pgbouncer user=pgbouncer"
        switchover: dict[str, Any] = {"fence_timeout": f"{FENCE_TIMEOUT}s", "timeout": "20s",
                                      "verify": "checksums"}
        pgbouncer = {"admin_dsn": admin, "databases": [self.pair.name], "databases_file": str(self.file)}
        if self.endpoint_kind == "pgbouncer":
            switchover |= {"method": "pgbouncer", "pgbouncer": pgbouncer}
        else:
            switchover |= {"method": "command",
                           "command": user_commands(admin, self.pair.name, self.file, self.tmp)}
        self.settings = Settings.model_validate({
            "blue": {"database": {"dsn": self.pair.dsn("blue")}},
            "green": {"database": {"dsn": postgres.dsn(self.green_proxy.port, self.pair.name)}},
            "sync": {"copy_jobs": 2, "mode": self.mode}, "switchover": switchover})
        # The entry starts on blue (the lab's PgBouncer serves every test's pair).
        self._lab_endpoint().repoint(self.settings.blue.database)  # type: ignore[arg-type]
        with self.pair.blue() as b:
            b.execute(SCHEMA)
        if self.mode == "logical":
            logical.start(self.settings)
            self.pair.wait_caught_up()
        else:
            diff.ensure_schema(self.settings)
            diff.cycle(self.settings)
        return self

    def __exit__(self, *exc: object) -> None:
        ep = self._lab_endpoint()
        ep.resume()
        kept = [line for line in self.file.read_text().splitlines(keepends=True)
                if line.partition("=")[0].strip() != self.pair.name]
        self.file.write_text("".join(kept))
        ep._run("RELOAD")
        if self.blocker.is_dir():
            self.blocker.rmdir()
        self.admin_proxy.__exit__()
        self.green_proxy.__exit__()

    def _lab_endpoint(self) -> PgBouncerEndpoint:
        """Straight to the admin console, for the harness's own set-up and clean-up."""
        return PgBouncerEndpoint(PgBouncerSettings(admin_dsn=self.lab.state.pgbouncer_admin_dsn,
                                                   databases=[self.pair.name], databases_file=self.file))

    @property
    def target(self) -> str:
        return "green" if self.primary == "blue" else "blue"

    def steps(self) -> list[str]:
        """The switch's steps in order, from a switch there and back with no fault."""
        seen: list[str] = []

        def record(step: str, _: dict[str, Any]) -> None:
            if step.endswith(": start") and step[:-7] not in seen:
                seen.append(step[:-7])
        for _ in range(2):
            switch(self.settings, self.target, record=record)
            self.primary = self.target
        return seen

    # -- one cell ------------------------------------------------------------------------

    def run(self, fault: str, step: str) -> Cell:
        cell = Cell(fault, step)
        armed: list[float] = []
        to = self.target
        with Writer(self.client_dsn, self.next_n) as writer:
            time.sleep(0.2)
            started = time.monotonic()
            error = self._faulted_switch(fault, step, to, armed)
            ended = time.monotonic()
            flowed = writer.wait_for_write_after(ended, 15.0)
            if armed and flowed is not None:
                cell.stall = writer.worst_gap(armed[0], flowed)
            elif not armed:
                cell.stall = writer.worst_gap(started, flowed or ended)
            cell.outcome = "not reached" if not armed else ("failed" if error else "switched")
            if not armed:  # a renamed step would otherwise pass as a cell with no fault
                cell.problems.append(f"the switch never started step {step!r}: no fault injected")
            if flowed is None:
                cell.problems.append("writes never flowed again")
        self.next_n = writer.next_n
        self._clean_up()
        try:  # the next `cutover switch` reconciles whatever the faulted one left
            switch(self.settings, to)
        except Exception as exc:
            where = traceback.extract_tb(exc.__traceback__)[-3:]
            cell.problems.append(f"the next switch failed: {type(exc).__name__}: {exc} (at "
                                 + ", ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in where)
                                 + ")")
            return cell
        self.primary = to
        cell.problems += self._check(writer)
        return cell

    def _faulted_switch(self, fault: str, step: str, to: str, armed: list[float]) -> str | None:
        if fault == "sigkill":
            return self._killed_switch(step, to, armed)

        def record(name: str, _: dict[str, Any]) -> None:
            if name != f"{step}: start" or armed:
                return
            armed.append(time.monotonic())
            if fault == "exception":
                raise Injected(f"injected at {step}")
            if fault == "file":
                self.blocker.mkdir(exist_ok=True)
            elif fault == "admin":
                self.admin_proxy.cut(OUTAGE)
            elif fault == "green":
                self.green_proxy.cut(OUTAGE)
        try:
            switch(self.settings, to, record=record)
        except Exception as exc:
            return str(exc)
        return None

    def _killed_switch(self, step: str, to: str, armed: list[float]) -> str | None:
        proc = subprocess.Popen([sys.executable, "-m", "tests.killed_switch"], cwd=REPO,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write(json.dumps({"settings": self.settings.model_dump(mode="json"), "to": to,
                                     "step": step}) + "\n")
        proc.stdin.close()
        reached = proc.stdout.readline().strip()
        if reached == "killing":
            armed.append(time.monotonic())
        proc.wait(60)
        return None if proc.returncode == 0 else f"exit {proc.returncode}"

    def _clean_up(self) -> None:
        if self.blocker.is_dir():
            self.blocker.rmdir()
        self.green_proxy.wait_up()
        self.admin_proxy.wait_up()

    def _check(self, writer: Writer) -> list[str]:
        problems = []
        with self.pair.connect(self.primary) as p:
            missing = writer.missing_on(p)
            if missing:
                problems.append(f"{len(missing)} acknowledged write(s) missing on {self.primary}")
        other = "green" if self.primary == "blue" else "blue"
        if self.mode == "logical":
            with self.pair.connect(self.primary) as p, self.pair.connect(other) as f:
                if not wait_applied(p, f, 30):
                    problems.append(f"{other} does not follow {self.primary}")
        else:
            diff.cycle(self.settings, reverse=self.primary == "green", full=True)
        try:
            assert_same_data(self.pair)
        except AssertionError as exc:
            problems.append(f"blue and green differ: {str(exc)[:200]}")
        return problems


@contextmanager
def rig(lab: Lab, pair: DbPair, tmp: Path, mode: str, endpoint: str) -> Iterator[Rig]:
    with Rig(lab, pair, tmp, mode, endpoint) as r:
        yield r


def render(title: str, steps: list[str], cells: dict[tuple[str, str], Cell]) -> str:
    """The matrix: a row per step, a column per fault, the worst stall in each cell."""
    width = max(len(s) for s in steps) + 2
    lines = [title, "step".ljust(width) + "".join(f.rjust(11) for f in FAULTS)]
    for step in steps:
        row = step.ljust(width)
        for fault in FAULTS:
            c = cells.get((fault, step))
            text = "—" if c is None else ("BLOCKED" if c.stall is None else f"{c.stall:.2f}s")
            if c is not None and c.problems:
                text += "!"
            row += text.rjust(11)
        lines.append(row)
    return "\n".join(lines)

