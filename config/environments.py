"""The blue and green environments: their databases and health endpoints."""

from __future__ import annotations

from typing import Annotated, Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import AnyHttpUrl, Field, SecretStr

from config.base import Section
from config.dsn import dsn_without_secrets
from config.durations import Duration


class DatabaseSettings(Section):
    dsn: Annotated[str, dsn_without_secrets("CUTOVER_<ENV>__DATABASE__PASSWORD (<ENV> is BLUE or "
                                            "GREEN) or the credentials directory")]
    """libpq connection string or URI, without the password."""
    password: SecretStr | None = None
    """Never in the file: CUTOVER_<ENV>__DATABASE__PASSWORD or the credentials directory."""
    connect_timeout: Duration = 5.0
    """How long a connection attempt may take."""
    statement_timeout: Duration = 30.0
    """Upper bound for any one statement the controller runs (0 = none)."""

    def conninfo(self, **overrides: Any) -> str:
        """The connection string with the secret password and timeouts added."""
        extra: dict[str, Any] = {"connect_timeout": max(1, int(self.connect_timeout))}
        if self.password is not None:
            extra["password"] = self.password.get_secret_value()
        extra.update(overrides)
        return make_conninfo(self.dsn, **extra)

    def describe(self) -> str:
        """Where this database is, for messages: host, port and name, never secrets."""
        params = conninfo_to_dict(self.dsn)
        host = params.get("host", "localhost")
        port = params.get("port", "5432")
        return f"{params.get('dbname', params.get('user', '?'))} on {host}:{port}"


class EnvironmentSettings(Section):
    database: DatabaseSettings | None = None
    """The environment's PostgreSQL."""
    health_url: AnyHttpUrl | None = None
    """The app's health endpoint, e.g. http://10.0.0.7:5000/api/health."""
    health_urls: list[AnyHttpUrl] = Field(default_factory=list)
    """Every app server's health endpoint, when there are several: each is probed, and one
    failing fails the check (a dead server out of two is still a failure)."""

    def probe_urls(self) -> list[str]:
        """health_url and health_urls, each once."""
        urls = [str(u) for u in ([self.health_url] if self.health_url else []) + self.health_urls]
        return list(dict.fromkeys(urls))
