"""`cutover config check|show|schema` and the top-level help, through Typer's test runner.

Click >= 8.2's CliRunner keeps stdout and stderr apart (result.stdout, result.stderr) and
interleaves both in result.output; errors go to stderr, data to stdout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controller.cli import app

EXAMPLES = Path(__file__).parents[2] / "config" / "examples"

GOOD = """\
service = "records-fhir"

[blue.database]
dsn = "host=pg-blue dbname=records user=cutover"

[green.database]
dsn = "host=pg-green dbname=records user=cutover"

[switchover.pgbouncer]
databases_file = "databases.ini"

[traffic]
stages = [{ weight = 10, bake = "1m" }, { weight = 50, bake = "1m" }, { weight = 100, bake = "5m" }]

[traffic.haproxy]
socket = "haproxy.sock"
"""

runner = CliRunner()



@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "cutover.toml"
    path.write_text(GOOD)
    return path


def test_check_good_file_exits_0(good: Path) -> None:
    result = runner.invoke(app, ["config", "check", "--config", str(good)])
    assert result.exit_code == 0, result.output
    assert "config ok" in result.stdout
    assert "records-fhir" in result.stdout
    assert "10 % -> 50 % -> 100 %" in result.stdout
    assert result.stderr == ""


def test_check_json(good: Path) -> None:
    result = runner.invoke(app, ["config", "check", "-c", str(good), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"ok": True, "service": "records-fhir"}


def test_check_reads_cutover_config_variable(good: Path) -> None:
    result = runner.invoke(app, ["config", "check"], env={"CUTOVER_CONFIG": str(good)})
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_check_examples(example: Path) -> None:
    result = runner.invoke(app, ["config", "check", "--config", str(example)])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(("old", "new", "field"), [
    ("weight = 50", "weight = 10", "traffic.stages"),  # 10, 10, 100: not rising
    ("{ weight = 10", "{ weight = 0", "traffic.stages[0].weight"),
    ("weight = 100", "weight = 101", "traffic.stages[2].weight"),
    ('bake = "5m"', 'bake = "5 minutes"', "traffic.stages[2].bake"),
    ('socket = "haproxy.sock"', 'socket = "haproxy.sock"\naddress = "127.0.0.1:9999"', "traffic.haproxy"),
])
def test_check_broken_file_exits_2_naming_the_field(tmp_path: Path, old: str, new: str, field: str) -> None:
    assert old in GOOD
    path = tmp_path / "broken.toml"
    path.write_text(GOOD.replace(old, new, 1))
    result = runner.invoke(app, ["config", "check", "--config", str(path)])
    assert result.exit_code == 2, result.output
    assert f"{field}: " in result.stderr
    assert str(path) in result.stderr
    assert result.stdout == ""


def test_check_unknown_key_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "typo.toml"
    path.write_text(GOOD.replace("[switchover.pgbouncer]", "[switchover.pgbouncer]\ndatabase = [\"x\"]"))
    result = runner.invoke(app, ["config", "check", "--config", str(path)])
    assert result.exit_code == 2
    assert "switchover.pgbouncer.database: unknown setting" in result.output


def test_check_secret_in_file_exits_2_naming_the_env_var(tmp_path: Path) -> None:
    path = tmp_path / "secret.toml"
    path.write_text(GOOD + '\n[notify]\nwebhook = "https://hooks.example/T0/B0/tok-xyz"\n')
    result = runner.invoke(app, ["config", "check", "--config", str(path)])
    assert result.exit_code == 2
    assert "CUTOVER_NOTIFY__WEBHOOK" in result.output
    assert "tok-xyz" not in result.output


def test_check_missing_file_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    result = runner.invoke(app, ["config", "check", "--config", str(missing)])
    assert result.exit_code == 2
    assert "missing.toml" in result.output


def test_check_without_any_config_explains_how_to_give_one() -> None:
    result = runner.invoke(app, ["config", "check"])
    assert result.exit_code == 2
    assert "--config" in result.stderr
    assert "CUTOVER_CONFIG" in result.stderr


SECRETS = {
    "CUTOVER_BLUE__DATABASE__PASSWORD": "blue-pw-93ae1",
    "CUTOVER_GREEN__DATABASE__PASSWORD": "green-pw-93ae2",
    "CUTOVER_NOTIFY__WEBHOOK": "https://hooks.example/services/T0/B0/tok-93ae3",
}


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "text"])
def test_show_masks_secrets(good: Path, as_json: bool) -> None:
    args = ["config", "show", "--config", str(good)] + (["--json"] if as_json else [])
    result = runner.invoke(app, args, env=SECRETS)
    assert result.exit_code == 0, result.output
    for value in SECRETS.values():
        assert value not in result.output
    data = json.loads(result.stdout)
    assert data["blue"]["database"]["password"] == "**********"
    assert data["green"]["database"]["password"] == "**********"
    assert data["notify"]["webhook"] == "**********"
    assert data["service"] == "records-fhir"
    assert data["traffic"]["stages"][0] == {"weight": 10, "match": None, "bake": "1m", "gate": "none"}


def test_show_masks_secrets_from_the_credentials_directory(good: Path, tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "blue__database__password").write_text("dir-pw-5521")
    result = runner.invoke(app, ["config", "show", "--json", "--config", str(good)],
                           env={"CREDENTIALS_DIRECTORY": str(credentials)})
    assert result.exit_code == 0, result.output
    assert "dir-pw-5521" not in result.output
    assert json.loads(result.stdout)["blue"]["database"]["password"] == "**********"


def test_show_applies_environment_overrides(good: Path) -> None:
    result = runner.invoke(app, ["config", "show", "--json", "--config", str(good)],
                           env={"CUTOVER_SYNC__COPY_JOBS": "7"})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sync"]["copy_jobs"] == 7


def test_schema_prints_json_schema() -> None:
    result = runner.invoke(app, ["config", "schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    assert "properties" in schema
    assert {"blue", "green", "sync", "switchover", "traffic", "slo", "hooks"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False


def test_help_lists_the_command_groups() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    for command in ("config", "lab", "demo"):
        assert command in result.stdout


def test_config_without_subcommand_shows_help() -> None:
    result = runner.invoke(app, ["config"])
    assert result.exit_code == 2
    for command in ("check", "show", "schema"):
        assert command in result.output


@pytest.mark.parametrize(("listen", "warned"), [("0.0.0.0:9187", True), ("10.0.0.7:9187", True),
                                                ("[::]:9187", True), ("127.0.0.1:9187", False),
                                                ("[::1]:9187", False), ("localhost:9187", False)])
def test_a_status_address_other_hosts_can_reach_is_warned_about(tmp_path: Path, listen: str,
                                                                 warned: bool) -> None:
    """/status and /metrics have no authentication: binding them beyond loopback is allowed
    (behind a firewall it can be right) but never silent."""
    config = tmp_path / "cutover.toml"
    config.write_text(GOOD + f'\n[metrics]\nlisten = "{listen}"\n')
    done = runner.invoke(app, ["config", "check", "--config", str(config)])
    assert done.exit_code == 0, done.output
    assert ("reachable from other hosts" in done.stderr) is warned, done.stderr
