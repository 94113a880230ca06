"""`cutover lab ...`: the built-in lab of real servers on loopback."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.table import Table

from config.durations import parse_duration
from controller.cli.common import Exit, JsonOption, fail, out, print_json, print_table, styled
from controller.lab.lab import DEFAULT_BASE_PORT, DEFAULT_ROOT, Lab
from controller.lab.load import HttpLoad
from controller.lab.processes import LabError

app = typer.Typer(help="Start, inspect and stop the lab: PostgreSQL blue and green, PgBouncer, "
                  "HAProxy, sample apps and Prometheus, on loopback.", no_args_is_help=True)

DirOption = Annotated[Path, typer.Option("--dir", envvar="CUTOVER_LAB_DIR", show_envvar=True,
                                         help="The lab's state directory.", file_okay=False)]


def open_lab(root: Path, **kwargs: object) -> Lab:
    try:
        return Lab(root, **kwargs)  # type: ignore[arg-type]
    except LabError as exc:
        fail(str(exc))


def existing_lab(root: Path) -> Lab:
    if not (root / "lab.json").exists():
        fail(f"no lab in {root}; start one with `cutover lab up --dir {root}`", Exit.USAGE)
    return open_lab(root)


@app.command()
def up(
    root: DirOption = DEFAULT_ROOT,
    prometheus: Annotated[bool, typer.Option("--with-prometheus", help="Also run Prometheus.")] = False,
    servers_per_env: Annotated[int, typer.Option(min=1, max=8, help="App servers per environment.")] = 1,
    base_port: Annotated[
        int, typer.Option(help="Preferred first port (busy ones are replaced).")] = DEFAULT_BASE_PORT,
    blue_version: Annotated[int | None, typer.Option(
        min=10, help="Blue's PostgreSQL major, e.g. 15 (default: as before, else the newest "
                     "/usr/lib/postgresql).")] = None,
    green_version: Annotated[int | None, typer.Option(
        min=10, help="Green's PostgreSQL major, e.g. 18 (default: as before, else the newest "
                     "/usr/lib/postgresql).")] = None,
) -> None:
    """Start the lab (idempotent: running parts are kept) and write its cutover.toml."""
    lab = open_lab(root, servers_per_env=servers_per_env, with_prometheus=prometheus,
                   base_port=base_port, blue_version=blue_version, green_version=green_version)
    try:
        lab.up(progress=lambda msg: out.print(f"  {msg}"))
    except LabError as exc:
        fail(f"{exc}\n(stop what did start with `cutover lab down --dir {root}`)")
    out.print(f"lab up in {lab.root}; config: {lab.state.config_file}")
    out.print(f"  eval \"$(cutover lab env --dir {lab.root})\"  # point cutover and psql at it")


@app.command()
def down(root: DirOption = DEFAULT_ROOT,
         purge: Annotated[bool, typer.Option(help="Also delete the lab's data.")] = False) -> None:
    """Stop every process the lab started (by PID); --purge removes its files too."""
    lab = existing_lab(root)
    try:
        lab.down(purge=purge, progress=lambda msg: out.print(f"  {msg}"))
    except LabError as exc:
        fail(str(exc))
    out.print("lab down" + (" and purged" if purge else ""))


@app.command()
def status(root: DirOption = DEFAULT_ROOT, as_json: JsonOption = False) -> None:
    """Show each lab part, its port and PID, and whether it runs; exit 1 if any is down."""
    lab = existing_lab(root)
    parts = lab.components()
    if as_json:
        print_json({"dir": str(lab.root), "up": all(c.running for c in parts),
                    "components": [c.__dict__ for c in parts]})
    else:
        table = Table("part", "port", "pid", "state", "version", title=f"lab in {lab.root}")
        for c in parts:
            table.add_row(c.name, str(c.port), str(c.pid or "-"),
                          styled(("running", "green")) if c.running else styled(("stopped", "red")),
                          c.version or "")
        print_table(table)
    if not all(c.running for c in parts):
        raise typer.Exit(Exit.FAILED)


@app.command()
def env(root: DirOption = DEFAULT_ROOT, as_json: JsonOption = False) -> None:
    """Print shell exports pointing cutover, psql and curl at the lab."""
    variables = existing_lab(root).state.env()
    if as_json:
        print_json(variables)
        return
    for key, value in variables.items():
        typer.echo(f"export {key}='{value}'")


@app.command()
def fault(
    target: Annotated[str, typer.Argument(help="blue, green, or one app server (blue1, green2).")],
    error_ratio: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of requests answered 500.")] = 0.0,
    latency: Annotated[str, typer.Option(help="Added latency, e.g. 200ms.")] = "0ms",
    root: DirOption = DEFAULT_ROOT,
) -> None:
    """Set the fault switch of app servers (no options: clear it)."""
    lab = existing_lab(root)
    try:
        latency_ms = parse_duration(latency) * 1000
    except ValueError as exc:
        fail(f"--latency: {exc}", Exit.USAGE)
    servers = lab.state.servers_of(target) or ([target] if target in lab.state.servers else [])
    if not servers:
        fail(f"unknown target {target!r}: expected blue, green or one of "
             f"{', '.join(lab.state.servers)}", Exit.USAGE)
    for server in servers:
        try:
            httpx.post(f"{lab.state.app_url(server)}/admin/fault", timeout=5,
                       json={"error_ratio": error_ratio, "latency_ms": latency_ms}).raise_for_status()
        except httpx.HTTPError as exc:
            fail(f"app server {server} did not take the fault: {exc}")
        out.print(f"{server}: error_ratio={error_ratio} latency={latency_ms:g}ms")


@app.command()
def load(
    rate: Annotated[float, typer.Option(min=1, help="Requests per second.")] = 200,
    duration: Annotated[str, typer.Option(help="How long, e.g. 30s.")] = "10s",
    write_ratio: Annotated[float, typer.Option(min=0, max=1, help="Share of POSTs.")] = 0.1,
    root: DirOption = DEFAULT_ROOT,
    as_json: JsonOption = False,
) -> None:
    """Send HTTP load through HAProxy and report the split and failures (exit 1 on failures)."""
    lab = existing_lab(root)
    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        fail(f"--duration: {exc}", Exit.USAGE)
    with HttpLoad(lab.state.frontend_url, rate, write_ratio) as gen:
        time.sleep(seconds)
    report = gen.report()
    summary = {"requests": report.total, "failed": report.failed, "dropped": report.dropped,
               "by_env": dict(report.by_env()), "p50_ms": report.latency_ms(50),
               "p99_ms": report.latency_ms(99)}
    if as_json:
        print_json(summary)
    else:
        out.print(f"{report.total} requests, {report.failed} failed, by env {dict(report.by_env())}, "
                  f"latency p50 {summary['p50_ms']:.1f} ms p99 {summary['p99_ms']:.1f} ms")
    if report.failed:
        raise typer.Exit(Exit.FAILED)
