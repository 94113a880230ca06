"""Initial copy of `pgbench -s 50` (5 M rows) into an empty green database: our
`logical.start` (copy_jobs 2 and 4) beside native logical replication's own copy,
`pg_dump -Fc | pg_restore` and `pgcopydb clone`, each run into a fresh database, in rotating
order, medians printed with the ratios of the quality bar:
ours <= 0.9 x pg_dump|pg_restore and <= 0.7 x native. Ours is timed until green streams; the
foreign keys (pgbench -i --foreign-keys) are validated after that and reported beside.

The machinery (Bench, the methods, run_rotated, report) takes its green server, so
test_bench_versions.py runs the same into a green of another major; the client programs are
those Cutover would choose for the pair (sync.pgtools.choose_tools).
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from controller.lab.lab import Lab
from sync import logical
from sync.foreign_keys import validate_pending
from sync.pgtools import choose_tools, installations
from tests.bench.conftest import (
    BENCH_TIMEOUT,
    REPEAT,
    SCALE,
    BenchDb,
    CpuWatch,
    Server,
    checkpoint,
    create_db,
    describe_source,
    drop_db,
    lab_server,
    median,
    summarize,
    sync_settings,
    wait_quiet,
)

PGCOPYDB = "/usr/bin/pgcopydb"
NATIVE = "bench_native"
OURS = "bench_copy"
COPY_JOBS = (2, 4)
PGBENCH_TABLES = ("pgbench_accounts", "pgbench_branches", "pgbench_history", "pgbench_tellers")
DUMP = "pg_dump | pg_restore"
GOALS: dict[str, float | None] = {DUMP: 0.9, "native logical": 0.7, "pgcopydb clone": None}
"""Anchor -> the goal for ours / anchor (the quality bar); None: ratio only."""


@dataclass
class Method:
    label: str
    run: Callable[[BenchDb, BenchDb], float]
    """Copies source into an empty target and returns the timed seconds."""
    seconds: list[float] = field(default_factory=list)
    phases: list[dict[str, float]] = field(default_factory=list)
    failure: str | None = None
    disturbed: int = 0
    """Runs during which other work took >= 5 % of the CPUs."""


class Bench:
    """Copies of source into fresh databases on green, timed one way for every method.

    sync: more of ours' [sync] settings (e.g. schemas). settle: ours is timed through
    logical.settle (fk validation, ANALYZE, matviews) instead of reporting the fk validation
    beside. dump_flags: pg_dump's for the pg_dump | pg_restore anchor."""

    def __init__(self, lab: Lab, source: BenchDb, green: Server, work: Path, *,
                 sync: dict[str, Any] | None = None, settle: bool = False,
                 dump_flags: tuple[str, ...] = ("--no-owner", "--no-acl")) -> None:
        self.lab = lab
        self.source = source
        self.green = green
        self.work = work
        self.sync = sync or {}
        self.settle = settle
        self.dump_flags = dump_flags
        # pg_dump, pg_restore of the major Cutover would take for this pair (the oldest at
        # least as new as both servers): every anchor runs with the same programs as ours.
        self.bindir = choose_tools(source.server.major, green.major, installations()).bindir
        self.schema_dump = work / "schema.dump"
        self.watch: CpuWatch | None = None
        self.blue_sums = source.checksums()
        self.blue_counts = {t: n for t, (n, _) in self.blue_sums.items()}

    def pg(self, program: str, *args: str) -> None:
        done = subprocess.run([str(self.bindir / program), *args], capture_output=True, text=True,
                              check=False)
        assert done.returncode == 0, f"{program} failed: {done.stderr}"

    # -- timing on a shared machine -------------------------------------------------------

    def start_timed(self) -> None:
        """Both servers checkpointed, the machine quiet, then other work watched."""
        checkpoint(self.lab, self.green)
        wait_quiet("a copy")
        self.watch = CpuWatch(self.lab, self.green).__enter__()

    def end_timed(self) -> None:
        if self.watch is not None:
            self.watch.__exit__()

    @contextmanager
    def timed(self) -> Iterator[None]:
        self.start_timed()
        yield
        self.end_timed()

    # -- ours ----------------------------------------------------------------------------

    def ours(self, jobs: int, phases: list[dict[str, float]]) -> Callable[[BenchDb, BenchDb], float]:
        def run(source: BenchDb, target: BenchDb) -> float:
            settings = sync_settings(source, target, copy_jobs=jobs, name=OURS, **self.sync)
            marks: list[tuple[float, str]] = []
            try:
                with self.timed():
                    started = time.monotonic()
                    result = logical.start(settings, say=lambda m: marks.append((time.monotonic(), m)))
                    streaming = time.monotonic()
                    if self.settle:
                        logical.settle(settings, result)
                    seconds = time.monotonic() - started
                phases.append(_phases(started, marks, streaming))
                if self.settle:
                    phases[-1]["settle"] = started + seconds - streaming
                else:
                    # Green streams from here on; the foreign keys' validation scans follow,
                    # untimed as the copy (native's copy never validates them at all), reported.
                    validating = time.monotonic()
                    validate_pending(settings)
                    phases[-1]["(then fk validation while streaming)"] = time.monotonic() - validating
                # Data equality, outside the timing: independent count + md5 of every table.
                got = target.checksums()
                assert got == self.blue_sums, f"green differs from blue after ours (copy_jobs={jobs})"
            finally:
                logical.drop(settings)
            return seconds
        return run

    # -- anchors -------------------------------------------------------------------------

    def native(self, source: BenchDb, target: BenchDb) -> float:
        """CREATE PUBLICATION + CREATE SUBSCRIPTION (copy_data = true) until every table is
        ready; the schema is on green beforehand (untimed), as native replication needs."""
        if not self.schema_dump.exists():
            self.pg("pg_dump", "--schema-only", "--format=custom", "--no-owner", "--no-acl",
                    f"--file={self.schema_dump}", f"--dbname={self.source.dsn}")
        self.pg("pg_restore", "--no-owner", "--no-acl", "--exit-on-error", f"--dbname={target.dsn}",
                str(self.schema_dump))
        tables = sql.SQL(", ").join(sql.Identifier("public", t) for t in PGBENCH_TABLES)
        with source.connect() as blue, target.connect() as green:
            # PostgreSQL 15's launcher looks for subscriptions to start at most once per
            # wal_retrieve_retry_interval (5 s), whichever subscription woke it last: right
            # after the previous run's subscription, native would wait up to 5 s here that
            # a one-off migration never waits. Let that interval pass, untimed.
            row = green.execute("SELECT setting::int FROM pg_settings "
                                "WHERE name = 'wal_retrieve_retry_interval'").fetchone()
            assert row is not None
            time.sleep(int(row[0]) / 1000 + 0.5)
            try:
                self.start_timed()
                started = time.monotonic()
                blue.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                    sql.Identifier(NATIVE), tables))
                green.execute(sql.SQL("CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {}").format(
                    sql.Identifier(NATIVE), sql.Literal(source.dsn), sql.Identifier(NATIVE)))
                deadline = started + 3600
                while True:
                    row = green.execute(
                        "SELECT count(*), count(*) FILTER (WHERE srsubstate = 'r') "
                        "FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid "
                        "WHERE s.subname = %s", [NATIVE]).fetchone()
                    assert row is not None
                    if row[0] == len(PGBENCH_TABLES) and row[1] == row[0]:
                        break
                    assert time.monotonic() < deadline, "native copy not ready within an hour"
                    time.sleep(0.02)
                seconds = time.monotonic() - started
                self.end_timed()
            finally:
                green.execute(sql.SQL("DROP SUBSCRIPTION IF EXISTS {}").format(sql.Identifier(NATIVE)))
                blue.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(NATIVE)))
        self._assert_counts(target, "native")
        return seconds

    def dump_restore(self, source: BenchDb, target: BenchDb) -> float:
        """pg_dump -Fc | pg_restore, schema, data and indexes, timed as a whole."""
        self.start_timed()
        started = time.monotonic()
        dump = subprocess.Popen([str(self.bindir / "pg_dump"), "--format=custom", *self.dump_flags,
                                 f"--dbname={source.dsn}"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        assert dump.stdout is not None
        restore = subprocess.run([str(self.bindir / "pg_restore"), *self.dump_flags,
                                  "--exit-on-error", f"--dbname={target.dsn}"],
                                 stdin=dump.stdout, capture_output=True, check=False)
        dump.stdout.close()
        dump_err = dump.communicate()[1]
        seconds = time.monotonic() - started
        self.end_timed()
        assert dump.returncode == 0, f"pg_dump failed: {dump_err.decode(errors='replace')}"
        assert restore.returncode == 0, f"pg_restore failed: {restore.stderr.decode(errors='replace')}"
        self._assert_counts(target, DUMP)
        return seconds

    def pgcopydb(self, source: BenchDb, target: BenchDb) -> float:
        """pgcopydb clone --table-jobs 2 --index-jobs 2 (schema, data, indexes, vacuum)."""
        workdir = Path(tempfile.mkdtemp(prefix="pgcopydb-", dir=self.work))
        env = {**os.environ, "PATH": f"{self.bindir}:{os.environ.get('PATH', '')}",
               "TMPDIR": str(self.work)}
        try:
            self.start_timed()
            started = time.monotonic()
            done = subprocess.run([PGCOPYDB, "clone", "--source", source.uri, "--target", target.uri,
                                   "--dir", str(workdir), "--table-jobs", "2", "--index-jobs", "2",
                                   "--no-acl", "--no-owner"],
                                  capture_output=True, text=True, env=env, check=False)
            seconds = time.monotonic() - started
            self.end_timed()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise PgcopydbFailed(f"pgcopydb clone exited {done.returncode}:\n{tail}")
        self._assert_counts(target, "pgcopydb clone")
        return seconds

    def _assert_counts(self, target: BenchDb, who: str) -> None:
        assert target.row_counts() == self.blue_counts, f"{who}: row counts differ from blue"


class PgcopydbFailed(Exception):
    """pgcopydb could not run here: reported, not fatal to the other measurements."""


def _phases(started: float, marks: list[tuple[float, str]], ended: float) -> dict[str, float]:
    """Seconds per phase of logical.start, from the moments it announced each one."""
    names = [("copying blue's schema", "schema+slot"), ("slot ", "copy"),
             ("building indexes", "indexes+subscribe"), ("subscription ", "")]
    points: list[tuple[float, str]] = [(started, "setup")]
    for at, message in marks:
        for prefix, name in names:
            if message.startswith(prefix):
                points.append((at, name))
    points.append((ended, "end"))
    out: dict[str, float] = {}
    for (a, name), (b, _) in itertools.pairwise(points):
        if name:
            out[name] = out.get(name, 0.0) + (b - a)
    return out


def _line(label: str, seconds: float, extra: str = "") -> str:
    return f"    {label:<22}{seconds:6.1f} s{extra}"


def _ratio(ours: float, anchor: float, goal: float) -> str:
    r = ours / anchor
    return f"ratio {r:.2f} (goal <= {goal}){'' if r <= goal else '  MISSED'}"


@contextmanager
def workdir() -> Iterator[Path]:
    work = Path(tempfile.mkdtemp(prefix="cutover-bench-copy-", dir="/tmp"))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def ours_methods(bench: Bench) -> list[Method]:
    def ours(jobs: int) -> Method:
        phases: list[dict[str, float]] = []
        return Method(f"ours (copy_jobs={jobs})", bench.ours(jobs, phases), phases=phases)
    return [ours(j) for j in COPY_JOBS]


@pytest.mark.timeout(BENCH_TIMEOUT)
def test_initial_copy(lab: Lab, source: BenchDb) -> None:
    with workdir() as work:
        bench = Bench(lab, source, lab_server(lab, "green"), work)
        methods = [*ours_methods(bench), Method("native logical", bench.native),
                   Method(DUMP, bench.dump_restore), Method("pgcopydb clone", bench.pgcopydb)]
        run_rotated(bench, methods)
    print(report(f"initial copy, pgbench -s {SCALE} ({describe_source(source)}), "
                 f"{source.server.label} -> {bench.green.label}", methods))
    assert all(m.seconds for m in methods if not m.label.startswith("pgcopydb")), "a method never ran"


def run_rotated(bench: Bench, methods: list[Method]) -> None:
    """An untimed warm-up, then REPEAT rounds of every method, each into a fresh database on
    bench.green, in an order rotating by round."""
    # Untimed warm-up: a fresh lab cluster's first copy creates its WAL segments (~30 % slower,
    # measured), which would fall on whichever method the rotation puts first.
    warm = create_db(bench.green, "bench_warm")
    try:
        methods[0].run(bench.source, warm)
        methods[0].phases.clear()
    finally:
        drop_db(warm)
    for i in range(REPEAT):
        # Rotate the order so no method always runs first or after the same neighbour.
        for m in methods[i % len(methods):] + methods[:i % len(methods)]:
            if m.failure:
                continue
            target = create_db(bench.green, "bench_copy")
            try:
                bench.watch = None
                m.seconds.append(m.run(bench.source, target))
                note = bench.watch.note() if bench.watch else ""
                if note:
                    m.disturbed += 1
                print(f"[bench] run {i + 1}/{REPEAT} {m.label}: {m.seconds[-1]:.2f} s{note}")
            except PgcopydbFailed as exc:
                m.failure = str(exc)
                print(f"[bench] {m.label} FAILED, continuing without it: {exc}")
            finally:
                drop_db(target)


def report(title: str, methods: list[Method], goals: dict[str, float | None] | None = None) -> str:
    """Medians, each of ours / each anchor (with its goal from goals, default GOALS), and
    where ours spends its time; the medians go to the summary table too."""
    goals = GOALS if goals is None else goals
    by = {m.label: m for m in methods}
    med = {m.label: median(m.seconds) for m in methods if m.seconds}
    lines = [f"\n{title}, medians of {REPEAT}:"]
    for m in methods:
        if m.failure and not m.seconds:
            lines.append(f"    {m.label:<22}  FAILED: {m.failure.splitlines()[0]}")
            continue
        runs = " ".join(f"{s:.1f}" for s in m.seconds)
        busy = f", {m.disturbed} disturbed by other work" if m.disturbed else ""
        lines.append(_line(m.label, med[m.label], f"   (runs: {runs}{busy})"))
    anchors = [m.label for m in methods if not m.label.startswith("ours") and m.label in med]
    for m in methods:
        if not m.label.startswith("ours") or m.label not in med:
            continue
        versus = []
        for anchor in anchors:
            goal = goals.get(anchor)
            r = med[m.label] / med[anchor]
            ratio = _ratio(med[m.label], med[anchor], goal) if goal is not None else f"ratio {r:.2f}"
            lines.append(f"    {m.label} / {anchor:<21}{ratio}")
            met = "" if goal is None else f" (goal <= {goal}{'' if r <= goal else ', MISSED'})"
            versus.append(f"{r:.2f} x {anchor}{met}")
        summarize(title, m.label, m.seconds, "; ".join(versus))
        if m.phases:
            keys = list(m.phases[0])
            split = ", ".join(f"{k} {median([p.get(k, 0.0) for p in m.phases]):.1f} s" for k in keys)
            lines.append(f"      where {m.label} spends it (medians): {split}")
    for anchor in anchors:
        summarize(title, anchor, by[anchor].seconds)
    return "\n".join(lines)
