"""Every command's failures, mapped to exit codes in one place: a known failure is one
message and its exit code, never a traceback."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from config import ConfigError
from controller.cli.common import Exit, err, error_line
from controller.lab.processes import LabError
from controller.state.journal import StoreError
from controller.traffic.balancer import BadTrafficInput, TrafficError
from sync.errors import BadInputError, SyncError

EXITS: tuple[tuple[type[Exception], Exit], ...] = (
    (ConfigError, Exit.USAGE),
    (BadInputError, Exit.USAGE),
    (BadTrafficInput, Exit.USAGE),
    (SyncError, Exit.FAILED),
    (TrafficError, Exit.FAILED),
    (StoreError, Exit.FAILED),
    (LabError, Exit.FAILED),
)
"""First match wins: bad input (nothing was changed) before the failures it specialises."""


def exit_for(exc: BaseException) -> Exit | None:
    """The exit code of a known failure; None for anything else (a bug: let it show)."""
    return next((code for kind, code in EXITS if isinstance(exc, kind)), None)


def report(exc: Exception) -> typer.Exit:
    """Print a known failure the way every command does; the Exit to raise."""
    code = exit_for(exc)
    assert code is not None, exc
    # A ConfigError is its own report: the file, then one line per field.
    err.print(str(exc) if isinstance(exc, ConfigError) else error_line(exc))
    return typer.Exit(code)


class Commands(TyperGroup):
    """The top-level group: whatever command runs, a known failure it lets through ends as
    report() says."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            if exit_for(exc) is None:
                raise
            raise report(exc) from None
