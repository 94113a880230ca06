"""libpq connection strings in the config: parsed when read, ports checked, never a secret."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import AfterValidator

_SECRET_KEYS = ("password", "sslpassword")


def dsn_without_secrets(password_from: str) -> AfterValidator:
    """A connection string (key=value or URI) that libpq can use and that holds no password:
    that comes from `password_from` (an environment variable or the credentials directory),
    so `config show`, logs and the journal can print the string whole."""

    def _check_dsn(value: str) -> str:
        if "\x00" in value:
            # libpq would silently cut the string there and connect somewhere else.
            raise ValueError("a connection string cannot contain a NUL character")
        if not value.strip():
            raise ValueError("empty; write the connection out, e.g. "
                             "\"host=10.0.0.5 port=5432 dbname=app user=cutover\"")
        try:
            params: dict[str, Any] = conninfo_to_dict(value)
        except psycopg.ProgrammingError as exc:
            raise ValueError(f"not a valid PostgreSQL connection string: {exc}") from None
        for key in _SECRET_KEYS:
            if key in params:
                raise ValueError(f"the connection string carries a {key}; remove it and give "
                                 f"the password through {password_from}")
        for port in str(params.get("port", "")).split(","):
            if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
                raise ValueError(f"port {port!r} is not a TCP port (1-65535)")
        return value

    return AfterValidator(_check_dsn)

