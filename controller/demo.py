"""`cutover demo`: the main job on the built-in lab, start to finish.

Now: the lab up; live load through HAProxy and PgBouncer into blue; blue synced to green
(preflight, consistent copy, streaming) while the load runs; traffic shifted 10/50/100 % and
rolled back, each stage read back and seen served; green broken at 10 % and rolled back by
the SLO watch on its own; verify; a status read-out; the lab down. The write switch joins here
when it lands.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import psycopg
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from config import Settings, load_settings
from config.settings import need_traffic
from controller.cli_common import out
from controller.lab.lab import DEFAULT_BASE_PORT, Lab
from controller.lab.load import HttpLoad
from controller.slo.watch import watch
from controller.traffic.balancer import TrafficError
from controller.traffic.factory import balancer_for
from controller.traffic.shift import shift
from sync import logical
from sync.connections import connect, databases
from sync.foreign_keys import validate_pending
from sync.preflight import Status, run_preflight
from sync.status import beat, read_status, wait_applied
from sync.verify import verify


def run_demo(root: Path, seconds: float, rate: float, keep: bool) -> bool:
    """True when every request succeeded, every acknowledged write is in blue, and green
    holds exactly blue's rows."""
    lab = Lab(root, with_prometheus=True, base_port=DEFAULT_BASE_PORT)
    out.rule("[bold]1. the lab[/]")
    try:
        lab.up(progress=lambda msg: out.print(f"  {msg}"))
        settings = load_settings(lab.state.config_file)
        with psycopg.connect(lab.state.db_dsn("blue")) as conn:
            before = _count(conn)
        out.rule(f"[bold]2. load ({rate:g} req/s through HAProxy) and sync blue -> green[/]")
        with HttpLoad(lab.state.frontend_url, rate, write_ratio=0.2) as load:
            report = run_preflight(settings)
            failed = [c for c in report.checks if c.status is Status.FAIL]
            out.print(f"  preflight: {len(report.checks) - len(failed)}/{len(report.checks)} "
                      "checks pass" + "".join(f"\n  FAIL {c.name}: {c.detail}" for c in failed))
            if failed:
                return False
            started = time.monotonic()
            logical.start(settings, say=lambda m: out.print(f"  {m}"))
            validate_pending(settings, say=lambda m: out.print(f"  {m}"))
            out.print(f"  copy done and subscription running {time.monotonic() - started:.1f}s after start")
            _watch(settings, load, seconds)
            out.rule("[bold]3. traffic through HAProxy: 10 -> 50 -> 100 %, then rollback[/]")
            shifted = _shift_stages(settings)
            out.rule("[bold]4. green breaks at the 10 % stage: the watch rolls back on its own[/]")
            rolled_back = _breach_and_rollback(settings, lab)
        http = load.report()
        with psycopg.connect(lab.state.db_dsn("blue")) as conn:
            written = _count(conn) - before
        writes_ok = sum(1 for s in http.samples if s.status == 201)
        out.rule("[bold]5. verify and status[/]")
        _wait_caught_up(settings)
        checked = verify(settings)
        for t in checked.tables:
            out.print(f"  verify {t.table}: {t.verdict.value} ({t.blue_rows:,} rows on blue, "
                      f"{t.green_rows:,} on green)")
        table = Table("part", "port", "pid", "state")
        for c in lab.components():
            table.add_row(c.name, str(c.port), str(c.pid), "running" if c.running else "stopped")
        out.print(table)
        out.print(f"  requests: {http.total}, failed: {http.failed}, by env: "
                  f"{dict(http.by_env())}, p50 {http.latency_ms(50):.1f} ms, "
                  f"p99 {http.latency_ms(99):.1f} ms")
        out.print(f"  writes acknowledged: {writes_ok}, rows found in blue: {written}")
        # The only failed requests are green's injected faults before the rollback.
        faulted = sum(1 for x in http.samples if x.status >= 500 and x.env == "green")
        out.print(f"  failed requests: {http.failed}, all from green's injected fault: "
                  f"{http.failed == faulted}")
        ok = (http.failed == faulted and written == writes_ok and http.total > 0 and checked.ok
              and shifted and rolled_back)
        out.print("[bold green]demo ok[/]" if ok else "[bold red]demo found a problem[/]")
        return ok
    finally:
        if not keep:
            out.rule("[bold]6. the lab down[/]")
            lab.down(purge=True, progress=lambda msg: out.print(f"  {msg}"))


def _watch(settings: Settings, load: HttpLoad, seconds: float) -> None:
    """Live load and replication lag for `seconds`."""
    blue_db, green_db = databases(settings)
    with connect(blue_db, "demo") as blue, connect(green_db, "demo") as green, Progress(
        TextColumn("  streaming"), BarColumn(), TextColumn("{task.fields[stats]}"),
        TimeRemainingColumn(), console=out,
    ) as bar:
        task = bar.add_task("load", total=seconds, stats="")
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < seconds:
            beat(blue)
            time.sleep(0.25)
            status = read_status(blue, green, settings.sync, with_drift=False)
            http = load.report()
            lag = status.heartbeat_lag_seconds
            bar.update(task, completed=min(elapsed, seconds), stats=(
                f"{http.total} requests, {http.failed} failed, lag "
                f"{'?' if lag is None else f'{lag * 1000:.0f} ms'}, {status.lag_bytes or 0} B"))
        bar.update(task, completed=seconds)


def _shift_stages(settings: Settings) -> bool:
    """The staged shift and a rollback, each read back and seen served (the lab's apps all
    write through PgBouncer to blue, so any share of traffic may go to green here)."""
    lb = balancer_for(need_traffic(settings, "the demo"))
    try:
        for target in (*(s.weight for s in need_traffic(settings, "the demo").stages), 0):
            result = shift(lb, target)
            seen = result.observed
            what = "rollback: " if target == 0 else ""
            out.print(f"  {what}green {target:3} %: set and read back in {result.apply_seconds * 1000:.1f} "
                      f"ms; HAProxy served {seen.green_percent or 0:.1f} % of the next "
                      f"{seen.requests} requests to green ({seen.seen.value} after "
                      f"{seen.seconds * 1000:.0f} ms)")
            time.sleep(1.0)
        return True
    except TrafficError as exc:
        out.print(f"  [red]shift failed:[/] {exc}")
        return False
    finally:
        lb.close()


def _breach_and_rollback(settings: Settings, lab: Lab) -> bool:
    """10 % on green, then green's fault switch on (half its requests fail): `watch` must put
    all traffic back on blue by itself."""
    lb = balancer_for(need_traffic(settings, "the demo"))
    try:
        shift(lb, 10)
    finally:
        lb.close()
    out.print("  green 10 %; the watch runs: "
              + ", ".join(f"{c.name} every {c.interval:g}s" for c in settings.slo))
    time.sleep(2)
    started = time.monotonic()
    for server in lab.state.servers_of("green"):
        httpx.post(f"{lab.state.app_url(server)}/admin/fault", json={"error_ratio": 0.5}, timeout=5)
    out.print("  fault on: green answers 500 to half its requests")
    journal = lab.root / "cutover-state.db"
    try:
        result = watch(settings.model_copy(update={"state": settings.state.model_copy(
            update={"path": journal})}), duration=30)
    finally:
        for server in lab.state.servers_of("green"):
            httpx.post(f"{lab.state.app_url(server)}/admin/fault", json={}, timeout=5)
    if result.breach is None or result.rollback is None:
        out.print(f"  [red]no rollback[/] ({result.rollback_error or 'no breach seen'})")
        return False
    b = result.breach
    out.print(f"  breach: {b.check}: {b.reason} ({b.streak} intervals in a row)")
    after = result.rollback.after
    share = "?" if after is None else f"{after.green_percent:g}"
    out.print(f"  [bold]rolled back[/]: HAProxy reads green {share} %, "
              f"{time.monotonic() - started:.2f}s after the fault; journaled in {journal}")
    return True


def _wait_caught_up(settings: Settings, timeout: float = 30.0) -> None:
    blue_db, green_db = databases(settings)
    with connect(blue_db, "demo") as blue, connect(green_db, "demo") as green:
        wait_applied(blue, green, timeout)


def _count(conn: psycopg.Connection[tuple[int]]) -> int:
    row = conn.execute("SELECT count(*) FROM lab_items").fetchone()
    return int(row[0]) if row else 0
