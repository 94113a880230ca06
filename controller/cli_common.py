"""What every CLI command shares: options, exit codes, output helpers."""

from __future__ import annotations

import json
import sys
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from config import ConfigError, Settings, load_settings


class Exit(IntEnum):
    OK = 0
    FAILED = 1
    """The operation ran and failed, a breach, or a difference found."""
    USAGE = 2
    """Bad usage or configuration; nothing was changed."""


out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", envvar="CUTOVER_CONFIG", show_envvar=True,
                 help="The config file (TOML).", dir_okay=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def fail(message: str, code: Exit = Exit.FAILED) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", markup=True)
    raise typer.Exit(code)


def settings_or_exit(path: Path | None) -> Settings:
    try:
        return load_settings(path)
    except ConfigError as exc:
        hint = "" if path else "\n(no config file given: pass --config FILE or set CUTOVER_CONFIG)"
        err.print(f"{exc}{hint}", markup=False)
        raise typer.Exit(Exit.USAGE) from None


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
