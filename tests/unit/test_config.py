"""Loading the config: examples, defaults, every bad input named by its field path, the
environment and credentials directory, secret masking, and random bad input (hypothesis)."""

from __future__ import annotations

import copy
import json
import math
import tempfile
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydantic import BaseModel

from config import ConfigError, Problem, Settings, load_settings, masked_dump
from config.settings import need_switchover, need_traffic, secret_paths
from tests.tomltext import to_toml

EXAMPLES = Path(__file__).parents[2] / "config" / "examples"

MINIMAL_TOML = """\
[blue.database]
dsn = "host=pg-blue dbname=records user=cutover"

[green.database]
dsn = "host=pg-green dbname=records user=cutover"

[switchover.pgbouncer]
databases_file = "databases.ini"

[traffic.haproxy]
socket = "haproxy.sock"
"""

# The same minimal config as data, to change one setting at a time.
BASE: dict[str, Any] = {
    "blue": {"database": {"dsn": "host=pg-blue dbname=records user=cutover"}},
    "green": {"database": {"dsn": "host=pg-green dbname=records user=cutover"}},
    "switchover": {"pgbouncer": {"databases_file": "databases.ini"}},
    "traffic": {"haproxy": {"socket": "haproxy.sock"}},
}



# --- helpers: a TOML writer (the standard library only reads TOML) -------------------------

def with_value(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(data)
    *parents, last = dotted.split(".")
    node = out
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return out


def without(data: dict[str, Any], dotted: str) -> dict[str, Any]:
    out = copy.deepcopy(data)
    *parents, last = dotted.split(".")
    node = out
    for key in parents:
        node = node[key]
    del node[last]
    return out


def write(directory: Path, text: str, name: str = "cutover.toml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(directory: Path, data: dict[str, Any]) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(directory, to_toml(data)))
    return caught.value.problems


# --- examples and defaults ---------------------------------------------------------------

def example_files() -> list[Path]:
    return sorted(EXAMPLES.glob("*.toml"))


def test_there_are_examples() -> None:
    assert example_files(), f"no *.toml in {EXAMPLES}"
    assert EXAMPLES / "production.toml" in example_files()


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_every_example_loads(path: Path) -> None:
    settings = load_settings(path)
    assert need_traffic(settings, "test").stages[-1].weight == 100
    json.dumps(masked_dump(settings))


def test_production_example_speaks_the_seed_guides_criteria() -> None:
    settings = load_settings(EXAMPLES / "production.toml")
    assert settings.service == "records-fhir"
    assert [s.weight for s in need_traffic(settings, "test").stages] == [10, 50, 100]
    assert all(s.bake > 0 for s in need_traffic(settings, "test").stages)
    checks = {c.name: c for c in settings.slo}
    assert {c.source.value for c in settings.slo} >= {"haproxy", "prometheus", "http", "lag", "drift"}
    assert checks["latency"].max_vs_blue == 1.25
    assert checks["data-drift"].max == 0.001
    assert {h.at.value for h in settings.hooks} >= {"before_switch", "before_traffic"}
    assert settings.blue.database is not None
    assert settings.green.database is not None
    assert settings.blue.database.dsn != settings.green.database.dsn


def test_minimal_config_loads_with_sensible_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, MINIMAL_TOML))
    assert settings.service == "app"
    traffic = need_traffic(settings, "test")
    assert [(s.weight, s.bake) for s in traffic.stages] == [(10, 60.0), (50, 60.0), (100, 300.0)]
    assert traffic.driver.value == "haproxy"
    assert traffic.blue_servers == ["blue"]
    assert need_traffic(settings, "test").green_servers == ["green"]
    assert settings.sync.mode.value == "logical"
    assert settings.sync.copy_jobs == 4
    assert settings.sync.max_lag_bytes == 16 * 1024 * 1024
    assert need_switchover(settings, "test").method.value == "pgbouncer"
    assert need_switchover(settings, "test").fence_timeout == 5.0
    assert need_switchover(settings, "test").reverse_replication is True
    assert settings.rollback.on_breach == "rollback"
    assert settings.rollback.database == "stay"
    assert settings.slo == []
    assert settings.hooks == []
    assert settings.metrics.listen == "127.0.0.1:9187"
    assert settings.state.backend == "sqlite"
    assert settings.state.path == tmp_path / "cutover-state.db"
    assert settings.notify.webhook is None


def test_shared_database_needs_no_database_sections(tmp_path: Path) -> None:
    text = '[switchover]\nmethod = "none"\n[traffic.haproxy]\naddress = "127.0.0.1:9999"\n'
    settings = load_settings(write(tmp_path, text))
    assert settings.blue.database is None
    assert need_switchover(settings, "test").method.value == "none"


def test_human_durations_and_sizes(tmp_path: Path) -> None:
    data = with_value(BASE, "sync", {"interval": "1h30m", "max_lag": "250ms", "max_lag_bytes": "1GiB"})
    settings = load_settings(write(tmp_path, to_toml(data)))
    assert settings.sync.interval == 5400.0
    assert settings.sync.max_lag == 0.25
    assert settings.sync.max_lag_bytes == 1024**3


# --- every bad input names its field ----------------------------------------------------------

_PROM_SLO = {"name": "err", "source": "prometheus", "query": "up", "max": 1}
_LAG_SLO = {"name": "lag", "source": "lag", "max": 5}

INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    ("stages not rising", with_value(BASE, "traffic.stages",
                                     [{"weight": 50}, {"weight": 10}, {"weight": 100}]),
     "traffic.stages", "must rise"),
    ("stages repeating", with_value(BASE, "traffic.stages",
                                    [{"weight": 10}, {"weight": 10}, {"weight": 100}]),
     "traffic.stages", "must rise"),
    ("last stage not 100", with_value(BASE, "traffic.stages", [{"weight": 10}, {"weight": 50}]),
     "traffic.stages", "last stage must be 100"),
    ("no stages", with_value(BASE, "traffic.stages", []), "traffic.stages", "at least 1"),
    ("weight 0", with_value(BASE, "traffic.stages", [{"weight": 0}, {"weight": 100}]),
     "traffic.stages[0].weight", "missing; a stage gives green a share (1-100)"),
    ("weight 101", with_value(BASE, "traffic.stages", [{"weight": 10}, {"weight": 101}]),
     "traffic.stages[1].weight", "less than or equal to 100"),
    ("typo at top level", with_value(BASE, "servise", "records"), "servise", "unknown setting"),
    ("typo nested", with_value(BASE, "sync.copy_job", 3), "sync.copy_job", "unknown setting"),
    ("typo in a list item", with_value(BASE, "slo", [{**_LAG_SLO, "maks": 1}]),
     "slo[0].maks", "unknown setting"),
    ("pgbouncer without its section", without(BASE, "switchover.pgbouncer"),
     "switchover.pgbouncer", "[switchover.pgbouncer]"),
    ("command without its section", with_value(BASE, "switchover.method", "command"),
     "switchover.command", "[switchover.command]"),
    ("haproxy with socket and address", with_value(BASE, "traffic.haproxy.address", "127.0.0.1:9999"),
     "traffic.haproxy", "exactly one of socket"),
    ("haproxy with neither", with_value(BASE, "traffic.haproxy", {"backend": "app"}),
     "traffic.haproxy", "exactly one of socket"),
    ("nginx driver without its section", with_value(BASE, "traffic.driver", "nginx"),
     "traffic.nginx", "[traffic.nginx]"),
    ("server both blue and green", with_value(with_value(BASE, "traffic.blue_servers", ["b1", "b2"]),
                                              "traffic.green_servers", ["g1", "b2"]),
     "traffic.green_servers", "blue_servers"),
    ("bad server name", with_value(BASE, "traffic.blue_servers", ["blue one"]),
     "traffic.blue_servers[0]", "expected a name"),
    ("duplicate slo names", with_value(BASE, "slo", [_LAG_SLO, {**_LAG_SLO, "source": "drift"}]),
     "slo[1].name", "unique"),
    ("slo without any limit", with_value(BASE, "slo", [{"name": "lag", "source": "lag"}]),
     "slo[0]", "at least one limit"),
    ("slo limit nan", with_value(BASE, "slo", [{**_LAG_SLO, "max": math.nan}]),
     "slo[0].max", "finite"),
    ("unknown slo source", with_value(BASE, "slo", [{**_LAG_SLO, "source": "graphite"}]),
     "slo[0].source", "'prometheus'"),
    ("prometheus slo without sources.prometheus", with_value(BASE, "slo", [_PROM_SLO]),
     "sources.prometheus", "[sources.prometheus]"),
    ("http slo without health urls", with_value(BASE, "slo", [{"name": "h", "source": "http", "max": 1}]),
     "blue.health_url", "source 'http'"),
    ("database missing", without(BASE, "green.database"), "green.database", "switchover.method"),
    ("duration in words", with_value(BASE, "sync.interval", "5 minutes"),
     "sync.interval", "expected a duration"),
    ("negative duration", with_value(BASE, "switchover.fence_timeout", -1),
     "switchover.fence_timeout", "duration"),
    ("zero fence timeout", with_value(BASE, "switchover.fence_timeout", "0s"),
     "switchover.fence_timeout", "longer than 0s"),
    ("bad bake", with_value(BASE, "traffic.stages", [{"weight": 100, "bake": "soon"}]),
     "traffic.stages[0].bake", "expected a duration"),
    ("unknown gate", with_value(BASE, "traffic.stages", [{"weight": 100, "gate": "approval"}]),
     "traffic.stages[0].gate", "'promote'"),
    ("a hook gate with no hook", with_value(BASE, "traffic.stages", [{"weight": 100, "gate": "hook"}]),
     "traffic.stages[0].gate", "no [[hooks]] at = \"approve_stage\""),
    ("a hook gate with only an ignored hook", with_value(with_value(BASE, "traffic.stages", [
        {"weight": 100, "gate": "hook"}]), "hooks", [
            {"at": "approve_stage", "command": ["true"], "on_failure": "ignore"}]),
     "traffic.stages[0].gate", "on_failure other than"),
    ("a match value nginx reads as a regex", with_value(BASE, "traffic.stages", [
        {"match": {"header": "X-Staff", "value": "~1"}}, {"weight": 100}]),
     "traffic.stages[0].match.value", "pattern"),
    ("a match value nginx reserves", with_value(BASE, "traffic.stages", [
        {"match": {"header": "X-Staff", "value": "default"}}, {"weight": 100}]),
     "traffic.stages[0].match.value", "reserves"),
    ("a relative match acl", with_value(BASE, "traffic.haproxy.match_acl", "match.acl"),
     "traffic.haproxy.match_acl", "absolute path"),
    ("nginx sticky by cookie with a host name", with_value(with_value(with_value(
        BASE, "traffic.driver", "nginx"), "traffic.nginx", {
            "upstream_file": "/etc/nginx/up.conf", "servers": {"blue": "blue.internal:80",
                                                               "green": "10.0.0.2:80"}}),
        "traffic.sticky", {"by": "cookie"}),
     "traffic.nginx.servers.blue", "need an IP address"),
    ("nginx match stages with an upstream not a variable name", with_value(with_value(with_value(
        BASE, "traffic.driver", "nginx"), "traffic.nginx", {
            "upstream_file": "/etc/nginx/up.conf", "upstream": "my-app",
            "servers": {"blue": "10.0.0.1:80", "green": "10.0.0.2:80"}}),
        "traffic.stages", [{"match": {"header": "X-Staff", "value": "1"}}, {"weight": 100}]),
     "traffic.nginx.upstream", "letters, digits"),
    ("sticky through a command", with_value(with_value(BASE, "traffic.driver", "command"),
                                            "traffic.sticky", {"by": "cookie"}),
     "traffic.sticky", "by cookie need driver 'haproxy' or 'nginx'"),
    ("sticky by something else", with_value(BASE, "traffic.sticky", {"by": "ip"}),
     "traffic.sticky.by", "'cookie'"),
    ("sticky by header without the header", with_value(BASE, "traffic.sticky", {"by": "header"}),
     "traffic.sticky.header", "X-User-Id"),
    ("sticky by header through HAProxy", with_value(BASE, "traffic.sticky", {"by": "header",
                                                                           "header": "X-User-Id"}),
     "traffic.sticky", "by header need driver 'nginx' or 'sql'"),
    ("a stage without a weight", with_value(BASE, "traffic.stages", [{"bake": "1m"}, {"weight": 100}]),
     "traffic.stages[0].weight", "missing"),
    ("a match stage with a weight", with_value(BASE, "traffic.stages", [
        {"weight": 5, "match": {"header": "X-Staff", "value": "1"}}, {"weight": 100}]),
     "traffic.stages[0].weight", "give it no weight"),
    ("a match stage after a weighted one", with_value(BASE, "traffic.stages", [
        {"weight": 10}, {"match": {"header": "X-Staff", "value": "1"}}, {"weight": 100}]),
     "traffic.stages", "match stages come first"),
    ("only match stages", with_value(BASE, "traffic.stages", [
        {"match": {"header": "X-Staff", "value": "1"}}]),
     "traffic.stages", "weighted stages must rise to 100"),
    ("a match header with a space", with_value(BASE, "traffic.stages", [
        {"match": {"header": "X Staff", "value": "1"}}, {"weight": 100}]),
     "traffic.stages[0].match.header", "pattern"),
    ("a match value with a separator", with_value(BASE, "traffic.stages", [
        {"match": {"header": "X-Staff", "value": "1;clear acl"}}, {"weight": 100}]),
     "traffic.stages[0].match.value", "pattern"),
    ("a match stage without the acl", with_value(BASE, "traffic.stages", [
        {"match": {"header": "X-Staff", "value": "1"}}, {"weight": 100}]),
     "traffic.stages[0].match", "match_acl and match_backend"),
    ("match stages on two headers", with_value(BASE, "traffic.stages", [
        {"match": {"header": "X-Staff", "value": "1"}}, {"match": {"header": "X-Beta", "value": "1"}},
        {"weight": 100}]),
     "traffic.stages", "one header"),
    ("huge duration", with_value(BASE, "sync.interval", 10**400), "sync.interval", "finite"),
    ("bad size", with_value(BASE, "sync.max_lag_bytes", "16 XB"), "sync.max_lag_bytes", "size"),
    ("huge size", with_value(BASE, "sync.max_lag_bytes", "9" * 400 + "MB"),
     "sync.max_lag_bytes", "too large"),
    ("copy_jobs out of range", with_value(BASE, "sync.copy_jobs", 0), "sync.copy_jobs", "greater than"),
    ("wrong type", with_value(BASE, "sync.copy_jobs", "four"), "sync.copy_jobs", "integer"),
    ("a bool for a number", with_value(BASE, "sync.copy_jobs", True), "sync.copy_jobs",
     "expected a number, got true"),
    ("a word for a bool", with_value(BASE, "metrics.enabled", "yes"), "metrics.enabled",
     "expected true or false"),
    ("a number for a bool", with_value(BASE, "metrics.enabled", 1), "metrics.enabled",
     "expected true or false"),
    ("bad listen address", with_value(BASE, "metrics.listen", "localhost"),
     "metrics.listen", "host:port"),
    ("hook with command and url", with_value(BASE, "hooks", [
        {"at": "before_switch", "command": ["true"], "url": "http://127.0.0.1/x"}]),
     "hooks[0]", "exactly one of command"),
    ("hook with empty command", with_value(BASE, "hooks", [{"at": "before_switch", "command": []}]),
     "hooks[0].command", "argument"),
    ("hook with an unknown placeholder", with_value(BASE, "hooks", [
        {"at": "after_switch", "command": ["./notify.sh", "{stag}"]}]),
     "hooks[0].command", "unknown placeholder {stag}"),
    ("unparsable DSN", with_value(BASE, "blue.database.dsn", "host='pg"), "blue.database.dsn",
     "not a valid PostgreSQL connection string"),
    ("DSN with NUL", with_value(BASE, "blue.database.dsn", "host=pg\x00evil"), "blue.database.dsn",
     "NUL"),
    ("path with NUL", with_value(BASE, "state.path", "state\x00.db"), "state.path", "NUL"),
    ("empty DSN", with_value(BASE, "blue.database.dsn", ""), "blue.database.dsn", "empty"),
    ("NUL in a schema", with_value(BASE, "sync.schemas", ["public", "a\x00b"]), "sync.schemas[1]", "NUL"),
    ("a table of four parts", with_value(BASE, "sync.tables", ["a.b.c.d"]), "sync.tables[0]",
     "name or schema.name"),
    ("NUL in a flag", with_value(BASE, "traffic", {
        "driver": "sql", "sql": {"dsn": "host=db dbname=flags", "feature": "f\x00"}}),
     "traffic.sql.feature", "NUL"),
    ("a system table for flags", with_value(BASE, "traffic", {
        "driver": "sql", "sql": {"dsn": "host=db dbname=flags", "feature": "f",
                                 "table": "pg_catalog.pg_authid"}}),
     "traffic.sql.table", "PostgreSQL's own"),
    ("DSN with a port that is no number", with_value(BASE, "green.database.dsn", "host=pg port=abc"),
     "green.database.dsn", "not a TCP port"),
    ("admin DSN with a password", with_value(BASE, "switchover.pgbouncer.admin_dsn",
                                             "postgresql://pgbouncer:s3cret@127.0.0.1:6432/pgbouncer"),
     "switchover.pgbouncer.admin_dsn", "CUTOVER_SWITCHOVER__PGBOUNCER__ADMIN_PASSWORD"),
    ("state DSN with a password", with_value(with_value(BASE, "state.backend", "postgres"), "state.dsn",
                                             "host=db dbname=cutover password=s3cret"),
     "state.dsn", "CUTOVER_STATE__PASSWORD"),
    ("sql flag DSN with a password", with_value(BASE, "traffic", {
        "driver": "sql", "sql": {"dsn": "host=db dbname=flags sslpassword=s3cret", "feature": "f"}}),
     "traffic.sql.dsn", "CUTOVER_TRAFFIC__SQL__PASSWORD"),
    ("duration in other digits", with_value(BASE, "sync.interval", "\u0661s"), "sync.interval",
     "duration"),
    ("duration beyond any use", with_value(BASE, "traffic.haproxy.timeout", "999999999999999999999999d"),
     "traffic.haproxy.timeout", "at most"),
    ("statement timeout near the float limit", with_value(BASE, "blue.database.statement_timeout",
                                                           1.7e308), "blue.database.statement_timeout",
     "at most"),
    ("postgres state without dsn", with_value(BASE, "state.backend", "postgres"), "state", "dsn"),
    ("empty state path", with_value(BASE, "state.path", ""), "state.path", "empty"),
    ("state path that is a directory", with_value(BASE, "state.path", "/tmp"), "state.path",
     "is a directory"),
    ("state path that is the config's directory", with_value(BASE, "state.path", "."), "state.path",
     "is a directory"),
]


@pytest.mark.parametrize(("data", "path", "message"),
                         [pytest.param(d, p, m, id=i) for i, d, p, m in INVALID])
def test_bad_input_names_the_field(tmp_path: Path, data: dict[str, Any], path: str, message: str) -> None:
    problems = problems_of(tmp_path, data)
    assert path in [p.path for p in problems], problems
    assert any(message in p.message for p in problems if p.path == path), problems


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    data = with_value(with_value(BASE, "sync.copy_jobs", 0), "metrics.listen", "nowhere")
    assert {p.path for p in problems_of(tmp_path, data)} == {"sync.copy_jobs", "metrics.listen"}


@pytest.mark.parametrize("dsn", ["postgresql://cutover:s3cr3t-pw@pg-blue/records",
                                 "host=pg-blue user=cutover password=s3cr3t-pw"])
def test_password_in_dsn_is_refused_without_repeating_it(tmp_path: Path, dsn: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, to_toml(with_value(BASE, "blue.database.dsn", dsn))))
    [problem] = caught.value.problems
    assert problem.path == "blue.database.dsn"
    assert "CUTOVER_<ENV>__DATABASE__PASSWORD" in problem.message
    assert "s3cr3t-pw" not in str(caught.value)


@pytest.mark.parametrize("dotted", [".".join(p) for p in secret_paths(Settings)])
def test_secret_in_the_file_is_refused_naming_env_var_and_credentials_file(
        tmp_path: Path, dotted: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, to_toml(with_value(BASE, dotted, "hunter2-secret"))))
    [problem] = caught.value.problems
    assert problem.path == dotted
    assert "CUTOVER_" + dotted.replace(".", "__").upper() in problem.message
    assert "$CREDENTIALS_DIRECTORY/" + dotted.replace(".", "__") in problem.message
    assert "hunter2-secret" not in str(caught.value)


def test_database_password_in_file_message(tmp_path: Path) -> None:
    text = MINIMAL_TOML.replace('user=cutover"\n\n[green', 'user=cutover"\npassword = "pw"\n\n[green', 1)
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    [problem] = caught.value.problems
    assert problem.path == "blue.database.password"
    assert "CUTOVER_BLUE__DATABASE__PASSWORD" in problem.message
    assert "blue__database__password" in problem.message


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[blue\ndsn = 1\n", name="broken.toml")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(path) in str(caught.value)
    assert "TOML" in caught.value.problems[0].message


def test_deeply_nested_toml_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_settings(path)


def test_undecodable_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'service = "caf\xe9"\n')
    with pytest.raises(ConfigError, match=str(path)):
        load_settings(path)


def test_missing_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml") as caught:
        load_settings(path)
    assert "does not exist" in str(caught.value)


def test_a_directory_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path)


def test_empty_file_loads_with_no_switchover_and_no_traffic(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""))
    assert settings.switchover is None
    assert settings.traffic is None
    with pytest.raises(ConfigError) as caught:
        need_traffic(settings, "cutover shift")
    assert [p.path for p in caught.value.problems] == ["traffic"]
    assert "cutover shift" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        need_switchover(settings, "cutover switch")
    assert [p.path for p in caught.value.problems] == ["switchover"]


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUTOVER_CONFIG", str(write(tmp_path, 'service = "via-env"\n' + MINIMAL_TOML)))
    assert load_settings().service == "via-env"


# --- environment and credentials directory ---------------------------------------------------

def test_environment_beats_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, to_toml(with_value(BASE, "sync.copy_jobs", 3)))
    assert load_settings(path).sync.copy_jobs == 3
    monkeypatch.setenv("CUTOVER_SYNC__COPY_JOBS", "7")
    settings = load_settings(path)
    assert settings.sync.copy_jobs == 7
    assert settings.sync.mode.value == "logical"  # the rest of [sync] still comes from file/defaults
    assert settings.blue.database is not None


def test_environment_can_give_whole_values_as_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUTOVER_TRAFFIC__STAGES", '[{"weight": 25, "bake": "1m"}, {"weight": 100}]')
    settings = load_settings(write(tmp_path, MINIMAL_TOML))
    assert [(s.weight, s.bake) for s in need_traffic(settings, "test").stages] == [(25, 60.0), (100, 60.0)]


@pytest.mark.parametrize(("name", "value", "path"), [
    ("CUTOVER_SYNC__COPY_JOBS", "lots", "sync.copy_jobs"),
    ("CUTOVER_TRAFFIC__STAGES", '[{"weight": 50}]', "traffic.stages"),
])
def test_bad_environment_value_names_the_field(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, path: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, MINIMAL_TOML))
    assert path in [p.path for p in caught.value.problems]


@pytest.mark.parametrize("value", ["[not json", "[" * 100_000])
def test_undecodable_environment_value_is_a_config_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CUTOVER_TRAFFIC__STAGES", value)
    with pytest.raises(ConfigError):
        load_settings(write(tmp_path, MINIMAL_TOML))


def test_secret_from_the_secrets_dir(tmp_path: Path) -> None:
    secrets = tmp_path / "credentials"
    secrets.mkdir()
    (secrets / "blue__database__password").write_text("from-the-dir\n")
    settings = load_settings(write(tmp_path, MINIMAL_TOML), secrets_dir=secrets)
    assert settings.blue.database is not None
    assert "password=from-the-dir" in settings.blue.database.conninfo()
    assert settings.blue.database.dsn == "host=pg-blue dbname=records user=cutover"
    assert settings.green.database is not None
    assert settings.green.database.password is None


def test_binary_credentials_file_is_a_config_error_naming_the_directory(tmp_path: Path) -> None:
    secrets = tmp_path / "credentials"
    secrets.mkdir()
    (secrets / "blue__database__password").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match=r"credentials directory .*credentials is not UTF-8"):
        load_settings(write(tmp_path, MINIMAL_TOML), secrets_dir=secrets)


def test_secrets_dir_that_is_a_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="directory"):
        load_settings(write(tmp_path, MINIMAL_TOML), secrets_dir=tmp_path / "cutover.toml")


def test_credentials_directory_variable_is_the_default_secrets_dir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = tmp_path / "credentials"
    secrets.mkdir()
    (secrets / "notify__webhook").write_text("https://hooks.example/T0/B0/token")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(secrets))
    settings = load_settings(write(tmp_path, MINIMAL_TOML))
    assert settings.notify.webhook is not None
    assert settings.notify.webhook.get_secret_value() == "https://hooks.example/T0/B0/token"


def test_environment_beats_the_secrets_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = tmp_path / "credentials"
    secrets.mkdir()
    (secrets / "blue__database__password").write_text("from-the-dir")
    monkeypatch.setenv("CUTOVER_BLUE__DATABASE__PASSWORD", "from-the-env")
    settings = load_settings(write(tmp_path, MINIMAL_TOML), secrets_dir=secrets)
    assert settings.blue.database is not None
    conninfo = settings.blue.database.conninfo()
    assert "password=from-the-env" in conninfo
    assert "from-the-dir" not in conninfo


# --- secrets never shown ---------------------------------------------------------------------------

SECRET_VALUES = {
    "CUTOVER_BLUE__DATABASE__PASSWORD": "blue-pw-4711",
    "CUTOVER_GREEN__DATABASE__PASSWORD": "green-pw-4712",
    "CUTOVER_SWITCHOVER__PGBOUNCER__ADMIN_PASSWORD": "bouncer-pw-4713",
    "CUTOVER_STATE__PASSWORD": "state-pw-4714",
    "CUTOVER_NOTIFY__WEBHOOK": "https://hooks.example/services/T0/B0/token-4715",
}


def test_masked_dump_never_contains_a_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRET_VALUES.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(EXAMPLES / "production.toml")
    dumped = masked_dump(settings)
    text = json.dumps(dumped)
    for value in SECRET_VALUES.values():
        assert value not in text
        assert value not in repr(settings)
        assert value not in str(settings)
    assert dumped["blue"]["database"]["password"] == "**********"
    assert dumped["notify"]["webhook"] == "**********"
    assert dumped["switchover"]["pgbouncer"]["admin_password"] == "**********"
    # ...and yet the values are there for the code that needs them.
    assert settings.green.database is not None
    assert "password=green-pw-4712" in settings.green.database.conninfo()


def test_masked_dump_is_readable_back_as_toml_values(tmp_path: Path) -> None:
    dumped = masked_dump(load_settings(write(tmp_path, MINIMAL_TOML)))
    assert dumped["traffic"]["stages"] == [{"weight": w, "match": None, "bake": b, "gate": "none"}
                                           for w, b in ((10, "1m"), (50, "1m"), (100, "5m"))]
    assert dumped["sync"]["interval"] == "30s"


# --- relative paths --------------------------------------------------------------------------------

def test_relative_paths_resolve_next_to_the_config_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_dir = tmp_path / "etc" / "cutover"
    config_dir.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    data = with_value(BASE, "state.path", "journal/state.db")
    settings = load_settings(write(config_dir, to_toml(data)))
    assert settings.state.path == config_dir / "journal" / "state.db"
    haproxy = need_traffic(settings, "test").haproxy
    assert haproxy is not None
    assert haproxy.socket == config_dir / "haproxy.sock"
    pgbouncer = need_switchover(settings, "test").pgbouncer
    assert pgbouncer is not None
    assert pgbouncer.databases_file == config_dir / "databases.ini"


def test_absolute_paths_stay(tmp_path: Path) -> None:
    data = with_value(BASE, "state.path", "/var/lib/cutover/state.db")
    assert load_settings(write(tmp_path, to_toml(data))).state.path == Path("/var/lib/cutover/state.db")


def test_relative_config_path_is_taken_from_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, MINIMAL_TOML)
    monkeypatch.chdir(tmp_path)
    assert load_settings(Path("cutover.toml")).state.path == tmp_path / "cutover-state.db"


# --- random bad input: a ConfigError, never anything else -----------------------------------------

def _load_text_or_bytes(content: str | bytes) -> None:
    """load_settings returns Settings or raises ConfigError; any other exception fails the test."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "cutover.toml"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", errors="surrogatepass")
        result: Settings | ConfigError
        try:
            result = load_settings(path)
        except ConfigError as exc:
            result = exc
    if isinstance(result, ConfigError):
        assert result.problems
        assert all(isinstance(p.path, str) and p.message for p in result.problems)
        assert str(result).startswith("invalid configuration")
    else:
        json.dumps(masked_dump(result))  # whatever loads can also be shown


_TOMLISH = st.text(alphabet='[]{}=."\'#,\n \tabcxyz_019-+:', max_size=120)


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(max_size=200), _TOMLISH, st.binary(max_size=200),
                 _TOMLISH.map(lambda t: MINIMAL_TOML + t)))
def test_random_text_is_a_config_error_or_settings(content: str | bytes) -> None:
    _load_text_or_bytes(content)


def _model_in(annotation: Any) -> Iterator[tuple[type[BaseModel], bool]]:
    """BaseModel classes inside an annotation, and whether they sit in a list."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        for arg in typing.get_args(annotation):
            yield from _model_in(arg)
    elif origin is list:
        yield from ((m, True) for m, _ in _model_in(typing.get_args(annotation)[0]))
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation, False


Loc = tuple[str | int, ...]


def _field_paths(model: type[BaseModel], prefix: Loc = ()) -> Iterator[Loc]:
    for name, info in model.model_fields.items():
        path = (*prefix, name)
        yield path
        for sub, in_list in _model_in(info.annotation):
            yield from _field_paths(sub, (*path, 0) if in_list else path)


FIELD_PATHS = sorted(set(_field_paths(Settings)), key=str)

_SCALARS = st.one_of(
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**500), max_value=10**500),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["5m", "90s", "250ms", "1h30m", "-1s", "16MB", "1GiB", "host=h dbname=d",
                     "postgresql://u:p@h/d", "http://127.0.0.1:1/x", "127.0.0.1:0", "127.0.0.1:9187",
                     "logical", "diff", "pgbouncer", "command", "none", "haproxy", "nginx", "http",
                     "sql", "prometheus", "lag", "drift", "error_ratio", "before_switch", "rollback",
                     "postgres", "", "~", "../../x", "\x00"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(["name", "weight", "source", "max", "bake",
                                                             "at", "dsn", "x"]) | st.text(max_size=4),
                                            inner, max_size=3)),
    max_leaves=8,
)
_PATHS = st.one_of(
    st.sampled_from(FIELD_PATHS),
    st.lists(st.text(max_size=6) | st.integers(min_value=0, max_value=2), min_size=1, max_size=4).map(tuple),
)


def _set(data: Any, path: Loc, value: Any) -> Any:
    """data with value put at path, creating or replacing whatever is in the way."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(head, int):
        items = list(data) if isinstance(data, list) else []
        while len(items) <= head:
            items.append({})
        items[head] = _set(items[head], rest, value)
        return items
    table = dict(data) if isinstance(data, dict) else {}
    table[head] = _set(table.get(head), rest, value)
    return table


@hsettings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(_PATHS, _VALUES), min_size=1, max_size=4))
def test_random_values_merged_into_a_valid_config(changes: list[tuple[Loc, Any]]) -> None:
    data: Any = copy.deepcopy(BASE)
    for path, value in changes:
        data = _set(data, path, value)
    if not isinstance(data, dict):  # a change at the root path () replaced the whole document
        return
    _load_text_or_bytes(to_toml(data))


@pytest.mark.parametrize("arg", ["{hostname}", "{0}", "{}", "x}", "{target:>99999999}", "{target!r}"])
def test_a_repoint_or_shift_template_with_an_unknown_placeholder_is_refused_up_front(arg: str) -> None:
    """A repoint runs inside the write pause: its template is checked when the config is read."""
    from config.replication import CommandEndpointSettings
    from config.traffic import CommandDriverSettings
    with pytest.raises(ValueError, match=r"placeholders: \{target\}, \{host\}, \{port\}, \{dbname\}"):
        CommandEndpointSettings(pause=["true"], repoint=["/bin/echo", arg], resume=["true"])
    with pytest.raises(ValueError, match=r"placeholders: \{target\}, \{percentage\}"):
        CommandDriverSettings(argv=["./shift.sh", arg])
    fine = CommandEndpointSettings(pause=["true"], repoint=["/bin/echo", "{target}", "{{x}}"],
                                   resume=["true"])
    assert fine.repoint == ["/bin/echo", "{target}", "{{x}}"]


@pytest.mark.parametrize(("url", "allow_http", "ok"), [
    ("http://10.0.0.5/weights", False, False), ("http://10.0.0.5/weights", True, True),
    ("https://10.0.0.5/weights", False, True), ("http://127.0.0.1:8080/weights", False, True),
    ("http://localhost/weights", False, True)])
def test_the_http_token_needs_https_beyond_loopback(monkeypatch: pytest.MonkeyPatch, url: str,
                                                    allow_http: bool, ok: bool) -> None:
    monkeypatch.setenv("CUTOVER_TRAFFIC__HTTP__TOKEN", "tok")
    data = {"traffic": {"driver": "http", "http": {"url": url, "allow_http": allow_http}}}
    if ok:
        Settings.model_validate(data)
    else:
        with pytest.raises(ValueError, match="plain http"):
            Settings.model_validate(data)
    monkeypatch.delenv("CUTOVER_TRAFFIC__HTTP__TOKEN")
    Settings.model_validate(data)  # without a token, nothing secret travels
