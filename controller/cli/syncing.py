"""`cutover preflight`, `cutover sync`, `cutover verify`: the first job, keeping green equal."""

from __future__ import annotations

import signal
import threading
import time
from typing import Annotated

import psycopg
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from config.durations import parse_duration
from config.replication import SyncMode
from config.settings import Settings
from controller.cli.common import (
    ConfigOption,
    Exit,
    JsonOption,
    err,
    out,
    print_json,
    print_table,
    settings_or_exit,
    styled,
)
from controller.cli.follow import follow_forever, status_line
from controller.daemon.metrics import SyncMetrics
from sync import diff, logical, readiness
from sync.apply_watch import ApplyWatch
from sync.catalog import list_tables
from sync.connections import connect, databases
from sync.copy import CopyProgress, ProgressLines
from sync.errors import BadInputError, SyncError
from sync.livepair import ENVS, LivePair
from sync.logical import StartResult
from sync.preflight import Report, Status, run_preflight
from sync.schema import synced_schemas
from sync.sequences import copy_sequences
from sync.status import beat
from sync.verify import Verdict, verify

STARTUP_WAIT = 15.0


def _print_preflight(report: Report) -> None:
    table = Table("check", "result", "found")
    colour = {Status.PASS: "green", Status.WARN: "yellow", Status.FAIL: "red"}
    for c in report.checks:
        table.add_row(c.name, styled((c.status.value, colour[c.status])), c.detail)
    print_table(table)
    # Fixes unwrapped, one per line, so they can be copied as they are.
    for c in report.checks:
        if c.fix and c.status is not Status.PASS:
            out.print(f"{c.status.value} {c.name}: fix: {c.fix}")


def preflight(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Check that blue and green can be synced; exit 1 when any check fails."""
    settings = settings_or_exit(config)
    report = run_preflight(settings)
    if as_json:
        print_json({"ok": report.ok, "checks": [c.as_dict() for c in report.checks]})
    else:
        _print_preflight(report)
    if not report.ok:
        raise typer.Exit(Exit.FAILED)


def sync(
    config: ConfigOption = None,
    follow: Annotated[bool, typer.Option("--follow", help="Keep running: heartbeat, lag, "
                                         "drift and metrics (the continuous sync service).")] = False,
    once: Annotated[bool, typer.Option("--once", help="Start or resume, report, exit "
                                       "(the default).")] = False,
    sequences: Annotated[bool, typer.Option("--sequences", help="Only copy sequence positions "
                                            "blue -> green.")] = False,
    drop: Annotated[bool, typer.Option("--drop", help="Remove the subscription, slot, "
                                       "publication and heartbeat (also after a crash).")] = False,
    mode: Annotated[SyncMode | None, typer.Option(
        "--mode", help="logical or diff (default: sync.mode).")] = None,
    interval: Annotated[str | None, typer.Option(
        "--interval", help="diff --follow: time between cycles, e.g. 30s (default: sync.interval).")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="diff: show per table what would change; write nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Sync blue -> green with logical replication (preflight, consistent parallel copy, then
    streaming) or with the checksum diff (SELECT on blue only; --once or --follow). Safe to
    re-run at any point."""
    if sum([follow, once, sequences, drop]) > 1:
        err.print("choose one of --follow, --once, --sequences, --drop")
        raise typer.Exit(Exit.USAGE)
    settings = settings_or_exit(config)
    if (mode or settings.sync.mode) == SyncMode.DIFF and not (sequences or drop):
        try:
            every = parse_duration(interval) if interval is not None else settings.sync.interval
        except ValueError as exc:
            err.print(f"--interval: {exc}")
            raise typer.Exit(Exit.USAGE) from None
        _diff(settings, follow, every, dry_run, as_json)
        return
    if dry_run or interval is not None:
        err.print("--dry-run and --interval are for --mode diff")
        raise typer.Exit(Exit.USAGE)
    if drop:
        logical.drop(settings, say=lambda m: out.print(f"  {m}"))
        return
    if sequences:
        _sequences(settings, as_json)
        return
    metrics = SyncMetrics()
    started = _start_or_join(settings, metrics, err if as_json else out, join=not follow)
    # Off the copy's critical path: green already streams while these scans run.
    logical.settle(settings, started, say=lambda m: (err if as_json else out).print(f"  {m}"))
    if follow:
        follow_forever(settings, metrics, as_json)
    else:
        _show_status(settings, as_json)


def _diff(settings: Settings, follow: bool, every: float, dry_run: bool, as_json: bool) -> None:
    """One diff cycle, or (--follow) one every `every` seconds until SIGTERM, with metrics."""
    console = err if as_json else out
    metrics = SyncMetrics()
    stop = threading.Event()
    if follow:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        if settings.metrics.enabled:
            metrics.serve(settings.metrics)
            console.print(f"  metrics on http://{settings.metrics.listen}/metrics")
    unready = not dry_run and diff.ensure_schema(settings, say=lambda m: console.print(f"  {m}"))
    next_cycle = time.monotonic()
    cycles = 0
    while True:
        try:
            report = _diff_cycle(settings, dry_run, console)
        except (SyncError, psycopg.Error) as exc:
            # The service outlives a restart of either server: a failed cycle (one stopped
            # halfway is finished by the next) waits for the next. Bad input at the start
            # (exit 2, nothing changed) is not a passing condition.
            if not follow or (cycles == 0 and isinstance(exc, BadInputError)):
                raise
            metrics.diff_cycle_failures.inc()
            _probe_databases(settings, metrics)
            console.print(f"diff cycle failed: {str(exc).strip()}; next cycle in {every:g}s")
            next_cycle += every
            if stop.wait(max(0.0, next_cycle - time.monotonic())):
                return
            continue
        cycles += 1
        for env in ENVS:
            metrics.database_up.labels(env).set(1)
        metrics.diff_cycle(report)
        _print_cycle(report, dry_run, as_json, console)
        if unready:  # green has its first full copy: statistics and materialized views
            readiness.ready_green(settings, say=lambda m: console.print(f"  {m}"), fresh=True)
            unready = False
        if not follow:
            return
        next_cycle += every
        if stop.wait(max(0.0, next_cycle - time.monotonic())):
            return


def _print_cycle(report: diff.CycleReport, dry_run: bool, as_json: bool, console: Console) -> None:
    if as_json:
        print_json(report.as_dict())
        return
    verb = "would change" if dry_run else "changed"
    console.print(f"diff cycle in {report.seconds:.2f}s: {report.total('blue_rows'):,} rows "
                  f"compared, {verb} +{report.total('inserted'):,} ~{report.total('updated'):,} "
                  f"-{report.total('deleted'):,}")


def _probe_databases(settings: Settings, metrics: SyncMetrics) -> None:
    """cutover_sync_database_up for each side, by connecting to it once."""
    probe = LivePair(settings, "probe")
    try:
        probe.open()
    except SyncError:
        pass
    finally:
        probe.close()
    for env in ENVS:
        metrics.database_up.labels(env).set(1 if probe.up(env) else 0)


def _diff_cycle(settings: Settings, dry_run: bool, console: Console) -> diff.CycleReport:
    """One cycle; what it writes shown as a bar per table on a terminal, else a line each 5 s."""
    def say(message: str) -> None:
        console.print(f"  {message}")
    if console.is_terminal:
        with Progress(TextColumn("  {task.description}", markup=False), BarColumn(),
                      TextColumn("{task.completed:,}/{task.total:,} rows"), TimeRemainingColumn(),
                      console=console, transient=True) as bar:
            tasks: dict[str, TaskID] = {}

            def show(table: str, done: int, total: int) -> None:
                if table not in tasks:
                    tasks[table] = bar.add_task(table, total=total)
                bar.update(tasks[table], completed=done)
            return diff.cycle(settings, dry_run=dry_run, say=lambda m: bar.console.print(f"  {m}"),
                              progress=show)
    next_log = [time.monotonic() + 5]

    def log(table: str, done: int, total: int) -> None:
        if time.monotonic() >= next_log[0]:
            say(f"{table}: {done:,}/{total:,} rows written")
            next_log[0] = time.monotonic() + 5
    return diff.cycle(settings, dry_run=dry_run, say=say, progress=log)


def _sequences(settings: Settings, as_json: bool) -> None:
    blue_db, green_db = databases(settings)
    with connect(blue_db, "sequences") as blue, connect(green_db, "sequences") as green:
        done = copy_sequences(blue, green, synced_schemas(blue, settings))
    if as_json:
        print_json({"copied": done.copied, "missing_on_green": done.missing_on_green})
    else:
        out.print(f"copied {done.copied} sequence position(s) blue -> green"
                  + (f"; missing on green: {', '.join(done.missing_on_green)}"
                     if done.missing_on_green else ""))


def _start_or_join(settings: Settings, metrics: SyncMetrics, console: Console,
                   join: bool) -> StartResult | None:
    """A new sync after preflight passes; one that streams already takes in the tables
    created on blue since it started (--follow leaves that to its loop, which reports what
    it cannot take and runs on) and returns None."""
    if logical.is_streaming(settings):
        if join:
            logical.join_new_tables(settings, say=lambda m: console.print(f"  {m}"))
        return None
    report = run_preflight(settings)
    if not report.ok:
        _print_preflight(report)
        err.print("sync refuses to start while a preflight check fails (fixes above)")
        raise typer.Exit(Exit.FAILED)
    return _start(settings, metrics, console)


def _start(settings: Settings, metrics: SyncMetrics, console: Console) -> StartResult:
    """Start or resume; progress goes to console (stderr when stdout carries JSON)."""
    blue_db, _ = databases(settings)
    with connect(blue_db, "plan") as blue:
        total = sum(t.est_rows for t in list_tables(blue, settings.sync)) or None
    last = CopyProgress()
    if console.is_terminal:
        with Progress(TextColumn("  copy"), BarColumn(), TextColumn("{task.fields[rows]} rows"),
                      TransferSpeedColumn(), TimeRemainingColumn(), console=console) as bar:
            task: TaskID = bar.add_task("copy", total=total, rows="0")

            def show(p: CopyProgress) -> None:
                metrics.rows_copied.inc(p.rows - last.rows)
                last.rows = p.rows
                bar.update(task, completed=p.rows, rows=f"{p.rows:,}")
            return logical.start(settings, say=lambda m: bar.console.print(f"  {m}"), progress=show)
    lines = ProgressLines(lambda m: console.print(f"  {m}"))

    def log(p: CopyProgress) -> None:
        metrics.rows_copied.inc(p.rows - last.rows)
        last.rows = p.rows
        lines(p)
    return logical.start(settings, say=lambda m: console.print(f"  {m}"), progress=log)


def _show_status(settings: Settings, as_json: bool) -> None:
    """Streaming health once a heartbeat got through; exit 1 when the replication is broken."""
    blue_db, green_db = databases(settings)
    watch = ApplyWatch()
    with connect(blue_db, "status") as blue, connect(green_db, "status") as green:
        watch.read(blue, green, settings.sync, with_drift=False)  # the error counters before
        # A new subscription's apply worker takes a few seconds to start, and a failing one
        # comes back every few seconds to fail again: wait for a heartbeat to get through (or
        # for a failure), so "--once" reports streaming health rather than a start-up moment.
        deadline = time.monotonic() + STARTUP_WAIT
        while True:
            seq = beat(blue)
            time.sleep(0.2)
            status = watch.read(blue, green, settings.sync)
            if (status.streaming and status.heartbeat_seq == seq) or status.broken \
                    or time.monotonic() > deadline:
                break
    if as_json:
        print_json(status.as_dict())
    else:
        out.print(status_line(status))
    if status.broken:
        raise SyncError(f"replication is broken: {status.broken}")


def verify_cmd(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Compare blue and green per table by row count and checksum; exit 1 on any difference."""
    settings = settings_or_exit(config)
    report = verify(settings)
    if as_json:
        print_json(report.as_dict())
    else:
        table = Table("table", "status", "blue rows", "green rows", "differing key ranges")
        colour = {Verdict.COMPLETE: "green", Verdict.CHANGING: "yellow"}
        for t in report.tables:
            table.add_row(t.table, styled((t.verdict.value, colour.get(t.verdict, 'red'))),
                          f"{t.blue_rows:,}", f"{t.green_rows:,}", "; ".join(t.differing[:5]))
        print_table(table)
        out.print(f"verified {len(report.tables)} table(s) in {report.seconds:.2f}s")
    if not report.ok:
        raise typer.Exit(Exit.FAILED)
