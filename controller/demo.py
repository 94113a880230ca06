"""`cutover demo`: the main job on the built-in lab, start to finish.

For now: the lab up, live load through HAProxy and PgBouncer, a status read-out, the lab down.
The sync, switch, staged shift and automatic rollback join here as they land.
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from controller.cli_common import out
from controller.lab.lab import DEFAULT_BASE_PORT, Lab
from controller.lab.load import HttpLoad


def run_demo(root: Path, seconds: float, rate: float, keep: bool) -> bool:
    """Returns True when every request succeeded and every write landed in blue."""
    lab = Lab(root, with_prometheus=True, base_port=DEFAULT_BASE_PORT)
    out.rule("[bold]1. the lab[/]")
    try:
        lab.up(progress=lambda msg: out.print(f"  {msg}"))
        with psycopg.connect(lab.state.db_dsn("blue")) as conn:
            before = _count(conn)
        out.rule(f"[bold]2. load: {rate:g} req/s through HAProxy for {seconds:g}s[/]")
        with HttpLoad(lab.state.frontend_url, rate, write_ratio=0.2) as load, Progress(
            TextColumn("  {task.description}"), BarColumn(), TextColumn("{task.fields[stats]}"),
            TimeRemainingColumn(), console=out, transient=False,
        ) as bar:
            task = bar.add_task("load", total=seconds, stats="")
            started = time.monotonic()
            while (elapsed := time.monotonic() - started) < seconds:
                time.sleep(0.25)
                report = load.report()
                bar.update(task, completed=min(elapsed, seconds),
                           stats=f"{report.total} requests, {report.failed} failed")
            bar.update(task, completed=seconds)
        report = load.report()
        with psycopg.connect(lab.state.db_dsn("blue")) as conn:
            written = _count(conn) - before
        writes_ok = sum(1 for s in report.samples if s.status == 201)
        out.rule("[bold]3. status[/]")
        table = Table("part", "port", "pid", "state")
        for c in lab.components():
            table.add_row(c.name, str(c.port), str(c.pid), "running" if c.running else "stopped")
        out.print(table)
        out.print(f"  requests: {report.total}, failed: {report.failed}, by env: "
                  f"{dict(report.by_env())}, p50 {report.latency_ms(50):.1f} ms, "
                  f"p99 {report.latency_ms(99):.1f} ms")
        out.print(f"  writes acknowledged: {writes_ok}, rows found in blue: {written}")
        ok = report.failed == 0 and written == writes_ok and report.total > 0
        out.print("[bold green]demo ok[/]" if ok else "[bold red]demo found a problem[/]")
        return ok
    finally:
        if not keep:
            out.rule("[bold]4. the lab down[/]")
            lab.down(purge=True, progress=lambda msg: out.print(f"  {msg}"))


def _count(conn: psycopg.Connection[tuple[int]]) -> int:
    row = conn.execute("SELECT count(*) FROM lab_items").fetchone()
    return int(row[0]) if row else 0
