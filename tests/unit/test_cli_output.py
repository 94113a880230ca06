"""What the CLI prints holds names from the user's databases and configs: they must print as
they are, brackets included (rich markup would eat `[traffic]` and fail on `[/x]`)."""

from __future__ import annotations

import pytest
import typer

from controller.cli_common import fail
from controller.cli_sync import _print_preflight
from sync.preflight import Check, Report, Status

HOSTILE = 'public."[/x] [bold]t"'


def test_an_error_naming_a_config_section_prints_the_brackets(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit):
        fail(f"watch needs a [traffic] section; table {HOSTILE}")
    assert f"error: watch needs a [traffic] section; table {HOSTILE}" in capsys.readouterr().err


def test_a_table_with_brackets_in_its_name_prints_in_the_preflight_table(
        capsys: pytest.CaptureFixture[str]) -> None:
    _print_preflight(Report([Check("primary keys", Status.FAIL, HOSTILE,
                                   fix=f"ALTER TABLE {HOSTILE} REPLICA IDENTITY FULL")]))
    printed = capsys.readouterr().out
    assert HOSTILE in printed
    assert f"ALTER TABLE {HOSTILE} REPLICA IDENTITY FULL" in printed
    assert "fail" in printed
