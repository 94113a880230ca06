"""What every CLI command shares: options, exit codes, output helpers."""

from __future__ import annotations

import json
import sys
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from config import ConfigError, Settings, load_settings


class Exit(IntEnum):
    OK = 0
    FAILED = 1
    """The operation ran and failed, a breach, or a difference found."""
    USAGE = 2
    """Bad usage or configuration; nothing was changed."""


# No console markup: what we print holds names from the user's databases and configs, and
# rich would eat `[traffic]` or fail on a table named `[/x]`. Styles go through styled().
out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


def styled(*parts: str | tuple[str, str]) -> Text:
    """One line from plain strings and (text, style) pairs, printed as they are."""
    return Text.assemble(*parts)


def print_table(table: Table, console: Console | None = None) -> None:
    """A table that never cuts a cell. On a terminal a long cell folds onto more lines; to a
    pipe, a file or journald (where rich assumes 80 columns) the table is as wide as its
    widest cells need, so a line holds whole names a user can grep."""
    console = console or out
    for column in table.columns:
        column.overflow = "fold"
    if console.is_terminal:
        console.print(table)
    else:
        needed = console.measure(table, options=console.options.update_width(1 << 16)).maximum
        width = console.width
        console.width = max(width, needed)  # print(width=) cannot exceed the console's own
        try:
            console.print(table)
        finally:
            console.width = width


def error_line(message: object) -> Text:
    return styled(("error:", "bold red"), f" {message}")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", envvar="CUTOVER_CONFIG", show_envvar=True,
                 help="The config file (TOML).", dir_okay=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def fail(message: str, code: Exit = Exit.FAILED) -> NoReturn:
    err.print(error_line(message))
    raise typer.Exit(code)


def settings_or_exit(path: Path | None) -> Settings:
    try:
        return load_settings(path)
    except ConfigError as exc:
        hint = "" if path else "\n(no config file given: pass --config FILE or set CUTOVER_CONFIG)"
        err.print(f"{exc}{hint}")
        raise typer.Exit(Exit.USAGE) from None


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
