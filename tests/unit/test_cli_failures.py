"""One mapping from failures to exit codes for every command (controller/cli/failures.py)."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from config import ConfigError
from config.errors import Problem
from controller.cli.common import Exit
from controller.cli.failures import Commands, exit_for
from controller.lab.processes import LabError
from controller.state.journal import StoreError, StoreMissing
from controller.traffic.balancer import BadTrafficInput, TrafficError
from sync.errors import BadInputError, SyncError


@pytest.mark.parametrize(("exc", "code"), [
    (ConfigError([Problem("sync.copy_jobs", "expected a number")]), Exit.USAGE),
    (BadInputError("table public.t has no primary key"), Exit.USAGE),
    (BadTrafficInput("HAProxy has no backend 'x'"), Exit.USAGE),
    (SyncError("green unreachable"), Exit.FAILED),
    (TrafficError("the stats socket is gone"), Exit.FAILED),
    (StoreMissing("no state store"), Exit.FAILED),
    (StoreError("cannot open the journal"), Exit.FAILED),
    (LabError("haproxy -c failed"), Exit.FAILED),
    (RuntimeError("a bug"), None),
], ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v))
def test_each_failure_has_one_exit_code(exc: Exception, code: Exit | None) -> None:
    assert exit_for(exc) == code


def app_raising(exc: Exception) -> typer.Typer:
    app = typer.Typer(cls=Commands)

    @app.command()
    def fails() -> None:
        raise exc

    @app.command()
    def other() -> None:
        pass
    return app


@pytest.mark.parametrize(("exc", "code", "line"), [
    (BadInputError("table public.t has no primary key"), 2, "error: table public.t has no primary key"),
    (SyncError("green unreachable"), 1, "error: green unreachable"),
    (ConfigError([Problem("sync.copy_jobs", "expected a number")], source="c.toml"), 2,
     "invalid configuration in c.toml:"),
])
def test_a_command_that_lets_a_failure_through_exits_with_one_message(
        exc: Exception, code: int, line: str) -> None:
    result = CliRunner().invoke(app_raising(exc), ["fails"])
    assert result.exit_code == code
    assert result.stderr.splitlines()[0] == line
    assert "Traceback" not in result.output


def test_anything_else_is_a_bug_and_shows_as_one() -> None:
    result = CliRunner().invoke(app_raising(RuntimeError("a bug")), ["fails"])
    assert isinstance(result.exception, RuntimeError)
