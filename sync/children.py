"""What child processes get: the commands a user configures (hooks, traffic and endpoint
drivers) and the PostgreSQL programs Cutover runs. None of them inherits Cutover's secrets."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence

from config.environments import DatabaseSettings

_WITHHELD_PREFIXES = ("CUTOVER_",)
"""Every CUTOVER_* variable: the config's secrets come that way (database passwords, the
HTTP token, the webhook URL)."""
_WITHHELD = ("CREDENTIALS_DIRECTORY", "PGPASSWORD")
"""systemd's credentials directory holds the same secrets as files; PGPASSWORD is a
database's password."""


def command_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A user's command gets the daemon's environment (its PATH, HOME, KUBECONFIG, proxy
    settings, ...) without Cutover's secrets."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items()
            if not k.startswith(_WITHHELD_PREFIXES) and k not in _WITHHELD}


def pg_tool_env(db: DatabaseSettings, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """pg_dump, pg_restore, psql: what a user's command gets, with this connection's own
    password and connect timeout (the other database's password is never there)."""
    env = command_env(environ)
    if db.password is not None:
        env["PGPASSWORD"] = db.password.get_secret_value()
    env["PGCONNECT_TIMEOUT"] = str(max(1, int(db.connect_timeout)))
    return env


def run_command(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """A configured command: no shell, no stdin, command_env(); raises what subprocess.run
    raises (FileNotFoundError, PermissionError, subprocess.TimeoutExpired)."""
    return subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=command_env())
