"""The `cutover` command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from controller.cli import configuration as cli_config
from controller.cli import lab as cli_lab
from controller.cli import report as cli_report
from controller.cli import run as cli_run
from controller.cli import switch as cli_switch
from controller.cli import syncing as cli_sync
from controller.cli import traffic as cli_traffic
from controller.cli import watch as cli_watch
from controller.cli.common import Exit, fail
from controller.cli.failures import Commands
from controller.lab.lab import DEFAULT_ROOT
from controller.lab.processes import LabError

app = typer.Typer(
    name="cutover",
    help="Blue-green cutover controller for services backed by PostgreSQL: sync blue to green, "
    "switch writes with a pause of milliseconds, shift traffic in stages, roll back on SLO "
    "breach.\n\nExit codes: 0 ok, 1 failed (breach, difference found), 2 bad usage or config.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    cls=Commands,
)
app.add_typer(cli_config.app, name="config")
app.add_typer(cli_lab.app, name="lab")
app.command()(cli_sync.preflight)
app.command()(cli_sync.sync)
app.command(name="verify")(cli_sync.verify_cmd)
app.command(name="switch")(cli_switch.switch_cmd)
app.command(name="shift")(cli_traffic.shift_cmd)
app.command()(cli_traffic.rollback)
app.command(name="traffic")(cli_traffic.traffic_cmd)
app.command()(cli_traffic.bucket)
app.command(name="watch")(cli_watch.watch_cmd)
app.command()(cli_run.run)
app.command()(cli_run.status)
app.command()(cli_run.history)
app.command(name="report")(cli_report.report_cmd)
for _intent in (cli_run.promote, cli_run.pause, cli_run.resume, cli_run.abort, cli_run.retry):
    app.command()(_intent)


@app.command()
def demo(
    root: Annotated[Path, typer.Option("--dir", help="Where the demo's lab lives.")] = DEFAULT_ROOT,
    seconds: Annotated[float, typer.Option(min=1, help="Seconds of load.")] = 8,
    rate: Annotated[float, typer.Option(min=1, help="Requests per second (at 10 %, green needs "
                                        "~40 a second for the SLO checks' min_samples).")] = 600,
    keep: Annotated[bool, typer.Option(help="Leave the lab running afterwards.")] = False,
) -> None:
    """Run the main job on the built-in lab, with live progress (what `make demo` runs)."""
    from controller.cli.demo import run_demo

    try:
        ok = run_demo(root, seconds, rate, keep)
    except LabError as exc:
        fail(str(exc))
    raise typer.Exit(Exit.OK if ok else Exit.FAILED)


def main() -> None:
    app()
