"""What child processes inherit: never Cutover's secrets (issue 19)."""

from __future__ import annotations

import pytest

from config.environments import DatabaseSettings
from sync.children import command_env, pg_tool_env, run_command

PARENT = {"PATH": "/usr/bin:/bin", "HOME": "/root", "KUBECONFIG": "/etc/kube.conf",
          "CUTOVER_BLUE__DATABASE__PASSWORD": "blue-pw-7", "CUTOVER_GREEN__DATABASE__PASSWORD": "green-pw-7",
          "CUTOVER_TRAFFIC__HTTP__TOKEN": "tok-7", "CUTOVER_NOTIFY__WEBHOOK": "https://hooks/x/tok",
          "CUTOVER_CONFIG": "/etc/cutover.toml", "CREDENTIALS_DIRECTORY": "/run/credentials/x",
          "PGPASSWORD": "parent-pw-7", "PGSSLMODE": "verify-full"}


def test_a_users_command_keeps_the_environment_but_no_secret() -> None:
    env = command_env(PARENT)
    assert env == {"PATH": "/usr/bin:/bin", "HOME": "/root", "KUBECONFIG": "/etc/kube.conf",
                   "PGSSLMODE": "verify-full"}


def test_a_postgresql_program_gets_only_its_own_databases_password() -> None:
    blue = DatabaseSettings.model_validate({"dsn": "host=pg-blue dbname=app", "password": "blue-pw-7",
                                            "connect_timeout": "3s"})
    env = pg_tool_env(blue, PARENT)
    assert env["PGPASSWORD"] == "blue-pw-7"
    assert env["PGCONNECT_TIMEOUT"] == "3"
    assert env["PGSSLMODE"] == "verify-full"  # libpq's own settings still apply
    assert not any("green-pw-7" in v or "tok" in v for v in env.values())
    green = DatabaseSettings.model_validate({"dsn": "host=pg-green dbname=app"})
    assert "PGPASSWORD" not in pg_tool_env(green, PARENT)


def test_a_command_run_for_real_sees_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in PARENT.items():
        monkeypatch.setenv(name, value)
    done = run_command(["env"], timeout=10)
    assert done.returncode == 0
    seen = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    assert seen["KUBECONFIG"] == "/etc/kube.conf"
    assert not [k for k in seen if k.startswith("CUTOVER_") or k in ("CREDENTIALS_DIRECTORY", "PGPASSWORD")]
