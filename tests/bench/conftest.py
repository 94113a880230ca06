"""Benchmarks: our code beside the anchors, in one run, printed as ratios against
the quality bar's goals. Run by `make bench`; `make test` leaves tests/bench out (pyproject's testpaths).

Knobs (environment): CUTOVER_BENCH_SCALE (pgbench scale of the copy and verify source, default
50 = 5 M rows), CUTOVER_BENCH_REPEAT (runs per measurement, medians printed, default 3),
CUTOVER_BENCH_SECONDS (pgbench -T of the streaming benchmark, default 60).

A benchmark's green may be the lab's green or a standalone cluster of another major
(tests/versionfixtures.py): each database lives on a `Server`. The copy and verify benchmarks
add their medians to one summary table, printed at the end of the run.
"""

from __future__ import annotations

import math
import os
import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from config.settings import Settings
from controller.lab import postgres
from controller.lab.lab import Lab
from controller.lab.load import pgbench_init
from sync.pgtools import server_major
from tests.labfixtures import running_lab
from tests.switchfixtures import routed
from tests.syncfixtures import pair, table_checksum, user_tables

__all__ = ["BenchDb", "Server", "lab", "pair", "routed", "source"]


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


SCALE = env_int("CUTOVER_BENCH_SCALE", 50)
REPEAT = max(1, env_int("CUTOVER_BENCH_REPEAT", 3))
SECONDS = max(1, env_int("CUTOVER_BENCH_SECONDS", 60))
BENCH_TIMEOUT = 4 * 3600
"""pytest-timeout for one benchmark: pyproject's 600 s is for tests, not for 5 M rows x 3."""


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """A lab of its own for the benchmarks, as small as the lab gets (one app server per
    environment, no Prometheus): on a 2-core machine every idle process is noise.
    `pair` (tests/syncfixtures.py) builds on this fixture."""
    with running_lab("bench", servers_per_env=1, with_prometheus=False) as the_lab:
        yield the_lab


@dataclass(frozen=True)
class Server:
    """One PostgreSQL server of a benchmark: the lab's blue or green (lab_server), or a
    standalone cluster of another major started by the benchmark (tests/versionfixtures.py)."""

    label: str
    port: int
    pid: int
    """Its postmaster: what it and its backends use counts as ours in CpuWatch."""
    major: int

    def dsn(self, dbname: str = "postgres") -> str:
        return postgres.dsn(self.port, dbname)


def lab_server(lab: Lab, env: str) -> Server:
    port = lab.state.port(f"{env}_pg")
    with psycopg.connect(postgres.dsn(port, "postgres")) as conn:
        major = server_major(conn.info.server_version)
    return Server(f"{env} {major}", port, lab.state.procs[f"{env}_pg"].pid, major)


@dataclass(frozen=True)
class BenchDb:
    """One database on one server."""

    server: Server
    name: str

    @property
    def dsn(self) -> str:
        return self.server.dsn(self.name)

    @property
    def uri(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.server.port}/{self.name}"

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn, autocommit=True)

    def size_bytes(self) -> int:
        with self.connect() as conn:
            row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        assert row is not None
        return int(row[0])

    def row_counts(self) -> dict[str, int]:
        counts = {}
        with self.connect() as conn:
            for schema, table in user_tables(conn):
                row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                    sql.Identifier(schema, table))).fetchone()
                assert row is not None
                counts[f"{schema}.{table}"] = int(row[0])
        return counts

    def checksums(self) -> dict[str, tuple[int, str]]:
        """Row count and md5 of every user table (tests/syncfixtures.table_checksum): independent
        of Cutover's verify."""
        with self.connect() as conn:
            return {f"{s}.{t}": table_checksum(conn, s, t) for s, t in user_tables(conn)}


def create_db(server: Server, prefix: str) -> BenchDb:
    db = BenchDb(server, f"{prefix}_{uuid.uuid4().hex[:8]}")
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db.name)))
    return db


def drop_db(db: BenchDb) -> None:
    with psycopg.connect(db.server.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db.name)))


def checkpoint(lab: Lab, *others: Server) -> None:
    """The lab's servers (and others: a green of another major) start a measurement with no
    dirty buffers and no checkpoint due."""
    ports = [lab.state.port("blue_pg"), lab.state.port("green_pg"), *(s.port for s in others)]
    for port in dict.fromkeys(ports):
        with psycopg.connect(postgres.dsn(port, "postgres"), autocommit=True) as conn:
            conn.execute("CHECKPOINT")


def sync_settings(blue: BenchDb, green: BenchDb, **sync: Any) -> Settings:
    return Settings.model_validate({"blue": {"database": {"dsn": blue.dsn}},
                                    "green": {"database": {"dsn": green.dsn}},
                                    "sync": sync})


@pytest.fixture(scope="session")
def source(lab: Lab) -> Iterator[BenchDb]:
    """`pgbench -i -s CUTOVER_BENCH_SCALE` on blue, once per session; read only."""
    db = create_db(lab_server(lab, "blue"), f"bench_s{SCALE}")
    try:
        started = time.monotonic()
        pgbench_init(db.dsn, SCALE)
        print(f"\n[bench] pgbench -i -s {SCALE} on blue: {time.monotonic() - started:.1f} s")
        yield db
    finally:
        drop_db(db)


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat; interrupt time (our own
    loopback traffic, mostly) does not count as busy."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    user, nice, system = fields[:3]  # then idle, iowait, irq, softirq
    return user + nice + system, sum(fields)


def machine_busy(seconds: float = 1.0) -> float:
    """Share of all CPUs (0..1) busy over `seconds`, whoever uses them."""
    b0, t0 = _cpu_times()
    time.sleep(seconds)
    b1, t1 = _cpu_times()
    return (b1 - b0) / max(1, t1 - t0)


def wait_quiet(what: str, limit: float = 0.25, patience: float = 180.0) -> float:
    """The machine is shared: before a measurement, while our own servers idle, wait (up to
    `patience` seconds) until other work leaves the CPUs below `limit`. Returns the last busy
    share seen, and says so when a run had to start on a busy machine."""
    deadline = time.monotonic() + patience
    busy = machine_busy()
    while busy > limit and time.monotonic() < deadline:
        busy = machine_busy(2.0)
    if busy > limit:
        print(f"[bench] WARNING: {what} starts on a busy machine ({busy:.0%} of the CPUs used "
              "by other work); its figure is unreliable")
    return busy


_TICK = os.sysconf("SC_CLK_TCK")


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all CPUs, /proc/stat)."""
    return _cpu_times()[0] / _TICK


def proc_cpu_seconds(pid: int) -> float:
    """CPU seconds of one live process (0 when it is gone)."""
    return _proc_seconds(pid, False)


def _proc_seconds(pid: int, with_reaped: bool) -> float:
    """CPU seconds of a process (and, with_reaped, of the children it has waited for)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    f = stat[stat.rindex(")") + 2:].split()
    ticks = int(f[11]) + int(f[12]) + (int(f[13]) + int(f[14]) if with_reaped else 0)
    return ticks / _TICK


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class CpuWatch:
    """How much CPU *other* work took while a measurement ran, on a shared machine: all
    CPU time (/proc/stat) minus ours (this process and what it reaped: pgbench, pg_dump ...;
    the lab's servers, their live children and the backends they reaped) and the kernel
    threads'. Processes of others that start and end within the run are seen only through
    /proc/stat, which is the point. `servers`: ours too (a green of another major)."""

    def __init__(self, lab: Lab, *servers: Server) -> None:
        self.pids = list(dict.fromkeys([*(p.pid for p in lab.state.procs.values()),
                                        *(s.pid for s in servers)]))
        self.others = 0.0

    def _ours(self) -> float:
        """Our CPU seconds, plus the kernel threads' (writeback for our I/O, mostly)."""
        t = os.times()
        total = t.user + t.system + t.children_user + t.children_system
        total += sum(_proc_seconds(k, False) for k in _children(2))
        for pid in self.pids:
            total += _proc_seconds(pid, True) + sum(_proc_seconds(c, False) for c in _children(pid))
        return total

    def __enter__(self) -> CpuWatch:
        self._busy0, self._total0 = _cpu_times()
        self._ours0 = self._ours()
        return self

    def __exit__(self, *exc: object) -> None:
        busy1, total1 = _cpu_times()
        busy = (busy1 - self._busy0) / _TICK
        total = (total1 - self._total0) / _TICK
        self.others = max(0.0, busy - (self._ours() - self._ours0)) / max(total, 1e-9)

    def note(self) -> str:
        """A warning when other work took a noticeable share of the CPUs."""
        return "" if self.others < 0.05 else f"  [other work used {self.others:.0%} of the CPUs]"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(len(ordered) * p / 100)))
    return ordered[rank - 1]


def describe_source(db: BenchDb) -> str:
    rows = sum(db.row_counts().values())
    return f"{rows / 1e6:.1f} M rows, {db.size_bytes() / 2**20:,.0f} MB"


# -- the summary table, printed once at the end of the run -----------------------------------


@dataclass(frozen=True)
class SummaryRow:
    bench: str
    method: str
    seconds: float
    """The median of `runs` runs."""
    runs: int
    versus: str = ""
    """Ratios to the anchors, with their goals."""


SUMMARY: list[SummaryRow] = []
LOADS: dict[str, tuple[float, float, float]] = {}
"""Load average (1, 5, 15 min) when each benchmark started."""


def summarize(bench: str, method: str, seconds: list[float], versus: str = "") -> None:
    SUMMARY.append(SummaryRow(bench, method, median(seconds), len(seconds), versus))


@pytest.fixture(autouse=True)
def _load_at_start(request: pytest.FixtureRequest) -> None:
    LOADS[request.node.name] = os.getloadavg()


def summary_table() -> str:
    width = max(len(r.method) for r in SUMMARY)
    lines = ["benchmark summary: medians (s) of the runs shown"]
    bench = ""
    for r in SUMMARY:
        if r.bench != bench:
            bench = r.bench
            lines.append(bench)
        lines.append(f"    {r.method:<{width}}  {r.seconds:7.2f} s  x{r.runs}  {r.versus}".rstrip())
    loads = ", ".join(f"{name} {one:.2f}/{five:.2f}" for name, (one, five, _) in LOADS.items())
    lines.append(f"load average (1/5 min) when each benchmark started: {loads}")
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SUMMARY:
        terminalreporter.write_sep("=", "benchmarks")
        for line in summary_table().splitlines():
            terminalreporter.write_line(line)
