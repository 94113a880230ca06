"""`cutover report`: the journal as one self-contained HTML page (an SVG timeline and a table),
to attach to a change ticket or a post-mortem."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from config import Settings
from controller.cli.common import ConfigOption, Exit, err, out, settings_or_exit
from controller.report.page import render_report
from controller.state.journal import Event
from controller.state.store import open_store


def report_cmd(
    config: ConfigOption = None,
    output: Annotated[Path, typer.Option("--output", "-o", dir_okay=False,
                                         help="Where to write the HTML page.")] = Path("cutover-report.html"),
) -> None:
    """Write an HTML report of the cutover (timeline, checks, rollbacks) from the journal."""
    settings = settings_or_exit(config)
    events = _read(settings)
    try:
        output.write_text(render_report(events, settings.service), encoding="utf-8")
    except OSError as exc:
        err.print(f"error: cannot write {output}: {exc.strerror or exc}")
        raise typer.Exit(Exit.FAILED) from None
    out.print(f"wrote {output} ({len(events):,} events)")


def _read(settings: Settings) -> list[Event]:
    journal = open_store(settings, existing=True)
    try:
        return journal.events()
    finally:
        journal.close()
