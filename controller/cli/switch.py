"""`cutover switch`: move writes to the other database with a pause of milliseconds."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from controller.cli.common import (
    ConfigOption,
    JsonOption,
    err,
    out,
    print_json,
    settings_or_exit,
)
from controller.state.journal import EventKind
from controller.state.store import open_store
from sync.switch import switch


def switch_cmd(
    config: ConfigOption = None,
    to: Annotated[str, typer.Option("--to", help="green (forward) or blue (revert).")] = "green",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Run the prechecks only.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Switch writes: pause the endpoint, fence the old primary, drain, copy sequences, verify,
    replicate back, repoint, resume. Any failure resumes on the old primary (exit 1)."""
    settings = settings_or_exit(config)
    console = err if as_json else out
    # A dry run writes nothing anywhere, the journal included.
    journal = None if dry_run else open_store(settings)

    def record(step: str, details: dict[str, Any]) -> None:
        if journal is not None:
            journal.record(EventKind.SWITCH, {"to": to, "step": step, **details})

    try:
        report = switch(settings, to, dry_run=dry_run, say=lambda m: console.print(f"  {m}"),
                        record=record)
    finally:
        if journal is not None:
            journal.close()
    if as_json:
        print_json(report.as_dict())
    elif not dry_run and not report.already:
        steps = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in report.steps.items())
        out.print(f"switched writes to {to}: pause {report.pause_ms:.0f} ms at {report.lsn}; "
                  f"{report.sequences} sequence(s), {report.tables_verified} table(s) verified ({steps})")
