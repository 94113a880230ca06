"""Finding PostgreSQL installations by major and choosing the client programs for a pair of
servers: pure logic, with fake installations (no servers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.lab import postgres
from controller.lab.state import LabState
from sync import pgtools
from sync.errors import SyncError
from sync.pgtools import Installation, choose_tools


def found(*majors: int) -> dict[int, Installation]:
    return {m: Installation(Path(f"/pg/{m}/bin"), m, f"{m}.1") for m in majors}


@pytest.mark.parametrize(("text", "expected"), [
    ("pg_dump (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)\n", (15, "15.14")),
    ("pg_dump (PostgreSQL) 18.6\n", (18, "18.6")),
    ("pg_dump (PostgreSQL) 19beta1\n", (19, "19beta1")),
    ("not postgres", None),
])
def test_parses_pg_dump_version(text: str, expected: tuple[int, str] | None) -> None:
    assert pgtools.parse_version(text) == expected


def test_server_major_from_version_num() -> None:
    assert pgtools.server_major(150014) == 15
    assert pgtools.server_major(180006) == 18


@pytest.mark.parametrize(("blue", "green", "installed", "chosen"), [
    ((15, 15, (15, 17, 18), 15)),
    ((15, 18, (15, 17, 18), 18)),
    ((15, 17, (15, 17, 18), 17)),
    ((15, 16, (15, 17, 18), 17)),  # the oldest one new enough
    ((18, 15, (15, 17, 18), 18)),  # a downgrade: pg_dump must still read blue
])
def test_chooses_the_oldest_installation_new_enough_for_both(
        blue: int, green: int, installed: tuple[int, ...], chosen: int) -> None:
    tools = choose_tools(blue, green, found(*installed))
    assert tools.major == chosen
    assert tools.path("pg_dump") == Path(f"/pg/{chosen}/bin/pg_dump")


def test_an_upgrade_with_tools_new_enough_has_no_warning() -> None:
    assert choose_tools(15, 18, found(15, 18)).warnings() == []


def test_none_new_enough_takes_the_newest_and_says_so() -> None:
    tools = choose_tools(15, 18, found(15, 17))
    assert tools.major == 17
    [warning] = tools.warnings()
    assert "older than green's server (PostgreSQL 18)" in warning
    assert "postgresql-client-18" in warning


def test_a_downgrade_is_warned_about() -> None:
    [warning] = choose_tools(18, 15, found(15, 18)).warnings()
    assert "older than blue's 18" in warning
    assert "transaction_timeout" in warning


def test_no_installation_at_all_says_what_to_install() -> None:
    with pytest.raises(SyncError, match="CUTOVER_PG_BINDIR"):
        choose_tools(15, 15, {})


def fake_bindir(root: Path, version: str, programs: tuple[str, ...] = pgtools.CLIENT_PROGRAMS) -> Path:
    bindir = root / version / "bin"
    bindir.mkdir(parents=True)
    for program in programs:
        path = bindir / program
        path.write_text(f"#!/bin/sh\necho '{program} (PostgreSQL) {version}'\n")
        path.chmod(0o755)
    return bindir


def test_finds_installations_in_cutover_pg_bindir_first(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = fake_bindir(tmp_path, "16.2"), fake_bindir(tmp_path, "42.0")
    monkeypatch.setenv(pgtools.ENV_BINDIR, f"{a}:{b}")
    found = pgtools.installations()
    assert found[16].bindir == a
    assert found[42] == Installation(b, 42, "42.0")
    assert pgtools.pg_bindir() == a
    assert choose_tools(15, 16, found).bindir == a


def test_a_server_needs_initdb_and_postgres(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clients = fake_bindir(tmp_path, "41.0")
    server = fake_bindir(tmp_path, "43.1", (*pgtools.CLIENT_PROGRAMS, *pgtools.SERVER_PROGRAMS))
    monkeypatch.setenv(pgtools.ENV_BINDIR, f"{clients}:{server}")
    assert pgtools.server_bindir(43) == server
    with pytest.raises(SyncError, match="no PostgreSQL 41 server installed"):
        pgtools.server_bindir(41)


def test_version_check_summarises_versions_and_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pgtools, "installations", lambda programs=(): found(15, 17))
    ok = pgtools.version_check(150014, 170002)
    assert (ok.status, ok.blue_version, ok.green_version) == ("pass", 150014, 170002)
    assert ok.tools["pg_restore"] == "/pg/17/bin/pg_restore (17.1)"
    old = pgtools.version_check(150014, 180001)
    assert old.status == "warn"
    assert "postgresql-client-18" in old.fix
    down = pgtools.version_check(170002, 150014)
    assert down.status == "warn"
    assert "downgrade" in down.detail
    monkeypatch.setattr(pgtools, "installations", lambda programs=(): {})
    assert pgtools.version_check(150014, 150014).status == "fail"


def test_lab_settings_by_major() -> None:
    assert "max_active_replication_origins" not in postgres.settings_for(15)
    assert postgres.settings_for(18)["max_active_replication_origins"] == "20"
    assert postgres.settings_for(18)["wal_level"] == "logical"


def test_a_lab_state_from_before_versions_still_loads() -> None:
    state = LabState.model_validate_json(
        '{"root": "/tmp/x", "user": null, "servers": {"blue1": "blue"}, "ports": {"blue_pg": 1}}')
    assert (state.version("blue"), state.version("green"), state.pg_versions) == (None, None, {})
